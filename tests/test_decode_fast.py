"""The decoding speed work (#15 part 6) changes no result.

1. The fast paths of the joint search (08_decoder `_fast_step`, 13_decode `_logsumexp0`) against their reference
   paths, switched off in the same process, on random small models: identical n-best tokens and scores, bit for bit.
2. The trained tiny model (/work/main/exp/tiny_demo/exp, read-only; skipped without it or when its weights changed):
   the texts `decode_data` gives for every method at beams 10 and 5 on 24 test utterances equal the texts main
   decoded before (tests/data/decode_tiny_golden.json; remade with main's code at 1f11dbd, before the fast fbank,
   by `python tests/test_decode_fast.py --make-golden`: session 6's file was never committed).

Run: .venv/bin/python -m pytest -q tests/test_decode_fast.py
"""
import hashlib, json
from dataclasses import replace
from pathlib import Path
import pytest
import torch

import asr_nb.decode as D
import asr_nb.decoder as De
from test_decode_cache import small_model

torch.set_num_threads(1)
TINY = Path('/work/main/exp/tiny_demo/exp')
GOLDEN = Path(__file__).parent / 'data' / 'decode_tiny_golden.json'

def _search_all(model, enc, lens, beam):
    lp = model.ctc_log_probs(enc)
    return [D.attention_beam_search(model, enc, lens, beam, **kw)
            for kw in (dict(), dict(ctc_logp=lp, ctc_weight=0.3), dict(ctc_logp=lp, ctc_weight=0.5, nbest=3))]

@pytest.mark.parametrize("seed", [0, 1])
def test_fast_paths_equal_reference(seed, monkeypatch):
    model = small_model(seed)
    g = torch.Generator().manual_seed(seed)
    lens = torch.tensor([90, 61, 40])
    with torch.inference_mode():
        enc, el = model.encode(torch.randn(3, 90, 80, generator=g), lens)
        fast = _search_all(model, enc, el, 4)
        monkeypatch.setattr(De, '_fast_ok', lambda *a: False)                        # the general layer step
        monkeypatch.setattr(D, '_logsumexp0', lambda x: torch.logsumexp(x, 0))     # torch's logsumexp
        ref = _search_all(model, enc, el, 4)
    for a, b in zip(fast, ref):
        assert [[(h.tokens, h.score, h.att_score, h.ctc_score) for h in hs] for hs in a] == \
               [[(h.tokens, h.score, h.att_score, h.ctc_score) for h in hs] for hs in b]

def _golden():
    if not (TINY / 'model_avg.pt').exists() or not GOLDEN.exists(): return None
    g = json.loads(GOLDEN.read_text())
    return g if hashlib.sha256((TINY / 'model_avg.pt').read_bytes()).hexdigest() == g['model_sha256'] else None

@pytest.mark.skipif(_golden() is None, reason="the trained tiny model is not there, or it was retrained")
def test_texts_unchanged_trained():
    from asr_nb.data import read_data_dir
    from asr_nb.export import Recognizer
    g = _golden()
    rec = Recognizer.from_exp(TINY)
    utts = read_data_dir(TINY.parent / 'data' / 'test')[:g['utts']]
    for key, want in g['texts'].items():
        assert _texts(rec, utts, key, g['batch_size']) == want, key

def _texts(rec, utts, key, batch_size):
    method, beam = key.split('@')
    rec.decode_cfg = replace(rec.decode_cfg, beam=int(beam))
    return D.decode_data(rec, utts, [method], batch_size=batch_size)[method]['hyps']

if __name__ == '__main__':     # python tests/test_decode_fast.py --make-golden: write GOLDEN from this code and TINY
    import sys
    from asr_nb.data import read_data_dir
    from asr_nb.export import Recognizer
    assert sys.argv[1:] == ['--make-golden'], __doc__
    rec, utts = Recognizer.from_exp(TINY), read_data_dir(TINY.parent / 'data' / 'test')[:24]
    keys = [f'{m}@{b}' for b in (10, 5) for m in ('ctc_greedy', 'ctc_prefix_beam', 'attention', 'joint', 'rescoring')]
    g = dict(model_sha256=hashlib.sha256((TINY / 'model_avg.pt').read_bytes()).hexdigest(), utts=len(utts), batch_size=8,
             asr_nb=D.__file__, texts={k: _texts(rec, utts, k, 8) for k in keys})
    GOLDEN.parent.mkdir(exist_ok=True); GOLDEN.write_text(json.dumps(g, indent=1) + '\n'); print('wrote', GOLDEN)
