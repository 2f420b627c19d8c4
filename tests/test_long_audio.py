"""Long audio (issue #10): segmentation, stitching, bounded memory, and the transcribe CLI on unusable files.

The splitting logic is tested on seconds of audio; one test runs a few minutes through `Recognizer.transcribe` in a
fresh process and checks that its peak memory does not grow with the input; the CLI tests use an experiment dir written
by hand (random tiny model), so nothing here trains.
"""
import json, subprocess, sys, textwrap
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from asr_nb.segment import fixed_windows, plan_segments, stitch_tokens, vad_split

SR = 16000


def speechy(spec, seed=0, sr=SR):
    "`(seconds, loud)` pieces: loud ones are chirps under a 4 Hz syllable envelope, the others a faint noise floor."
    g, out = np.random.default_rng(seed), []
    for dur, loud in spec:
        t = np.arange(int(dur * sr)) / sr
        x = 0.3 * (0.6 + 0.4 * np.sin(2 * np.pi * 4 * t)) * np.sin(2 * np.pi * (150 + 400 * g.random()) * t * (1 + t)) if loud else 0
        out.append((x + 3e-4 * g.standard_normal(len(t))).astype(np.float32))
    return np.concatenate(out)


# ---------------------------------------------------------------- splitting (seconds of audio)

def test_vad_cuts_at_pauses_only():
    w = speechy([(0.4, 0), (1.0, 1), (0.2, 0), (1.0, 1), (0.8, 0), (1.5, 1), (0.4, 0)])
    segs = vad_split(w, SR)
    assert len(segs) == 2                                             # the 0.2 s pause is bridged, the 0.8 s one cuts
    assert segs[0][1] <= segs[1][0]
    assert abs(segs[0][0] / SR - 0.25) < 0.02 and abs(segs[1][1] / SR - 5.05) < 0.02   # 0.15 s padding
    assert vad_split(w * 0.01, SR) == segs                            # relative to the loud frames: gain does not matter
    assert vad_split(w, SR, min_silence_s=1.0)[0] == (segs[0][0], segs[1][1])


def test_silence_only_gives_nothing_to_decode():
    assert vad_split(np.zeros(SR, np.float32), SR) == []                 # digital silence
    assert vad_split(0.1 * speechy([(2, 0)]), SR) == []                   # only a noise floor 90 dB down
    assert plan_segments(np.zeros(0, np.float32), SR) == []


@pytest.mark.parametrize('length,window,overlap', [(70, 30, 4), (31, 30, 4), (1000, 30, 10), (95, 20, 0)])
def test_fixed_windows_cover_with_overlap(length, window, overlap):
    w = fixed_windows(5, 5 + length, window, overlap)
    assert w[0][0] == 5 and w[-1][1] == 5 + length
    assert all(b - a == window for a, b in w)
    assert all(b0 - a1 >= overlap for (_, b0), (a1, _) in zip(w, w[1:]))   # every neighbour pair overlaps enough
    assert len(fixed_windows(0, length, window, overlap)) == len(w)


def test_pause_free_audio_falls_back_to_windows():
    w = speechy([(0.3, 0), (65, 1), (0.3, 0)])
    p = plan_segments(w, SR, max_segment_s=20, overlap_s=2)
    assert len(p) == 4 and all(b - a <= 20 * SR for a, b in p)
    assert all(b0 - a1 >= 2 * SR for (_, b0), (a1, _) in zip(p, p[1:]))


def test_stitching_drops_duplicates_and_edge_garbage():
    rng = np.random.default_rng(0)
    truth = np.cumsum(rng.uniform(0.05, 0.6, 300))                   # token times over ~100 s
    total = float(truth[-1]) + 1
    pieces = [(a / 100, b / 100) for a, b in fixed_windows(0, int(total * 100), 1500, 300)]   # 15 s windows, >= 3 s overlap
    per = []
    end = pieces[-1][1]
    for a, b in pieces:                                                # a decoder that garbles 1 s at inner edges
        toks = [(k, t, t + 0.04) for k, t in enumerate(truth) if a <= t < b]
        per.append([('?' if (a > 0 and t < a + 1) or (b < end and t >= b - 1) else k, t, e) for k, t, e in toks])
    got = stitch_tokens(pieces, per)
    assert [k for k, *_ in got] == list(range(len(truth)))


# ---------------------------------------------------------------- the recognizer

