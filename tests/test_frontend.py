"""Front ends (fbank, mfcc, raw) and the one 'long enough for CTC' rule: the validator, the dataset's length filter,
export's minimum and the encoder itself must agree (pytest)."""
import random

import numpy as np
import pytest
import soundfile as sf
import torch
import torch.nn.functional as F
import torchaudio.compliance.kaldi as kaldi

from asr_nb.core import ConfigError, DataConfig, ExpConfig, FeatureConfig, ModelConfig, config_from_dict
from asr_nb.data import Utterance, ctc_length_check, ctc_min_frames, fill_num_frames, validate_utterances
from asr_nb.dataset import filter_utterances
from asr_nb.features import check_config, make_frontend, mfcc, utterance_length_rule
from asr_nb import model as M

HIRES = FeatureConfig(kind="mfcc", n_mels=40, num_ceps=40, high_freq=-400.0)
TINY = dict(d_model=32, attention_heads=4, linear_units=64, num_blocks=1, cnn_kernel=5, decoder_blocks=0, ctc_weight=1.0)


class Ids:
    "One id per character; 'a' and 'b' are ids 1 and 2 (the label sequences below use only those)."
    def encode(self, text): return [ord(c) - 96 for c in text]


def _signal(n, seed=0):
    return 0.1 * torch.randn(n, generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------- the front ends
@pytest.mark.parametrize("sr,n", [(16000, 16000), (16000, 12345), (8000, 8000)])
def test_mfcc_equals_torchaudio_kaldi_mfcc(sr, n):
    cfg = FeatureConfig(kind="mfcc", sample_rate=sr, n_mels=40 if sr == 16000 else 23, num_ceps=40 if sr == 16000 else 13,
                        high_freq=-400.0 if sr == 16000 else 0.0)
    x = _signal(n)
    ref = kaldi.mfcc(x.unsqueeze(0) * 32768, num_ceps=cfg.num_ceps, num_mel_bins=cfg.n_mels, sample_frequency=sr,
                     low_freq=20.0, high_freq=cfg.high_freq, dither=0.0, energy_floor=0.0, use_energy=False)
    got = make_frontend(cfg)(x)
    assert got.shape == ref.shape == (make_frontend(cfg).num_frames(n), cfg.num_ceps)
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(mfcc(x, cfg, dither=0.0), ref, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("cfg", [FeatureConfig(), HIRES, FeatureConfig(kind="raw"),
                                 FeatureConfig(sample_rate=8000, n_mels=40), FeatureConfig(frame_length_ms=20, frame_shift_ms=15)],
                         ids=["fbank", "mfcc", "raw", "fbank8k", "fbank20_15"])
def test_num_frames_equals_frames_produced(cfg):
    fe = make_frontend(cfg)
    rng = random.Random(0)
    lengths = [0, 1, 199, 200, 399, 400, 401] + [rng.randrange(0, 5000) for _ in range(20)]
    for n in lengths:
        y = fe(_signal(n, seed=n))
        assert y.shape == (fe.num_frames(n), fe.dim), (n, tuple(y.shape))
        assert y.dtype == torch.float32 and bool(torch.isfinite(y).all())


def test_raw_dim_and_values():
    fe = make_frontend(FeatureConfig(kind="raw"))
    x = _signal(1234)
    assert fe.dim == 1 and fe.num_frames(1234) == 1234
    assert torch.equal(fe(x)[:, 0], x) and torch.equal(fe(x, train=True), fe(x))   # no dither on the waveform
    feats, lens = fe.batch([x, x[:100]])
    assert feats.shape == (2, 1234, 1) and lens.tolist() == [1234, 100] and bool((feats[1, 100:] == 0).all())


def test_dither_only_in_training():
    for cfg in (FeatureConfig(), HIRES):
        fe, x = make_frontend(cfg), _signal(4000)
        assert torch.equal(fe(x), fe(x)) and not torch.equal(fe(x, train=True), fe(x))


def test_config_checks():
    with pytest.raises(ConfigError, match="n_mels: 300 mel bins"): FeatureConfig(n_mels=300)
    with pytest.raises(ConfigError, match="features.n_mels: mel filter"): make_frontend(FeatureConfig(n_mels=200))
    with pytest.raises(ConfigError, match="num_ceps"): FeatureConfig(kind="mfcc", n_mels=23, num_ceps=40)
    with pytest.raises(ConfigError, match="kind"): FeatureConfig(kind="spectrogram")
    with pytest.raises(ConfigError, match="length_jitter: must be < 1"): DataConfig(length_jitter=1.5)
    from asr_nb.model import build_model, check_model_config
    with pytest.raises(ConfigError, match="features.kind: 'raw'"): check_model_config(ExpConfig(features=FeatureConfig(kind="raw")))
    assert check_config(ExpConfig(features=HIRES)).dim == 40
    assert build_model(ExpConfig(features=HIRES), 5).encoder.input_dim == 40    # the model's input size is the front end's


# ---------------------------------------------------------------- one length rule
def _labels(rng, n):
    "Random a/b label strings: long runs of repeats are common."
    return "".join(rng.choice("aab") for _ in range(n))


@pytest.mark.parametrize("factor", [4, 6, 8])
def test_validator_filter_export_encoder_agree(factor):
    cfg = ExpConfig(model=config_from_dict(dict(subsampling=factor, **TINY), ModelConfig))
    rule = utterance_length_rule(cfg.features, M.model_length_rule(cfg))
    model = M.build_model(cfg, vocab_size=4).eval()
    fe = make_frontend(cfg.features)
    rng = random.Random(factor)
    n10s = [rng.randrange(0, 120) for _ in range(24)] + list(range(0, 25, 2))
    utts = [Utterance(f"u{i}", "nowhere.wav", _labels(rng, rng.randrange(1, 20)), num_frames=n) for i, n in enumerate(n10s)]
    # validator and filter: the same decisions, the same reason and message
    rep = validate_utterances(utts, check_audio=False, length_rule=rule, log=False)
    kept, frep = filter_utterances(utts, DataConfig(min_frames=1, max_tokens=1000), Ids(), length_rule=rule)
    dropped_ctc = {k: d for k, (c, d) in frep.dropped.items() if c == "too_long_for_ctc"}
    val_ctc = {k: r.split(": ", 1)[1] for k, rs in rep.bad.items() for r in rs if r.startswith("too_long_for_ctc")}
    assert val_ctc == dropped_ctc and len(val_ctc) > 5
    # the encoder: real features of 10 ms-multiple lengths, the model's own output lengths, and CTC's verdict
    waves = [_signal(max(u.num_frames, 1) * 160, seed=i) for i, u in enumerate(utts)]
    feats, lens = fe.batch(waves)
    for u, T in zip(utts, lens.tolist()):
        enc = int(M.subsampled_lengths(torch.tensor([T]), factor)) if T else 0
        assert rule(u.num_frames) == max(enc, 0) or (u.num_frames == 0 and rule(0) == 0)
    ok = [i for i, T in enumerate(lens.tolist()) if rule(utts[i].num_frames) >= 1]
    with torch.no_grad():
        enc, enc_lens = model.encode(feats[ok], lens[ok])
        log_probs = model.ctc_log_probs(enc)
    assert enc_lens.tolist() == [rule(utts[i].num_frames) for i in ok]
    assert model.output_lengths(lens[ok]).tolist() == enc_lens.tolist()
    tokens = [torch.tensor(Ids().encode(utts[i].text)) for i in ok]
    tgt = torch.nn.utils.rnn.pad_sequence(tokens, batch_first=True, padding_value=-1)
    tlen = torch.tensor([len(t) for t in tokens])
    loss = F.ctc_loss(log_probs.transpose(0, 1), tgt.clamp(min=0), enc_lens, tlen, blank=0, reduction="none")
    feasible = [ctc_length_check(utts[i].num_frames, utts[i].text, rule) is None for i in ok]
    assert torch.isfinite(loss).tolist() == feasible               # CTC itself agrees with the one rule
    assert (M.ctc_min_frames(tgt, tlen) <= enc_lens).tolist() == feasible   # and so does the model's tensor twin
    assert set(val_ctc) | {u.key for u in kept} >= {utts[i].key for i in ok}
    # too short for a single encoder frame: the encoder refuses it, the rule says 0
    short = [i for i in range(len(utts)) if rule(utts[i].num_frames) == 0 and lens[i] > 0]
    if short:
        with pytest.raises(ValueError, match="too short"): model.encode(feats[short[:1], :lens[short[0]]], lens[short[:1]])
    # export's minimum input (frames giving one encoder frame) is the rule's
    # an ONNX Recognizer (no PyTorch model) uses the same arithmetic as the model it was exported from
    from asr_nb.export import Recognizer
    onnx_like = Recognizer.__new__(Recognizer); onnx_like.model, onnx_like.subsampling = None, factor
    T = torch.arange(1, 400)
    assert onnx_like._encoder_lengths(T).tolist() == model.output_lengths(T).tolist()


def test_rule_is_a_lower_bound_for_any_sample_count():
    "Durations are stored in whole 10 ms units, rounded down: the rule never promises frames the audio lacks."
    cfg = ExpConfig()
    rule = utterance_length_rule(cfg.features, M.model_length_rule(cfg))
    fe, rng = make_frontend(cfg.features), random.Random(1)
    for n in [rng.randrange(0, 40000) for _ in range(300)]:
        T = fe.num_frames(n)
        actual = max(0, int(M.subsampled_lengths(torch.tensor([T]), 4))) if T else 0
        predicted = rule(n * 100 // 16000)
        assert predicted <= actual and (n % 160 or predicted == actual)


def test_sequence_and_tensor_ctc_min_frames_agree():
    rng = random.Random(2)
    labels = [[rng.choice([1, 1, 2, 3]) for _ in range(rng.randrange(0, 15))] for _ in range(50)]
    tgt = torch.nn.utils.rnn.pad_sequence([torch.tensor(l, dtype=torch.long) for l in labels], batch_first=True, padding_value=-1)
    lens = torch.tensor([len(l) for l in labels])
    assert M.ctc_min_frames(tgt, lens).tolist() == [ctc_min_frames(l) for l in labels]


# ---------------------------------------------------------------- issue #10 kind 7: short and 8 kHz audio
def test_short_utterances_flagged_like_the_filter_drops_them(tmp_path):
    cfg = ExpConfig()
    rule = utterance_length_rule(cfg.features, M.model_length_rule(cfg))
    utts = []
    for ms in (50, 100, 150, 200, 400):
        n = 16 * ms
        sf.write(tmp_path/f"{ms}.wav", (0.1 * np.sin(np.arange(n) / 5)).astype("float32"), 16000)
        utts.append(Utterance(f"ms{ms}", str(tmp_path/f"{ms}.wav"), "hello"))
    rep = validate_utterances(utts, length_rule=rule, log=False)
    fill_num_frames(utts)
    kept, frep = filter_utterances(utts, DataConfig(min_frames=1), Ids(), length_rule=rule)
    assert sorted(rep.bad) == sorted(frep.dropped) == ["ms100", "ms150", "ms200", "ms50"]
    for k, (code, detail) in frep.dropped.items():
        assert rep.bad[k] == [f"{code}: {detail}"] and code == "too_long_for_ctc"
    assert rep.bad["ms50"] == ["too_long_for_ctc: 5 tokens (+1 blanks between repeats) need 6 encoder frames, 5 frames (10 ms) give 0"]
    assert [u.key for u in rep.good] == [u.key for u in kept] == ["ms400"]


def test_other_sample_rates_are_resampled_and_noted(tmp_path):
    sf.write(tmp_path/"8k.wav", np.zeros(8000, "float32"), 8000)
    rep = validate_utterances([Utterance("u", str(tmp_path/"8k.wav"), "hi")], sample_rate=16000, log=False)
    assert rep.ok and len(rep.good) == 1
    assert rep.notes == ["resampled: 1 utterance(s) (1 at 8000 Hz) will be resampled to 16000 Hz (features.sample_rate); "
                         "to keep their rate set features.sample_rate to it"]
    assert "note: resampled" in rep.summary()
