"""Word n-gram LMs (issue #12, items 3-6): KenLM against the reference reader, modified Kneser-Ney estimation, the
word-LM searches (reference and C++ backend), alpha/beta tuning, and bad LM input as one line naming the file.

The experiments are random tiny models built in a second (the helpers of test_robustness_decode): the point is the
plumbing and the rules, not accuracy.

Run: .venv/bin/python -m pytest -q tests/test_lm.py
"""
import math, random
from pathlib import Path

import pytest
import torch

from asr_nb.cli import decode_main, lm_main, tune_lm_main
from asr_nb.core import UserError
from asr_nb.decode import ctc_beam_search_fast, ctc_beam_search_lm
from asr_nb.lm import (ArpaError, ArpaWords, KenlmWords, LMError, WordLM, build_arpa, check_word_overlap, count_ngrams,
                       load_lm, open_word_lm)
from asr_nb.tokenizer import CharTokenizer
from test_robustness_decode import assert_one_line_error, make_data, make_exp, run

torch.set_num_threads(1)
WORDS = "the a cat dog sat on mat log and ran to big red".split()


def corpus(n: int = 300, seed: int = 0) -> list[list[str]]:
    r = random.Random(seed)
    return [[r.choice(WORDS[:8]) if r.random() < 0.6 else r.choice(WORDS) for _ in range(r.randint(1, 8))] for _ in range(n)]


@pytest.fixture(scope='module')
def word3(tmp_path_factory) -> Path:
    return build_arpa(corpus(), tmp_path_factory.mktemp('lm')/'word3.arpa', order=3)


@pytest.fixture(scope='module')
def exp(tmp_path_factory):
    return make_exp(tmp_path_factory.mktemp('exp')/'tiny')


def test_reference_reader_equals_kenlm_in_log10_and_wordlm_in_ln(word3):
    ref, ken = ArpaWords(word3), KenlmWords(word3)
    r = random.Random(1)
    for _ in range(40):
        sent = [r.choice(WORDS + ['zebra']) for _ in range(r.randint(0, 7))]     # unknown words too
        cr, ck, tot = ref.begin(), ken.begin(), 0.0
        for w in sent + ['</s>']:
            pr, cr = ref.score(cr, w); pk, ck = ken.score(ck, w)
            assert abs(pr - pk) < 1e-4, (sent, w, pr, pk); tot += pr
        assert abs(tot - ken.m.score(' '.join(sent))) < 1e-3
    tok = CharTokenizer.build([' '.join(s) for s in corpus()])
    wl = WordLM(ken, tok.units, restrict=False)
    st = wl.start()
    for c in tok.encode("the zebra sat"): st = wl.advance(st, c)
    st = wl.finish(st)
    assert st.words == 3 and abs(st.lm - ken.m.score("the zebra sat") * math.log(10)) < 1e-3   # natural log


def test_modified_kneser_ney_sums_to_one_in_kenlm(word3):
    ken = KenlmWords(word3)
    vocab = sorted(ArpaWords(word3).words()) + ['</s>', '<unk>']
    for hist in [[], ['the'], ['the', 'cat'], ['sat', 'on'], ['zebra'], ['red', 'big']]:
        st = ken.begin()
        for w in hist: _, st = ken.score(st, w)
        assert abs(sum(10 ** ken.score(st, w)[0] for w in vocab) - 1) < 1e-3, hist


def test_counting_streams_once(tmp_path):
    seen = []
    def gen():
        for s in corpus(50): seen.append(1); yield s
    vocab, counts = count_ngrams(gen(), order=3)
    assert len(seen) == 50 and all(isinstance(k, tuple) and all(isinstance(i, int) for i in k) for k in counts[3])
    assert sum(counts[3].values()) == sum(len(s) for s in corpus(50))    # (L + 2) - 3 + 1 trigrams per sentence


@pytest.mark.parametrize('name, content, needle', [
    ('none.arpa', None, 'none.arpa: language model not found'),
    ('bad.klm', b'mmap lm http://kheafield.com/code format version 5\x00 cut short', 'bad.klm: not a readable KenLM model'),
    ('header.arpa', b'\\data\\\nngram 1=two\n', "header.arpa:2: expected 'ngram N=count'"),
    ('counts.arpa', b'\\data\\\nngram 1=3\nngram 2=1\n\n\\1-grams:\n-1\t<s>\t-0.1\n-1\tfoo\t-0.1\n-1\t</s>\n\n\\2-grams:\n\n\\end\\\n',
     'counts.arpa: \\data\\ says 1 2-grams, found 0'),
])
def test_bad_lm_files_are_one_line_errors(tmp_path, name, content, needle):
    if content is not None: (tmp_path/name).write_bytes(content)
    with pytest.raises(LMError) as e: load_lm(tmp_path/name, ['<blank>', '<unk>', '<space>', 'a', '<sos/eos>'], kind='word')
    assert needle in str(e.value) and '\n' not in str(e.value) and isinstance(e.value, UserError)


def test_lms_that_share_no_word_are_refused(word3, tmp_path):
    zh_units = ['<blank>', '<unk>', '今', '天', '<sos/eos>']
    with pytest.raises(LMError, match='word3.arpa: the LM shares no word with the model'): open_word_lm(word3, zh_units)
    tok = CharTokenizer.build(["the cat"])
    with pytest.raises(LMError, match='word3.arpa: the LM shares no word with the dev set'):
        check_word_overlap(open_word_lm(word3, tok.units), ["zebras graze quietly"], 'the dev set')


