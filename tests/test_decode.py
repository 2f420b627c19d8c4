"""Decoding, scoring and LM tests that are too heavy or too broad for the notebooks (13_decode, 12_metrics, 14_lm).

Run: .venv/bin/python -m pytest -q tests/test_decode.py
"""
import itertools, math, random
from pathlib import Path
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F

from asr_nb.core import DecodeConfig, FeatureConfig, ModelConfig, config_from_dict
from asr_nb.data import Utterance
from asr_nb.decode import (SEARCHES, methods_for, CTCPrefixScorer, Hypothesis, attention_beam_search, attention_rescoring,
                           greedy_hypotheses, ctc_prefix_beam_search, decode_batch, decode_data, _lae)
from asr_nb.lm import LMConfig, LSTMLM, NgramLM, build_arpa, load_lm, save_lm, train_lm
from asr_nb.metrics import align, cer, error_rate, score_files, wer, write_text
from asr_nb.model import ASRModel
from asr_nb.tokenizer import CharTokenizer

HYBRID = methods_for({'ctc', 'decoder'})   # every search a ctc_attention model runs (other families add their own)

torch.set_num_threads(1)
V = 10

@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    cfg = config_from_dict(dict(d_model=32, attention_heads=2, linear_units=64, num_blocks=2, decoder_blocks=2,
                      decoder_linear_units=64, cnn_kernel=3, dropout=0.0, positional_dropout=0.0, decoder_dropout=0.0), ModelConfig)
    return ASRModel(cfg, V).eval()

@pytest.fixture(scope="module")
def batch():
    g = torch.Generator().manual_seed(1)
    lens = torch.tensor([70, 52, 41, 30])
    feats = torch.randn(4, 70, 80, generator=g)
    for b, l in enumerate(lens): feats[b, l:] = 0
    return feats, lens

@pytest.fixture(scope="module")
def lms(tmp_path_factory):
    "A trained-a-little LSTM LM and a char 3-gram ARPA LM over the same 10 units."
    units = ['<blank>', '<unk>', 'a', 'b', 'c', 'd', 'e', 'f', '<space>', '<sos/eos>']
    tok = CharTokenizer(units)
    rng = random.Random(0)
    texts = [' '.join(''.join(rng.choice('abcdef') for _ in range(rng.randint(1, 4))) for _ in range(rng.randint(1, 4)))
             for _ in range(60)]
    lstm, _ = train_lm(texts, texts[:10], tok, LMConfig(embed_dim=16, hidden_dim=24, num_layers=1, epochs=2,
                                                        batch_size=16, dropout=0.0))
    d = tmp_path_factory.mktemp("lm")
    build_arpa([tok.tokenize(t) for t in texts], d / "c3.arpa", order=3, vocab=units[2:-1])
    return tok, lstm, NgramLM(d / "c3.arpa", units)

def enc_of(model, feats, lens):
    with torch.no_grad():
        enc, el = model.encode(feats, lens)
        return enc, el, model.ctc_log_probs(enc)

# ---------------------------------------------------------------- metrics
def test_scoring_equals_jiwer_on_random_strings():
    jiwer = pytest.importorskip("jiwer")
    rng = random.Random(3)
    words = ['a', 'b', 'ab', 'ba', 'c', 'abc']
    refs = [' '.join(rng.choice(words) for _ in range(rng.randint(1, 10))) for _ in range(300)]
    hyps = [' '.join(rng.choice(words) for _ in range(rng.randint(1, 10))) for _ in range(300)]
    o = jiwer.process_words(refs, hyps)
    st = error_rate(refs, hyps, 'word')
    assert st.errors == o.substitutions + o.deletions + o.insertions
    assert math.isclose(wer(refs, hyps), 100 * o.wer, rel_tol=1e-12)
    assert math.isclose(cer(refs, hyps), 100 * jiwer.cer(refs, hyps), rel_tol=1e-12)
    for r, h in zip(refs[:50], hyps[:50]):   # the alignment is a valid edit script of minimal cost
        ali = align(r.split(), h.split())
        assert [x.hyp for x in ali if x.op != 'D'] == h.split() and [x.ref for x in ali if x.op != 'I'] == r.split()
        assert sum(x.op != 'C' for x in ali) == jiwer.process_words(r, h).substitutions + \
            jiwer.process_words(r, h).deletions + jiwer.process_words(r, h).insertions

