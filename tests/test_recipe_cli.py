"""`asr_nb_recipe` (issue 16 part 4): ESPnet's stages -1..6 from the shell on fabricated AISHELL-1 and LibriSpeech
trees (tiny model, one training step); re-running skips the stages whose outputs are complete and fingerprinted;
stage -1 passes on a good tree and is one error line on a damaged one."""
import json
import tarfile
from pathlib import Path

from asr_nb.recipes import _md5, corpus_counts, make_mini_aishell, make_mini_librispeech, recipe_main
from cli_helpers import one_line_error, run

TINY = ['model.encoder.d_model=32', 'model.encoder.attention_heads=2', 'model.encoder.linear_units=64', 'model.encoder.num_blocks=1',
        'model.decoder.num_blocks=1', 'model.decoder.linear_units=64', 'model.encoder.cnn_kernel=3', 'train.max_steps=1',
        'data.batch_type=length', 'data.max_frames_in_batch=4000', 'train.tensorboard=false', 'train.num_threads=1',
        'decode.beam=2']


def _stages(out: str) -> dict[int, str]:
    "{stage: 'done'|'skipped'} from the log lines."
    st = {}
    for l in out.splitlines():
        if l.startswith('== stage ') and (' done in ' in l or ': skipped' in l):
            k = int(l.split()[2].rstrip(':')); st[k] = 'skipped' if ': skipped' in l else 'done'
    return st


def _expected(root: Path, name: str, archive: str, tree: str) -> Path:
    "Expectations of a fabricated tree: its counts and the MD5 of an archive made from it."
    with tarfile.open(root/archive, 'w:gz') as t: t.add(root/tree, tree)
    p = root/'expected.json'
    p.write_text(json.dumps(dict(archives={archive: _md5(root/archive)}, counts=corpus_counts(name, root))))
    return p


def test_aishell_stages_0_to_6_and_rerun(tmp_path, capsys):
    make_mini_aishell(tmp_path/'corpus')
    exp = _expected(tmp_path/'corpus', 'aishell', 'data_aishell.tgz', 'data_aishell')
    argv = ['aishell', '--data-root', tmp_path/'corpus', '--exp', tmp_path/'w', '--expected', exp, '--methods', 'ctc_greedy,rescoring',
            '--n-average', 2, '--stage', -1, '--stop-stage', 6, *TINY]
    rc, out, err = run(recipe_main, argv, capsys)
    assert rc == 0, err
    assert _stages(out) == {k: 'done' for k in range(0, 7)}, out
    assert 'data_aishell.tgz: MD5 ok' in out and 'as expected' in out
    w = tmp_path/'w'
    for p in ('data/train/text', 'exp/cmvn.npz', 'exp/units.txt', 'exp/lm/char3.arpa', 'exp/model_avg.pt',
              'exp/decode_test/rescoring/text', 'results.md'):
        assert (w/p).is_file(), p
    table = (w/'results.md').read_text()
    assert table.count('\n') == 2 + 4 and '| test | rescoring |' in table              # 2 splits x 2 methods
    assert '1P: asr_nb_train --config' in out and '8P: torchrun --nproc_per_node=8 --standalone' in out
    cmvn = (w/'exp'/'cmvn.npz').stat().st_mtime_ns
    rc, out, err = run(recipe_main, argv[:-len(TINY) - 4] + ['--stage', 0, '--stop-stage', 6, *TINY], capsys)   # again: all skipped
    assert rc == 0, err
    assert _stages(out) == {**{k: 'skipped' for k in range(0, 6)}, 6: 'done'}, out
    assert (w/'exp'/'cmvn.npz').stat().st_mtime_ns == cmvn
    (w/'exp'/'decode_dev'/'ctc_greedy'/'text').unlink()                                # an output lost: stage 5 runs again
    rc, out, _ = run(recipe_main, argv[:-len(TINY) - 4] + ['--stage', 4, '--stop-stage', 5, *TINY], capsys)
    assert rc == 0 and _stages(out) == {4: 'skipped', 5: 'done'}, out


