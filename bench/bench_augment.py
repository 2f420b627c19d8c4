"""Does data loading with full augmentation outpace the tiny model's training step on 2 cores? (issue 19)

The tiny recipe (conf/tiny.yaml, conf/tiny_augment.yaml) uses one data worker (one core makes features) and one
thread for the model (the other core). So the question is: on one core, is making a batch (read, augment, fbank)
faster than one training step (forward, backward, Adam) of the tiny model on the same batch?

1. per step: CPU seconds per second of audio of each augmentation step alone (prob 1, conf/tiny_augment.yaml's
   ranges), of fbank alone, of the tiny_augment pipeline (each step at its configured probability) and of every
   step at once (prob 1, the worst case);
2. a batch: the recipe's `length` batches (max_frames_in_batch 6000) made by `ASRDataset` in this process (what the
   worker does), with and without the pipeline, against `train_step` of the tiny model on those batches (one thread,
   the recipe's amp).

    nice -n 5 .venv/bin/python bench/bench_augment.py [--data DIR] [--n 60]   # -> bench/results/augment.json

Timings on a shared machine are rough (the result records the load average).
"""
from __future__ import annotations
import argparse, dataclasses, json, os, platform, statistics, sys, time
from pathlib import Path
import torch

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = Path("/work/main/exp/tiny_demo/data/train")

class _CharIds:
    "A stand-in tokenizer: one id per character (the model only needs ids below its vocabulary)."
    def __init__(self, texts): self.units = {c: i + 1 for i, c in enumerate(sorted({c for t in texts for c in t}))}
    def encode(self, text): return [self.units[c] for c in text]

def _utts(a):
    from asr_nb.data import load_utterances, synth_corpus, fill_num_frames
    d = Path(a.data) if a.data else DEFAULT_DATA
    if not (d/"wav.scp").exists():
        d = synth_corpus(ROOT/"bench"/"out"/"synth_aug", n_train=a.n, n_dev=2, n_test=2, seed=0)["train"]
    return fill_num_frames(load_utterances(d)[:a.n]), d

def per_step(utts, cfg) -> list[dict]:
    "CPU s per audio s of each step alone, fbank, the configured pipeline and every step at prob 1."
    from asr_nb.augment import Augmenter, STEPS, FEATURE_STEPS
    from asr_nb.features import load_audio, fbank
    waves = [load_audio(u.audio) for u in utts]
    audio_s = sum(w.numel() for w in waves) / 16000
    def timed(f):
        t = time.process_time()
        for u, w in zip(utts, waves): f(u, w)
        return round((time.process_time() - t) / audio_s, 5)
    rows = [dict(step="fbank", cpu_s_per_audio_s=timed(lambda u, w: fbank(w, dither=1.0)))]
    all_on = {n: dataclasses.replace(getattr(cfg.augment, n), prob=1.0) for n in STEPS}
    for n in STEPS:
        aug = Augmenter(dataclasses.replace(cfg.augment, **{m: dataclasses.replace(getattr(cfg.augment, m), prob=0.0) for m in (*STEPS, *FEATURE_STEPS) if m != n},
                                            **{n: all_on[n]}), seed=0)
        rows.append(dict(step=n, cpu_s_per_audio_s=timed(lambda u, w: aug(w, u.key, 0))))
    conf = Augmenter(cfg.augment, seed=0)
    rows.append(dict(step="tiny_augment pipeline (configured probabilities)", cpu_s_per_audio_s=timed(lambda u, w: conf(w, u.key, 0))))
    full = Augmenter(dataclasses.replace(cfg.augment, **all_on), seed=0)
    rows.append(dict(step="every step at prob 1", cpu_s_per_audio_s=timed(lambda u, w: full(w, u.key, 0))))
    return rows

def batches(utts, tok, cfg, augment) -> tuple[list, float]:
    "The recipe's batches made as the worker makes them; (batches, (wall s, CPU s) per batch)."
    from asr_nb.augment import make_augmenter
    from asr_nb.dataset import ASRDataset, collate, make_batches
    ds = ASRDataset(utts, tok, cfg.features, train=True, seed=0, augment=make_augmenter(cfg, 0) if augment else None)
    idx, _ = make_batches([u.num_frames for u in utts], [len(tok.encode(u.text)) for u in utts], cfg.data)
    t, c = time.perf_counter(), time.process_time(); out = [collate([ds[i] for i in b]) for b in idx]
    return out, ((time.perf_counter() - t) / len(out), (time.process_time() - c) / len(out))