def test_score_files_chinese_and_missing(tmp_path):
    write_text({'a': '今天 天气 很好', 'b': '你好', 'c': '再见'}, tmp_path / 'ref')
    write_text({'a': '今天天汽很好', 'b': '你好吗'}, tmp_path / 'hyp')
    rep = score_files(tmp_path / 'ref', tmp_path / 'hyp')
    assert rep.missing == ['c']
    t = rep.total   # spaces ignored for Chinese: 1 sub (a) + 1 ins (b) + 2 del (c, missing)
    assert (t.ref_len, t.sub, t.ins, t.dele) == (10, 1, 1, 2)
    assert rep.summary().splitlines()[0] == '%CER 40.00 [ 4 / 10, 1 ins, 2 del, 1 sub ]'
    assert 'REF:' in rep.details() and '(missing hypothesis)' in rep.details()

# ---------------------------------------------------------------- CTC
def test_prefix_beam_equals_brute_force_longer():
    torch.manual_seed(5)
    Vs, T = 4, 7
    lp = (torch.randn(1, T, Vs) * 2).double().log_softmax(-1)
    exact = {}
    for path in itertools.product(range(Vs - 1), repeat=T):   # <sos/eos> (Vs-1) is never a label
        lab = tuple(c for j, c in enumerate(path) if c != 0 and (j == 0 or path[j - 1] != c))
        exact[lab] = _lae(exact.get(lab, -math.inf), sum(lp[0, t, c].item() for t, c in enumerate(path)))
    hy = ctc_prefix_beam_search(lp, torch.tensor([T]), beam=10_000, token_beam=Vs)[0]
    assert {tuple(h.tokens) for h in hy} == set(exact)
    for h in hy: assert math.isclose(h.ctc_score, exact[tuple(h.tokens)], abs_tol=1e-9)
    assert tuple(hy[0].tokens) == max(exact, key=exact.get)

def test_peaky_posteriors_are_recovered(model):
    seq, T = [2, 3, 3, 5, 4], 20
    path = [0, 2, 2, 0, 3, 0, 0, 3, 3, 0, 5, 0, 4, 4, 0, 0, 0, 0, 0, 0]
    lp = torch.full((1, T, V), -12.0)
    lp[0, torch.arange(T), torch.tensor(path)] = 0.0
    lp = lp.log_softmax(-1)
    assert greedy_hypotheses(lp, torch.tensor([T]))[0][0].tokens == seq
    assert ctc_prefix_beam_search(lp, torch.tensor([T]), beam=5)[0][0].tokens == seq
    enc = torch.zeros(1, T, 32)
    j = attention_beam_search(model, enc, torch.tensor([T]), beam=5, ctc_logp=lp, ctc_weight=1.0)
    assert j[0][0].tokens == seq

def test_batched_equals_per_utterance_all_methods(model, batch, lms):
    feats, lens = batch
    _, lstm, ngram = lms
    for method in HYBRID:
        for lm in ((None, lstm, ngram) if SEARCHES[method].lm_kind == 'unit' else (None,)):  # word LMs: tests/test_lm.py
            cfg = DecodeConfig(method=method, beam=4, nbest=3, ctc_weight=0.4, lm_weight=0.3 if lm else 0.0)
            full = decode_batch(model, feats, lens, cfg, lm)
            for b in range(4):
                one = decode_batch(model, feats[b:b + 1, :lens[b]], lens[b:b + 1], cfg, lm)[0]
                assert [h.tokens for h in one] == [h.tokens for h in full[b]], (method, lm, b)
                assert all(math.isclose(x.score, y.score, abs_tol=2e-3) for x, y in zip(one, full[b]))

def test_lm_weight_zero_changes_nothing(model, batch, lms):
    feats, lens = batch
    _, lstm, ngram = lms
    for method in ('ctc_prefix_beam', 'attention', 'joint', 'rescoring'):
        cfg = DecodeConfig(method=method, beam=4, nbest=4, lm_weight=0.0)
        ref = decode_batch(model, feats, lens, cfg)
        for lm in (lstm, ngram):
            got = decode_batch(model, feats, lens, cfg, lm)
            assert [[(h.tokens, h.score) for h in r] for r in ref] == [[(h.tokens, h.score) for h in r] for r in got]

def test_lm_scores_are_the_lm_sentence_probabilities(model, batch, lms):
    feats, lens = batch
    tok, lstm, ngram = lms
    enc, el, clp = enc_of(model, feats, lens)
    with torch.no_grad():
        for lm in (lstm, ngram):
            for hs in attention_beam_search(model, enc, el, 4, clp, 0.3, lm, 0.5, nbest=3) + \
                      ctc_prefix_beam_search(clp, el, 4, 3, lm=lm, lm_weight=0.5):
                for h in hs:
                    seq = [V - 1, *h.tokens, V - 1]
                    st, tot = lm.init_state(1), 0.0
                    for a, b in zip(seq[:-1], seq[1:]):
                        lp, st = lm.score(torch.tensor([a]), st); tot += lp[0, b].item()
                    assert math.isclose(h.lm_score, tot, abs_tol=1e-3)
            for hs in ctc_prefix_beam_search(clp, el, 4, 3, lm=ngram, lm_weight=0.5):
                for h in hs: assert math.isclose(h.lm_score, ngram.sentence_log10(h.tokens) * math.log(10), abs_tol=1e-3)

