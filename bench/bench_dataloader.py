"""Data-loader throughput and padding efficiency on the built-in synthetic corpus.

Usage: python bench/bench_dataloader.py [--n 200] [--epochs 2] [--workers 0 1 2] [--out bench/results/dataloader.json]

Synthesises (or reuses) `--n` training utterances under bench/out/synth_<n>, then
1. loads one epoch per worker count with `make_dataloader(train=True)` (fbank with dither, speed perturbation
   0.9/1.0/1.1 as in the recipes) and reports utterances/s and x real time; the first epoch includes worker start-up,
   so the reported rate is the median of the later epochs (steady state with persistent workers);
2. computes the padding efficiency (real frames / padded frames, and the same for tokens) of each batch type,
   with the DataConfig default budgets and with budgets giving about 16 utterances per batch, plus random
   fixed-size batches as the baseline.
Writes JSON and prints a table. Timings on a shared machine are rough.
"""
import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

from asr_nb.core import DataConfig, ExpConfig, FeatureConfig, TokenizerConfig
from asr_nb.data import fill_num_frames, load_utterances, synth_corpus
from asr_nb.dataset import BATCH_TYPES, filter_utterances, make_batches, make_dataloader, padding_stats
from asr_nb.tokenizer import build_tokenizer

ROOT = Path(__file__).resolve().parent


def corpus(n: int) -> Path:
    out = ROOT / "out" / f"synth_{n}"
    if not (out / "train" / "wav.scp").exists():
        t = time.perf_counter()
        synth_corpus(out, n_train=n, n_dev=4, n_test=4, seed=0)
        print(f"synthesised {n} utterances in {time.perf_counter() - t:.1f} s", file=sys.stderr)
    return out / "train"


def throughput(utts, tok, workers: int, epochs: int) -> dict:
    cfg = ExpConfig(features=FeatureConfig(speed_perturb=[0.9, 1.0, 1.1]),
                    data=DataConfig(batch_type="length", max_frames_in_batch=6000, num_workers=workers))
    loader, sampler = make_dataloader(utts, tok, cfg, train=True, seed=0)
    rates = []
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        t, n, frames = time.perf_counter(), 0, 0
        for b in loader:
            if b is not None: n += len(b.keys); frames += int(b.feat_lens.sum())
            sampler.advance(1)
        dt = time.perf_counter() - t
        rates.append((n / dt, frames / 100 / dt, n))
    steady = sorted(rates[1:] or rates)[len(rates[1:] or rates) // 2]  # median epoch after the first
    del loader
    return dict(num_workers=workers, utterances=steady[2], utts_per_s=round(steady[0], 1),
                x_real_time=round(steady[1], 1), first_epoch_utts_per_s=round(rates[0][0], 1))


def _budgets(F, T, target: int | None) -> dict:
    "Each type's budget: DataConfig defaults, or chosen so that batches hold about `target` utterances."
    d = DataConfig()
    if target is None: return dict(example=d.batch_size, length=d.max_frames_in_batch, token=d.max_tokens_in_batch, bins=d.bins)
    mf, mt = sum(F) / len(F), sum(T) / len(T)
    return dict(example=target, length=round(target * mf), token=round(target * mt), bins=round(target * mf) * 80)


def padding(utts, tok, target: int | None) -> dict:
    kept, rep = filter_utterances(utts, DataConfig(), tok)
    F, T = [u.num_frames for u in kept], rep.token_lens
    budgets = _budgets(F, T, target)
    bs = budgets["example"]
    perm = torch.randperm(len(F), generator=torch.Generator().manual_seed(0)).tolist()
    rows = [dict(batching=f"random, {bs} utts", budget=bs, oversized=0,
                 **padding_stats([perm[i:i + bs] for i in range(0, len(F), bs)], F, T))]
    for bt in BATCH_TYPES:
        field = dict(example="batch_size", length="max_frames_in_batch", token="max_tokens_in_batch", bins="bins")[bt]
        batches, big = make_batches(F, T, DataConfig(batch_type=bt, **{field: budgets[bt]}))
        rows.append(dict(batching=bt, budget=budgets[bt], oversized=len(big), **padding_stats(batches, F, T)))
    for r in rows:
        for k in ("mean_batch_size", "frame_efficiency", "token_efficiency"): r[k] = round(r[k], 3)
    return dict(budgets="DataConfig defaults" if target is None else f"about {target} utterances per batch",
                utterances=len(F), mean_frames=round(sum(F) / len(F), 1), min_frames=min(F), max_frames=max(F),
                mean_tokens=round(sum(T) / len(T), 1), rows=rows)


def _md(rows) -> str:
    cols = ["batching", "budget", "num_batches", "mean_batch_size", "frame_efficiency", "token_efficiency"]
    return "\n".join(["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)] +
                     ["| " + " | ".join(str(r[c]) for c in cols) + " |" for r in rows])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", default=str(ROOT / "results" / "dataloader.json"))
    a = ap.parse_args()
    torch.set_num_threads(1)
    train = corpus(a.n)
    utts = load_utterances(train)
    tok = build_tokenizer(TokenizerConfig(), [u.text for u in utts], ROOT / "out" / f"synth_{a.n}" / "tok")
    utts = fill_num_frames(utts)
    pads = [padding(utts, tok, None), padding(utts, tok, 16)]
    tp = [throughput(utts, tok, w, a.epochs) for w in a.workers]
    p0 = pads[0]
    res = dict(title="Data loader: utterances/s and padding efficiency (06_dataset)",
               command=f"python bench/bench_dataloader.py --n {a.n} --epochs {a.epochs}",
               rows=tp, corpus=str(train.relative_to(ROOT.parent)), utterances=p0["utterances"],
               mean_frames=p0["mean_frames"], mean_tokens=p0["mean_tokens"], cpus=os.cpu_count(), torch_threads=1,
               notes=["utts_per_s: median epoch after the first (persistent workers warm), `make_dataloader(train=True)` "
                      "with fbank + dither + speed perturbation 0.9/1.0/1.1, batch_type length, 6000 frames per batch.",
                      "", "Padding efficiency = real / padded frames (and tokens), summed over the batches of one epoch."] +
                     sum([["", f"Budgets: {p['budgets']}.", "", _md(p["rows"])] for p in pads], []),
               padding=pads, host=platform.node(), torch=torch.__version__)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2) + "\n")
    print(f"data loader on {len(utts)} synthetic utterances (train: fbank + dither + speed perturbation), "
          f"{os.cpu_count()} CPUs, torch threads 1")
    print(f"{'workers':>7} {'utts/s':>8} {'x RT':>6} {'1st epoch utts/s':>17}")
    for r in tp:
        print(f"{r['num_workers']:7d} {r['utts_per_s']:8.1f} {r['x_real_time']:6.1f} {r['first_epoch_utts_per_s']:17.1f}")
    for p in pads:
        print(f"\npadding efficiency, budgets: {p['budgets']} ({p['utterances']} utts, frames mean {p['mean_frames']} "
              f"[{p['min_frames']}, {p['max_frames']}], tokens mean {p['mean_tokens']})")
        print(f"{'batching':16} {'budget':>8} {'batches':>7} {'mean B':>7} {'frames':>7} {'tokens':>7}")
        for r in p["rows"]:
            print(f"{r['batching']:16} {r['budget']:>8} {r['num_batches']:7d} {r['mean_batch_size']:7.1f} "
                  f"{r['frame_efficiency']:7.3f} {r['token_efficiency']:7.3f}")
    print(f"\nwrote {a.out}")


if __name__ == "__main__":
    main()
