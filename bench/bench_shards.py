"""Sharded streaming data (#17): read rate, loader memory over an epoch of 100k utterances, padding efficiency.

Usage: nice -n 5 python bench/bench_shards.py [--data /work/main/exp/tiny_demo/data/train] [--n-epoch 100000]
                                             [--out bench/results/shards.json]

1. Read rate: packs `--data` (the built-in corpus, 1600 utterances) into shards of 200 and streams one training epoch
   through `ShardStream` in one process (shard read + tar parse + WAV decode + member checks + shuffle/sort buffers +
   speed perturbation + 80-dim fbank + batching), and once more reading the shards only (tar parse + WAV decode).
   Compared with what one AISHELL Conformer step consumes on one GPU, estimated on paper (see `consumption()`).
2. Memory: `--n-epoch` utterances made by repeating the corpus under new keys (`r0042-<key>`), each cropped to its
   first `--crop` seconds so the shards stay under 3 GB, streamed once through the loader with the `raw` front end
   (the fbank rate is item 1; here the question is only whether anything accumulates over an epoch). The process RSS
   is sampled every 2000 utterances.
3. Padding: AISHELL-1-like lengths (`shards.simulate_lengths`: log-normal, mean 4.5 s, 1.2-14.5 s), cut by the
   map-style global sort and by the stream's sort buffer, for batch_type length and memory.
Timings on a shared 2-core machine are rough (wall seconds include other jobs; cpu_seconds do not); the JSON records
the machine and its load average.
"""
import argparse, io, json, os, platform, shutil, sys, tempfile, time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from asr_nb.core import DataConfig, ExpConfig, FeatureConfig, load_config
from asr_nb.data import fill_num_frames, load_utterances
from asr_nb.dataset import make_batches, padding_stats
from asr_nb.shards import ShardSource, ShardStream, ShardWriter, iter_shard, decode_record, simulate_lengths, write_shards
from asr_nb.tokenizer import CharTokenizer

ROOT = Path(__file__).resolve().parent


def rss_mb() -> float:
    "Resident set size of this process, MiB (Linux /proc)."
    with open("/proc/self/statm") as f: return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2 ** 20


def consumption() -> dict:
    """Utterances/s one GPU's AISHELL Conformer step consumes, on paper (conf/aishell_conformer.yaml: 12 blocks,
    d=256, u=2048, 6 decoder blocks, ~45 M parameters; an AISHELL utterance averages 4.5 s = 450 frames, 113 after
    4x subsampling, ~15 characters). Training FLOPs ~ 6 x parameters x positions: encoder 6 x 31e6 x 113 = 21 GFLOP,
    conv2d subsampling ~7.5 GFLOP, decoder 6 x 12e6 x 15 = 1 GFLOP: ~30 GFLOP per utterance."""
    flop = 30e9
    return dict(flop_per_utt=flop,
                a100_bf16_30pct_mfu=round(312e12 * 0.30 / flop),          # compute-bound ceiling on an A100
                h100_bf16_30pct_mfu=round(989e12 * 0.30 / flop),
                published_v100=50,  # ESPnet/WeNet AISHELL recipes: ~50 utt/s per V100 (18M utts in ~1 day on 4 GPUs)
                note="an upper bound (compute-bound, 30% MFU) and what published recipes reach on V100s")


def stream_rate(shards: Path, n_max: int, fbank: bool) -> dict:
    "Stream one training epoch in this process; utterances/s."
    tok = CharTokenizer.build([t for _, t in ShardSource(shards).texts()])
    cfg = ExpConfig(features=FeatureConfig(speed_perturb=[0.9, 1.0, 1.1]), data=DataConfig(max_frames_in_batch=12000))
    t0, c0, n = time.perf_counter(), time.process_time(), 0
    if fbank:
        for b, _ in ShardStream(ShardSource(shards).shards[:n_max], tok, cfg, train=True, seed=0):
            if b is not None: n += len(b.keys)
    else:
        for s in ShardSource(shards).shards[:n_max]:
            for r in iter_shard(s):
                _, why = decode_record(r); n += why is None
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    return dict(utterances=n, seconds=round(dt, 2), cpu_seconds=round(cpu, 2), utt_per_s=round(n / dt, 1),
                utt_per_cpu_s=round(n / cpu, 1), note="utt_per_cpu_s: one core's rate without the machine's contention")


