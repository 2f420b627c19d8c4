"""What augmentation buys (#19): tiny-recipe models trained at the same budget, one with conf/tiny.yaml and others with
an augmentation pipeline (conf/tiny_augment_light.yaml, conf/tiny_augment_channel.yaml, ...), decoded on the clean
held-out-voice test split and on the new-conditions split (`asr_nb_augment_data conditions`: the same utterances through
unseen simulated rooms, noise and a telephone band). Each augmented run's CER difference to the run without carries
its paired-bootstrap 95 % interval (`asr_nb.metrics.bootstrap_diff`).

    asr_nb_demo --workdir W_AUG --config conf/tiny_augment_channel.yaml   # the baseline: `make demo` (exp/tiny_demo)
    asr_nb_augment_data conditions --data exp/tiny_demo/data/test --out COND
    python bench/augment_effect.py --base exp/tiny_demo/exp --aug channel=W_AUG/exp --clean exp/tiny_demo/data/test --cond COND
    python bench/augment_effect.py --table            # prints the markdown table README and 05_augment show
"""
from __future__ import annotations
import argparse, json, os, platform, re, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT/'bench'/'results'/'augment_effect.json'
METHODS = ('ctc_greedy', 'joint', 'rescoring')

def fail(msg: str):
    "One error line on stderr, exit status 2 (checked before anything is decoded or written)."
    print(f"augment_effect: error: {msg}", file=sys.stderr); raise SystemExit(2)

def _budget(exp: Path) -> dict:
    "Epochs, updates and training wall time of a finished run, read from its train.log."
    log = (exp/'train.log').read_text(errors='replace').splitlines()
    fin = [l for l in log if 'asr_nb.train: finished:' in l]
    if not fin: fail(f"{exp}/train.log: training has not finished")
    m = re.search(r'step (\d+), (?:epoch (\d+)|(\d+) full epoch)', fin[-1])  # the line's wording changed once
    stamps = [l[:19] for l in log if ' asr_nb.train: ' in l]
    t = [time.mktime(time.strptime(s, '%Y-%m-%d %H:%M:%S')) for s in (stamps[0], stamps[-1])]
    return dict(updates=int(m.group(1)), epochs=int(m.group(2) or m.group(3)), train_minutes=round((t[1] - t[0]) / 60, 1))

def _runs(a) -> list[tuple[str, str]]:
    "(name, exp dir) per model: 'without' = --base, then each --aug NAME=EXP (or a bare EXP, named 'with')."
    runs = [('without', a.base)]
    for s in a.aug: runs.append(tuple(s.split('=', 1)) if '=' in s else ('with', s))
    return runs

def measure(a) -> dict:
    import torch
    from asr_nb.data import decode_utterances
    from asr_nb.decode import decode_data
    from asr_nb.export import Recognizer
    from asr_nb.metrics import bootstrap_diff
    torch.set_num_threads(1)
    splits = {'clean held-out voices': a.clean, 'new conditions': a.cond}
    runs = _runs(a)
    res = dict(command='python bench/augment_effect.py ' + ' '.join([f'--base {a.base}'] + [f'--aug {s}' for s in a.aug] +
                                                                    [f'--clean {a.clean}', f'--cond {a.cond}']),
               runs=[n for n, _ in runs], configs={}, budget={}, cer={}, wer={}, machine=platform.processor() or platform.machine(),
               loadavg_1m_start=round(os.getloadavg()[0], 2), date=time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime()))
    hyps, refs = {}, {split: {u.key: u.text for u in decode_utterances(data)} for split, data in splits.items()}
    for name, exp in runs:
        res['budget'][name] = _budget(Path(exp))
        res['configs'][name] = _augment_summary(Path(exp))
        rec = Recognizer.from_exp(exp, device='cpu')
        for split, data in splits.items():
            out = decode_data(rec, decode_utterances(data), METHODS, name=str(exp))
            for m, r in out.items():
                res['cer'].setdefault(split, {}).setdefault(m, {})[name] = round(r['cer'], 2)
                res['wer'].setdefault(split, {}).setdefault(m, {})[name] = round(r['wer'], 2)
                hyps[name, split, m] = r['hyps']
    # each augmented run against 'without': the paired bootstrap's 95 % interval of the CER difference (points)
    res['cer_diff_vs_without'] = {split: {m: {name: _interval(bootstrap_diff(refs[split], hyps['without', split, m], hyps[name, split, m]))
                                              for name, _ in runs if name != 'without'} for m in METHODS} for split in splits}
    res['loadavg_1m_end'] = round(os.getloadavg()[0], 2)
    return res

