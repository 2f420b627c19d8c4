"""The AISHELL-1 and LibriSpeech recipes' stages on fabricated mini-trees in the released layouts: prepare, validate,
one training step at tiny dimensions, average, decode; the torchrun commands; errors for a missing corpus."""
import shlex
from pathlib import Path

import pytest

from asr_nb.data import DataError, read_data_dir
from asr_nb.recipes import (aishell_recipe, librispeech_recipe, make_mini_aishell, make_mini_librispeech, results_table,
                            stage_average, stage_decode, stage_prepare, stage_train, stage_validate, torchrun_command)

TINY = ['model.encoder.d_model=32', 'model.encoder.attention_heads=2', 'model.encoder.linear_units=64', 'model.encoder.num_blocks=1',
        'model.decoder.num_blocks=1', 'model.decoder.linear_units=64', 'model.encoder.cnn_kernel=3', 'train.max_steps=1',
        'data.batch_type=length', 'data.max_frames_in_batch=4000', 'train.tensorboard=false', 'train.num_threads=1']


def _run_stages(r, extra=()):
    dirs = stage_prepare(r)
    reps = stage_validate(r, dirs, log=lambda m: None)
    assert all(rep.ok for rep in reps.values()), {k: rep.summary() for k, rep in reps.items()}
    summary = stage_train(r, [*TINY, *extra])
    assert summary['step'] == 1 and Path(summary['last_checkpoint']).is_file()
    avg = stage_average(r, n=1)
    assert avg.is_file()
    res = stage_decode(r, methods=('ctc_greedy', 'rescoring'), overrides=['decode.beam=2'], device='cpu', log=lambda m: None)
    assert set(res) == {(s, m) for s in r.test_splits for m in ('ctc_greedy', 'rescoring')}
    for (split, m), v in res.items():
        assert v['n'] == len(read_data_dir(r.split(split))) and v['cer'] is not None
        assert (r.exp_dir/f'decode_{split}'/m/'text').is_file()
    table = results_table(res)
    assert table.count('\n') == len(res) + 1
    return dirs


def test_aishell_stages(tmp_path):
    make_mini_aishell(tmp_path/'corpus')
    r = aishell_recipe(tmp_path/'corpus', tmp_path/'work')
    cfg = r.cfg()
    assert cfg.features.speed_perturb == [0.9, 1.0, 1.1] and cfg.model.encoder.cnn_kernel == 15 and cfg.tokenizer.lang == 'zh'
    dirs = _run_stages(r)
    assert sorted(dirs) == ['dev', 'test', 'train']
    text = (dirs['train']/'text').read_text(encoding='utf-8').splitlines()
    assert len(text) == 6 and all(' ' not in line.split(' ', 1)[1] for line in text)  # Chinese: spaces removed
    units = (r.exp_dir/'units.txt').read_text(encoding='utf-8').split()
    assert '<space>' not in units  # character units without a word-boundary unit


def test_librispeech_stages(tmp_path):
    make_mini_librispeech(tmp_path/'corpus', splits=('train-clean-100', 'train-clean-360', 'dev-clean', 'dev-other',
                                                      'test-clean', 'test-other'))
    r = librispeech_recipe(tmp_path/'corpus', tmp_path/'work')
    cfg = r.cfg()
    assert (cfg.tokenizer.kind, cfg.model.encoder.d_model, cfg.model.encoder.cnn_kernel, cfg.specaug.num_time_masks) == ('bpe', 512, 31, 10)
    dirs = _run_stages(r, ['tokenizer.bpe_vocab_size=30', 'features.speed_perturb=[1.0]'])
    assert len(read_data_dir(dirs['train_960'])) == 12  # both training splits merged
    assert all(u.text == u.text.lower() for u in read_data_dir(dirs['test_other']))
    assert (r.exp_dir/'bpe.model').is_file()


def test_torchrun_commands(tmp_path):
    r = aishell_recipe(tmp_path, 'exp/aishell')
    one = shlex.split(torchrun_command(r, nproc_per_node=8).replace('$(which asr_nb_train)', 'TRAIN'))
    assert one[:3] == ['torchrun', '--nproc_per_node=8', '--standalone'] and one[3] == 'TRAIN'
    assert one[one.index('--train') + 1] == 'exp/aishell/data/train' and 'features.speed_perturb=[0.9,1.0,1.1]' in one
    multi = torchrun_command(r, nproc_per_node=8, nnodes=4, node_rank='$NODE_RANK', master_addr='10.1.2.3', master_port=29600)
    for part in ('--nnodes=4', '--node_rank=$NODE_RANK', '--master_addr=10.1.2.3', '--master_port=29600'): assert part in multi
    assert '--standalone' not in multi


def test_missing_corpus(tmp_path):
    with pytest.raises(DataError, match='aishell_transcript_v0.8.txt'):
        stage_prepare(aishell_recipe(tmp_path/'nothing', tmp_path/'work'))
    with pytest.raises(DataError, match='no LibriSpeech split'):
        stage_prepare(librispeech_recipe(tmp_path/'nothing', tmp_path/'work'))
