"""Audio I/O, resampling, speed perturbation, fbank and CMVN: bad input and reference checks (pytest)."""
import math
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch

from asr_nb.core import FeatureConfig
from asr_nb.features import (AudioError, GlobalCMVN, compute_cmvn, fbank, load_audio, load_cmvn, num_frames,
                             speed_perturb)


def _tone(freq, sr, seconds=1.0, amp=0.5):
    t = np.arange(int(sr * seconds)) / sr
    return (amp * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def _peak_hz(wav, sr):
    spec = np.abs(np.fft.rfft(np.asarray(wav, dtype=np.float64)))
    return spec.argmax() * sr / len(wav)


# ---------------------------------------------------------------- bad audio files: the error names the file
@pytest.mark.parametrize("name,content,msg", [
    ("corrupt.wav", b"RIFF\x24\x00\x00\x00WAVEfmt garbage garbage garbage", "cannot read audio"),
    ("random.flac", bytes(range(256)) * 8, "cannot read audio"),
    ("empty.wav", b"", "cannot read audio"),
])
def test_bad_bytes_name_the_file(tmp_path, name, content, msg):
    p = tmp_path / name
    p.write_bytes(content)
    with pytest.raises(AudioError) as e:
        load_audio(p)
    assert str(p) in str(e.value) and msg in str(e.value)


def test_missing_file(tmp_path):
    p = tmp_path / "nope" / "missing.wav"
    with pytest.raises(AudioError, match="missing.wav: audio file not found"):
        load_audio(p)


def test_zero_length_audio(tmp_path):
    p = tmp_path / "zero.wav"
    sf.write(p, np.zeros(0, np.float32), 16000)
    assert sf.info(p).frames == 0
    with pytest.raises(AudioError) as e:
        load_audio(p)
    assert str(p) in str(e.value) and "no samples" in str(e.value)


def test_empty_segment_and_channels(tmp_path):
    p = tmp_path / "stereo.wav"
    sf.write(p, np.zeros((1600, 2), np.float32), 16000)
    with pytest.raises(AudioError, match="stereo.wav: has 2 channels, mono expected .make it mono"):
        load_audio(p)
    with pytest.raises(AudioError, match="stereo.wav: channel 2 requested"):
        load_audio(p, channel=2)
    with pytest.raises(AudioError, match="is empty"):
        load_audio(p, start=0.05, end=0.05, channel=0)
    assert load_audio(p, start=0.05, end=0.075, channel=0).shape == (400,)


# ---------------------------------------------------------------- resampling and formats
@pytest.mark.parametrize("sr", [8000, 22050, 44100, 48000])
def test_resampling_path(tmp_path, sr):
    p = tmp_path / f"tone_{sr}.flac"
    sf.write(p, _tone(1000, sr), sr)                 # 16-bit flac
    wav = load_audio(p, sample_rate=16000)
    assert wav.dtype == torch.float32 and wav.dim() == 1
    assert abs(wav.shape[0] - 16000) <= 1            # one second stays one second
    assert abs(_peak_hz(wav.numpy(), 16000) - 1000) <= 2  # same pitch
    assert abs(float(wav.abs().max()) - 0.5) < 0.02  # same amplitude, [-1, 1] scale


def test_segment_at_other_rate(tmp_path):
    p = tmp_path / "ramp.wav"
    sf.write(p, np.linspace(-0.5, 0.5, 8000).astype(np.float32), 8000, subtype="FLOAT")
    seg = load_audio(p, start=0.25, end=0.75, sample_rate=8000)
    full = load_audio(p, sample_rate=8000)
    assert torch.equal(seg, full[2000:6000])
    assert load_audio(p, start=0.25, end=0.75).shape == (8000,)   # resampled to 16 kHz after cutting


def test_int16_scale(tmp_path):
    p = tmp_path / "pcm16.wav"
    sf.write(p, np.array([0, 16384, -32768, 32767], np.int16), 16000, subtype="PCM_16")
    assert torch.allclose(load_audio(p), torch.tensor([0.0, 0.5, -1.0, 32767 / 32768]))


# ---------------------------------------------------------------- speed perturbation
@pytest.mark.parametrize("n", [16000, 12345, 401])
@pytest.mark.parametrize("factor", [0.9, 1.0, 1.1])
def test_speed_perturb_lengths(n, factor):
    out = speed_perturb(torch.randn(n), 16000, factor)
    assert abs(out.shape[0] - n / factor) <= 1
    if factor == 1.0:
        assert out.shape[0] == n


def test_speed_perturb_changes_pitch():
    wav = torch.from_numpy(_tone(500, 16000, 2.0))
    for factor in (0.9, 1.1):
        assert abs(_peak_hz(speed_perturb(wav, 16000, factor).numpy(), 16000) - 500 * factor) <= 2


def test_speed_perturb_bad_factor():
    with pytest.raises(ValueError, match="must be > 0"):
        speed_perturb(torch.randn(100), 16000, -1.0)


# ---------------------------------------------------------------- fbank against an independent numpy Kaldi fbank
def _kaldi_fbank_numpy(wav, sr=16000, n_mels=80):
    """Kaldi compute-fbank-feats (dither 0, povey window, preemph 0.97, snip_edges) written from its documentation."""
    x = np.asarray(wav, np.float64) * 32768
    win, hop, nfft = int(sr * 0.025), int(sr * 0.010), 512
    T = 1 + (len(x) - win) // hop
    frames = np.stack([x[t * hop: t * hop + win] for t in range(T)])
    frames = frames - frames.mean(1, keepdims=True)                          # remove DC
    frames = np.concatenate([frames[:, :1] * (1 - 0.97), frames[:, 1:] - 0.97 * frames[:, :-1]], 1)  # pre-emphasis
    n = np.arange(win)
    frames = frames * (0.5 - 0.5 * np.cos(2 * np.pi * n / (win - 1))) ** 0.85  # Povey window
    power = np.abs(np.fft.rfft(frames, nfft)) ** 2                           # (T, 257)
    mel = lambda f: 1127 * np.log(1 + f / 700)
    lo, hi = mel(20.0), mel(sr / 2)
    delta = (hi - lo) / (n_mels + 1)
    fmel = mel(np.arange(nfft // 2) * sr / nfft)                             # Kaldi skips the Nyquist bin
    banks = np.zeros((n_mels, nfft // 2 + 1))
    for m in range(n_mels):
        left, centre, right = lo + m * delta, lo + (m + 1) * delta, lo + (m + 2) * delta
        up = (fmel - left) / (centre - left)
        down = (right - fmel) / (right - centre)
        banks[m, :nfft // 2] = np.where((fmel > left) & (fmel < right), np.minimum(up, down), 0)
    return np.log(np.maximum(power @ banks.T, np.finfo(np.float32).eps))


def test_fbank_matches_numpy_kaldi():
    rng = np.random.default_rng(0)
    wav = 0.1 * rng.standard_normal(8000) + _tone(440, 16000, 0.5, 0.3)
    ours = fbank(torch.from_numpy(wav.astype(np.float32)), FeatureConfig(), dither=0.0).numpy()
    ref = _kaldi_fbank_numpy(wav.astype(np.float32))
    assert ours.shape == ref.shape == (num_frames(8000), 80)
    np.testing.assert_allclose(ours, ref, atol=2e-3, rtol=1e-4)


def test_fbank_other_config():
    cfg = FeatureConfig(sample_rate=8000, n_mels=40)
    feats = fbank(torch.randn(8000) * 0.1, cfg, dither=0.0)
    assert feats.shape == (num_frames(8000, cfg), 40) == (98, 40)
    with pytest.raises(ValueError, match="1-D signal"):
        fbank(torch.randn(2, 8000), cfg)


# ---------------------------------------------------------------- CMVN on Utterance-like records with segments
def test_cmvn_with_segments(tmp_path):
    p = tmp_path / "long.wav"
    sf.write(p, (0.1 * np.random.default_rng(1).standard_normal(32000)).astype(np.float32), 16000)
    utts = [SimpleNamespace(audio=str(p), start=0.0, end=1.0), SimpleNamespace(audio=str(p), start=1.0, end=2.0)]
    stats = compute_cmvn(utts, FeatureConfig(), tmp_path / "exp" / "cmvn.npz")
    feats = np.concatenate([fbank(load_audio(p, s, e), dither=0.0).numpy().astype(np.float64)
                            for s, e in [(0.0, 1.0), (1.0, 2.0)]])
    assert int(stats["count"]) == feats.shape[0] == 2 * 98
    np.testing.assert_allclose(stats["sumsq"], (feats ** 2).sum(0), rtol=1e-9)
    mean, istd = load_cmvn(tmp_path / "exp" / "cmvn.npz")
    np.testing.assert_allclose(istd.numpy(), 1 / feats.std(0), rtol=1e-4)
    assert not list((tmp_path / "exp").glob(".*tmp"))           # atomic write left no temp file
    y = GlobalCMVN(mean, istd)(torch.from_numpy(feats).float()[None])
    assert abs(float(y.mean())) < 1e-3


def test_cmvn_bad_audio_names_file(tmp_path, caplog):
    p = tmp_path / "bad.wav"
    p.write_bytes(b"nonsense")
    good = tmp_path / "good.wav"
    sf.write(good, (0.1 * np.random.default_rng(2).standard_normal(16000)).astype(np.float32), 16000)
    with pytest.raises(AudioError, match="bad.wav"):                      # strict: stop, name the file
        compute_cmvn([str(p), str(good)], FeatureConfig(), tmp_path / "cmvn.npz", strict=True)
    assert not (tmp_path / "cmvn.npz").exists()
    with caplog.at_level("WARNING", logger="asr_nb"):                     # default: skip it, say so, keep going
        stats = compute_cmvn([str(p), str(good)], FeatureConfig(), tmp_path / "cmvn.npz")
    assert int(stats["count"]) == 98 and "bad.wav" in caplog.text
    with pytest.raises(ValueError, match="no frames"):                    # nothing readable at all: clear error
        compute_cmvn([str(p)], FeatureConfig())


def test_load_cmvn_garbage(tmp_path):
    p = tmp_path / "cmvn.npz"
    p.write_bytes(b"garbage")
    with pytest.raises(ValueError, match="cmvn.npz: not a cmvn npz file"):
        load_cmvn(p)


def test_speed_perturb_odd_factor_is_fast():
    import time
    t = time.perf_counter()
    out = speed_perturb(torch.randn(48000), 16000, 1.0371)
    assert time.perf_counter() - t < 2.0
    assert abs(out.shape[0] - 48000 / 1.0371) <= 48000 * 0.01 / 1.0371 + 1   # factor used as a fraction p/q, q <= 100