def test_librispeech_stages_0_to_6(tmp_path, capsys):
    make_mini_librispeech(tmp_path/'corpus', splits=('train-clean-100', 'dev-clean', 'dev-other', 'test-clean', 'test-other'))
    argv = ['librispeech', '--data-root', tmp_path/'corpus', '--exp', tmp_path/'w', '--methods', 'ctc_greedy,ctc_beam_lm_fast',
            '--stage', 0, '--stop-stage', 6, *TINY, 'tokenizer.bpe_vocab_size=30', 'features.speed_perturb=[1.0]']
    rc, out, err = run(recipe_main, argv, capsys)
    assert rc == 0, err
    assert _stages(out) == {k: 'done' for k in range(0, 7)}, out
    w = tmp_path/'w'
    assert (w/'exp'/'bpe.model').is_file() and (w/'exp'/'lm'/'word3.arpa').is_file()
    res = json.loads((w/'exp'/'decode_test_other'/'ctc_beam_lm_fast'/'result.json').read_text())
    assert res['n'] == 6 and res['wer'] is not None
    assert (w/'results.md').read_text().count('| ctc_beam_lm_fast |') == 4                # four test sets


def test_stage_minus_one(tmp_path, capsys):
    root = tmp_path/'corpus'
    make_mini_librispeech(root)
    exp = _expected(root, 'librispeech', 'test-clean.tar.gz', 'LibriSpeech/test-clean')
    argv = ['librispeech', '--data-root', root, '--exp', tmp_path/'w', '--stage', -1, '--stop-stage', -1]
    rc, out, err = run(recipe_main, [*argv, '--expected', exp], capsys)
    assert rc == 0 and 'test-clean.tar.gz: MD5 ok' in out, err
    one_line_error(*run(recipe_main, argv, capsys)[::2], 'split dev-clean: 6 utterances, the release has 2703', '(+2 more)')
    next((root/'LibriSpeech'/'dev-clean').rglob('*.flac')).unlink()                      # damaged: a file lost ...
    with open(root/'test-clean.tar.gz', 'r+b') as f: f.truncate(50)                      # ... and a partial archive
    line = one_line_error(*run(recipe_main, [*argv, '--expected', exp], capsys)[::2], 'test-clean.tar.gz: MD5', 'split dev-clean: 5 utterances')
    assert 'damaged or partial download' in line


def test_ngpu_2_trains_under_torchrun(tmp_path, capsys, monkeypatch):
    "--ngpu 2: stage 4 launches torchrun (two CPU ranks over gloo here), then averages."
    monkeypatch.setenv('OMP_NUM_THREADS', '1')
    make_mini_aishell(tmp_path/'corpus')
    rc, out, err = run(recipe_main, ['aishell', '--data-root', tmp_path/'corpus', '--exp', tmp_path/'w', '--stage', 0, '--stop-stage', 4,
                                     '--ngpu', 2, '--n-average', 1, *TINY], capsys)
    assert rc == 0, err[-3000:]
    assert _stages(out) == {k: 'done' for k in range(0, 5)}, out
    assert '2 rank(s)' in (tmp_path/'w'/'exp'/'train.log').read_text() and (tmp_path/'w'/'exp'/'model_avg.pt').is_file()


def test_aishell_dump_stage_feeds_training(tmp_path, capsys):
    "`--dump`: stage 1 writes ark/scp features per split, and stage 4 trains on them (the log names the dump dir)."
    make_mini_aishell(tmp_path/'corpus')
    argv = ['aishell', '--data-root', tmp_path/'corpus', '--exp', tmp_path/'w', '--dump', '--stage', 0, '--stop-stage', 4,
            '--n-average', 1, *TINY]
    rc, out, err = run(recipe_main, argv, capsys)
    assert rc == 0, err
    assert _stages(out) == {k: 'done' for k in range(0, 5)}, out
    w = tmp_path/'w'
    for s in ('train', 'dev'):
        scp = (w/'dump'/s/'feats.scp').read_text().splitlines()
        assert len(scp) == len((w/'data'/s/'text').read_text().splitlines()), s
    assert (w/'exp'/'model_avg.pt').is_file()
    assert f"--train {w/'dump'/'train'} --valid {w/'dump'/'dev'}" in out, out     # the 1P command: the dump is the training data
