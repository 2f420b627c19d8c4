"""Edit-distance speed: 200 pairs of 300-character strings scored with the pure-Python reference DP and with the
C path (rapidfuzz) of asr_nb.metrics; the counts must agree exactly.

    python bench/bench_metrics.py            # -> bench/results/metrics.json
"""
from __future__ import annotations
import json, os, platform, random, time
from pathlib import Path
import rapidfuzz
from asr_nb.metrics import EditStats, edit_stats, score_texts

ROOT = Path(__file__).resolve().parents[1]

def pairs(n: int = 200, length: int = 300, err: float = 0.1, seed: int = 0) -> list[tuple[str, str]]:
    "n references of `length` characters and hypotheses with about `err` of them substituted, deleted or inserted."
    rng, abc = random.Random(seed), 'abcdefghijklmnopqrstuvwxyz    '
    out = []
    for _ in range(n):
        r = [rng.choice(abc) for _ in range(length)]
        h = []
        for c in r:
            x = rng.random()
            if x < err / 3: h.append(rng.choice(abc))                       # substitution
            elif x < 2 * err / 3: pass                                      # deletion
            elif x < err: h += [c, rng.choice(abc)]                         # insertion
            else: h.append(c)
        out.append((''.join(r), ''.join(h)))
    return out

def main():
    ps, load = pairs(), os.getloadavg()
    rows = {}
    for name, fast in (('pure_python', False), ('rapidfuzz', True)):
        t = time.perf_counter()
        tot = sum((edit_stats(r, h, fast=fast) for r, h in ps), EditStats())
        rows[name] = dict(seconds=time.perf_counter() - t, sub=tot.sub, dele=tot.dele, ins=tot.ins, cer=tot.rate)
        print(f"{name:12s} {rows[name]['seconds']:.3f} s  CER {tot.rate:.3f}", flush=True)
    assert {k: v for k, v in rows['pure_python'].items() if k != 'seconds'} == \
           {k: v for k, v in rows['rapidfuzz'].items() if k != 'seconds'}, rows
    t = time.perf_counter()
    score_texts({str(i): r for i, (r, h) in enumerate(ps)}, {str(i): h for i, (r, h) in enumerate(ps)}).details()
    rows['score_texts_report'] = dict(seconds=time.perf_counter() - t)
    res = dict(title="Edit distance: 200 x 300-character CER", command="python bench/bench_metrics.py", rows=rows,
               speedup=rows['pure_python']['seconds'] / rows['rapidfuzz']['seconds'], loadavg_before=list(load),
               loadavg_after=list(os.getloadavg()), rapidfuzz=rapidfuzz.__version__, python=platform.python_version(),
               notes="Same S/D/I counts both ways (asserted). score_texts_report: counts plus the per-utterance alignment "
                     "report (fast_align) of asr_nb_score. Shared machine: numbers are contended (see loadavg).")
    out = ROOT / 'bench' / 'results' / 'metrics.json'
    out.write_text(json.dumps(res, indent=2) + '\n')
    print(f"wrote {out}")

if __name__ == "__main__":
    main()
