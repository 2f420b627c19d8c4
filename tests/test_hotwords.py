"""Hotwords (issue #18 part 4, asr_nb.context): CLI flags, one-line errors, weight-0 identity, a flipped best path.

The experiment is a random tiny model made in a second (no training): these tests check the plumbing; the measured
effect on a trained model is bench/bench_hotwords.py.

Run: .venv/bin/python -m pytest -q tests/test_hotwords.py
"""
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from asr_nb.cli import decode_main, transcribe_main
from asr_nb.context import ContextGraph, HotwordError, build_context, load_context
from asr_nb.core import DecodeConfig, ExpConfig, ModelConfig, config_from_dict, save_config
from asr_nb.decode import ctc_prefix_beam_search, ctc_search
from asr_nb.model import build_model
from asr_nb.tokenizer import CharTokenizer
from cli_helpers import one_line_error, run

torch.set_num_threads(1)
SR = 16000


@pytest.fixture(scope='module')
def exp(tmp_path_factory):
    "An experiment dir with a random tiny joint CTC/attention model over the characters of two sentences."
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp('exp')/'tiny'; d.mkdir()
    tok = CharTokenizer.build(["hello world", "the quick brown fox"])
    cfg = ExpConfig(model=config_from_dict(dict(encoder=dict(d_model=32, attention_heads=2, linear_units=64, num_blocks=1, cnn_kernel=3),
                                                decoder=dict(num_blocks=1, linear_units=64)), ModelConfig))
    cmvn = (torch.zeros(80) + 10, torch.ones(80))
    save_config(cfg, d/'config.yaml'); tok.save(d)
    np.savez(d/'cmvn.npz', mean=cmvn[0].numpy(), istd=cmvn[1].numpy())
    torch.save(dict(model=build_model(cfg, tok.vocab_size, cmvn).state_dict()), d/'model_avg.pt')
    return d


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    "A data dir of three short noisy tones with references."
    d = tmp_path_factory.mktemp('data'); g = np.random.default_rng(0)
    for i, s in enumerate((0.8, 1.2, 1.0)):
        t = np.arange(int(s * SR)) / SR
        sf.write(d/f'u{i}.wav', (0.2 * np.sin(2 * np.pi * (200 + 100 * i) * t) + 0.05 * g.standard_normal(t.size)).astype('float32'), SR)
    (d/'wav.scp').write_text(''.join(f"u{i} {d/f'u{i}.wav'}\n" for i in range(3)))
    (d/'text').write_text("u0 hello\nu1 the fox\nu2 brown world\n")
    return d


@pytest.fixture
def files(tmp_path):
    (tmp_path/'hw.txt').write_text("the fox\nworld\n")
    (tmp_path/'bad.txt').write_text("hello\n\nzebra\n")
    (tmp_path/'empty.txt').write_text("\n  \n")
    return tmp_path


def test_decode_errors_are_one_line(exp, data, files, tmp_path, capsys):
    base = ['--exp', exp, '--data', data, '--method', 'ctc_prefix_beam', '--out', tmp_path/'out']
    one_line_error(*run(decode_main, base + ['--hotwords', files/'bad.txt'], capsys)[::2],
                   f"hotword file {files/'bad.txt'} line 3", "'zebra'", "does not know: z")
    one_line_error(*run(decode_main, base + ['--hotwords', files/'empty.txt'], capsys)[::2], f"hotword file {files/'empty.txt'} is empty")
    one_line_error(*run(decode_main, base + ['--hotwords', files/'nope.txt'], capsys)[::2], f"hotword file not found: {files/'nope.txt'}")
    one_line_error(*run(decode_main, base + ['--hotwords', files/'hw.txt', '--hotword-weight', '-1'], capsys)[::2], '--hotword-weight must be >= 0')
    rc, out, err = run(decode_main, ['--exp', exp, '--data', data, '--method', 'joint', '--out', tmp_path/'j', '--hotwords', files/'hw.txt'], capsys)
    one_line_error(rc, err, "method 'joint' does not take hotwords", str(files/'hw.txt'), 'ctc_prefix_beam')
    # a bad file is refused at weight 0 too (named = checked, like an LM file)
    one_line_error(*run(decode_main, base + ['--hotwords', files/'bad.txt', '--hotword-weight', '0'], capsys)[::2], 'line 3')


