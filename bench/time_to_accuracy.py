"""Time to accuracy of tiny-recipe runs: validation CER against wall time, from the runs' own train.log files.

The headline users care about is how long until the model is good. For every run named on the command line
(`NAME=EXP_DIR`), this reads `EXP_DIR/train.log` (its first line is the start of the run: tokenizer, CMVN and the
autotune timing all count) and each `valid epoch=... cer=...` line, and the test-set results of
`asr_nb_decode --out EXP_DIR/decode_test` (`decode_test/<method>/result.json`, the averaged model). It writes
`bench/results/time_to_accuracy.json` (the curves, the time each run first reached a given validation CER, the
training wall time and the test CERs, with the load average where the run logged it; with `--ref-text`, each run's
test CER minus the reference run's with its paired-bootstrap 95 % interval, so "the same CER" is judged against
the test set's noise) and a small picture
`bench/results/time_to_accuracy.png` (CER against minutes).

    python bench/time_to_accuracy.py before=exp/tiny_demo/exp after=/path/to/exp --target-cer 10 --ref-text exp/tiny_demo/data/test/text
    python bench/time_to_accuracy.py --table        # README's table from the result file
"""
from __future__ import annotations
import argparse, json, re, sys
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
_STAMP = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) ")
_VALID = re.compile(r"valid epoch=(\d+) step=(\d+) .*?cer=([0-9.]+)")
_CONFIG = re.compile(r"(\d+) rank\(s\)")

def _t(line: str) -> datetime | None:
    m = _STAMP.match(line)
    return datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S") if m else None

def fail(msg: str):
    "One error line on stderr, exit status 2 (checked before anything is written)."
    print(f"time_to_accuracy: error: {msg}", file=sys.stderr); raise SystemExit(2)

def read_run(exp: Path) -> dict:
    "The validation curve of one run: minutes since the log's first line, epoch, step, CER; and the training wall time."
    if not (exp / "train.log").is_file(): fail(f"{exp / 'train.log'}: not found (NAME=EXP_DIR names a training's exp dir)")
    lines = (exp / "train.log").read_text(encoding="utf-8").splitlines()
    stamped = [(t, l) for l in lines if (t := _t(l)) is not None]
    if not stamped: fail(f"{exp/'train.log'}: no time-stamped lines")
    t0, curve, end, ranks = stamped[0][0], [], None, 1
    for t, l in stamped:
        if (m := _VALID.search(l)): curve.append(dict(minutes=round((t - t0).total_seconds() / 60, 2), epoch=int(m.group(1)),
                                                     step=int(m.group(2)), valid_cer=float(m.group(3))))
        if "finished: step" in l: end = t
        if (m := _CONFIG.search(l)): ranks = int(m.group(1))
    test = {}
    for res in sorted((exp / "decode_test").glob("*/result.json")):
        r = json.loads(res.read_text())
        test[r["method"]] = round(r["cer"], 2)
    return dict(exp=str(exp), ranks=ranks, train_minutes=round((end - t0).total_seconds() / 60, 2) if end else None,
                curve=curve, test_cer=test)

def _vs_reference(ref_text: Path, ref_exp: Path, exp: Path) -> dict:
    "Per method decoded in both runs: this run's test CER minus the reference run's, with its paired-bootstrap 95 % interval."
    sys.path.insert(0, str(ROOT))
    from asr_nb.metrics import bootstrap_diff, read_text
    refs, out = read_text(ref_text), {}
    for hyp in sorted((exp / "decode_test").glob("*/text")):
        base = ref_exp / "decode_test" / hyp.parent.name / "text"
        if base.exists():
            d = bootstrap_diff(refs, read_text(base), read_text(hyp))
            out[hyp.parent.name] = dict(diff=round(d.diff, 2), low=round(d.low, 2), high=round(d.high, 2), beyond_noise=d.significant)
    return out

def first_below(curve: list[dict], cer: float) -> float | None:
    "Minutes until the validation CER first reached `cer` or better (None if never)."
    return next((p["minutes"] for p in curve if p["valid_cer"] <= cer), None)

