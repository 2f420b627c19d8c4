"""Which process/thread/worker layout trains the tiny recipe fastest on this machine (issue #15 part 3).

Each layout trains one epoch of conf/tiny.yaml on the built-in corpus with `asr_nb_train` (fp32, no autotune), the
layouts alternated `--reps` times so that a busy machine slows them alike. The epoch's wall time is read from the
run's own train.log: from the line that starts training (after tokenizer and CMVN) to the validation line. Every
layout does the same work: 1,600 utterances, the same update size (a 2-rank layout gives each rank half the frames
per batch, so one update still sees `data.max_frames_in_batch` frames in all).

    p1t1   one process, 1 torch thread, features in 1 data worker   (the shipped layout before this benchmark)
    p1t2   one process, 2 torch threads, features in 1 data worker
    r2w1   2 ranks under torchrun (gloo), 1 thread each, 1 data worker each
    r2w0   2 ranks, 1 thread each, features computed in the rank itself (no worker)

    python bench/bench_train_layout.py --data exp/tiny_demo/data --work /tmp/layout    # -> bench/results/train_layout.json
    python bench/bench_train_layout.py --work /tmp/layout --parse-only                 # re-read finished runs
"""
from __future__ import annotations
import argparse, json, os, re, statistics, subprocess, sys, time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LAYOUTS = {"p1t1": (1, 1, 1), "p1t2": (1, 2, 1), "r2w1": (2, 1, 1), "r2w0": (2, 1, 0)}   # ranks, threads, workers

def command(layout: str, data: Path, exp: Path, frames: int) -> list[str]:
    ranks, threads, workers = LAYOUTS[layout]
    exe = str(Path(sys.executable).parent / "asr_nb_train")
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={ranks}", exe] if ranks > 1 else [exe]
    return launch + ["--config", str(ROOT / "conf" / "tiny.yaml"), "--train", str(data / "train"), "--valid", str(data / "dev"),
                     "--exp", str(exp), "train.max_epochs=1", "train.amp=none", "train.keep_n_best=1",
                     f"train.num_threads={threads}", f"data.num_workers={workers}", f"data.max_frames_in_batch={frames // ranks}"]

def epoch_seconds(exp: Path) -> float | None:
    "Wall seconds from the 'parameters' line (training starts) to the first validation line of `exp/train.log`."
    t = lambda l: datetime.strptime(l[:19], "%Y-%m-%d %H:%M:%S")
    start = end = None
    for line in (exp / "train.log").read_text(encoding="utf-8").splitlines():
        if start is None and "parameters, vocabulary" in line: start = t(line)
        if start is not None and " valid epoch=1 " in line: end = t(line); break
    return (end - start).total_seconds() if start and end else None

def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(ROOT / "exp" / "tiny_demo" / "data"), help="the built-in corpus (train, dev)")
    ap.add_argument("--work", required=True, help="experiment dirs go here (<layout>.<rep>)")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--frames", type=int, default=6000, help="frames per update, all ranks together")
    ap.add_argument("--parse-only", action="store_true", help="only read the runs already in --work")
    ap.add_argument("--notes", default="")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "train_layout.json"))
    a = ap.parse_args()
    work, loads = Path(a.work), {}
    if not a.parse_only:
        work.mkdir(parents=True, exist_ok=True)
        for rep in range(1, a.reps + 1):
            for layout in LAYOUTS:
                exp = work / f"{layout}.{rep}"
                loads[exp.name] = os.getloadavg()[0]
                with open(work / f"{exp.name}.out", "w") as log:
                    rc = subprocess.run(command(layout, Path(a.data), exp, a.frames), stdout=log, stderr=subprocess.STDOUT).returncode
                if rc: raise SystemExit(f"{exp}: asr_nb_train exited with {rc} (see {work / (exp.name + '.out')})")
    rows = []
    for layout, (ranks, threads, workers) in LAYOUTS.items():
        secs = [s for e in sorted(work.glob(f"{layout}.*")) if e.is_dir() and (s := epoch_seconds(e)) is not None]
        if secs: rows.append(dict(layout=layout, ranks=ranks, threads_per_rank=threads, workers_per_rank=workers,
                                  epoch_s=secs, median_epoch_s=statistics.median(secs)))
    base = next((r["median_epoch_s"] for r in rows if r["layout"] == "p1t1"), None)
    for r in rows: r["speedup_vs_p1t1"] = round(base / r["median_epoch_s"], 2) if base else None
    res = dict(title="Training layout on this machine: one epoch of conf/tiny.yaml (1,600 utterances, 6,000 frames per update)",
               command="python bench/bench_train_layout.py --data DATA --work DIR", cpus=os.cpu_count(), rows=rows,
               load_1m_at_start=loads or None, notes=a.notes, date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    Path(a.out).write_text(json.dumps(res, indent=1) + "\n")
    for r in rows: print(r)

if __name__ == "__main__": main()
