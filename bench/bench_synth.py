"""Speed of the built-in espeak-ng corpus generator (asr_nb.data.synth_corpus).

Usage: python bench/bench_synth.py [--n 1000] [--jobs 2] [--runs 2] [--out bench/results/synth.json]

Synthesises `--n` training utterances (plus 0 dev / 0 test) into a temporary directory, `--runs` times,
and reports the median wall time, utterances per second and x real time (audio seconds per second).
"""
import argparse, json, statistics, tempfile, time
from pathlib import Path
import soundfile as sf
from asr_nb.data import read_data_dir, synth_corpus

ROOT = Path(__file__).resolve().parent

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--n", type=int, default=1000, help="utterances to synthesise")
    ap.add_argument("--jobs", type=int, default=2, help="parallel espeak-ng pipelines")
    ap.add_argument("--runs", type=int, default=2, help="repetitions (median reported)")
    ap.add_argument("--out", default=str(ROOT / "results" / "synth.json"))
    a = ap.parse_args()
    times, audio_s = [], 0.0
    for r in range(a.runs):
        with tempfile.TemporaryDirectory() as d:
            t = time.perf_counter()
            dirs = synth_corpus(Path(d) / "c", n_train=a.n, n_dev=1, n_test=1, seed=r, jobs=a.jobs)
            times.append(time.perf_counter() - t)
            audio_s = sum(sf.info(u.audio).duration for u in read_data_dir(dirs["train"]))
    med = statistics.median(times)
    row = {"utterances": a.n, "jobs": a.jobs, "audio_h": round(audio_s / 3600, 3), "median_s": round(med, 2),
           "utts_per_s": round(a.n / med, 1), "x_real_time": round(audio_s / med, 1), "runs": a.runs}
    out = {"title": "Built-in corpus synthesis (espeak-ng -> sox -> noise -> 16-bit wav)",
           "command": f"python bench/bench_synth.py --n {a.n} --jobs {a.jobs}", "rows": [row]}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(out, indent=2))
    print(row)

if __name__ == "__main__":
    main()