def _tiny_model(vocab):
    from asr_nb.core import ModelConfig, config_from_dict
    from asr_nb.model import ASRModel
    torch.manual_seed(0)
    cfg = config_from_dict(dict(encoder=dict(d_model=32, attention_heads=2, linear_units=64, num_blocks=1, cnn_kernel=5),
                                decoder=dict(num_blocks=1, linear_units=64)), ModelConfig)
    return cfg, ASRModel(cfg, vocab).eval()


def _tok():
    from asr_nb.tokenizer import CharTokenizer
    return CharTokenizer.build(["hello world", "the quick brown fox"])


def test_recognizer_never_encodes_more_than_max_segment():
    from asr_nb.core import DecodeConfig, FeatureConfig
    from asr_nb.export import Recognizer
    tok = _tok(); _, model = _tiny_model(tok.vocab_size)
    seen = []
    class Spy(Recognizer):
        def encode(self, feats, lens):
            seen.append(int(feats.shape[1])); return super().encode(feats, lens)
    rec = Spy(tok, FeatureConfig(), DecodeConfig(), model=model, max_segment_s=6.0)
    w = speechy([(0.2, 0), (20, 1), (0.2, 0)])                          # 20 s without a pause
    out = rec.transcribe(w, timestamps=True)
    assert len(seen) >= 4 and max(seen) <= 600                          # 6 s = 598 fbank frames
    starts = [s for _, s, _ in out['timestamps']]
    assert starts == sorted(starts) and all(0 <= s <= 20.4 for s in starts)
    assert isinstance(rec.transcribe([w, w[:SR]]), list)                 # one result per input, long and short mixed


def test_memory_is_bounded_for_minutes_of_audio():
    "Peak RSS after 3 minutes may exceed the peak after 30 s by little more than the signal itself (12 MB)."
    code = textwrap.dedent('''
        import resource, sys, numpy as np, torch
        sys.path.insert(0, %r)
        from test_long_audio import speechy, _tiny_model, _tok
        from asr_nb.core import DecodeConfig, FeatureConfig
        from asr_nb.export import Recognizer
        torch.set_num_threads(1)
        tok = _tok(); _, model = _tiny_model(tok.vocab_size)
        rec = Recognizer(tok, FeatureConfig(), DecodeConfig(), model=model, max_segment_s=20.0)
        spec = lambda s: sum(([(5.0, 1), (0.2, 0)] for _ in range(int(s / 5.2))), [])   # 0.2 s pauses: bridged, windows
        rss = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        rec.transcribe(speechy(spec(30), seed=1)); a = rss()
        rec.transcribe(speechy(spec(180), seed=2)); b = rss()
        print(a, b)
    ''' % str(Path(__file__).parent))
    p = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    a, b = map(float, p.stdout.split())
    assert b - a < 80, f"peak RSS grew from {a:.0f} MB (30 s) to {b:.0f} MB (3 min)"


# ---------------------------------------------------------------- the CLI: a batch with an unusable file

@pytest.fixture(scope='module')
def exp(tmp_path_factory):
    "An experiment dir written by hand: config, units, random weights."
    from asr_nb.core import ExpConfig, save_config
    d = tmp_path_factory.mktemp('exp')
    tok = _tok(); mcfg, model = _tiny_model(tok.vocab_size)
    save_config(ExpConfig(model=mcfg), d/'config.yaml'); tok.save(d)
    torch.save(dict(model=model.state_dict()), d/'model_avg.pt')
    return d


@pytest.fixture(scope='module')
def wavs(tmp_path_factory):
    d = tmp_path_factory.mktemp('wav')
    mono = speechy([(0.2, 0), (1.5, 1), (0.2, 0)], seed=1)
    sf.write(d/'mono.wav', mono, SR)
    sf.write(d/'stereo.wav', np.stack([mono, speechy([(1.9, 1)], seed=2)], 1), SR)
    sf.write(d/'long.wav', speechy([(0.2, 0), (12, 1), (0.5, 0), (6, 1), (0.2, 0)], seed=3), SR)
    return d


def run(argv, capsys):
    from asr_nb.cli import transcribe_main
    rc = transcribe_main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_bad_file_in_batch_reports_it_and_goes_on(exp, wavs, capsys):
    rc, out, err = run(['--exp', exp, wavs/'mono.wav', wavs/'stereo.wav', wavs/'nope.wav', wavs/'long.wav'], capsys)
    assert rc == 2
    assert [l.split('\t')[0] for l in out.splitlines()] == [str(wavs/'mono.wav'), str(wavs/'long.wav')]
    lines = err.strip().splitlines()
    assert len(lines) == 2 and 'Traceback' not in err and all(l.startswith('asr_nb_transcribe: error: ') for l in lines)
    assert str(wavs/'stereo.wav') in lines[0] and '--channel' in lines[0] and 'sox' not in lines[0]   # the CLI's own advice only
    assert str(wavs/'nope.wav') in lines[1] and 'not found' in lines[1]


