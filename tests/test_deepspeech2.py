"""DeepSpeech2 end to end (issue 12): the `deepspeech2` family through the unchanged pipeline, and PPASR's data layout.

- A tiny DeepSpeech2 (bidirectional, and the streaming variant with a lookahead convolution) trains a few steps with
  `asr_nb_train`, decodes with `ctc_greedy`, exports with `asr_nb_export`; onnxruntime transcribes exactly as PyTorch.
- A PPASR-layout dataset (jsonl manifest with audio_filepath/duration/text, `mean_std.npz`, `vocabulary.txt`) trains
  and decodes; its vocabulary and statistics are the ones the model uses.
- Bad settings and bad manifest lines end in one error line naming the key or file:line.
"""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from asr_nb.cli import decode_main, export_main, lm_main, train_main

from cli_helpers import ROOT, one_line_error, run, synth
TINY = ['model.deepspeech2.conv_channels=4', 'model.deepspeech2.rnn_layers=1', 'model.deepspeech2.rnn_hidden=16',
        'train.max_steps=3', 'train.max_epochs=1', 'train.log_interval=1', 'train.num_threads=1',
        'data.max_frames_in_batch=3000', 'optim.warmup_steps=2', 'data.num_workers=0']


@pytest.fixture(scope='module')
def corpus(tmp_path_factory): return synth(tmp_path_factory, n_train=16, seed=7)


def train_exp(train, valid, exp, *overrides):
    rc = train_main(['--config', str(ROOT/'conf'/'deepspeech2_tiny.yaml'), '--train', str(train), '--valid', str(valid),
                     '--exp', str(exp), *TINY, *overrides])
    assert rc == 0
    return exp


@pytest.mark.parametrize('variant', [[], ['model.deepspeech2.bidirectional=false', 'model.deepspeech2.lookahead=2',
                                          'model.deepspeech2.rnn_type=lstm']], ids=['bigru', 'lstm_lookahead'])
def test_trains_decodes_and_exports(corpus, tmp_path, capsys, variant):
    from asr_nb.export import Recognizer
    exp = train_exp(corpus['train'], corpus['dev'], tmp_path/'exp', *variant)
    capsys.readouterr()
    log = (exp/'train.log').read_text()
    assert 'loss_ctc=' in log and 'loss_att=' not in log and 'cer=' in log
    rc, out, err = run(decode_main, ['--exp', exp, '--data', corpus['test'], '--method', 'ctc_greedy', '--out', tmp_path/'dec'],
                       capsys)
    assert rc == 0, err
    res = json.loads((tmp_path/'dec'/'result.json').read_text())
    assert res['n'] == 4 and res['cer'] is not None
    assert lm_main(['ngram', '--text', str(corpus['train']), '--order', '3', '--out', str(tmp_path/'word3.arpa')]) == 0
    lm_args = ['--beam', '8', '--lm-path', tmp_path/'word3.arpa', '--lm-weight', '0.5']
    for m in ('ctc_beam_lm', 'ctc_beam_lm_fast'):                     # PPASR's decoding: CTC prefix beam search + a word n-gram
        rc, out, err = run(decode_main, ['--exp', exp, '--data', corpus['test'], '--method', m, *lm_args, '--out', tmp_path/m], capsys)
        assert rc == 0, err
        assert json.loads((tmp_path/m/'result.json').read_text())['n'] == 4
    (tmp_path/'bad.arpa').write_text('\\data\\\nngram 1=zz\n')          # named is loaded and checked, even at the default weight 0
    one_line_error(*run(decode_main, ['--exp', exp, '--data', corpus['test'], '--method', 'ctc_beam_lm_fast', '--lm-path',
                                      tmp_path/'bad.arpa', '--out', tmp_path/'z'], capsys)[::2], 'bad.arpa:2')
    assert not (tmp_path/'z').exists()
    one_line_error(*run(decode_main, ['--exp', exp, '--data', corpus['test'], '--method', 'ctc_prefix_beam', *lm_args,   # a unit-LM search
                                      '--out', tmp_path/'y'], capsys)[::2], 'word n-gram', 'ctc_beam_lm')
    one_line_error(*run(decode_main, ['--exp', exp, '--data', corpus['test'], '--method', 'attention', '--out', tmp_path/'x'],
                        capsys)[::2], "'attention'")
    rc, out, err = run(export_main, ['--exp', exp, '--out', tmp_path/'onnx'], capsys)
    assert rc == 0, err
    meta = json.loads((tmp_path/'onnx'/'meta.json').read_text())
    assert meta['capabilities'] == ['ctc'] and meta['subsampling'] == 4 and meta['model']['family'] == 'deepspeech2'
    wavs = [l.split()[1] for l in (corpus['test']/'wav.scp').read_text().splitlines()]
    pt, ort = Recognizer.from_exp(exp), Recognizer.from_onnx(tmp_path/'onnx')
    assert pt.transcribe(wavs, method='ctc_greedy') == ort.transcribe(wavs, method='ctc_greedy')
    feats = torch.randn(3, 157, 80) * 3 + 10; lens = torch.tensor([157, 120, 61])
    (lp1, _, l1), (lp2, _, l2) = pt.encode(feats, lens), ort.encode(feats, lens)
    assert torch.equal(l1, l2) and all(torch.allclose(lp1[b, :n], lp2[b, :n], atol=1e-4) for b, n in enumerate(l1.tolist()))
    t1, t2 = pt.transcribe(wavs[0], timestamps=True), ort.transcribe(wavs[0], timestamps=True)
    assert t1 == t2                                                # the same frame rate on both engines


