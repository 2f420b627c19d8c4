"""Throughput and peak memory of wav2vec 2.0 CTC fine-tuning (issue 14), as fairseq reports it.

One step = `asr_nb.train.train_step` on `Wav2Vec2CTC` (conf/wav2vec2_base_100h.yaml: BASE, 94.4 M parameters; masks,
layerdrop and the frozen feature encoder as in fine-tuning): forward, CTC loss, backward, clipping, Adam. The batch is
`--utts` utterances of `--seconds` s of random audio with 8 letters per second of transcript. Reports the median
seconds per step after warm-up, utterances/s and audio seconds/s (fairseq's "FPS" is input samples/s: audio s/s x 16000),
and the peak resident memory of the process (CPU) or peak CUDA memory, with the feature encoder frozen (fairseq's
`feature_grad_mult: 0`) and trained. Each setting runs in its own process so peak memory is its own.
fairseq's batch is max_tokens 1.4 M samples (87.5 s of audio); on a CPU use less (`--utts 2 --seconds 4`).

    .venv/bin/python bench/bench_wav2vec2.py                              # -> bench/results/wav2vec2.json
    .venv/bin/python bench/bench_wav2vec2.py --device cuda --utts 14 --seconds 6.25   # 1.4 M samples per batch
"""
from __future__ import annotations
import argparse, json, os, platform, resource, statistics, subprocess, sys, time
from pathlib import Path
import torch

ROOT = Path(__file__).resolve().parents[1]


def one(a) -> dict:
    "Time fine-tuning steps in this process for one setting (a.freeze)."
    from asr_nb import device as D
    from asr_nb.core import Batch, load_config
    from asr_nb.train import LRSchedule, build_optimizer, train_step
    from asr_nb.wav2vec2 import Wav2Vec2CTC
    if a.threads: torch.set_num_threads(a.threads)
    cfg = load_config(ROOT/"conf"/a.config, [f"model.wav2vec2.freeze_feature_encoder={a.freeze}"])
    dev = torch.device(a.device)
    torch.manual_seed(0)
    model = Wav2Vec2CTC(cfg.model.wav2vec2, vocab_size=32).to(dev)
    opt = build_optimizer(model, cfg.optim); sched = LRSchedule(opt, cfg.optim, cfg.model.wav2vec2.embed_dim)
    dtype = D.amp_dtype(dev, a.amp); scaler = D.make_grad_scaler(dev, dtype)
    N, L = int(a.seconds * 16000), int(a.seconds * 8)
    g = torch.Generator().manual_seed(0)
    batch = Batch(torch.randn(a.utts, N, 1, generator=g) * 0.1, torch.full((a.utts,), N),
                  torch.randint(1, 31, (a.utts, L), generator=g), torch.full((a.utts,), L), [str(i) for i in range(a.utts)])
    if dev.type == "cuda": torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        train_step(model, [batch], opt, scaler, dev, dtype, 0.0); sched.step()
        if dev.type == "cuda": torch.cuda.synchronize()
        if i >= a.warmup: times.append(time.perf_counter() - t0)
    s = statistics.median(times)
    peak = torch.cuda.max_memory_allocated() / 2**20 if dev.type == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return dict(config=a.config, device=a.device, amp=a.amp, freeze_feature_encoder=a.freeze, utts=a.utts, seconds=a.seconds,
                samples_per_batch=a.utts * N, s_per_step=round(s, 3), utts_per_s=round(a.utts / s, 3),
                audio_s_per_s=round(a.utts * a.seconds / s, 2), samples_per_s=round(a.utts * N / s),
                peak_mem_mb=round(peak), params_m=round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
                trainable_m=round(sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6, 2))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="wav2vec2_base_100h.yaml")
    p.add_argument("--device", default="cpu"); p.add_argument("--amp", default="none")
    p.add_argument("--utts", type=int, default=2); p.add_argument("--seconds", type=float, default=4.0)
    p.add_argument("--steps", type=int, default=2); p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--freeze", choices=["true", "false"], default=None, help="(internal) run one setting in this process")
    p.add_argument("--out", default=str(ROOT/"bench"/"results"/"wav2vec2.json"))
    a = p.parse_args()
    if a.freeze is not None: print(json.dumps(one(a))); return
    rows = []
    for freeze in ("true", "false"):
        cmd = [sys.executable, __file__, *sys.argv[1:], "--freeze", freeze]
        out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
        rows.append(json.loads(out.strip().splitlines()[-1])); print(json.dumps(rows[-1]))
    res = dict(bench="wav2vec2 CTC fine-tuning step (asr_nb.train.train_step)", machine=platform.processor() or platform.machine(),
               cpus=os.cpu_count(), torch=torch.__version__, command=" ".join(["python", "bench/bench_wav2vec2.py", *sys.argv[1:]]),
               fairseq_reference="fairseq reports 5,525 FPS (input samples/s) for BASE fine-tuning on one V100", results=rows)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True); Path(a.out).write_text(json.dumps(res, indent=1) + "\n")


if __name__ == "__main__": main()