def train_steps(batches_, cfg, vocab: int, steps: int) -> float:
    "Median (wall s, CPU s) per `train_step` of the tiny model over the batches (2 warm-up steps)."
    from asr_nb import device as D
    from asr_nb.model import ASRModel
    from asr_nb.train import LRSchedule, build_optimizer, train_step
    torch.manual_seed(0); dev = torch.device("cpu")
    model = ASRModel(cfg.model, vocab, cfg.specaug, (torch.full((80,), 10.0), torch.full((80,), 1 / 3)))
    dtype = D.amp_dtype(dev, cfg.train.amp)
    opt = build_optimizer(model, cfg.optim); sched = LRSchedule(opt, cfg.optim, cfg.model.encoder.d_model)
    scaler, times = D.make_grad_scaler(dev, dtype), []
    for i in range(steps + 2):
        b = batches_[i % len(batches_)]
        t, c = time.perf_counter(), time.process_time()
        train_step(model, [b], opt, scaler, dev, dtype, cfg.train.grad_clip); sched.step()
        if i >= 2: times.append((time.perf_counter() - t, time.process_time() - c))
    return tuple(statistics.median(x[k] for x in times) for k in (0, 1)), str(dtype)

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="", help=f"a data dir (default {DEFAULT_DATA}, else a small synthesised corpus)")
    p.add_argument("--n", type=int, default=60, help="utterances")
    p.add_argument("--steps", type=int, default=6, help="timed training steps")
    p.add_argument("--out", default=str(ROOT/"bench"/"results"/"augment.json"))
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    from asr_nb.core import atomic_write_text, load_config
    cfg = load_config(ROOT/"conf"/"tiny_augment.yaml")
    utts, d = _utts(a)
    tok = _CharIds([u.text for u in utts]); vocab = len(tok.units) + 2
    rows = per_step(utts, cfg)
    plain, t_plain = batches(utts, tok, cfg, False)
    augd, t_aug = batches(utts, tok, cfg, True)
    t_step, dtype = train_steps(augd, cfg, vocab, a.steps)
    res = dict(title="Data loading with augmentation vs the tiny model's training step (one core each)",
               command="nice -n 5 python bench/bench_augment.py " + " ".join(argv or sys.argv[1:]),
               data=str(d), utterances=len(utts), audio_s=round(sum(u.num_frames for u in utts) / 100, 1),
               batches=len(augd), mean_batch_size=round(len(utts) / len(augd), 1), per_step=rows,
               load_s_per_batch_plain=dict(wall=round(t_plain[0], 4), cpu=round(t_plain[1], 4)),
               load_s_per_batch_augmented=dict(wall=round(t_aug[0], 4), cpu=round(t_aug[1], 4)),
               train_s_per_step=dict(wall=round(t_step[0], 4), cpu=round(t_step[1], 4)), train_amp=dtype,
               train_step_over_augmented_loading=dict(wall=round(t_step[0] / t_aug[0], 2), cpu=round(t_step[1] / t_aug[1], 2)),
               loading_outpaces_training=bool(t_aug[0] < t_step[0] and t_aug[1] < t_step[1]),
               machine=dict(cpu=platform.processor() or platform.machine(), cores=os.cpu_count(), threads=1,
                            load_average=[round(x, 1) for x in os.getloadavg()], torch=torch.__version__))
    atomic_write_text(a.out, json.dumps(res, indent=1) + "\n")
    print(f"{'step':<50} CPU s / audio s")
    for r in rows: print(f"{r['step']:<50} {r['cpu_s_per_audio_s']:.4f}")
    print(f"batch ({res['mean_batch_size']} utts), CPU s: loading {t_plain[1]:.3f} plain, {t_aug[1]:.3f} augmented; "
          f"training step {t_step[1]:.3f} ({dtype}); step / augmented loading: {res['train_step_over_augmented_loading']}")

if __name__ == "__main__": main()
