"""Streaming (issue 18): `Recognizer.stream()` equalities, the CLI (`asr_nb_transcribe --stream`, `asr_nb_decode
--chunk-size`, `asr_nb_export --stream`), onnxruntime and sherpa-onnx on the chunk graph, and the one-line errors.

The model is a tiny random causal Conformer with a decoder, written as an experiment dir by hand (no training: each
test stays well under a minute on 2 cores); its CTC head is sharpened and biased towards blank so that its
transcripts are short but not empty.
"""
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from asr_nb.cli import decode_main, export_main, transcribe_main
from asr_nb.core import DecodeConfig, DecoderConfig, EncoderConfig, ExpConfig, ModelConfig, save_config
from asr_nb.export import Recognizer
from asr_nb.model import ASRModel
from asr_nb.tokenizer import CharTokenizer
from cli_helpers import one_line_error, run

torch.set_num_threads(1)
ENC = dict(d_model=32, attention_heads=4, linear_units=64, num_blocks=2, cnn_kernel=5, cnn_norm='layer_norm', dropout=0.0)


def make_exp(d: Path, causal: bool = True) -> Path:
    "A tiny experiment dir: config, units, CMVN, random weights (CTC head sharpened, blank favoured)."
    torch.manual_seed(0)
    tok = CharTokenizer.build(["hello world", "the quick brown fox"])
    mcfg = ModelConfig(encoder=EncoderConfig(**ENC, causal=causal, dynamic_chunk=causal),
                       decoder=DecoderConfig(num_blocks=1, linear_units=64))
    cmvn = (torch.randn(80) + 10, torch.rand(80) + 0.5)
    model = ASRModel(mcfg, tok.vocab_size, cmvn=cmvn).eval()
    with torch.no_grad(): model.ctc.ctc_lo.weight.mul_(8); model.ctc.ctc_lo.bias[0] += 4
    d.mkdir(parents=True, exist_ok=True)
    save_config(ExpConfig(model=mcfg, decode=DecodeConfig(beam=4)), d/'config.yaml'); tok.save(d)
    np.savez(d/'cmvn.npz', mean=cmvn[0].numpy(), istd=cmvn[1].numpy()); torch.save(dict(model=model.state_dict()), d/'model_avg.pt')
    return d


def signal(seconds: float, seed: int) -> np.ndarray:
    g = np.random.default_rng(seed)
    t = np.arange(int(seconds * 16000)) / 16000
    return (0.3 * np.sin(2 * np.pi * g.uniform(200, 600) * t) * (t % 0.7 < 0.4) + 0.05 * g.standard_normal(len(t))).astype(np.float32)


def feed(st, sig, sizes):
    s, i = 0, 0
    while s < len(sig):
        st.accept(sig[s:s + sizes[i % len(sizes)]]); s += sizes[i % len(sizes)]; i += 1
    return st.finish()


@pytest.fixture(scope='module')
def exp(tmp_path_factory):
    return make_exp(tmp_path_factory.mktemp('stream')/'exp')


@pytest.fixture(scope='module')
def data(tmp_path_factory):
    "A Kaldi data dir of three utterances."
    d = tmp_path_factory.mktemp('data')
    scp, text = [], []
    for i in range(3):
        sf.write(d/f'u{i}.wav', signal(1.5 + i, i), 16000)
        scp.append(f"u{i} {d/f'u{i}.wav'}\n"); text.append(f"u{i} hello world\n")
    (d/'wav.scp').write_text(''.join(scp)); (d/'text').write_text(''.join(text))
    return d


def test_full_context_equals_offline_and_pieces_equal_whole(exp):
    rec = Recognizer.from_exp(exp)
    sig = signal(3.0, 7)
    for m in ('rescoring', 'ctc_prefix_beam'):
        assert feed(rec.stream(chunk_size=0, method=m), sig, [1600]) == rec.transcribe(sig, method=m)
    whole = feed(rec.stream(chunk_size=16), sig, [len(sig)])
    assert whole.strip()
    for seed in range(3):
        sizes = np.random.default_rng(seed).integers(1, 6000, 40).tolist()
        assert feed(rec.stream(chunk_size=16), sig, sizes) == whole