def build_epoch(data: Path, out: Path, n: int, crop: float, shard_size: int = 1000) -> dict:
    "n utterances: the corpus repeated under new keys, each cropped to `crop` s (WAV PCM-16)."
    utts = fill_num_frames(load_utterances(data))
    clips = []
    for u in utts:
        x, sr = sf.read(u.audio, dtype="int16", frames=int(crop * 16000))
        b = io.BytesIO(); sf.write(b, x, sr, format="WAV", subtype="PCM_16")
        clips.append((u.key, b.getvalue(), u.text, len(x) * 100 // sr))
    w = ShardWriter(out, shard_size, source=f"{data} x{n // len(clips) + 1}, cropped to {crop} s")
    for i in range(n):
        key, audio, text, frames = clips[i % len(clips)]
        w.add(f"r{i // len(clips):04d}-{key}", audio, "wav", text, frames)
    return w.close()


def memory_epoch(shards: Path, every: int = 2000) -> dict:
    "One epoch through the loader (raw front end, one process); RSS every `every` utterances."
    tok = CharTokenizer.build([t for _, t in ShardSource(shards).texts()])
    cfg = ExpConfig(features=FeatureConfig(kind="raw", speed_perturb=[1.0], dither=0.0),
                    data=DataConfig(max_frames_in_batch=12000, min_frames=1))
    from asr_nb.shards import make_shard_loader
    ld, sampler = make_shard_loader(shards, tok, cfg, train=True, seed=0)
    sampler.set_epoch(0)
    n, nxt, samples, t0, c0 = 0, every, [], time.perf_counter(), time.process_time()
    for b in ld:
        n += len(b.keys)
        if n >= nxt: samples.append((n, round(rss_mb(), 1))); nxt += every
    dt, cpu = time.perf_counter() - t0, time.process_time() - c0
    warm = [m for k, m in samples if k >= 10000] or [m for _, m in samples]
    return dict(utterances=n, seconds=round(dt, 1), cpu_seconds=round(cpu, 1), utt_per_s=round(n / dt, 1), rss_mb=samples,
                rss_after_10k_min=min(warm), rss_after_10k_max=max(warm), growth_after_10k_mb=round(max(warm) - min(warm), 1),
                shard_buffer=cfg.data.shard_shuffle_buffer, sort_buffer=cfg.data.shard_sort_buffer)


def padding(n: int = 50000) -> dict:
    "Frame efficiency (real / padded) on simulated AISHELL lengths: global sort vs the stream's sort buffer."
    lens = simulate_lengths(n, seed=0); toks = [max(1, f // 30) for f in lens]
    out = dict(n=n, mean_s=round(float(np.mean(lens)) / 100, 3), min_s=min(lens) / 100, max_s=max(lens) / 100)
    aishell = load_config(str(ROOT.parent/"conf"/"aishell_conformer.yaml"))
    for name, dc in [("length_12000", DataConfig(max_frames_in_batch=12000)),
                     ("memory_8000mb", ExpConfig(model=aishell.model, data=DataConfig(batch_type="memory", max_batch_mb=8000)).data),
                     ("memory_8000mb_sort2000", ExpConfig(model=aishell.model, data=DataConfig(batch_type="memory", max_batch_mb=8000,
                                                                                              shard_sort_buffer=2000)).data)]:
        glob = padding_stats(make_batches(lens, toks, dc)[0], lens, toks)
        B, bl = dc.shard_sort_buffer, []
        for i in range(0, n, B):
            bb, _ = make_batches(lens[i:i + B], toks[i:i + B], dc); bl += [[i + j for j in b] for b in bb]
        st = padding_stats(bl, lens, toks)
        out[name] = dict(global_sort=round(glob["frame_efficiency"], 4), stream_sort_buffer=round(st["frame_efficiency"], 4),
                         sort_buffer=B, mean_batch=round(st["mean_batch_size"], 1), budget_frames=__import__("asr_nb.dataset", fromlist=["x"]).batch_budget(dc))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="/work/main/exp/tiny_demo/data/train")
    ap.add_argument("--n-epoch", type=int, default=100000)
    ap.add_argument("--crop", type=float, default=0.5)
    ap.add_argument("--out", default=str(ROOT/"results"/"shards.json"))
    a = ap.parse_args()
    torch.set_num_threads(1)
    tmp = Path(tempfile.mkdtemp(prefix="bench_shards."))
    res = dict(machine=dict(cpu=platform.processor() or platform.machine(), cores=os.cpu_count(), torch=torch.__version__,
                            loadavg_at_start=os.getloadavg()[0]),
               consumption_utt_per_s=consumption())
    try:
        t = time.perf_counter(); idx = write_shards(a.data, tmp/"corpus", shard_size=200)
        res["write"] = dict(utterances=idx["num_utterances"], hours=idx["total_hours"], shards=len(idx["shards"]),
                            seconds=round(time.perf_counter() - t, 1))
        res["read_only"] = stream_rate(tmp/"corpus", 8, fbank=False)
        res["read_fbank_pipeline"] = stream_rate(tmp/"corpus", 4, fbank=True)   # 800 utterances
        c, fb = res["consumption_utt_per_s"], res["read_fbank_pipeline"]
        mean_s = idx["total_hours"] * 3600 / idx["num_utterances"]           # fbank cost grows with duration:
        fb["aishell_equiv_utt_per_cpu_s"] = round(fb["utt_per_cpu_s"] * mean_s / 4.5, 1)  # rescaled to AISHELL's 4.5 s mean
        fb["corpus_mean_s"] = round(mean_s, 2)
        res["workers_for_3x"] = {k: int(np.ceil(3 * c[k] / fb["aishell_equiv_utt_per_cpu_s"]))
                                 for k in ("published_v100", "a100_bf16_30pct_mfu", "h100_bf16_30pct_mfu")}
        print(json.dumps({k: res[k] for k in ("write", "read_only", "read_fbank_pipeline", "workers_for_3x")}), file=sys.stderr)
        res["padding"] = padding()
        t = time.perf_counter(); idx = build_epoch(Path(a.data), tmp/"epoch", a.n_epoch, a.crop)
        disk = sum(p.stat().st_size for p in (tmp/"epoch").iterdir())
        res["epoch_shards"] = dict(utterances=idx["num_utterances"], shards=len(idx["shards"]), disk_gb=round(disk / 1e9, 2),
                                   crop_s=a.crop, seconds=round(time.perf_counter() - t, 1))
        shutil.rmtree(tmp/"corpus", ignore_errors=True)
        res["memory"] = memory_epoch(tmp/"epoch")
    finally: shutil.rmtree(tmp, ignore_errors=True)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps({k: v for k, v in res.items() if k != "memory"}, indent=1))
    print("memory:", {k: v for k, v in res["memory"].items() if k != "rss_mb"})


if __name__ == "__main__":
    main()