def _interval(d) -> dict:
    "A `BootstrapDiff` as JSON: the difference, its interval and the probability that the augmented run is better."
    return dict(diff=round(d.diff, 2), low=round(d.low, 2), high=round(d.high, 2), level=d.level,
                p_better=round(d.p_b_better, 3), n_utts=d.n_utts, n_resamples=d.n_resamples, beyond_noise=d.significant)

def _augment_summary(exp: Path) -> str:
    "The run's augmentation steps with their probabilities, from its config.yaml ('none' without augmentation)."
    from asr_nb.core import load_config
    aug = load_config(exp/'config.yaml').augment
    steps = [f"{k} {getattr(aug, k).prob:g}" for k in vars(aug) if hasattr(getattr(aug, k), 'prob') and getattr(aug, k).prob > 0]
    return ', '.join(steps) or 'none'

def table(res: dict) -> str:
    "Markdown: one row per split and method, CER of each run and each augmented run's ratio to 'without'."
    runs, b = res.get('runs', ['without', 'with']), res['budget']
    aug = [r for r in runs if r != 'without']
    ci = res.get('cer_diff_vs_without')   # the paired bootstrap (measurements from session 8 on)
    lines = ['| test split | method | ' + ' | '.join(f'CER % {r}' for r in runs) + ' | ' +
             ' | '.join(f'{r} / without' for r in aug) + ''.join(f' | {r} - without, 95 % interval' for r in aug if ci) + ' |',
             '| --- | --- |' + ' ---: |' * (len(runs) + len(aug) * (2 if ci else 1))]
    for split, by in res['cer'].items():
        for m, d in by.items():
            lines.append(f"| {split} | {m} | " + ' | '.join(f"{d[r]:.2f}" for r in runs) + ' | ' +
                         ' | '.join(f"{d[r] / d['without']:.2f}x" for r in aug) +
                         ''.join(f" | {c['diff']:+.2f} [{c['low']:+.2f}, {c['high']:+.2f}]" for c in
                                 (ci[split][m][r] for r in aug if ci)) + ' |')
    lines.append('\n' + '; '.join(f"{r}: {res['configs'][r]}" for r in runs if 'configs' in res and r in res['configs']))
    lines.append(f"Same budget: {b['without']['epochs']} epochs / {b['without']['updates']} updates each (training wall time " +
                 ', '.join(f"{r} {b[r]['train_minutes']}" for r in runs) + ' min; the machine\'s load differed, see the file).')
    return '\n'.join(lines)

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--base', help='exp dir trained with conf/tiny.yaml')
    p.add_argument('--aug', action='append', default=[], metavar='[NAME=]EXP',
                   help='exp dir trained with augmentation (repeatable; NAME labels its column, default "with")')
    p.add_argument('--clean', help='clean held-out-voice test data')
    p.add_argument('--cond', help='the new-conditions test data')
    p.add_argument('--out', default=str(OUT))
    p.add_argument('--table', action='store_true', help='print the markdown table of --out and exit')
    a = p.parse_args()
    if a.table:
        print(table(json.loads(Path(a.out).read_text()))); return
    if not all((a.base, a.aug, a.clean, a.cond)): p.error('--base, --aug, --clean and --cond are required')
    for name, exp in _runs(a):              # every input checked before the first (slow) decode
        if not (Path(exp)/'train.log').is_file(): fail(f"{name}: {exp}/train.log not found (not a training's exp dir)")
        _budget(Path(exp))
    for opt, d in (('--clean', a.clean), ('--cond', a.cond)):
        if not Path(d).exists(): fail(f"{opt} {d}: not found")
    res = measure(a)
    Path(a.out).write_text(json.dumps(res, indent=1) + '\n')
    print(table(res))

if __name__ == '__main__': main()
