"""Turn a finished DeepSpeech2 tiny run (train -> average -> decode on the built-in corpus) into
bench/results/deepspeech2_tiny.json, the figure README's DeepSpeech2 row quotes.

    asr_nb_train --config conf/deepspeech2_tiny.yaml --train DATA/train --valid DATA/dev --exp EXP
    asr_nb_average --exp EXP --n 5 --by valid_loss
    asr_nb_decode --exp EXP --data DATA/test --method ctc_greedy --out EXP/decode_test
    python bench/deepspeech2_tiny_result.py EXP --decode EXP/decode_test --times train=1500,average=5,decode=20

`--times` are the measured wall times in seconds of the three commands (stage=seconds, comma-separated).
"""
from __future__ import annotations
import argparse, json, platform, re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

def last_valid(log: str) -> dict:
    "The last `valid ...` line of train.log as a dict of numbers."
    lines = [l for l in log.splitlines() if re.search(r"\bvalid epoch=", l)]
    vals = {k: float(v) for k, v in re.findall(r"(\w+)=([-\d.e+naif]+)", lines[-1])} if lines else {}
    return {k: v for k, v in vals.items() if v == v}                      # no NaN (acc of a CTC-only model): strict JSON

def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('exp', help='the experiment dir (config.yaml, train.log)')
    p.add_argument('--decode', required=True, help='the --out dir of asr_nb_decode (holds METHOD/result.json)')
    p.add_argument('--times', default='', help='wall seconds per stage, e.g. train=1500,average=5,decode=20')
    p.add_argument('--commands', default='', help='the exact commands, separated by " ; "')
    p.add_argument('--note', default='')
    p.add_argument('--out', default=str(ROOT/'bench'/'results'/'deepspeech2_tiny.json'))
    a = p.parse_args()
    exp, dec = Path(a.exp), Path(a.decode)
    rows = []
    for rj in sorted(dec.glob('result.json')) + sorted(dec.glob('*/result.json')):   # one method, or one subdir per method
        r = json.loads(rj.read_text())
        rows.append(dict(method=r.get('method', rj.parent.name), cer_pct=round(r['cer'], 2), wer_pct=round(r['wer'], 2),
                         rtf=round(r.get('rtf', 0.0), 4), utts=r['n']))
    import torch
    from asr_nb.core import load_config
    from asr_nb.model import build_model, count_parameters
    cfg = load_config(exp/'config.yaml')
    from asr_nb.tokenizer import load_tokenizer
    params = count_parameters(build_model(cfg, load_tokenizer(exp).vocab_size))['total']
    times = {k: float(v) for k, v in (kv.split('=') for kv in a.times.split(',') if kv)}
    ds = cfg.model.deepspeech2
    out = dict(title='DeepSpeech2 tiny on the built-in corpus (conf/deepspeech2_tiny.yaml), held-out-voice test set',
               model=f"{ds.conv_layers} conv ({ds.conv_channels} ch, {ds.conv_kernel}/{ds.conv_stride}) + {ds.rnn_layers} x "
                     f"{'bi' if ds.bidirectional else 'uni'}{ds.rnn_type.upper()}-{ds.rnn_hidden}, CTC, {params / 1e6:.2f} M parameters",
               commands=[c.strip() for c in a.commands.split(' ; ') if c.strip()], rows=rows, wall_s=times,
               last_valid=last_valid((exp/'train.log').read_text()), epochs=cfg.train.max_epochs,
               machine=f"{platform.processor() or platform.machine()}, torch CPU capability {torch.backends.cpu.get_cpu_capability()}",
               notes=a.note)
    Path(a.out).write_text(json.dumps(out, indent=1, ensure_ascii=False) + '\n')
    print(json.dumps(out, indent=1, ensure_ascii=False))

if __name__ == '__main__': main()
