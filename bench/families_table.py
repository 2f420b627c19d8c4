"""README's model-families table, made from the result files the runs wrote (tests/test_docs.py checks README against it).

    python bench/families_table.py            # prints the markdown table
"""
from __future__ import annotations
import json, re
from pathlib import Path

R = Path(__file__).resolve().parents[1]/'bench'/'results'

def _load(name: str) -> dict | None:
    p = R/f'{name}.json'
    return json.loads(p.read_text()) if p.exists() else None

def _lm_row(d: dict | None) -> dict | None:
    "The C++ word-LM search's test row of a bench_lm_decode.py result."
    if not d: return None
    rows = [r for r in d['decode']['test'] if r['method'].startswith('ctc_beam_lm_fast') and 'no LM' not in r['method']]
    return rows[0] if rows else None

def rows() -> list[tuple[str, ...]]:
    "(family, config, method, test CER %, test WER %, training) rows; the CER is on the built-in held-out-voice test set."
    out = []
    t = _load('tiny_recipe')
    if t:
        by = {r['method']: r for r in t['rows']}
        train_min = float(re.search(r'train ([\d.]+)', t['notes']).group(1)) / 60
        for m in ('joint', 'ctc_greedy'):
            out.append(('ctc_attention (Conformer)', 'conf/tiny.yaml', m, f"{by[m]['cer_pct']:.2f}", f"{by[m]['wer_pct']:.2f}",
                        f"{train_min:.1f} min, 24 epochs"))
    lm = _lm_row(_load('lm_decode'))
    if lm: out.append(('ctc_attention (Conformer)', 'conf/tiny.yaml', 'ctc_beam_lm_fast + word 3-gram, beam 300',
                       f"{lm['cer']:.2f}", f"{lm['wer']:.2f}", 'same model'))
    st = _load('streaming')
    if st:   # the U2-style model: dynamic chunk training, streamed by Recognizer.stream
        by = {r['chunk_size']: r for r in st['cer_vs_chunk']}
        for c, what in ((0, 'rescoring, full context'), (16, 'rescoring, streamed in 640 ms chunks')):
            out.append(('ctc_attention (streaming Conformer)', 'conf/tiny_streaming.yaml', what, f"{by[c]['cer_pct']:.2f}",
                        f"{by[c]['wer_pct']:.2f}", '24 epochs (shared CPU)' if c == 0 else 'same model'))
    d = _load('deepspeech2_tiny')
    if d:
        r = d['rows'][0]
        out.append(('deepspeech2', 'conf/deepspeech2_tiny.yaml', r['method'], f"{r['cer_pct']:.2f}", f"{r['wer_pct']:.2f}",
                    f"{d['wall_s']['train'] / 60:.1f} min, {d['epochs']} epochs (shared CPU)"))
    lm = _lm_row(_load('lm_decode_deepspeech2'))
    if lm: out.append(('deepspeech2', 'conf/deepspeech2_tiny.yaml', 'ctc_beam_lm_fast + word 3-gram, beam 300',
                       f"{lm['cer']:.2f}", f"{lm['wer']:.2f}", 'same model'))
    p = _load('paraformer_tiny')
    if p:
        r, b = p['test']['paraformer'], p['budget']
        out.append(('paraformer', 'conf/paraformer_tiny.yaml ++model.loss.ctc_weight=0.3 ++model.paraformer.decoder_input=scaled_pos (the settings before the #13 review)', 'paraformer (one pass)', f"{r['cer']:.2f}", f"{r['wer']:.2f}",
                    (f"{b['minutes']:.1f} min, " if b.get('minutes') else '') + f"{b['epochs_done']} of {b['of_epochs']} epochs (shared CPU)"))
        v = p.get('variants', {}).get('ctc_predictor_tri_stage_s8')
        if v and v.get('test'):   # the CTC predictor (after Paraformer-v2) on the tiny recipe's tri_stage schedule
            r = v['test']['paraformer']
            out.append(('paraformer', 'conf/paraformer_tiny.yaml ++model.paraformer.predictor=ctc, conf/tiny.yaml\'s tri_stage schedule',
                        'paraformer (one pass)', f"{r['cer']:.2f}", f"{r['wer']:.2f}",
                        f"{v['train_minutes']:.1f} min, 24 epochs, 2 ranks (shared CPU)"))
    w = _load('wav2vec2_pretraining')
    if w:
        r = w['results']['pretrained']
        out.append(('wav2vec2_ctc', 'conf/wav2vec2_tiny.yaml', 'ctc_greedy', f"{r['cer']:.2f}", f"{r['wer']:.2f}",
                    f"{w['pretrain_steps']} pre-training + {w['finetune_steps']} fine-tuning updates on "
                    f"{w['labelled_utterances']} utterances: not converged"))
    return out

def table() -> str:
    head = "| family | config | method | CER % | WER % | training |\n| --- | --- | --- | ---: | ---: | --- |\n"
    return head + "".join("| " + " | ".join(r) + " |\n" for r in rows())

if __name__ == '__main__': print(table(), end='')
