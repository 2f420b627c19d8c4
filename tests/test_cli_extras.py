"""Issue 16's small things on one tiny trained experiment: the resolved config at the top of train.log,
`asr_nb_average --epochs/--steps`, word timestamps (`asr_nb_decode --ctm`, `asr_nb_transcribe --ctm`, `decode_ctm`)
and `asr_nb_score --lowercase/--remove-punct`."""
from pathlib import Path

import pytest
import soundfile as sf
import torch

from asr_nb.cli import average_main, decode_ctm, decode_main, score_main, transcribe_main
from asr_nb.checkpoint import list_checkpoints
from asr_nb.data import read_data_dir
from asr_nb.export import Recognizer
from cli_helpers import synth_and_train

TINY = ['model.encoder.d_model=32', 'model.encoder.attention_heads=2', 'model.encoder.linear_units=64',
        'model.encoder.num_blocks=1', 'model.decoder.num_blocks=1', 'model.decoder.linear_units=64',
        'model.encoder.cnn_kernel=3', 'train.max_epochs=3', 'train.tensorboard=false', 'data.max_frames_in_batch=3000',
        'optim.warmup_steps=2', 'train.num_threads=1', 'train.keep_n_best=10']


@pytest.fixture(scope='module')
def run(tmp_path_factory):
    return synth_and_train(tmp_path_factory.mktemp('extras'), TINY, n_train=16, n_dev=4, n_test=4, seed=7)


def test_train_log_starts_with_resolved_config(run):
    log = (run/'exp'/'train.log').read_text()
    assert 'resolved config:' in log and log.index('resolved config:') < log.index('parameters, vocabulary')
    block = log.split('resolved config:', 1)[1]
    assert 'max_epochs: 3' in block and 'n_mels: 80' in block and 'keep_n_best: 10' in block   # overrides and defaults


def one_line_error(capsys, rc, *needles):
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1 and 'Traceback' not in err, err
    for n in needles: assert n in err, err


def test_average_by_epochs_and_steps(run, capsys):
    exp = run/'exp'
    ends = sorted(r['epoch'] for r in list_checkpoints(exp) if r['batch_idx'] == 0)
    assert ends[-2:] == [2, 3], ends
    assert average_main(['--exp', str(exp), '--epochs', '2-3']) == 0
    avg = torch.load(exp/'model_avg.pt', map_location='cpu', weights_only=True)
    assert len(avg['averaged']) == 2 and avg['by'] == 'paths'
    steps = sorted(r['step'] for r in list_checkpoints(exp))
    assert average_main(['--exp', str(exp), '--steps', f'{steps[-1]}']) == 0
    avg = torch.load(exp/'model_avg.pt', map_location='cpu', weights_only=True)
    assert avg['averaged'] == [f'ckpt-{steps[-1]}.pt']
    capsys.readouterr()
    one_line_error(capsys, average_main(['--exp', str(exp), '--epochs', '37-40']), 'epoch(s) [37, 38, 39, 40]', 'have')
    one_line_error(capsys, average_main(['--exp', str(exp), '--steps', '9999']), 'step(s) [9999]')
    assert average_main(['--exp', str(exp), '--epochs', '4-2']) == 2              # argparse: usage, then the error line
    assert "asr_nb_average: error: argument --epochs: expected N, N-M" in capsys.readouterr().err


def test_decode_ctm_aligns_references(run):
    "Forced alignment of the reference texts: every word, in order, inside its utterance, times increasing."
    rec = Recognizer.from_exp(run/'exp')
    utts = read_data_dir(run/'synth'/'test')
    lines = decode_ctm(rec, utts, {u.key: u.text for u in utts})
    for u in utts:
        mine = [l.split() for l in lines if l.startswith(u.key + ' ')]
        assert [m[4] for m in mine] == u.text.split(), (mine, u.text)
        dur = sf.info(u.audio).duration
        starts = [float(m[2]) for m in mine]
        assert starts == sorted(starts) and all(float(m[2]) + float(m[3]) <= dur + 0.05 for m in mine)
        assert all(m[1] == '1' and 0 <= float(m[5]) <= 1 for m in mine)


def test_decode_and_transcribe_write_ctm(run, capsys):
    out = run/'dec'
    assert decode_main(['--exp', str(run/'exp'), '--data', str(run/'synth'/'test'), '--out', str(out), '--ctm']) == 0
    hyps = dict((l.split(' ', 1) + [''])[:2] for l in (out/'text').read_text().splitlines())
    ctm = [l.split() for l in (out/'ctm').read_text().splitlines()]
    for k, h in hyps.items(): assert [c[4] for c in ctm if c[0] == k] == h.split(), (k, h)
    wav = read_data_dir(run/'synth'/'test')[0].audio
    capsys.readouterr()
    assert transcribe_main(['--exp', str(run/'exp'), '--ctm', wav]) == 0
    text = Recognizer.from_exp(run/'exp').transcribe(wav)
    got = [l.split() for l in capsys.readouterr().out.splitlines()]
    assert [g[4] for g in got] == text.split() and all(g[0] == Path(wav).stem for g in got)


def test_score_normalisation_switches(tmp_path, capsys):
    (tmp_path/'ref').write_text("u1 The cat, sat.\nu2 Don't stop!\n")
    (tmp_path/'hyp').write_text("u1 the cat sat\nu2 don't stop\n")
    def wer(*flags):
        capsys.readouterr()
        assert score_main(['--ref', str(tmp_path/'ref'), '--hyp', str(tmp_path/'hyp'), *flags]) == 0
        return capsys.readouterr().out.split('WER ')[1].split(' %')[0]
    assert wer() == '100.00' and wer('--remove-punct') == '40.00' and wer('--lowercase', '--remove-punct') == '0.00'
