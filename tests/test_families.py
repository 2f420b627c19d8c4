"""The model contract end to end, for the two degenerate members of the hybrid family (issue: seams).

- A CTC-only model (`model.decoder.num_blocks=0`, `loss.ctc_weight=1`) trains, exports to ONNX and decodes with the
  CTC searches; methods that need an attention decoder are refused in one line before any work is done.
- An attention-only model (`loss.ctc_weight=0`) trains with `valid_cer` from attention greedy decoding (its CTC head is
  never trained, so nothing may use it); CTC methods are refused in one line.
"""
import json
from pathlib import Path

import pytest

from asr_nb.cli import decode_main, export_main, train_main, transcribe_main

from cli_helpers import ROOT, one_line_error, run, synth
SMALL = ['model.encoder.d_model=32', 'model.encoder.attention_heads=2', 'model.encoder.linear_units=64',
         'model.encoder.num_blocks=1', 'model.encoder.cnn_kernel=3', 'model.decoder.linear_units=64',
         'train.max_steps=3', 'train.log_interval=1', 'train.tensorboard=false', 'train.num_threads=1',
         'data.max_frames_in_batch=3000', 'optim.warmup_steps=2', 'data.num_workers=0']


@pytest.fixture(scope='module')
def corpus(tmp_path_factory): return synth(tmp_path_factory, n_train=20, seed=5)


def train_exp(corpus, exp, *overrides):
    rc = train_main(['--config', str(ROOT/'conf'/'tiny.yaml'), '--train', str(corpus['train']), '--valid', str(corpus['dev']),
                     '--exp', str(exp), *SMALL, *overrides])
    assert rc == 0
    return exp


def test_ctc_only_trains_exports_and_decodes(corpus, tmp_path, capsys):
    exp = train_exp(corpus, tmp_path/'ctc', 'model.decoder.num_blocks=0', 'model.loss.ctc_weight=1.0')
    capsys.readouterr()
    log = (exp/'train.log').read_text()
    assert 'loss_ctc=' in log and 'loss_att=' not in log          # the loop logs what the family computes, nothing more
    rc, out, err = run(decode_main, ['--exp', exp, '--data', corpus['test'], '--method', 'ctc_greedy,ctc_prefix_beam',
                                     '--out', tmp_path/'dec'], capsys)
    assert rc == 0, err
    res = json.loads((tmp_path/'dec'/'ctc_greedy'/'result.json').read_text())
    assert res['n'] == 4 and res['cer'] is not None
    for method in ('attention', 'joint', 'rescoring'):
        one_line_error(*run(decode_main, ['--exp', exp, '--data', corpus['test'], '--method', method, '--out', tmp_path/'x'],
                            capsys)[::2], f"'{method}'", 'attention decoder')
    assert not (tmp_path/'x').exists()                             # refused before any work
    rc, out, err = run(export_main, ['--exp', exp, '--out', tmp_path/'onnx'], capsys)
    assert rc == 0, err
    assert (tmp_path/'onnx'/'encoder.onnx').is_file() and not (tmp_path/'onnx'/'decoder_step.onnx').exists()
    meta = json.loads((tmp_path/'onnx'/'meta.json').read_text())
    assert meta['capabilities'] == ['ctc']
    wav = (corpus['test']/'wav.scp').read_text().split()[1]
    rc, out, err = run(transcribe_main, ['--onnx', tmp_path/'onnx', wav], capsys)
    assert rc == 0 and out.strip(), err


def test_attention_only_refuses_ctc_methods(corpus, tmp_path, capsys):
    exp = train_exp(corpus, tmp_path/'att', 'model.decoder.num_blocks=1', 'model.loss.ctc_weight=0.0')
    capsys.readouterr()
    log = (exp/'train.log').read_text()
    assert 'loss_att=' in log and 'loss_ctc=' not in log and 'cer=' in log   # valid_cer from attention greedy
    for method in ('ctc_greedy', 'ctc_prefix_beam', 'joint', 'rescoring'):
        one_line_error(*run(decode_main, ['--exp', exp, '--data', corpus['test'], '--method', method, '--out', tmp_path/'x'],
                            capsys)[::2], f"'{method}'", 'ctc_weight=0')
    rc, out, err = run(decode_main, ['--exp', exp, '--data', corpus['test'], '--method', 'attention', '--out', tmp_path/'dec'],
                       capsys)
    assert rc == 0, err