def peaky(tok, text, seed, conf=0.1):
    g = torch.Generator().manual_seed(seed); ids = tok.encode(text)
    x = torch.rand(2 * len(ids) + 2, tok.vocab_size, generator=g) * 0.05
    for i, c in enumerate(ids):
        x[2 * i + 1, c] += 1.0; x[2 * i + 1, int(torch.randint(3, tok.vocab_size - 1, (1,), generator=g))] += conf
    x[::2, 0] += 1.0
    return (x / x.sum(-1, keepdim=True)).log()


def test_fast_backend_agrees_with_the_reference(word3):
    sents = [' '.join(s) for s in corpus(20, seed=7)]
    tok = CharTokenizer.build([' '.join(s) for s in corpus()])
    wl = open_word_lm(word3, tok.units)
    same, diffs = 0, []
    for k, s in enumerate(sents):
        lp = peaky(tok, s, k)[None]; L = torch.tensor([lp.size(1)])
        o = ctc_beam_search_lm(lp, L, wl, beam=30, alpha=0.8, beta=1.0, cutoff_prob=1.0, cutoff_top_n=tok.vocab_size, nbest=1)[0][0]
        f = ctc_beam_search_fast(lp, L, wl, beam=30, alpha=0.8, beta=1.0, cutoff_top_n=tok.vocab_size, beam_threshold=1e9)[0][0]
        if tok.decode(o.tokens).split() == tok.decode(f.tokens).split(): same += 1; diffs.append(o.score - f.score)
    assert same >= 18, same                                   # near-ties may go either way (rules differ slightly)
    assert max(abs(d) for d in diffs) < 0.8, diffs


def test_decode_cli_with_word_lms(exp, word3, tmp_path, capsys):
    data = make_data(tmp_path/'data', {'u1': 0.6, 'u2': 0.5}, {'u1': 'hello', 'u2': 'the fox'})
    rc, out, err = run(decode_main, ['--exp', exp, '--data', data, '--method', 'ctc_beam_lm,ctc_beam_lm_fast', '--beam', 8,
                                     '--out', tmp_path/'o', '--lm-path', word3, '--lm-weight', 0.5, 'decode.penalty=1.0'], capsys)
    assert rc == 0, err
    assert (tmp_path/'o'/'ctc_beam_lm'/'text').is_file() and (tmp_path/'o'/'ctc_beam_lm_fast'/'text').is_file()
    (tmp_path/'bad.klm').write_bytes(b'garbage')
    rc, _, err = run(decode_main, ['--exp', exp, '--data', data, '--method', 'ctc_beam_lm', '--out', tmp_path/'o2',
                                   '--lm-path', tmp_path/'bad.klm', '--lm-weight', 0.5], capsys)
    assert_one_line_error(rc, err, 'bad.klm: not a readable KenLM model')
    rc, _, err = run(decode_main, ['--exp', exp, '--data', data, '--method', 'ctc_prefix_beam', '--out', tmp_path/'o3',
                                   '--lm-path', word3, '--lm-weight', 0.5], capsys)
    assert_one_line_error(rc, err, "method 'ctc_prefix_beam' fuses an LM over the units", 'use ctc_beam_lm')


def test_lm_and_tune_cli(exp, tmp_path, capsys):
    data = make_data(tmp_path/'data', {'u1': 0.6, 'u2': 0.5}, {'u1': 'hello world', 'u2': 'the quick fox'})
    rc, out, err = run(lm_main, ['ngram', '--text', data, '--order', '2', '--out', tmp_path/'w2.arpa'], capsys)
    assert rc == 0 and 'from 2 sentences' in out, err
    assert ArpaWords(tmp_path/'w2.arpa').words() == {'hello', 'world', 'the', 'quick', 'fox'}
    rc, out, err = run(tune_lm_main, ['--exp', exp, '--data', data, '--lm', tmp_path/'w2.arpa', '--alphas', '0,1',
                                      '--betas', '0,2', '--beam', 8, '--out', tmp_path/'tune.json'], capsys)
    assert rc == 0, err
    assert '| alpha \\ beta |' in out and 'best: alpha=' in out and (tmp_path/'tune.json').is_file()
    rc, _, err = run(tune_lm_main, ['--exp', exp, '--data', data, '--lm', tmp_path/'nope.arpa'], capsys)
    assert_one_line_error(rc, err, 'nope.arpa: language model not found')


def test_recipe_lm_stage(exp, tmp_path):
    from asr_nb.data import decode_utterances
    from asr_nb.export import Recognizer
    from asr_nb.recipes import word_lm_stage
    dirs = {s: make_data(tmp_path/s, {f'{s}1': 0.6, f'{s}2': 0.5}, {f'{s}1': 'hello world', f'{s}2': 'the quick fox'})
            for s in ('train', 'dev', 'test')}
    rec = Recognizer.from_exp(exp)
    res = word_lm_stage(exp, dirs, rec, decode_utterances(dirs['test']), beam=8, log=lambda m: None)
    assert list(res) == ['ctc_beam_lm_fast'] and res['ctc_beam_lm_fast']['n'] == 2
    assert (exp/'lm'/'word3.arpa').is_file() and (exp/'decode_test'/'ctc_beam_lm_fast'/'text').is_file()
    assert set(' '.join(res['ctc_beam_lm_fast']['hyps'].values()).split()) <= {'hello', 'world', 'the', 'quick', 'fox'}
