"""The C edit distance of 12_metrics (rapidfuzz) equals the pure-Python reference DP: counts on random strings
(empty, unicode, long, near-identical like real hypotheses), word lists and token ids; corpus rates and the report.

Run: .venv/bin/python -m pytest -q tests/test_metrics_fast.py
"""
import random
import pytest
from asr_nb.metrics import EditStats, align, edit_counts, edit_stats, error_rate, fast_align, score_texts

def _counts(ops): c = [o.op for o in ops]; return c.count('S'), c.count('D'), c.count('I')

def _noisy(rng, r, units, err):
    "r with about err of its units substituted, deleted or followed by an insertion."
    h = []
    for u in r:
        x = rng.random()
        if x < err / 3: h.append(rng.choice(units))
        elif x < 2 * err / 3: continue
        elif x < err: h += [u, rng.choice(units)]
        else: h.append(u)
    return h

@pytest.mark.parametrize("units", [list("ab"), list("abcdefgh "), list("语音识别中文 ")])
def test_counts_equal_reference_strings(units):
    rng = random.Random(len(units))
    for k in range(300):
        r = ''.join(rng.choice(units) for _ in range(rng.randint(0, 60)))
        h = ''.join(_noisy(rng, r, units, 0.3)) if k % 2 else ''.join(rng.choice(units) for _ in range(rng.randint(0, 60)))
        ref = _counts(align(r, h))
        assert edit_counts(r, h) == ref
        assert _counts(fast_align(r, h)) == ref
        assert edit_stats(r, h) == edit_stats(r, h, fast=False)

def test_counts_equal_reference_words_and_ids():
    rng = random.Random(1)
    words = "the a cat sat on mat hat dog ran".split()
    for _ in range(300):
        r = [rng.choice(words) for _ in range(rng.randint(0, 25))]
        h = _noisy(rng, r, words, 0.4)
        assert edit_counts(r, h) == _counts(align(r, h))
        ids_r, ids_h = [words.index(w) for w in r], [words.index(w) for w in h]   # token ids score like the words
        assert edit_counts(ids_r, ids_h) == edit_counts(r, h)

def test_long_and_corpus():
    rng = random.Random(2)
    abc = "abcdefghijklmnopqrstuvwxyz "
    refs = [''.join(rng.choice(abc) for _ in range(300)) for _ in range(5)]
    hyps = [''.join(_noisy(rng, r, abc, 0.1)) for r in refs]
    fast = sum((edit_stats(r, h) for r, h in zip(refs, hyps)), EditStats())
    slow = sum((edit_stats(r, h, fast=False) for r, h in zip(refs, hyps)), EditStats())
    assert fast == slow and fast.errors > 0
    # asr_nb_score's report and validation CER (10_train's error_rate) score normalised text (whitespace collapsed)
    norm = lambda s: ' '.join(s.split())
    ref_tot = sum((edit_stats(norm(r), norm(h), fast=False) for r, h in zip(refs, hyps)), EditStats())
    keys = [f"u{i}" for i in range(len(refs))]
    rep = score_texts(dict(zip(keys, refs)), dict(zip(keys, hyps)), remove_space=False)
    assert (rep.total.sub, rep.total.dele, rep.total.ins) == (ref_tot.sub, ref_tot.dele, ref_tot.ins)
    for u, r, h in zip(rep.utts, refs, hyps):          # each alignment replays the reference to the hypothesis
        assert [o.hyp for o in u.ops if o.op != 'D'] == list(norm(h)) and [o.ref for o in u.ops if o.op != 'I'] == list(norm(r))
    assert error_rate(refs, hyps, 'char') == ref_tot