def test_bad_settings_are_one_line(corpus, tmp_path, capsys):
    for bad, needle in [('model.deepspeech2.rnn_type=rnn', 'rnn_type'), ('model.deepspeech2.lookahead=2', 'bidirectional'),
                        ('model.deepspeech2.conv_stride=[2]', 'conv_stride'), ('features.kind=raw', 'features.kind')]:
        one_line_error(*run(train_main, ['--config', ROOT/'conf'/'deepspeech2_tiny.yaml', '--train', corpus['train'],
                                         '--valid', corpus['dev'], '--exp', tmp_path/'bad', *TINY, bad], capsys)[::2], needle)


def ppasr_layout(corpus, root: Path) -> dict:
    "The synthetic corpus as PPASR lays it out: manifest.train/test, vocabulary.txt ('<blank>', '<unk>', chars), mean_std.npz."
    from asr_nb.data import read_data_dir, fill_num_frames, write_ppasr_manifest
    root.mkdir(parents=True)
    out = {}
    for split in ('train', 'dev', 'test'):
        utts = read_data_dir(corpus[split]); fill_num_frames(utts)
        out[split] = write_ppasr_manifest(utts, root/f'manifest.{split}')
    counts = {}
    for line in out['train'].read_text().splitlines():
        for c in json.loads(line)['text']: counts[c] = counts.get(c, 0) + 1
    chars = sorted(counts, key=lambda c: (-counts[c], c))
    (root/'vocabulary.txt').write_text('<blank>\t-1\n<unk>\t-1\n' + ''.join(f"{'<space>' if c == ' ' else c}\t{counts[c]}\n"
                                                                          for c in chars), encoding='utf-8')
    rng = np.random.default_rng(0)
    np.savez(root/'mean_std.npz', mean=rng.normal(10, 1, (80, 1)).astype(np.float32),
             std=rng.uniform(2, 4, (80, 1)).astype(np.float32))     # PPASR's keys and (D, 1) shapes
    out.update(vocab=root/'vocabulary.txt', mean_std=root/'mean_std.npz', chars=chars)
    return out


def test_ppasr_layout_trains_and_decodes(corpus, tmp_path, capsys):
    from asr_nb.features import load_cmvn
    from asr_nb.tokenizer import read_units
    pp = ppasr_layout(corpus, tmp_path/'dataset')
    first = json.loads(pp['train'].read_text().splitlines()[0])
    assert sorted(first) == ['audio_filepath', 'duration', 'text']
    exp = train_exp(pp['train'], pp['dev'], tmp_path/'exp', f"tokenizer.units_file={pp['vocab']}",
                    f"features.cmvn_file={pp['mean_std']}")
    units = read_units(exp/'units.txt')
    assert units == ['<blank>', '<unk>', *['<space>' if c == ' ' else c for c in pp['chars']], '<sos/eos>']
    mean, istd = load_cmvn(exp/'cmvn.npz')
    z = np.load(pp['mean_std'])
    assert np.allclose(mean.numpy(), z['mean'][:, 0]) and np.allclose(istd.numpy(), 1 / z['std'][:, 0])
    capsys.readouterr()
    rc, out, err = run(decode_main, ['--exp', exp, '--data', pp['test'], '--method', 'ctc_greedy', '--out', tmp_path/'dec'],
                       capsys)
    assert rc == 0, err
    assert json.loads((tmp_path/'dec'/'result.json').read_text())['n'] == 4


def test_ppasr_files_round_trip(tmp_path):
    from asr_nb.features import export_mean_std, import_mean_std, load_cmvn
    from asr_nb.tokenizer import read_ppasr_vocab, write_ppasr_vocab
    (tmp_path/'v.txt').write_text('<blank>\t-1\n<unk>\t-1\n的\t9\n<space>\t3\na\t2\n', encoding='utf-8')
    units = read_ppasr_vocab(tmp_path/'v.txt')
    assert units == ['<blank>', '<unk>', '的', '<space>', 'a', '<sos/eos>']
    write_ppasr_vocab(units, tmp_path/'w.txt')
    assert read_ppasr_vocab(tmp_path/'w.txt') == units
    np.savez(tmp_path/'ms.npz', mean=np.arange(4, dtype=np.float32).reshape(4, 1), std=np.full((4, 1), 2, np.float32))
    import_mean_std(tmp_path/'ms.npz', tmp_path/'cmvn.npz')
    mean, istd = load_cmvn(tmp_path/'cmvn.npz')
    assert mean.tolist() == [0, 1, 2, 3] and istd.tolist() == [0.5] * 4
    export_mean_std(tmp_path/'cmvn.npz', tmp_path/'back.npz')
    z = np.load(tmp_path/'back.npz')
    assert z['mean'].shape == (4, 1) and np.allclose(z['std'][:, 0], 2)


def test_bad_ppasr_manifest_line_is_one_error(corpus, tmp_path, capsys):
    from asr_nb.data import DataError, read_jsonl
    pp = ppasr_layout(corpus, tmp_path/'dataset')
    lines = pp['train'].read_text().splitlines()
    bad = tmp_path/'manifest.bad'
    bad.write_text('\n'.join(lines[:2] + ['{"audio_filepath": "a.wav", "text": "x"}'] + lines[2:]) + '\n')
    with pytest.raises(DataError, match=r"manifest.bad:3: missing field 'duration'"): read_jsonl(bad)
    one_line_error(*run(train_main, ['--config', ROOT/'conf'/'deepspeech2_tiny.yaml', '--train', bad, '--valid', pp['dev'],
                                     '--exp', tmp_path/'e', *TINY], capsys)[::2], 'manifest.bad:3')
