"""sherpa-onnx deployment: `asr_nb_export --format sherpa-onnx` on a small trained model, the test set decoded by
sherpa-onnx's OfflineRecognizer (fp32 and int8) and by our ctc_greedy; corpus CERs must agree within 0.5 absolute.

The model: the tiny config trained a few steps on the built-in corpus (it still emits mostly blanks), then its CTC
head's logits scaled by 20 and those of blank and space lowered by 60: confident posteriors and varied, non-empty transcripts,
so the two decoders are compared on real work. Both hear the same signals with a faint noise floor (-60 dBFS), as
recordings have: sherpa-onnx always dithers (WeNet convention), our decoding never does, and on digital silence
only that would differ. Set ASR_NB_SHERPA_EXP=EXP_DIR and
ASR_NB_SHERPA_DATA=DATA_DIR to run it on a really trained model instead (bench/sherpa_tiny.py reports those figures).
"""
import os
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

pytest.importorskip('sherpa_onnx')
from asr_nb.cli import export_main, synth_main, train_main
from asr_nb.data import read_data_dir
from asr_nb.export import Recognizer
from asr_nb.metrics import cer
from asr_nb.sherpa import SherpaExportError, _check_exportable, read_sherpa_metadata, sherpa_recognizer, sherpa_transcribe

ROOT = Path(__file__).resolve().parents[1]
TINY = ['model.encoder.d_model=32', 'model.encoder.attention_heads=2', 'model.encoder.linear_units=64',
        'model.encoder.num_blocks=1', 'model.decoder.num_blocks=1', 'model.decoder.linear_units=64',
        'model.encoder.cnn_kernel=3', 'train.max_epochs=2', 'train.tensorboard=false', 'data.max_frames_in_batch=3000',
        'optim.warmup_steps=2', 'train.num_threads=1']


@pytest.fixture(scope='module')
def trained(tmp_path_factory):
    "(experiment dir, test data dir)."
    if os.environ.get('ASR_NB_SHERPA_EXP'): return Path(os.environ['ASR_NB_SHERPA_EXP']), Path(os.environ['ASR_NB_SHERPA_DATA'])
    d = tmp_path_factory.mktemp('sherpa')
    assert synth_main(['--out', str(d/'synth'), '--n-train', '24', '--n-dev', '4', '--n-test', '8', '--seed', '5']) == 0
    exp = d/'exp'
    assert train_main(['--config', str(ROOT/'conf'/'tiny.yaml'), '--train', str(d/'synth'/'train'),
                       '--valid', str(d/'synth'/'dev'), '--exp', str(exp), *TINY]) == 0
    last = torch.load(exp/'checkpoints'/'last.pt', map_location='cpu', weights_only=True)['path']   # a pointer file
    sd = torch.load(exp/'checkpoints'/Path(last).name, map_location='cpu', weights_only=True)['model']
    for k in sd:
        if k.startswith('ctc.'): sd[k] = sd[k] * 20                  # confident posteriors, same argmax
    units = (exp/'units.txt').read_text(encoding='utf-8').split()
    for u in ('<blank>', '<space>'): sd['ctc.ctc_lo.bias'][units.index(u)] -= 60   # letters win: varied output
    torch.save(dict(model=sd), exp/'model_avg.pt')
    return exp, d/'synth'/'test'


@pytest.fixture(scope='module')
def exported(trained, tmp_path_factory):
    out = tmp_path_factory.mktemp('sherpa_out')
    assert export_main(['--exp', str(trained[0]), '--out', str(out), '--format', 'sherpa-onnx']) == 0
    return out


def test_export_writes_sherpa_layout(trained, exported):
    for f in ('model.onnx', 'model.int8.onnx', 'tokens.txt'): assert (exported/f).is_file(), f
    meta = read_sherpa_metadata(exported/'model.onnx')
    assert meta['model_type'] == 'wenet_ctc' and meta['subsampling_factor'] == '4' and meta['normalize_type'] == ''
    units = (trained[0]/'units.txt').read_text().split()
    tokens = (exported/'tokens.txt').read_text(encoding='utf-8').splitlines()
    assert int(meta['vocab_size']) == len(units) == len(tokens) and tokens[0] == '<blank> 0'
    assert meta.items() <= read_sherpa_metadata(exported/'model.int8.onnx').items()
    assert (exported/'model.int8.onnx').stat().st_size < (exported/'model.onnx').stat().st_size   # tiny: mostly the position table


def test_sherpa_matches_ctc_greedy(trained, exported):
    exp, data = trained
    utts = read_data_dir(data)
    refs = [u.text for u in utts]
    reads = [sf.read(u.audio, dtype='float32') for u in utts]
    sr = reads[0][1]
    rng = np.random.default_rng(0)
    waves = [w + rng.normal(0, 1e-3, w.shape).astype(np.float32) for w, _ in reads]   # a noise floor
    ours = Recognizer.from_exp(exp).transcribe(waves, 'ctc_greedy', sample_rate=sr)
    fp32 = sherpa_transcribe(sherpa_recognizer(exported), waves, sr)
    int8 = sherpa_transcribe(sherpa_recognizer(exported, int8=True), waves, sr)
    c_ours, c_fp32, c_int8 = cer(refs, ours), cer(refs, fp32), cer(refs, int8)
    same = sum(a.split() == b.split() for a, b in zip(ours, fp32))
    print(f'CER ctc_greedy {c_ours:.2f}%  sherpa-onnx fp32 {c_fp32:.2f}%  int8 {c_int8:.2f}%  '
          f'identical transcripts {same}/{len(utts)}')
    assert sum(bool(t.strip()) for t in ours) >= len(ours) // 2, ours    # the comparison is not between empty strings
    assert abs(c_fp32 - c_ours) <= 0.5, (ours, fp32)


def test_refuses_what_sherpa_cannot_run():
    from types import SimpleNamespace as NS
    cfg = lambda kind, fam='x': NS(features=NS(kind=kind), model=NS(family=fam))
    with pytest.raises(SherpaExportError, match='no CTC head'): _check_exportable(NS(capabilities={'decoder'}), cfg('fbank'), 'e')
    with pytest.raises(SherpaExportError, match='fbank only'): _check_exportable(NS(capabilities={'ctc'}), cfg('mfcc'), 'e')
