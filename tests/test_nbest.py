"""N-best output (issue 16 part 5): `asr_nb_decode --nbest N` writes text.1 .. text.N, `Recognizer.nbest` returns the
lists, and the joint CTC/attention search returns full lists (it used to stop with the 1-3 hypotheses ended so far)."""
from pathlib import Path

import pytest

from asr_nb.cli import decode_main
from asr_nb.data import read_data_dir
from asr_nb.export import Recognizer
from cli_helpers import synth_and_train, one_line_error, run

TINY = ['model.encoder.d_model=32', 'model.encoder.attention_heads=2', 'model.encoder.linear_units=64',
        'model.encoder.num_blocks=1', 'model.decoder.num_blocks=1', 'model.decoder.linear_units=64',
        'model.encoder.cnn_kernel=3', 'train.max_steps=3', 'train.tensorboard=false', 'data.max_frames_in_batch=3000',
        'optim.warmup_steps=2', 'train.num_threads=1']
METHODS = ['joint', 'attention', 'rescoring', 'ctc_prefix_beam']


@pytest.fixture(scope='module')
def exp(tmp_path_factory):
    return synth_and_train(tmp_path_factory.mktemp('nbest'), TINY, n_train=8, n_dev=2, n_test=4, seed=3)


def _text(p: Path) -> dict[str, str]:
    return dict((l.split(' ', 1) + [''])[:2] for l in p.read_text(encoding='utf-8').splitlines())


def test_decode_writes_text_n(exp, capsys):
    out, keys = exp/'dec', {u.key for u in read_data_dir(exp/'synth'/'test')}
    rc, _, err = run(decode_main, ['--exp', exp/'exp', '--data', exp/'synth'/'test', '--out', out, '--method', ','.join(METHODS),
                                   '--beam', 5, '--nbest', 5, '--threads', 1], capsys)
    assert rc == 0, err
    for m in METHODS:
        files = [_text(out/m/f'text.{j}') for j in range(1, 6)]
        assert not (out/m/'text.6').exists()
        assert files[0] == _text(out/m/'text')                                   # text.1 is the 1-best
        assert all(set(f) == keys for f in files), (m, [len(f) for f in files])  # full lists: every utterance in every file
    assert 'fewer than' not in err


def test_recognizer_nbest_is_the_search_order(exp):
    rec = Recognizer.from_exp(exp/'exp')
    wavs = [u.audio for u in read_data_dir(exp/'synth'/'test')]
    for m in ('joint', 'attention'):
        lists = rec.nbest(wavs, 5, m)
        assert [len(l) for l in lists] == [5] * len(wavs), m
        for l, w in zip(lists, wavs):
            assert [s for _, s in l] == sorted((s for _, s in l), reverse=True) and l[0][0] == rec.transcribe(w, m)


def test_nbest_over_beam_is_one_line(exp, capsys):
    rc, _, err = run(decode_main, ['--exp', exp/'exp', '--data', exp/'synth'/'test', '--out', exp/'dec2', '--beam', 3,
                                   '--nbest', 5], capsys)
    one_line_error(rc, err, '--nbest 5', 'beam (3)')