def plot(runs: dict, out: Path):
    import matplotlib; matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(5.5, 3.2), dpi=90)
    for name, r in runs.items():
        ax.plot([p["minutes"] for p in r["curve"]], [p["valid_cer"] for p in r["curve"]], marker=".", label=name)
    ax.set_xlabel("wall time since the run started (min)"); ax.set_ylabel("validation CER (%)"); ax.set_ylim(0, 60)
    ax.grid(alpha=.3); ax.legend(fontsize=8); fig.tight_layout(); fig.savefig(out); plt.close(fig)

def table(res: dict) -> str:
    "README's table: per run, training wall time, minutes to the target validation CER, speed-up, test CER."
    t = res["target_valid_cer"]
    ci = any("test_vs_reference" in r for r in res["rows"])
    out = [f"| run | ranks | training min | min to valid CER <= {t:g} % | speed-up | test CER % greedy / joint |"
           + (" joint minus the reference's, 95 % interval |" if ci else ""),
           "| --- | ---: | ---: | ---: | ---: | ---: |" + (" ---: |" if ci else "")]
    for r in res["rows"]:
        j = r.get("test_vs_reference", {}).get("joint")
        out.append(f"| {r['run']} | {r['ranks']} | {r['train_minutes']:.1f} | {r['minutes_to_target']:.1f} | {r['speedup_to_target']:.2f}x | "
                   f"{r.get('test_ctc_greedy', float('nan')):.2f} / {r.get('test_joint', float('nan')):.2f} |"
                   + ((f" {j['diff']:+.2f} [{j['low']:+.2f}, {j['high']:+.2f}] |" if j else " (reference) |") if ci else ""))
    return "\n".join(out)

def main():
    if sys.argv[1:] == ["--table"]:     # the table README shows, from the result file
        print(table(json.loads((ROOT / "bench" / "results" / "time_to_accuracy.json").read_text()))); return
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", help="NAME=EXP_DIR, the first is the reference")
    ap.add_argument("--target-cer", type=float, default=10.0, help="validation CER whose first arrival is timed")
    ap.add_argument("--notes", default="", help="free text: the machine's load, what differs between the runs")
    ap.add_argument("--ref-text", default=None, help="the test set's reference text: adds each run's CER difference to the "
                    "reference run with its paired-bootstrap interval (asr_nb.metrics.bootstrap_diff)")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "time_to_accuracy.json"))
    a = ap.parse_args()
    if a.ref_text and not Path(a.ref_text).is_file(): fail(f"--ref-text {a.ref_text}: not found")
    runs = {}
    for spec in a.runs:
        name, _, exp = spec.partition("=")
        if not exp: fail(f"{spec}: expected NAME=EXP_DIR")
        runs[name] = read_run(Path(exp))
    ref = next(iter(runs))
    rows = []
    for name, r in runs.items():
        t = first_below(r["curve"], a.target_cer)
        t_ref = first_below(runs[ref]["curve"], a.target_cer)
        rows.append(dict(run=name, ranks=r["ranks"], epochs=r["curve"][-1]["epoch"] if r["curve"] else 0,
                         train_minutes=r["train_minutes"], minutes_to_target=t,
                         speedup_to_target=round(t_ref / t, 2) if t and t_ref else None,
                         final_valid_cer=r["curve"][-1]["valid_cer"] if r["curve"] else None,
                         **{f"test_{k}": v for k, v in r["test_cer"].items()}))
        if a.ref_text and name != ref: rows[-1]["test_vs_reference"] = _vs_reference(Path(a.ref_text), Path(runs[ref]["exp"]), Path(r["exp"]))
    out = Path(a.out)
    res = dict(title="Time to accuracy: the tiny recipe's validation CER against wall time (train.log), test CER of the averaged model",
               command="python bench/time_to_accuracy.py " + " ".join(a.runs) + f" --target-cer {a.target_cer:g}"
                       + (f" --ref-text {a.ref_text}" if a.ref_text else ""),
               target_valid_cer=a.target_cer, reference=ref, rows=rows, notes=a.notes,
               curves={n: r["curve"] for n, r in runs.items()}, exps={n: r["exp"] for n, r in runs.items()})
    out.write_text(json.dumps(res, indent=1) + "\n")
    plot(runs, out.with_suffix(".png"))
    for r in rows: print(r)

if __name__ == "__main__": main()
