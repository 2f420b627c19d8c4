"""Training-step benchmark of DeepSpeech2 (`model.family: deepspeech2`) on the CPU, fp32 and bf16 autocast.

One step = `asr_nb.train.train_step` (forward with CMVN, SpecAugment, conv front, recurrent layers and CTC loss under
the device shim's autocast; backward; clip at 5; Adam) on a batch of B utterances x T frames x 80 fbank with
20-token transcripts. Reports the median seconds per step after warm-up and input frames per second for
conf/deepspeech2_tiny.yaml (bidirectional GRU) and conf/deepspeech2.yaml (PPASR's default: 5 x BiLSTM-1024,
122 M parameters with a 4000-character vocabulary), with `train.num_threads` threads.

bf16 is autocast emulation where the CPU has no native bf16 (no AVX512-BF16 / AMX): it is then slower than fp32,
and the JSON says which case was measured (`cpu_capability`, `native_bf16`).

    .venv/bin/python bench/bench_deepspeech2.py                      # -> bench/results/deepspeech2.json
    .venv/bin/python bench/bench_deepspeech2.py --steps 2 --configs tiny
"""
from __future__ import annotations
import argparse, json, platform, statistics, time
from pathlib import Path
import torch

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"tiny": (ROOT/"conf"/"deepspeech2_tiny.yaml", 30), "ppasr_default": (ROOT/"conf"/"deepspeech2.yaml", 4000)}

def make_batch(B: int, T: int, L: int, V: int, seed: int = 0):
    from asr_nb.core import Batch
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(B, T, 80, generator=g) * 3 + 10                 # (B, T, 80) raw-fbank-like scale
    return Batch(feats, torch.full((B,), T), torch.randint(1, V - 1, (B, L), generator=g), torch.full((B,), L),
                 [str(i) for i in range(B)])

def time_steps(name: str, amp: str, a) -> dict:
    "Median seconds per training step for config `name` under amp 'fp32' | 'bf16'."
    from asr_nb import device as D
    from asr_nb.core import load_config
    from asr_nb.model import build_model
    from asr_nb.train import build_optimizer, train_step
    path, vocab = CONFIGS[name]
    cfg, dev = load_config(path), torch.device("cpu")
    torch.manual_seed(0)
    model = build_model(cfg, vocab, (torch.full((80,), 10.0), torch.full((80,), 1 / 3)))
    dtype = {"fp32": None, "bf16": torch.bfloat16}[amp]
    opt, scaler = build_optimizer(model, cfg.optim), D.make_grad_scaler(dev, dtype)
    batch, times = make_batch(a.batch, a.frames, 20, vocab), []
    for i in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        train_step(model, [batch], opt, scaler, dev, dtype, cfg.train.grad_clip)
        if i >= a.warmup: times.append(time.perf_counter() - t0)
    s = statistics.median(times)
    return dict(config=name, amp=amp, params_m=round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
                rnn=f"{cfg.model.deepspeech2.rnn_layers} x {'bi' if cfg.model.deepspeech2.bidirectional else 'uni'}"
                    f"{cfg.model.deepspeech2.rnn_type.upper()}-{cfg.model.deepspeech2.rnn_hidden}",
                s_per_step=round(s, 4), frames_per_s=round(a.batch * a.frames / s))

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--configs", default="tiny,ppasr_default")
    p.add_argument("--amp", default="fp32,bf16")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--frames", type=int, default=300, help="frames per utterance (3 s)")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--note", default="")
    p.add_argument("--out", default=str(ROOT/"bench"/"results"/"deepspeech2.json"))
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    cap = torch.backends.cpu.get_cpu_capability()
    rows = []
    for name in a.configs.split(","):
        for amp in a.amp.split(","):
            rows.append(time_steps(name, amp, a)); print(rows[-1], flush=True)
    from asr_nb.device import cpu_native_bf16
    native = cpu_native_bf16()
    out = dict(title="DeepSpeech2 training step on the CPU (frames/s of input, 10 ms frames)",
               command=f"python bench/bench_deepspeech2.py --batch {a.batch} --frames {a.frames} --steps {a.steps} "
                       f"--threads {a.threads}",
               rows=rows, batch=a.batch, frames=a.frames, threads=a.threads, cpu_capability=cap, native_bf16=native,
               machine=platform.processor() or platform.machine(), torch=torch.__version__,
               notes="bf16 = autocast: the convolutions and the output layer in bf16, the recurrences in fp32 on the CPU "
                     "(asr_nb.deepspeech2.RNNLayer). " + ("This CPU has no native bf16 (no AVX512-BF16/AMX): bf16 is emulated "
                     "and slower than fp32, measured as is. " if not native else "") + a.note)
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n")
    print(json.dumps(out, indent=1))

if __name__ == "__main__": main()
