"""Turn a finished `asr_nb_demo` run (WORKDIR/results.json) into bench/results/tiny_recipe.json, the file README's
main-job table is checked against (tests/test_docs.py).

    python bench/tiny_recipe_result.py exp/tiny_demo --note "fresh clone, quiet 2-core machine"
"""
from __future__ import annotations
import argparse, json, platform
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('workdir', help='the demo work dir (holds results.json and exp/config.yaml)')
    p.add_argument('--note', default='', help='how and where it was run')
    p.add_argument('--out', default=str(ROOT/'bench'/'results'/'tiny_recipe.json'))
    a = p.parse_args()
    wd = Path(a.workdir)
    res = json.loads((wd/'results.json').read_text())
    rows = [dict(method=m, cer_pct=round(r['cer'], 2), wer_pct=round(r['wer'], 2), rtf=round(r['rtf'], 4), utts=r['n'],
                 audio_s=round(r.get('audio_seconds', 0.0), 1)) for m, r in res['results'].items()]
    import torch
    from asr_nb.core import load_config
    from asr_nb.device import amp_dtype
    cfg = load_config(wd/'exp'/'config.yaml')
    t = res['timings']
    notes = (f"Stage wall times (s): {', '.join(f'{k} {v:.1f}' for k, v in t.items())}. amp {cfg.train.amp} "
             f"(resolved on this CPU: {amp_dtype(torch.device('cpu'), cfg.train.amp)}), {cfg.train.max_epochs} epochs, "
             f"beam {cfg.decode.beam}. Machine: {platform.processor() or platform.machine()}, "
             f"torch CPU capability {torch.backends.cpu.get_cpu_capability()}. {a.note}")
    out = dict(title='The tiny recipe (the main job): built-in corpus, conf/tiny.yaml, held-out-voice test set',
               command=f'make demo   (= .venv/bin/asr_nb_demo; then python bench/tiny_recipe_result.py {wd})',
               rows=rows, notes=notes.strip())
    Path(a.out).write_text(json.dumps(out, indent=1) + '\n')
    print(json.dumps(out, indent=1))

if __name__ == '__main__': main()
