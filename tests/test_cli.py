"""The console scripts end to end on a very small synthesised corpus, and every user-error path.

The chain: synth -> train (a few steps at tiny dimensions) -> average -> decode (every method) -> score -> export (ONNX,
checked against PyTorch) -> transcribe through onnxruntime. Errors: bad config key, missing/unusable data dir, corrupt
audio, empty test set, missing experiment dir, bad arguments -- each one line on stderr and exit status 2 (validate: 1).
"""
import json, os, shutil, subprocess, sys
from pathlib import Path

import pytest
import soundfile as sf

from asr_nb import cli
from asr_nb.cli import (average_main, decode_main, demo_main, export_main, jsonl2scp_main, score_main, scp2jsonl_main,
                        synth_main, train_main, transcribe_main, validate_main, VERBS, METHODS)

ROOT = Path(__file__).resolve().parents[1]
TINY = str(ROOT/'conf'/'tiny.yaml')
# tiny dimensions: the point is the plumbing, not accuracy
TINY_OVERRIDES = ['model.encoder.d_model=32', 'model.encoder.attention_heads=2', 'model.encoder.linear_units=64', 'model.encoder.num_blocks=1',
                  'model.decoder.num_blocks=1', 'model.decoder.linear_units=64', 'model.encoder.cnn_kernel=3',
                  'train.max_epochs=2', 'train.log_interval=1', 'train.keep_n_best=3', 'train.tensorboard=false',
                  'data.max_frames_in_batch=3000', 'optim.warmup_steps=2', 'train.num_threads=1']


def run(main, argv, capsys):
    "Call a console-script main; return (exit code, stdout, stderr)."
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(rc, err, *needles, code=2):
    assert rc == code, err
    lines = [l for l in err.splitlines() if l.strip()]
    assert len(lines) == 1 and 'error:' in lines[0] and 'Traceback' not in err, err
    for n in needles: assert n in lines[0], (n, lines[0])


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
    d = tmp_path_factory.mktemp('corpus')/'synth'
    assert synth_main(['--out', str(d), '--n-train', '30', '--n-dev', '6', '--n-test', '6', '--seed', '3']) == 0
    return {s: d/s for s in ('train', 'dev', 'test')}


@pytest.fixture(scope='module')
def exp(corpus, tmp_path_factory):
    e = tmp_path_factory.mktemp('exp')/'tiny'
    rc = train_main(['--config', TINY, '--train', str(corpus['train']), '--valid', str(corpus['dev']), '--exp', str(e),
                     *TINY_OVERRIDES])
    assert rc == 0
    return e


# ---------------------------------------------------------------- the chain

def test_train_writes_experiment(exp):
    for f in ('config.yaml', 'cmvn.npz', 'units.txt'): assert (exp/f).is_file(), f
    assert list((exp/'checkpoints').glob('*.pt'))
    assert 'd_model: 32' in (exp/'config.yaml').read_text()  # the overrides are in the resolved config


def test_average(exp, capsys):
    rc, out, err = run(average_main, ['--exp', exp, '--n', 2, '--by', 'valid_loss'], capsys)
    assert rc == 0, err
    assert Path(out.strip().splitlines()[-1]).is_file()
    assert (exp/'model_avg.pt').is_file()


def test_decode_every_method_and_score(exp, corpus, tmp_path, capsys):
    test_average(exp, capsys)
    out_dir = tmp_path/'decode'
    rc, out, err = run(decode_main, ['--exp', exp, '--data', corpus['test'], '--method', 'all', '--beam', 2,
                                     '--batch-size', 4, '--out', out_dir], capsys)
    assert rc == 0, err
    keys = sorted(l.split()[0] for l in (corpus['test']/'text').read_text().splitlines())
    from asr_nb.decode import methods_for
    for m in methods_for({'ctc', 'decoder'}):                     # 'all': every method this hybrid model can run
        assert m in out
        hyp = (out_dir/m/'text').read_text().splitlines()
        assert sorted(l.split()[0] for l in hyp) == keys
        res = json.loads((out_dir/m/'result.json').read_text())
        assert res['n'] == len(keys) and res['rtf'] > 0 and res['cer'] >= 0 and res['method'] == m
        assert 'REF:' in (out_dir/m/'report.txt').read_text()
    rc, out, err = run(score_main, ['--ref', corpus['test']/'text', '--hyp', out_dir/'ctc_greedy'/'text', '--json'], capsys)
    assert rc == 0, err
    assert json.loads(out)['cer'] == pytest.approx(json.loads((out_dir/'ctc_greedy'/'result.json').read_text())['cer'])


