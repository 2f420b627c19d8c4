"""The decoder's cached source keys/values (08_decoder) equal the plain path in every search that uses the decoder,
on random small models and on the trained tiny model (/work/main/exp/tiny_demo/exp, read-only; skipped without it).

The plain path is a decoder shim that gives every hypothesis its own copy of the encoder output and recomputes the
whole prefix at every step (no cache at all), as the step did before the cache.

Run: .venv/bin/python -m pytest -q tests/test_decode_cache.py
"""
from pathlib import Path
from types import SimpleNamespace
import pytest
import torch
from torch import nn

from asr_nb.core import ModelConfig, config_from_dict
from asr_nb.decode import attention_beam_search, attention_rescoring
from asr_nb.model import ASRModel

torch.set_num_threads(1)
TINY = Path('/work/main/exp/tiny_demo/exp')

class _Plain(nn.Module):
    "The uncached decoder: memory copied per hypothesis, keys/values projected and the prefix recomputed every step."
    def __init__(self, dec): super().__init__(); self.dec = dec
    def forward_one_step(self, ys, memory, memory_lens, cache=None):
        rep = torch.arange(memory.size(0)).repeat_interleave(ys.size(0) // memory.size(0))  # (N,) memory row per prefix
        return self.dec.forward_one_step(ys, memory[rep], memory_lens[rep], None)[0], None
    def select_cache(self, cache, idx, utt=None): return None
    def forward(self, memory, memory_lens, ys_in, ys_lens, utt=None):
        return self.dec(memory[utt], memory_lens[utt], ys_in, ys_lens)

def _plain(model):
    return SimpleNamespace(decoder=_Plain(model.decoder), sos_id=model.sos_id, eos_id=model.eos_id,
                           vocab_size=model.vocab_size, blank_id=model.blank_id)

def _same(a, b, eps=1e-4):
    "n-best lists of B utterances: identical tokens, scores within eps."
    assert [[h.tokens for h in hs] for hs in a] == [[h.tokens for h in hs] for hs in b]
    for ha, hb in zip(a, b):
        for x, y in zip(ha, hb):
            for k in ('score', 'att_score', 'ctc_score'): assert abs(getattr(x, k) - getattr(y, k)) < eps, (k, x, y)

def _check_all(model, enc, lens, beam=4):
    "Attention, joint CTC/attention (with utterances finishing at different steps) and rescoring: cached == plain."
    lp = model.ctc_log_probs(enc)
    plain = _plain(model)
    for kw in (dict(), dict(ctc_logp=lp, ctc_weight=0.3), dict(ctc_logp=lp, ctc_weight=0.5, nbest=3)):
        _same(attention_beam_search(model, enc, lens, beam, **kw), attention_beam_search(plain, enc, lens, beam, **kw))
    _same(attention_rescoring(model, enc, lens, lp, beam, nbest=beam), attention_rescoring(plain, enc, lens, lp, beam, nbest=beam))

def _step_close(dec, enc, lens, K=3, steps=6, seed=0):
    "Per-step log-probabilities of K random prefixes per utterance: memory once per utterance == a copy per prefix."
    g = torch.Generator().manual_seed(seed)
    B, V = enc.size(0), dec.vocab_size
    rep = torch.arange(B).repeat_interleave(K)
    ys = torch.cat([torch.full((B * K, 1), V - 1), torch.randint(1, V - 1, (B * K, steps), generator=g)], 1)
    c1 = c2 = None
    for l in range(1, steps + 1):
        a, c1 = dec.forward_one_step(ys[:, :l], enc, lens, c1)
        b, c2 = dec.forward_one_step(ys[:, :l], enc[rep], lens[rep], c2)
        assert (a - b).abs().max() <= 1e-5

def small_model(seed: int) -> ASRModel:
    "A 2-block d32 CTC/attention model (12 units, no dropout) in eval mode, initialised from `seed`; tests/test_decode_fast.py uses it too."
    torch.manual_seed(seed)
    cfg = config_from_dict(dict(d_model=32, attention_heads=4, linear_units=64, num_blocks=2, decoder_blocks=2,
                                decoder_linear_units=64, cnn_kernel=3, dropout=0.0, positional_dropout=0.0,
                                decoder_dropout=0.0), ModelConfig)
    return ASRModel(cfg, 12).eval()

@pytest.mark.parametrize("seed", [0, 1])
def test_cached_equals_plain_random(seed):
    model = small_model(seed)
    g = torch.Generator().manual_seed(seed)
    lens = torch.tensor([90, 61, 40])
    feats = torch.randn(3, 90, 80, generator=g)
    with torch.inference_mode():
        enc, el = model.encode(feats, lens)
        _step_close(model.decoder, enc, el)
        _check_all(model, enc, el)

@pytest.mark.skipif(not (TINY / 'config.yaml').exists(), reason="the trained tiny model is not there")
def test_cached_equals_plain_trained():
    from asr_nb.checkpoint import load_model
    from asr_nb.data import read_data_dir
    from asr_nb.features import load_audio, make_frontend
    model, tok, cfg = load_model(TINY)
    utts = read_data_dir(TINY.parent / 'data' / 'test')[:6]
    fe = make_frontend(cfg.features)
    feats, lens = fe.batch([load_audio(u.audio, sample_rate=cfg.features.sample_rate) for u in utts])
    with torch.inference_mode():
        enc, el = model.encode(feats, lens)
        _step_close(model.decoder, enc, el)
        _check_all(model, enc, el, beam=10)