def test_decode_chunk_size(exp, data, tmp_path, capsys):
    rc, out, err = run(decode_main, ['--exp', exp, '--data', data, '--method', 'rescoring', '--out', tmp_path/'off'], capsys)
    assert rc == 0, err
    rc, out, err = run(decode_main, ['--exp', exp, '--data', data, '--method', 'rescoring', '--out', tmp_path/'full',
                                     '--chunk-size', '0'], capsys)
    assert rc == 0, err
    assert (tmp_path/'full'/'text').read_text() == (tmp_path/'off'/'text').read_text()   # full context = offline
    rc, out, err = run(decode_main, ['--exp', exp, '--data', data, '--method', 'rescoring', '--out', tmp_path/'c8',
                                     '--chunk-size', '8', '--num-left-chunks', '2'], capsys)
    assert rc == 0 and 'CER' in out, err
    assert len((tmp_path/'c8'/'text').read_text().splitlines()) == 3
    one_line_error(*run(decode_main, ['--exp', exp, '--data', data, '--out', tmp_path/'x', '--chunk-size', '-3'], capsys)[::2],
                   '--chunk-size')


def test_non_causal_model_is_one_line_error(tmp_path, data, capsys):
    e = make_exp(tmp_path/'nc', causal=False)
    rc, _, err = run(decode_main, ['--exp', e, '--data', data, '--out', tmp_path/'x', '--chunk-size', '16'], capsys)
    one_line_error(rc, err, 'causal')
    rc, out, err = run(decode_main, ['--exp', e, '--data', data, '--out', tmp_path/'y', '--chunk-size', '0'], capsys)
    assert rc == 0, err                                                  # full context streams any model
    rc, out, err = run(transcribe_main, ['--exp', e, '--stream', data/'u0.wav', data/'u1.wav'], capsys)
    one_line_error(rc, err, 'causal')                                    # once, not once per file
    assert out == ''


def test_transcribe_stream_prints_partials(exp, data, capsys):
    wav = data/'u2.wav'
    rc, out, err = run(transcribe_main, ['--exp', exp, '--stream', '--chunk-size', '8', wav], capsys)
    assert rc == 0, err
    lines = out.splitlines()
    partials = [l.split('\t')[2] for l in lines if l.split('\t')[1] == 'partial']
    assert len(partials) >= 2 and len(set(partials)) == len(partials)      # printed when they change
    rec = Recognizer.from_exp(exp)
    sig, _ = sf.read(wav, dtype='float32')
    assert lines[-1] == f"{wav}\t{feed(rec.stream(chunk_size=8), sig, [1600])}"
    rc, _, err = run(transcribe_main, ['--exp', exp, '--stream', wav.parent/'missing.wav'], capsys)
    one_line_error(rc, err, 'missing.wav')


def test_export_stream_onnx_and_sherpa(exp, tmp_path, capsys):
    out = tmp_path/'onnx'
    rc, _, err = run(export_main, ['--exp', exp, '--out', out, '--stream', '--chunk-size', '16', '--num-left-chunks', '4'], capsys)
    assert rc == 0, err
    assert (out/'encoder_chunk.onnx').is_file() and (out/'tokens.txt').is_file()
    sig = signal(2.5, 3)
    ro, rt = Recognizer.from_onnx(out), Recognizer.from_exp(exp)
    a = feed(ro.stream(chunk_size=16, num_left_chunks=4, method='ctc_prefix_beam'), sig, [1600])
    b = feed(rt.stream(chunk_size=16, num_left_chunks=4, method='ctc_prefix_beam'), sig, [1600])
    assert a == b
    pytest.importorskip('sherpa_onnx')
    from asr_nb.streaming import sherpa_online_recognizer, sherpa_stream_tokens
    w = sig[:(64 * 2 + 3) * 160 + 240]                                 # two whole chunks (sherpa-onnx pads the last, partial one)
    st = rt.stream(chunk_size=16, num_left_chunks=4, method='ctc_greedy'); feed(st, w, [1600])
    units = [{'<space>': '▁'}.get(rt.tokenizer.units[i], rt.tokenizer.units[i]) for i in st.ids]
    got = sherpa_stream_tokens(sherpa_online_recognizer(out, 16, 4), sig)  # more audio: it decodes those two chunks whole
    assert units and got[:len(units)] == units