def test_score_perfect_and_errors(corpus, tmp_path, capsys):
    ref = corpus['test']/'text'
    rc, out, err = run(score_main, ['--ref', ref, '--hyp', ref], capsys)
    assert rc == 0 and 'CER 0.00 %' in out and 'WER 0.00 %' in out
    bad = tmp_path/'hyp'; bad.write_text('nosuchutt hello\n')
    assert_one_line_error(*run(score_main, ['--ref', ref, '--hyp', bad], capsys)[::2], 'not in the references')
    assert_one_line_error(*run(score_main, ['--ref', ref, '--hyp', tmp_path/'nope'], capsys)[::2], 'hypothesis file not found')


def test_export_and_onnx_transcribe(exp, corpus, tmp_path, capsys):
    from asr_nb.export import Recognizer
    onnx_dir = tmp_path/'onnx'
    rc, out, err = run(export_main, ['--exp', exp, '--out', onnx_dir], capsys)
    assert rc == 0, err
    info = json.loads(out)
    assert info['encoder_max_abs_diff'] < 1e-4 and info['decoder_max_abs_diff'] < 1e-4, info
    wavs = [l.split(maxsplit=1)[1] for l in (corpus['test']/'wav.scp').read_text().splitlines()][:3]
    ort_texts = Recognizer.from_onnx(onnx_dir).transcribe(wavs)
    pt_texts = Recognizer.from_exp(exp).transcribe(wavs)
    assert ort_texts == pt_texts
    # the -m entry point with timestamps, in a fresh interpreter (no PyTorch model loaded there)
    p = subprocess.run([sys.executable, '-m', 'asr_nb.cli', 'transcribe', '--onnx', str(onnx_dir), '--timestamps', *wavs],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr
    lines = p.stdout.strip().splitlines()
    assert len(lines) == 3 and [l.split('\t')[1] for l in lines] == ort_texts
    for l in lines:  # token times: unit@start, increasing
        times = [float(t.rsplit('@', 1)[1]) for t in l.split('\t')[2].split()]
        assert times == sorted(times)
    assert_one_line_error(*run(transcribe_main, ['--onnx', onnx_dir, tmp_path/'nope.wav'], capsys)[::2], 'audio file not found')
    assert_one_line_error(*run(transcribe_main, ['--onnx', tmp_path, wavs[0]], capsys)[::2], 'meta.json')


def test_utterance_cmvn_trains_exports_and_transcribes(corpus, tmp_path, capsys):
    "features.cmvn=utterance (ESPnet2's UtteranceMVN): no statistics file; the layer travels in the checkpoint and ONNX."
    from asr_nb.export import Recognizer
    from asr_nb.features import UtteranceMVN
    e = tmp_path/'umvn'
    over = [o for o in TINY_OVERRIDES if not o.startswith('train.max_epochs')] + ['train.max_epochs=1', 'features.cmvn=utterance']
    rc, _, err = run(train_main, ['--config', TINY, '--train', corpus['train'], '--valid', corpus['dev'], '--exp', e, *over], capsys)
    assert rc == 0, err
    assert not (e/'cmvn.npz').exists() and (e/'config.yaml').is_file()
    rec = Recognizer.from_exp(e)
    assert isinstance(rec.model.cmvn, UtteranceMVN)
    rc, out, err = run(export_main, ['--exp', e, '--out', tmp_path/'onnx'], capsys)
    assert rc == 0, err
    assert json.loads(out)['encoder_max_abs_diff'] < 1e-4
    wavs = [l.split(maxsplit=1)[1] for l in (corpus['test']/'wav.scp').read_text().splitlines()][:3]
    assert Recognizer.from_onnx(tmp_path/'onnx').transcribe(wavs) == rec.transcribe(wavs)
    # a streaming encoder cannot normalise by a mean it has not heard yet: one line, before anything is written
    rc, _, err = run(train_main, ['--config', TINY, '--train', corpus['train'], '--valid', corpus['dev'], '--exp', tmp_path/'s',
                                  *over, 'model.encoder.causal=true'], capsys)
    assert_one_line_error(rc, err, "features.cmvn: 'utterance'", 'streaming encoder')
    assert not (tmp_path/'s').exists()


def test_sigterm_unwinds_a_console_script(tmp_path):
    "SIGTERM ends a console script like Ctrl-C: `terminated`, exit 143, and atexit cleanup (unpacked shards) still runs."
    import signal
    code = ("import atexit, shutil, sys, tempfile, time\n"
            "from asr_nb.cli import cli_entry\n"
            f"d = tempfile.mkdtemp(dir={str(tmp_path)!r}); atexit.register(shutil.rmtree, d)\n"
            "def slow(argv): print(d, flush=True); time.sleep(60)\n"
            "sys.exit(cli_entry('asr_nb_x')(slow)([]))\n")
    p = subprocess.Popen([sys.executable, '-c', code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    d = p.stdout.readline().strip()
    assert Path(d).is_dir()
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=30)
    assert p.returncode == 143 and err.strip() == 'asr_nb_x: terminated', (p.returncode, err)
    assert not Path(d).exists()


def test_a_checkpoint_decodes_without_its_cmvn_file(exp, corpus, tmp_path, capsys):
    "Global CMVN statistics are buffers in the weights: an exp dir without cmvn.npz decodes the same (it said 'weights do not fit')."
    e = tmp_path/'nocmvn'; shutil.copytree(exp, e); (e/'cmvn.npz').unlink()
    wavs = [l.split(maxsplit=1)[1] for l in (corpus['test']/'wav.scp').read_text().splitlines()][:3]
    rc, out, err = run(transcribe_main, ['--exp', e, *wavs], capsys)
    assert rc == 0, err
    rc, want, err = run(transcribe_main, ['--exp', exp, *wavs], capsys)
    assert out == want


def test_data_verbs_round_trip(corpus, tmp_path, capsys):
    j = tmp_path/'test.jsonl'
    assert run(scp2jsonl_main, [corpus['test'], j], capsys)[0] == 0
    assert run(jsonl2scp_main, [j, tmp_path/'back'], capsys)[0] == 0
    for f in ('wav.scp', 'text'): assert (tmp_path/'back'/f).read_text() == (corpus['test']/f).read_text()
    rc, out, err = run(validate_main, [corpus['test']], capsys)
    assert rc == 0 and '6 good, 0 bad' in out, out + err


def test_help_documents_every_option(capsys):
    for verb, main in VERBS.items():
        rc, out, _ = run(main, ['--help'], capsys)
        assert rc == 0 and 'usage:' in out, verb
    rc, out, _ = run(train_main, ['--help'], capsys)
    for opt in ('--config', '--train', '--valid', '--exp', 'key=value'): assert opt in out


# ---------------------------------------------------------------- error paths

def test_bad_config_key(corpus, tmp_path, capsys):
    args = ['--config', TINY, '--train', corpus['train'], '--valid', corpus['dev'], '--exp', tmp_path/'e']
    assert_one_line_error(*run(train_main, args + ['model.d_modle=3'], capsys)[::2], "model.d_modle", "model.encoder.d_model")
    assert_one_line_error(*run(train_main, args + ['train.max_epochs=many'], capsys)[::2], 'train.max_epochs')
    assert_one_line_error(*run(train_main, args + ['max_epochs'], capsys)[::2], 'not of the form')
    y = tmp_path/'bad.yaml'; y.write_text('model:\n  num_blokcs: 3\n')
    assert_one_line_error(*run(train_main, ['--config', y] + args[2:], capsys)[::2], 'bad.yaml', 'num_blocks')
    assert_one_line_error(*run(train_main, ['--config', tmp_path/'nope.yaml'] + args[2:], capsys)[::2], 'config file not found')
    assert not (tmp_path/'e').exists()  # nothing was started


def test_outputs_never_replace_inputs(exp, corpus, tmp_path, capsys):
    "--out onto the data dir, --report onto an input, --out onto an experiment: refused in one line, nothing changed."
    data = tmp_path/'data'; shutil.copytree(corpus['test'], data)
    ref = (data/'text').read_text()
    assert_one_line_error(*run(decode_main, ['--exp', exp, '--data', data, '--out', data, '--method', 'ctc_greedy'], capsys)[::2],
                          'is the data dir')
    assert (data/'text').read_text() == ref
    rc, _, err = run(decode_main, ['--exp', exp, '--data', data, '--out', tmp_path/'hyp', '--method', 'ctc_greedy'], capsys)
    assert rc == 0, err
    assert_one_line_error(*run(score_main, ['--ref', data/'text', '--hyp', tmp_path/'hyp'/'text', '--report', data/'text'], capsys)[::2],
                          'is the --ref file')
    assert (data/'text').read_text() == ref
    before = sorted(p.name for p in exp.iterdir())
    assert_one_line_error(*run(export_main, ['--exp', exp, '--out', exp], capsys)[::2], 'which an export does not write')
    assert sorted(p.name for p in exp.iterdir()) == before


def test_reexport_is_whole_or_not_at_all(exp, tmp_path, capsys, monkeypatch):
    "A re-export replaces the dir as a whole (no stale file); an interrupted one leaves the old export as it was."
    import asr_nb.export as E
    out = tmp_path/'onnx'
    assert run(export_main, ['--exp', exp, '--out', out, '--no-check'], capsys)[0] == 0
    (out/'encoder_chunk.onnx').write_bytes(b'from an earlier --stream export')
    old = {p.name: p.read_bytes() for p in out.iterdir()}
    def interrupted(*args, **kw): raise KeyboardInterrupt
    monkeypatch.setattr(E, 'export_model_onnx', interrupted)
    rc, _, err = run(export_main, ['--exp', exp, '--out', out, '--no-check'], capsys)
    assert rc == 130 and 'interrupted' in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == old                       # the old export, whole
    assert sorted(p.name for p in tmp_path.iterdir()) == ['onnx']                        # no temp dir left beside it
    monkeypatch.undo()
    assert run(export_main, ['--exp', exp, '--out', out, '--no-check'], capsys)[0] == 0
    assert not (out/'encoder_chunk.onnx').exists() and (out/'meta.json').is_file()        # replaced as a whole


def test_decode_options_are_checked_in_one_line(exp, corpus, tmp_path, capsys):
    "--threads, --device, --opset and --weights: bad values are one line (no traceback); avg/best/last are accepted."
    base = ['--exp', exp, '--data', corpus['test'], '--method', 'ctc_greedy']
    rc, _, err = run(decode_main, base + ['--out', tmp_path/'a', '--threads', '-1'], capsys)
    assert rc == 2 and 'expected an integer >= 0' in err and 'Traceback' not in err
    assert_one_line_error(*run(decode_main, base + ['--out', tmp_path/'a', '--device', 'tpu'], capsys)[::2], 'tpu')
    assert_one_line_error(*run(export_main, ['--exp', exp, '--out', tmp_path/'o5', '--opset', '5'], capsys)[::2], 'opset 5', '14 .. 20')
    assert not (tmp_path/'o5').exists()
    assert_one_line_error(*run(decode_main, base + ['--out', tmp_path/'a', '--weights', 'nope.pt'], capsys)[::2], '--weights nope.pt')
    for w in ('best', 'last'):
        rc, _, err = run(decode_main, base + ['--out', tmp_path/w, '--weights', w], capsys)
        assert rc == 0, err
    wav = (corpus['test']/'wav.scp').read_text().split()[1]
    rc, out, err = run(transcribe_main, ['--exp', exp, '--weights', 'last', wav], capsys)
    assert rc == 0 and out.startswith(wav), err
    assert_one_line_error(*run(transcribe_main, ['--onnx', tmp_path, '--weights', 'last', wav], capsys)[::2], '--weights needs --exp')


def test_decode_into_an_old_dir_leaves_no_stale_nbest_or_ctm(exp, corpus, tmp_path, capsys):
    out = tmp_path/'d'
    rc, _, err = run(decode_main, ['--exp', exp, '--data', corpus['test'], '--method', 'ctc_prefix_beam', '--nbest', '2', '--ctm',
                                   '--out', out], capsys)
    assert rc == 0 and (out/'text.2').is_file() and (out/'ctm').is_file(), err
    rc, _, err = run(decode_main, ['--exp', exp, '--data', corpus['test'], '--method', 'ctc_greedy', '--out', out], capsys)
    assert rc == 0, err
    assert sorted(p.name for p in out.iterdir()) == ['report.txt', 'result.json', 'text']


def test_missing_or_unusable_data_dir(corpus, exp, tmp_path, capsys):
    base = ['--config', TINY, '--valid', corpus['dev'], '--exp', tmp_path/'e']
    assert_one_line_error(*run(train_main, base + ['--train', tmp_path/'nope'], capsys)[::2], 'training data not found')
    (tmp_path/'junk').mkdir(); (tmp_path/'junk'/'readme').write_text('x')
    assert_one_line_error(*run(train_main, base + ['--train', tmp_path/'junk'], capsys)[::2], 'not a Kaldi data dir')
    assert_one_line_error(*run(decode_main, ['--exp', exp, '--data', tmp_path/'nope', '--out', tmp_path/'o'], capsys)[::2],
                          'test data not found')
    assert_one_line_error(*run(decode_main, ['--exp', tmp_path/'noexp', '--data', corpus['test'], '--out', tmp_path/'o'], capsys)[::2],
                          'experiment dir not found')
    assert_one_line_error(*run(decode_main, ['--exp', exp, '--data', corpus['test'], '--out', tmp_path/'o', '--method', 'greedy'],
                               capsys)[::2], 'unknown decoding method')
    broken = tmp_path/'broken'; shutil.copytree(corpus['test'], broken)
    (broken/'text').write_text((broken/'text').read_text() + 'orphan-utt hello\n')
    (broken/'wav.scp').write_text((broken/'wav.scp').read_text() + 'dup-line\n')
    rc, out, err = run(validate_main, [broken], capsys)
    assert rc == 1 and 'orphan-utt' in out and 'malformed_line' in out, out + err


def test_corrupt_audio(corpus, exp, tmp_path, capsys):
    d = tmp_path/'corrupt'; shutil.copytree(corpus['test'], d)
    lines = (d/'wav.scp').read_text().splitlines()
    key, wav = lines[0].split(maxsplit=1)
    bad = tmp_path/'bad.wav'; bad.write_bytes(b'RIFF\x00\x00\x00\x00WAVEjunk' * 10)
    (d/'wav.scp').write_text('\n'.join([f"{key} {bad}"] + lines[1:]) + '\n')
    rc, out, err = run(validate_main, [d], capsys)
    assert rc == 1 and key in out, out
    # default: the unreadable utterance is reported and skipped, the rest is decoded
    rc, out, err = run(decode_main, ['--exp', exp, '--data', d, '--out', tmp_path/'o'], capsys)
    assert rc == 0 and key in err and 'skipped 1' in err, err
    assert 'skipped=1 (unreadable: not scored' in out, out                  # the summary line says what its CER leaves out
    res = json.loads((tmp_path/'o'/'result.json').read_text())
    assert res['n'] == len(lines) - 1 and key in res['skipped']
    # --strict: one error line naming the utterance
    assert_one_line_error(*run(decode_main, ['--exp', exp, '--data', d, '--out', tmp_path/'o2', '--strict'], capsys)[::2], key)
    # strict data config stops training before it starts
    tr = tmp_path/'corrupt_train'; shutil.copytree(corpus['train'], tr)
    tl = (tr/'wav.scp').read_text().splitlines(); k0 = tl[0].split()[0]
    (tr/'wav.scp').write_text('\n'.join([f"{k0} {bad}"] + tl[1:]) + '\n')
    rc, out, err = run(train_main, ['--config', TINY, '--train', tr, '--valid', corpus['dev'], '--exp', tmp_path/'e',
                                    'data.strict=true', *TINY_OVERRIDES], capsys)
    assert rc == 2 and 'Traceback' not in err and k0 in err and err.strip().splitlines()[-1].startswith('asr_nb_train: error:'), err
    # default (not strict): the bad utterance is skipped, training runs on the rest
    rc, out, err = run(train_main, ['--config', TINY, '--train', tr, '--valid', corpus['dev'], '--exp', tmp_path/'e2',
                                    *TINY_OVERRIDES, 'train.max_steps=1'], capsys)
    assert rc == 0 and k0 in err, err


def test_empty_test_set(exp, corpus, tmp_path, capsys):
    empty = tmp_path/'empty'; empty.mkdir()
    (empty/'wav.scp').write_text(''); (empty/'text').write_text('')
    assert_one_line_error(*run(decode_main, ['--exp', exp, '--data', empty, '--out', tmp_path/'o'], capsys)[::2],
                          'holds no utterances')
    # every utterance unreadable: nothing left to decode
    gone = tmp_path/'gone'; gone.mkdir()
    (gone/'wav.scp').write_text(f"u1 {tmp_path/'missing1.wav'}\nu2 {tmp_path/'missing2.wav'}\n")
    (gone/'text').write_text('u1 hello\nu2 world\n')
    rc, out, err = run(decode_main, ['--exp', exp, '--data', gone, '--out', tmp_path/'o'], capsys)
    assert rc == 2 and 'nothing to decode' in err and 'Traceback' not in err, err


def test_console_script_subprocess(tmp_path):
    "The installed script (or `python -m asr_nb.cli`) prints one line and exits 2 on a bad key."
    exe = Path(sys.executable).parent/'asr_nb_train'
    cmd = [str(exe)] if exe.exists() else [sys.executable, '-m', 'asr_nb.cli', 'train']
    p = subprocess.run(cmd + ['--train', str(tmp_path), '--valid', str(tmp_path), '--exp', str(tmp_path/'e'),
                              'optim.lrr=1'], capture_output=True, text=True, timeout=120)
    assert p.returncode == 2 and p.stderr.strip().count('\n') == 0 and "optim.lr" in p.stderr, p.stderr


def test_demo_end_to_end_small(tmp_path, capsys):
    "asr_nb_demo = synth -> validate -> train -> average -> decode (every method) -> table, here at toy scale."
    rc, out, err = run(demo_main, ['--workdir', tmp_path/'demo', '--n-train', 30, '--n-dev', 5, '--n-test', 5,
                                   '--n-average', 2, *TINY_OVERRIDES, 'decode.beam=2'], capsys)
    assert rc == 0, err
    for stage in ('synth', 'validate', 'train', 'average', 'decode'): assert f'== stage {stage} done' in out
    res = json.loads((tmp_path/'demo'/'results.json').read_text())
    from asr_nb.decode import SEARCHES, methods_for                  # every method the model runs; word-LM ones belong to --lm
    assert list(res['results']) == [m for m in methods_for({'ctc', 'decoder'}) if SEARCHES[m].lm_kind != 'word'] and set(res['timings']) == {'synth', 'validate', 'train', 'average', 'decode'}
    assert all(r['n'] == 5 for r in res['results'].values())
    table = (tmp_path/'demo'/'results.md').read_text()
    assert '| joint |' in table and '| total |' in table and table.strip() in out
    # a second run reuses the corpus and the finished training
    rc, out, err = run(demo_main, ['--workdir', tmp_path/'demo', '--n-train', 30, '--n-dev', 5, '--n-test', 5,
                                   '--n-average', 2, '--methods', 'ctc_greedy', *TINY_OVERRIDES], capsys)
    assert rc == 0, err
    assert 'resumed from' in (tmp_path/'demo'/'exp'/'train.log').read_text()
    assert list(json.loads((tmp_path/'demo'/'results.json').read_text())['results']) == ['ctc_greedy']