def test_transcribe_errors_are_one_line(exp, data, files, capsys):
    rc, out, err = run(transcribe_main, ['--exp', exp, '--hotwords', files/'bad.txt', data/'u0.wav'], capsys)
    one_line_error(rc, err, f"hotword file {files/'bad.txt'} line 3")
    rc, out, err = run(transcribe_main, ['--exp', exp, '--method', 'ctc_prefix_beam', '--hotwords', files/'hw.txt', data/'u0.wav'], capsys)
    assert rc == 0 and out.startswith(str(data/'u0.wav')), err


def test_weight_zero_and_no_list_give_todays_output(exp, data, files, tmp_path, capsys):
    "decode output files are byte-identical without hotwords and at weight 0; a large weight changes them."
    texts = {}
    for name, extra in [('none', []), ('zero', ['--hotwords', files/'hw.txt', '--hotword-weight', '0']),
                        ('strong', ['--hotwords', files/'hw.txt', '--hotword-weight', '30'])]:
        rc, out, err = run(decode_main, ['--exp', exp, '--data', data, '--method', 'ctc_prefix_beam,rescoring', '--beam', '40',
                                         '--out', tmp_path/name] + extra, capsys)
        assert rc == 0, err
        texts[name] = {m: (tmp_path/name/m/'text').read_text() for m in ('ctc_prefix_beam', 'rescoring')}
    assert texts['none'] == texts['zero']
    for m in ('ctc_prefix_beam', 'rescoring'):
        assert texts['strong'][m] != texts['none'][m] and 'the fox' in texts['strong'][m], texts['strong'][m]


def test_hotword_flips_the_best_path_on_synthetic_posteriors(tmp_path):
    "Frames whose best labelling is 'cat' with 'cut' close behind: the hotword 'cut' wins in every search that takes it."
    tok = CharTokenizer(['<blank>', '<unk>', '<space>', 'a', 'c', 't', 'u', '<sos/eos>'])
    U = {u: i for i, u in enumerate(tok.units)}
    post = torch.full((1, 4, len(tok.units)), 1e-3)
    post[0, 0, U['c']] = post[0, 3, U['<blank>']] = 0.9
    post[0, 1, U['a']], post[0, 1, U['u']], post[0, 2, U['t']] = 0.55, 0.4, 0.9
    lp, T = (post / post.sum(-1, keepdim=True)).log(), torch.tensor([4])
    (tmp_path/'hw.txt').write_text("cut\n")
    ctx = load_context(tmp_path/'hw.txt', tok, weight=1.0)
    for method in ('ctc_prefix_beam', 'ctc_beam_lm'):
        cfg = DecodeConfig(method=method, beam=5, cutoff_top_n=len(tok.units))
        best = lambda c: tok.decode(ctc_search(method, lp, T, cfg, context=c)[0][0].tokens)
        assert best(None) == 'cat' and best(ctx) == 'cut', method
        assert best(load_context(tmp_path/'hw.txt', tok, weight=0.05)) == 'cat'
    h = ctc_prefix_beam_search(lp, T, beam=5, context=ctx)[0][0]
    assert h.context_score == 3.0 and abs(h.score - (h.ctc_score + 3.0)) < 1e-9
    empty = ctc_prefix_beam_search(lp, T, beam=5, context=ContextGraph([], 2.0))[0]
    assert [(x.tokens, x.score) for x in empty] == [(x.tokens, x.score) for x in ctc_prefix_beam_search(lp, T, beam=5)[0]]
    with pytest.raises(HotwordError, match="hotword 1: 'dog' has units the model does not know: d o g"):
        build_context(['dog'], tok)