class _PreferLM:
    "Bigram-free test LM: after <sos/eos> it strongly prefers `fav`; otherwise uniform."
    def __init__(self, fav): self.fav = fav
    def init_state(self, n): return torch.zeros(n, dtype=torch.long)
    def score(self, last, state):
        lp = torch.full((last.numel(), V), -math.log(V))
        first = last == V - 1
        lp[first] = -8.0; lp[first, self.fav] = -0.01
        return lp, state + 1
    def select_state(self, state, idx): return state[idx]

def test_lm_fusion_breaks_a_ctc_tie(model):
    "Two labellings equally likely under CTC: the fused LM decides, in both directions."
    T = 6
    lp = torch.full((1, T, V), -20.0)
    lp[0, 0, 2] = lp[0, 0, 3] = math.log(0.5)       # frame 0: unit 2 or 3, fifty-fifty
    for t, k in enumerate([0, 4, 0, 0, 0], 1): lp[0, t, k] = 0.0
    lp = lp.log_softmax(-1)
    enc = torch.zeros(1, T, 32)
    for fav in (2, 3):
        lm = _PreferLM(fav)
        assert ctc_prefix_beam_search(lp, torch.tensor([T]), 4, 1, lm=lm, lm_weight=1.0)[0][0].tokens == [fav, 4]
        j = attention_beam_search(model, enc, torch.tensor([T]), 4, lp, 1.0, lm, 1.0)
        assert j[0][0].tokens == [fav, 4]

def test_joint_ctc_weight_one_ranks_like_ctc(model, batch):
    feats, lens = batch
    enc, el, clp = enc_of(model, feats, lens)
    with torch.no_grad():
        j = attention_beam_search(model, enc, el, beam=8, ctc_logp=clp, ctc_weight=1.0, nbest=8)
    for b in range(4):
        exact = [-F.ctc_loss(clp[b][:, None], torch.tensor(h.tokens, dtype=torch.long)[None], el[b:b + 1],
                             torch.tensor([len(h.tokens)]), reduction='sum').item() for h in j[b]]
        assert all(math.isclose(h.score, e, abs_tol=1e-3) for h, e in zip(j[b], exact))
        assert exact == sorted(exact, reverse=True)

def test_ctc_prefix_scorer_partial_equals_full(batch, model):
    feats, lens = batch
    _, el, clp = enc_of(model, feats, lens)
    sc = CTCPrefixScorer(clp, el, 0, V - 1)
    utt = torch.arange(4)
    st = sc.init_state(utt)
    psi_full, _ = sc.score(st, utt, 0)
    cand = torch.tensor([[1, 3, 9], [2, 2, 5], [9, 8, 7], [4, 1, 0]])
    psi_part, _ = sc.score(st, utt, 0, cand)
    assert torch.allclose(psi_part, psi_full.gather(1, cand))

def test_decode_data_batch_sizes_and_stats(model, tmp_path, lms):
    tok = lms[0]
    utts = []
    for i, dur in enumerate([0.9, 0.5, 0.7, 0.3, 1.1]):
        x = torch.randn(int(dur * 16000)) * 0.1
        sf.write(tmp_path / f'{i}.wav', x.numpy(), 16000)
        utts.append(Utterance(f'utt{i}', str(tmp_path / f'{i}.wav'), 'ab cd'))
    kw = dict(tokenizer=tok, feat_cfg=FeatureConfig(), decode_cfg=DecodeConfig(beam=3))
    r1 = decode_data(model, utts, list(HYBRID), batch_size=1, **kw)
    r3 = decode_data(model, utts, list(HYBRID), tmp_path / 'out', batch_size=3, **kw)
    for method in HYBRID:
        s1, s3 = r1[method], r3[method]
        assert s1['hyps'] == s3['hyps'] and set(s1['hyps']) == {u.key for u in utts}
        assert math.isclose(s3['audio_seconds'], 3.5, rel_tol=1e-6) and s3['rtf'] > 0 and s3['scored'] == 5
        assert s3['cer'] >= 0 and s3['wer'] >= 0 and s3['too_short'] == 0
        assert (tmp_path / 'out' / method / 'text').read_text().count('\n') == 5

