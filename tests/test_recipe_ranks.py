"""Issue #15 part 3: the tiny recipe trains with one rank per CPU core (`cpu_train_ranks`), each with its share of the
update's frames, one thread and its features computed in the rank; `asr_nb_demo --nproc` chooses; bad values are one
error line."""
import json
from pathlib import Path

import pytest

from asr_nb.cli import demo_main
from asr_nb.core import load_config

ROOT = Path(__file__).resolve().parents[1]
TINY = ['model.encoder.d_model=32', 'model.encoder.attention_heads=2', 'model.encoder.linear_units=64', 'model.encoder.num_blocks=1',
        'model.decoder.num_blocks=1', 'model.decoder.linear_units=64', 'model.encoder.cnn_kernel=3', 'train.max_epochs=2',
        'train.log_interval=1', 'train.keep_n_best=2', 'train.tensorboard=false', 'data.max_frames_in_batch=6000',
        'optim.warmup_steps=2', 'train.amp=none']


def test_demo_two_ranks(tmp_path, capsys):
    "asr_nb_demo --nproc 2: torchrun with two gloo ranks; each rank gets half the frames; the recipe finishes and resumes."
    argv = ['--workdir', str(tmp_path/'w'), '--n-train', '24', '--n-dev', '4', '--n-test', '4', '--n-average', '2',
            '--methods', 'ctc_greedy', '--nproc', '2', *TINY]
    assert demo_main(argv) == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    exp = tmp_path/'w'/'exp'
    assert 'training with 2 ranks' in out and '--nproc_per_node=2' in out
    log = (exp/'train.log').read_text()
    assert '2 rank(s)' in log and 'rank=0/2' in log
    cfg = load_config(exp/'config.yaml')
    assert cfg.data.max_frames_in_batch == 3000 and cfg.train.num_threads == 1 and cfg.data.num_workers == 0
    assert json.loads((tmp_path/'w'/'results.json').read_text())['results']['ctc_greedy']['n'] == 4
    assert 'train summary: {' in out and '"step": ' in out                       # rank 0's summary came back
    assert demo_main(argv) == 0                                                   # the same command again: resumes, same config
    assert 'resumed from' in (exp/'train.log').read_text()


@pytest.mark.parametrize('bad', ['0', 'two', '-1'])
def test_demo_bad_nproc(tmp_path, capsys, bad):
    assert demo_main(['--workdir', str(tmp_path/'w'), '--nproc', bad]) == 2
    err = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
    assert len(err) == 1 and 'nproc' in err[0] and 'Traceback' not in err[0], err
    assert not (tmp_path/'w').exists()                                            # refused before anything is written


def test_tri_stage_spans_the_run(tmp_path, capsys):
    "conf/tiny.yaml's tri_stage with total_steps 0 spans this run's updates: warm-up from 1 %, decay to about 2 % at the end."
    from asr_nb.cli import synth_main, train_main
    assert synth_main(['--out', str(tmp_path/'d'), '--n-train', '16', '--n-dev', '2', '--n-test', '2']) == 0
    argv = ['--config', str(ROOT/'conf'/'tiny.yaml'), '--train', str(tmp_path/'d'/'train'), '--valid', str(tmp_path/'d'/'dev'),
            '--exp', str(tmp_path/'e'), *TINY, 'train.num_threads=1', 'data.num_workers=0', 'train.max_epochs=4',
            'data.max_frames_in_batch=3000']
    assert train_main(argv) == 0, capsys.readouterr().err
    cfg = load_config(ROOT/'conf'/'tiny.yaml')
    lrs = [float(l.split(' lr=')[1].split()[0]) for l in (tmp_path/'e'/'train.log').read_text().splitlines() if ' lr=' in l]
    steps = json.loads(capsys.readouterr().out.strip().splitlines()[-1])['step']
    assert len(lrs) == steps >= 4
    peak, first, last = cfg.optim.lr, lrs[0], lrs[-1]
    assert abs(first - peak * cfg.optim.init_lr_scale) < 1e-9 and max(lrs) <= peak + 1e-12
    assert peak * cfg.optim.final_lr_scale <= last < peak * 2 * cfg.optim.final_lr_scale, (lrs, steps)