def test_cli_channel_option(exp, wavs, capsys):
    rc, out, _ = run(['--exp', exp, '--channel', '0', wavs/'stereo.wav', wavs/'mono.wav'], capsys)
    assert rc == 0
    first = dict(l.split('\t') for l in out.splitlines())
    assert first[str(wavs/'stereo.wav')] == first[str(wavs/'mono.wav')]     # channel 0 is the mono signal
    rc, out, _ = run(['--exp', exp, '--channel', 'mean', wavs/'stereo.wav'], capsys)
    assert rc == 0 and len(out.splitlines()) == 1
    rc, _, err = run(['--exp', exp, '--channel', '3', wavs/'stereo.wav'], capsys)
    assert rc == 2 and 'channel 3' in err and len(err.strip().splitlines()) == 1
    rc, _, err = run(['--exp', exp, '--channel', 'left', wavs/'mono.wav'], capsys)
    assert rc == 2 and "'mean'" in err


def test_downmix_is_the_mean_of_the_channels(wavs):
    from asr_nb.export import _read_audio
    mean = _read_audio(wavs/'stereo.wav', SR, 'mean')
    x, _ = sf.read(wavs/'stereo.wav', dtype='float32')
    assert torch.allclose(mean, torch.from_numpy(x.mean(1)), atol=1e-6)


def test_cli_long_file_with_timestamps(exp, wavs, capsys):
    rc, out, err = run(['--exp', exp, '--timestamps', '--max-segment-s', '5', wavs/'long.wav'], capsys)
    assert rc == 0, err
    times = [float(x.rsplit('@', 1)[1]) for x in out.strip().split('\t')[2].split()] if out.strip().count('\t') == 2 else []
    assert times == sorted(times) and all(0 <= t <= 19 for t in times)
    rc, _, err = run(['--exp', exp, '--max-segment-s', '0', wavs/'long.wav'], capsys)
    assert rc == 2 and '--max-segment-s' in err


def test_damaged_meta_json_is_one_line(tmp_path, capsys):
    "An export dir whose meta.json is a list, not JSON, or lacks keys: one error line naming the file, exit 2."
    from asr_nb.cli import transcribe_main
    wav = tmp_path/'a.wav'; sf.write(wav, np.zeros(16000, np.float32), 16000)
    for content, why in (('[1, 2]', 'expected a JSON object, got a list'), ('{"features": {}', 'not valid JSON'),
                         ('{"features": {}, "decode": {}}', "missing key 'tokenizer'")):
        (tmp_path/'meta.json').write_text(content)
        rc = transcribe_main(['--onnx', str(tmp_path), str(wav)])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and str(tmp_path/'meta.json') in err[0] and why in err[0], err


def test_too_short_input_is_warned_not_silent(caplog):
    "An input under one encoder frame is transcribed as empty, with a warning saying so (not a silent '')."
    import logging
    from asr_nb.core import DecodeConfig, FeatureConfig
    from asr_nb.export import Recognizer
    tok = _tok(); _, model = _tiny_model(tok.vocab_size)
    rec = Recognizer(tok, FeatureConfig(), DecodeConfig(), model=model)
    with caplog.at_level(logging.WARNING, logger="asr_nb"):
        out = rec.transcribe([torch.zeros(100), torch.randn(16000) * 0.1])
    assert out[0] == '' and any("too short for the model" in r.getMessage() for r in caplog.records)


def test_broken_default_weights_are_refused_not_replaced(tmp_path):
    "A corrupt model_avg.pt (the default weights) is an error naming it, never a silent switch to another checkpoint."
    from asr_nb.checkpoint import CheckpointError, resolve_weights, save_checkpoint
    save_checkpoint({"model": {}, "step": 1, "metrics": {"valid_loss": 1.0}}, tmp_path)
    (tmp_path/"model_avg.pt").write_bytes(b"\0" * 64)
    with pytest.raises(CheckpointError, match="model_avg.pt: unreadable, and it is the default weights"): resolve_weights(tmp_path)
    assert resolve_weights(tmp_path, "best").name == "ckpt-1.pt"
