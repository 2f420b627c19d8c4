"""sherpa-onnx deployment of a trained CTC model: CER of our ctc_greedy (PyTorch), of sherpa-onnx's OfflineRecognizer
on model.onnx and on model.int8.onnx, the files' sizes, and how many transcripts are identical to ours.

usage: python bench/sherpa_tiny.py --exp EXP_DIR --data TEST_DATA_DIR [--out bench/results/sherpa_tiny.json]
(the tiny recipe's model: --exp exp/tiny_demo/exp --data exp/tiny_demo/data/test; the export goes to a temp dir)."""
import argparse, json, tempfile, time
from pathlib import Path

import soundfile as sf

from asr_nb.data import read_data_dir
from asr_nb.export import Recognizer
from asr_nb.metrics import cer, wer
from asr_nb.sherpa import export_sherpa_ctc, sherpa_recognizer, sherpa_transcribe


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--exp', required=True); p.add_argument('--data', required=True)
    p.add_argument('--out', default=str(Path(__file__).parent/'results'/'sherpa_tiny.json'))
    a = p.parse_args()
    utts = read_data_dir(a.data)
    keys = [u.key for u in utts]; refs = [u.text for u in utts]
    reads = [sf.read(u.audio, dtype='float32') for u in utts]
    waves, rates = [w for w, _ in reads], {r for _, r in reads}
    assert len(rates) == 1, rates
    sr = rates.pop()
    rows = {}
    t = time.perf_counter(); ours = Recognizer.from_exp(a.exp).transcribe(waves, 'ctc_greedy', sample_rate=sr); dt = time.perf_counter() - t
    rows['asr_nb ctc_greedy (PyTorch)'] = dict(cer_pct=round(cer(refs, ours), 2), wer_pct=round(wer(refs, ours), 2), wall_s=round(dt, 2))
    with tempfile.TemporaryDirectory() as d:
        info = export_sherpa_ctc(a.exp, d)
        for name, int8, size in (('sherpa-onnx fp32', False, info['model_bytes']), ('sherpa-onnx int8', True, info['model_int8_bytes'])):
            t = time.perf_counter(); hyps = sherpa_transcribe(sherpa_recognizer(d, int8=int8), waves, sr); dt = time.perf_counter() - t
            rows[name] = dict(cer_pct=round(cer(refs, hyps), 2), wer_pct=round(wer(refs, hyps), 2), wall_s=round(dt, 2), model_mb=round(size / 2**20, 2),
                              same_text_as_ours=sum(h == o for h, o in zip(hyps, ours)), utts=len(keys))
    res = dict(title="sherpa-onnx deployment of the tiny recipe's Conformer (asr_nb_export --format sherpa-onnx), its test set",
               command=f'.venv/bin/python bench/sherpa_tiny.py --exp {a.exp} --data {a.data}',
               rows=[dict(engine=k, **v) for k, v in rows.items()],
               notes='CER/WER against the references; same_text_as_ours: transcripts identical to our ctc_greedy. '
                     'sherpa-onnx decodes all utterances in one batch (1 thread); wall times on a shared machine are rough. '
                     'int8: onnxruntime dynamic quantisation of the MatMul weights.')
    Path(a.out).write_text(json.dumps(res, indent=1) + '\n')
    for r in res['rows']: print(json.dumps(r))


if __name__ == '__main__': main()