def test_lm_save_load_roundtrip(tmp_path, lms):
    tok, lstm, _ = lms
    save_lm(lstm, tmp_path / 'lm.pt')
    lm2 = load_lm(tmp_path / 'lm.pt', tok.units)
    x = torch.tensor([9, 2, 3])
    a, _ = lstm.score(x, lstm.init_state(3)); b, _ = lm2.score(x, lm2.init_state(3))
    assert torch.allclose(a, b)

@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_equals_cpu(model, batch, lms):
    import copy
    feats, lens = batch
    _, lstm, ngram = lms
    gm = copy.deepcopy(model).cuda()
    glstm = copy.deepcopy(lstm).cuda()
    for method in HYBRID:
        for lm, glm in ((None, None), (lstm, glstm), (ngram, ngram)):
            cfg = DecodeConfig(method=method, beam=4, nbest=2, lm_weight=0.3 if lm else 0.0)
            c = decode_batch(model, feats, lens, cfg, lm)
            g = decode_batch(gm, feats.cuda(), lens.cuda(), cfg, glm)
            assert [[h.tokens for h in r] for r in c] == [[h.tokens for h in r] for r in g], method

def test_no_hypothesis_can_end_returns_best_unfinished(model):
    "When the length limit makes every ending impossible under CTC, the best unfinished prefix is returned."
    T, path = 6, [2, 0, 3, 0, 4, 0]
    lp = torch.full((1, T, V), -math.inf)
    lp[0, torch.arange(T), torch.tensor(path)] = 0.0
    enc = torch.zeros(1, T, 32)
    res = attention_beam_search(model, enc, torch.tensor([T]), 3, lp, 1.0, maxlenratio=0.34)[0]
    assert len(res) == 1 and res[0].tokens == [2, 3]

def test_length_ratio_above_one_with_ctc(model, batch):
    "Prefixes longer than the encoder output are impossible for CTC, not an indexing error."
    feats, lens = batch
    enc, el, clp = enc_of(model, feats[:, :30], torch.clamp(lens, max=30))
    with torch.no_grad():
        res = attention_beam_search(model, enc, el, 3, clp, 0.5, maxlenratio=3.0, minlenratio=1.2)
    for b, hs in enumerate(res):   # eos is forbidden before 1.2 T' tokens, and CTC forbids more than T' tokens
        assert len(hs) == 1 and len(hs[0].tokens) <= int(el[b])

def test_score_texts_normalisation(tmp_path):
    from asr_nb.metrics import score_texts
    refs = {'a': "Hello, World! It's fine.", 'b': 'ＡＢＣ ok'}
    hyps = {'a': "hello world its fine", 'b': 'abc OK'}
    assert score_texts(refs, hyps, 'word').total.errors == 6
    rep = score_texts(refs, hyps, 'word', lowercase=True, remove_punct=True)
    assert (rep.total.errors, rep.total.sub) == (1, 1)       # only "it's" vs "its" remains
    assert "IT'S" in rep.details() and 'ITS' in rep.details()  # errors upper-cased, sclite style

def test_every_method_recovers_what_an_overfit_model_learned():
    "Train a tiny model to memorise 4 utterances (repeated unit included): every search must return the targets."
    from asr_nb.core import Batch
    torch.manual_seed(0)
    cfg = config_from_dict(dict(d_model=32, attention_heads=2, linear_units=64, num_blocks=2, decoder_blocks=1,
                      decoder_linear_units=64, cnn_kernel=3, dropout=0.0, positional_dropout=0.0, decoder_dropout=0.0,
                      lsm_weight=0.0), ModelConfig)
    m = ASRModel(cfg, 8)
    g = torch.Generator().manual_seed(0)
    lens = torch.tensor([80, 64, 50, 40])
    feats = torch.randn(4, 80, 80, generator=g)
    for b, l in enumerate(lens): feats[b, l:] = 0
    targets = [[2, 3, 4, 5], [6, 2, 2, 3], [4, 5, 6], [3, 6]]
    toks = torch.full((4, 4), -1)
    for b, t in enumerate(targets): toks[b, :len(t)] = torch.tensor(t)
    batch = Batch(feats, lens, toks, torch.tensor([len(t) for t in targets]), list('abcd'))
    opt = torch.optim.Adam(m.parameters(), lr=3e-3)
    m.train()
    for _ in range(200):
        loss = m(batch)['loss']; opt.zero_grad(); loss.backward(); opt.step()
    m.eval()
    for method in HYBRID:
        for bs in (4, 1):
            got = [h[0].tokens for s in range(0, 4, bs)
                   for h in decode_batch(m, feats[s:s + bs, :lens[s:s + bs].max()], lens[s:s + bs],
                                         DecodeConfig(method=method, beam=4))]
            assert got == targets, (method, bs, got)
