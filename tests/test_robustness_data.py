"""Issue #10 "Robustness", data side: one reader per file format (kind 9), untrusted paths that could block
(FIFOs, kind 11), non-finite audio (kind 6) and fingerprints of derived files (kind 4).
Run: `.venv/bin/python -m pytest -q tests/test_robustness_data.py` (about 20 s; one tiny training run)."""
import inspect, json, logging, os, signal, time
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import soundfile as sf
import torch

from asr_nb import data as D, features as F, tokenizer as T
from asr_nb.core import FeatureConfig, TokenizerConfig, UserError, load_config
from asr_nb.data import (DataError, Utterance, read_data_dir, read_jsonl, read_kv_file, read_lines, read_segments,
                         read_text_file, read_utt2spk, read_wav_scp, validate_data_dir, validate_utterances, write_jsonl)
from asr_nb.features import AudioError, CmvnError, compute_cmvn, ensure_cmvn, load_audio, load_cmvn
from asr_nb.tokenizer import (BpeTokenizer, CharTokenizer, TokenizerError, build_tokenizer, check_unk_share,
                              ensure_tokenizer, load_tokenizer, read_units, unk_share)

SR = 16000
TEXTS = ["the cat sat on the mat", "a dog ran fast", "big trees and small birds", "it's a hat", "the rat sang a song"] * 4


def tone(path, seconds=1.0, seed=0, nan_at=()):
    n = int(seconds * SR)
    x = (0.1 * np.sin(np.arange(n) * 2 * np.pi * 300 / SR) + np.random.default_rng(seed).normal(0, 0.01, n)).astype("float32")
    x[list(nan_at)] = np.nan
    sf.write(path, x, SR, subtype="FLOAT")
    return str(path)


@contextmanager
def must_return_within(seconds, *fifos):
    "Fail (instead of hanging the suite) if the block blocks; afterwards unblock any reader stuck on `fifos`."
    def _boom(*_): raise TimeoutError(f"blocked for more than {seconds} s")
    old = signal.signal(signal.SIGALRM, _boom); signal.alarm(seconds)
    try: yield
    finally:
        signal.alarm(0); signal.signal(signal.SIGALRM, old)
        for f in fifos:   # a reader blocked in open() gets a writer, then EOF
            try: os.close(os.open(f, os.O_WRONLY | os.O_NONBLOCK))
            except OSError: pass


# ============================================================== kind 9: one reader per format
def test_one_text_reader_bom_crlf_blank_lines(tmp_path):
    p = tmp_path / "text"
    p.write_bytes("\ufeffu1 hello world\r\n\r\nu2 two\twords  \r\nu3\r\n".encode())
    assert list(read_lines(p)) == [(1, "u1 hello world"), (2, ""), (3, "u2 two\twords  "), (4, "u3")]
    assert read_text_file(p) == {"u1": "hello world", "u2": "two\twords", "u3": ""}
    assert read_kv_file(p, value_required=False) == {"u1": (1, "hello world"), "u2": (3, "two\twords"), "u3": (4, "")}
    # str.splitlines() (the old scorer's parser) also breaks at U+2028, U+0085, form feed...: one line here
    p.write_bytes("u1 a\u2028b\x85c\x0cd\nu2 e\n".encode())
    assert read_text_file(p) == {"u1": "a\u2028b\x85c\x0cd", "u2": "e"}
    assert len(p.read_text(encoding="utf-8").splitlines()) == 5


def test_data_dir_and_scorer_reader_agree(tmp_path):
    "The scorer once parsed `text` differently from the data-dir reader: both now call read_text_file's rule."
    w = tone(tmp_path / "a.wav")
    d = tmp_path / "d"; d.mkdir()
    (d / "wav.scp").write_bytes(f"\ufeffu1 {w}\r\nu2 {w}\r\n".encode())
    (d / "text").write_bytes("\ufeffu1  hello world \r\nu2 x\r\n".encode())
    assert {u.key: u.text for u in read_data_dir(d)} == read_text_file(d / "text") == {"u1": "hello world", "u2": "x"}
    assert read_wav_scp(d / "wav.scp") == {"u1": w, "u2": w}


def test_errors_name_file_and_line(tmp_path):
    p = tmp_path / "text"
    p.write_bytes(b"a x\nb \xff\na y\n")
    with pytest.raises(DataError, match=r"text:2: invalid UTF-8 \(invalid start byte at byte 2\)"): read_text_file(p)
    p.write_bytes(b"a x\nb y\na z\n")
    with pytest.raises(DataError, match=r"text:3: duplicate id 'a' \(first on line 1\)"): read_text_file(p)
    q = tmp_path / "utt2spk"; q.write_text("u1 s1\nu2\n")
    with pytest.raises(DataError, match="utt2spk:2: missing field: 'u2' has no value"): read_utt2spk(q)
    s = tmp_path / "segments"; s.write_text("u1 r1 0 1.5\nu2 r1 2 nan\n")
    with pytest.raises(DataError, match=r"segments:2: bad segment times '2 nan' \(not finite\)"): read_segments(s)
    s.write_text("u1 r1 0 1.5\nu2 r1 1.5 -1\n")
    assert read_segments(s) == {"u1": ("r1", 0.0, 1.5), "u2": ("r1", 1.5, None)}
    b = tmp_path / "big"; b.write_bytes(b"k " + b"x" * (D.MAX_LINE_BYTES + 10))
    with pytest.raises(DataError, match=f"big:1: line longer than {D.MAX_LINE_BYTES} bytes"): read_kv_file(b)


def test_jsonl_and_units_use_the_same_reader(tmp_path):
    m = tmp_path / "m.jsonl"
    write_jsonl([Utterance("u1", "/x/a.wav", "hi"), Utterance("u2", "/x/b.wav", "yo")], m)
    m.write_bytes(b"\xef\xbb\xbf" + m.read_bytes().replace(b"\n", b"\r\n"))        # BOM + CRLF, as Windows tools write
    assert [(u.key, u.text) for u in read_jsonl(m)] == [("u1", "hi"), ("u2", "yo")]
    u = tmp_path / "units.txt"; u.write_bytes("\ufeff<blank>\r\n<unk>\r\na\r\n<sos/eos>\r\n".encode())
    assert read_units(u) == ["<blank>", "<unk>", "a", "<sos/eos>"]
    u.write_bytes(b"<blank>\n<unk>\n\xff\n<sos/eos>\n")
    with pytest.raises(TokenizerError, match=r"units.txt:3: invalid UTF-8"): read_units(u)
    assert issubclass(TokenizerError, UserError)


def test_no_second_parser_in_data_and_tokenizer():
    "Kaldi files, manifests and units are parsed only through read_lines (no read_text().splitlines() copies)."
    for mod in (D, T):
        src = inspect.getsource(mod)
        assert ".splitlines()" not in src.replace("str(e).splitlines()", ""), mod.__name__
        assert "open(" not in src.replace("os.open(", "").replace("_open_regular(", "").replace("fdopen(", "").replace("request.urlopen(", ""), mod.__name__  # a URL download is no file parser


# ============================================================== kind 11: FIFOs never block
def test_fifo_in_wav_scp_validate_returns_with_reason(tmp_path):
    w = tone(tmp_path / "ok.wav")
    fifo = tmp_path / "pipe.wav"; os.mkfifo(fifo)
    d = tmp_path / "d"; d.mkdir()
    (d / "wav.scp").write_text(f"good {w}\nbad {fifo}\n"); (d / "text").write_text("good hi\nbad hi\n")
    t0 = time.time()
    with must_return_within(20, fifo):
        rep = validate_data_dir(d, read_audio=True)
    assert time.time() - t0 < 10
    assert [u.key for u in rep.good] == ["good"]
    assert rep.bad["bad"] == [f"not_regular_file: {fifo} is a FIFO (named pipe), not a regular file ({d / 'wav.scp'}:2)"]


def test_fifo_cli_validate_exits_promptly(tmp_path, capsys):
    from asr_nb.cli import validate_main
    fifo = tmp_path / "pipe.wav"; os.mkfifo(fifo)
    d = tmp_path / "d"; d.mkdir()
    (d / "wav.scp").write_text(f"bad {fifo}\n"); (d / "text").write_text("bad hi\n")
    with must_return_within(30, fifo):
        rc = validate_main([str(d)])
    assert rc == 1 and "not_regular_file: 1 (bad)" in capsys.readouterr().out


def test_fifo_as_the_file_itself(tmp_path):
    for name, call, err in [("text", read_text_file, DataError), ("wav.scp", read_wav_scp, DataError),
                            ("m.jsonl", read_jsonl, DataError), ("units.txt", read_units, TokenizerError),
                            ("a.wav", load_audio, AudioError), ("cmvn.npz", load_cmvn, CmvnError)]:
        fifo = tmp_path / name; os.mkfifo(fifo)
        with must_return_within(10, fifo), pytest.raises(err, match=f"{name}: .*is a FIFO \\(named pipe\\), not a regular file"):
            call(fifo)
    with pytest.raises(DataError, match="m.jsonl: manifest is a FIFO"): D.load_utterances(tmp_path / "m.jsonl")


def test_fifo_dataset_skips_and_counts(tmp_path):
    from asr_nb.dataset import ASRDataset
    fifo = tmp_path / "pipe.wav"; os.mkfifo(fifo)
    utts = [Utterance("ok", tone(tmp_path / "ok.wav"), "hi"), Utterance("pipe", str(fifo), "hi"),
            Utterance("nan", tone(tmp_path / "nan.wav", nan_at=[5]), "hi")]
    ds = ASRDataset(utts, CharTokenizer.build(["hi"]), FeatureConfig(), train=True)
    with must_return_within(20, fifo):
        items = [ds[i] for i in range(3)]
    assert [it is None for it in items] == [False, True, True] and ds.num_skipped == 2
    with must_return_within(20, fifo):
        stats = compute_cmvn(utts, FeatureConfig())
    assert int(stats["count"]) == 98


def test_train_with_fifo_and_nan_files(tmp_path):
    "A FIFO and a NaN file in the training data: train returns, both are left out, CMVN and every update are finite."
    from asr_nb.train import train
    wavs = [tone(tmp_path / f"w{i}.wav", 1.0 + 0.1 * i, seed=i) for i in range(6)]
    fifo = tmp_path / "pipe.wav"; os.mkfifo(fifo)
    nan = tone(tmp_path / "nan.wav", nan_at=[100, 200, 300])
    d = tmp_path / "train"; d.mkdir()
    (d / "wav.scp").write_text("".join(f"u{i} {w}\n" for i, w in enumerate(wavs)) + f"x_pipe {fifo}\nx_nan {nan}\n")
    (d / "text").write_text("".join(f"u{i} ab ba\n" for i in range(6)) + "x_pipe ab\nx_nan ab\n")
    cfg = load_config(None, ["model.encoder.d_model=16", "model.encoder.attention_heads=2", "model.encoder.linear_units=16", "model.encoder.num_blocks=1",
                             "model.decoder.num_blocks=1", "model.decoder.linear_units=16", "data.batch_type=example",
                             "data.batch_size=4", "train.max_epochs=1", "train.tensorboard=false", "train.device=cpu",
                             "train.num_threads=1"])
    with must_return_within(180, fifo):
        s = train(cfg, d, d, tmp_path / "exp")
    mean, istd = load_cmvn(tmp_path / "exp" / "cmvn.npz")
    assert torch.isfinite(mean).all() and torch.isfinite(istd).all()
    assert s["skipped_steps"] == 0


# ============================================================== kind 6: non-finite audio
def test_load_audio_names_nonfinite_samples(tmp_path):
    p = tone(tmp_path / "x.wav", nan_at=[1, 2, 3])
    with pytest.raises(AudioError) as e: load_audio(p)
    assert str(e.value) == f"{p}: 3 non-finite samples (NaN/Inf)"
    x = np.full(800, 0.1, "float32"); x[7] = np.inf
    sf.write(tmp_path / "inf.wav", x, 8000, subtype="FLOAT")              # at another rate: checked before resampling
    with pytest.raises(AudioError, match=r"inf.wav: 1 non-finite samples \(NaN/Inf\)"): load_audio(tmp_path / "inf.wav")


def test_validator_reports_nonfinite(tmp_path):
    w, n = tone(tmp_path / "ok.wav"), tone(tmp_path / "x.wav", nan_at=[1, 2, 3])
    d = tmp_path / "d"; d.mkdir()
    (d / "wav.scp").write_text(f"a {w}\nb {n}\n"); (d / "text").write_text("a hi\nb hi\n")
    rep = validate_data_dir(d, read_audio=True)
    assert rep.counts() == {"nonfinite_audio": 1}
    assert rep.bad["b"] == [f"nonfinite_audio: {n}: 3 non-finite samples (NaN/Inf) ({d / 'wav.scp'}:2)"]
    assert validate_utterances([Utterance("b", n, "hi")], read_audio=False).ok     # headers alone cannot see it


def test_cmvn_skips_nonfinite_and_never_writes_nan(tmp_path, caplog):
    good = [tone(tmp_path / f"g{i}.wav", seed=i) for i in range(2)]
    bad = tone(tmp_path / "x.wav", nan_at=[10])
    with caplog.at_level(logging.WARNING, logger="asr_nb"):
        stats = compute_cmvn([bad] + good, FeatureConfig(), tmp_path / "cmvn.npz")
    assert int(stats["count"]) == 2 * 98 and "skipped 1 of 3 utterances" in caplog.text and "x.wav: 1 non-finite" in caplog.text
    clean = compute_cmvn(good, FeatureConfig())
    np.testing.assert_array_equal(stats["mean"], clean["mean"])
    with pytest.raises(AudioError, match="x.wav: 1 non-finite samples"):
        compute_cmvn([bad] + good, FeatureConfig(), tmp_path / "c2.npz", strict=True)
    with pytest.raises(AudioError, match="no frames"): compute_cmvn([bad], FeatureConfig(), tmp_path / "c3.npz")
    assert not (tmp_path / "c2.npz").exists() and not (tmp_path / "c3.npz").exists()
    np.savez(tmp_path / "old.npz", mean=np.full(80, np.nan, "float32"), istd=np.ones(80, "float32"))
    with pytest.raises(CmvnError, match="old.npz: holds non-finite statistics"): load_cmvn(tmp_path / "old.npz")


def test_recognizer_input_nan_is_an_error_not_an_empty_hypothesis(tmp_path):
    from asr_nb.export import _as_wave
    p = tone(tmp_path / "x.wav", nan_at=[0])
    with pytest.raises(AudioError, match=r"x.wav: 1 non-finite samples"): _as_wave(p, None, SR)


# ============================================================== kind 4: fingerprints of derived files
def test_tokenizer_rebuilt_when_data_or_kind_change(tmp_path):
    exp = tmp_path / "exp"
    t1 = ensure_tokenizer(exp, TokenizerConfig(), TEXTS)
    assert json.loads((exp / "tokenizer.json").read_text())["n_texts"] == 20
    mtime = (exp / "units.txt").stat().st_mtime_ns
    assert ensure_tokenizer(exp, TokenizerConfig(), TEXTS[::-1]).units == t1.units
    assert (exp / "units.txt").stat().st_mtime_ns == mtime                            # same data: reused, not rewritten
    t2 = ensure_tokenizer(exp, TokenizerConfig(), TEXTS + ["zoo quiz"])               # new characters: rebuilt
    assert "z" in t2.units and "q" in t2.units and "z" not in t1.units
    t3 = ensure_tokenizer(exp, TokenizerConfig(kind="bpe", bpe_vocab_size=30), TEXTS)  # kind=bpe is not ignored
    assert isinstance(t3, BpeTokenizer) and isinstance(load_tokenizer(exp), BpeTokenizer)
    t4 = ensure_tokenizer(exp, TokenizerConfig(), TEXTS)                                # back to char: bpe.model removed
    assert isinstance(t4, CharTokenizer) and not (exp / "bpe.model").exists()


def test_tokenizer_kept_on_resume_refused_on_other_kind(tmp_path, caplog):
    exp = tmp_path / "exp"
    t1 = ensure_tokenizer(exp, TokenizerConfig(), TEXTS)
    with caplog.at_level(logging.WARNING, logger="asr_nb"):
        assert ensure_tokenizer(exp, TokenizerConfig(), ["zzz"], keep=True).units == t1.units
    assert "transcripts changed" in caplog.text
    with pytest.raises(TokenizerError, match=r"the model was trained with another tokenizer \(.*tokenizer.kind: 'char' -> 'bpe'"):
        ensure_tokenizer(exp, TokenizerConfig(kind="bpe", bpe_vocab_size=30), TEXTS, keep=True)
    (exp / "tokenizer.json").unlink()                                                  # an old exp dir: adopted as it is
    assert ensure_tokenizer(exp, TokenizerConfig(), ["zzz"], keep=True).units == t1.units


def test_bpe_killed_between_files_is_rebuilt_not_char(tmp_path):
    exp = tmp_path / "exp"
    cfg = TokenizerConfig(kind="bpe", bpe_vocab_size=30)
    bpe = build_tokenizer(cfg, TEXTS)
    T.write_units(bpe.units, exp / "units.txt")             # what a kill after units.txt, before bpe.model leaves
    with pytest.raises(TokenizerError, match=r"units.txt line \d+: multi-character unit"): load_tokenizer(exp)
    tok = ensure_tokenizer(exp, cfg, TEXTS)
    assert isinstance(tok, BpeTokenizer) and tok.units == bpe.units
    fp = json.loads((exp / "tokenizer.json").read_text())
    assert sorted(fp["files"]) == ["bpe.model", "units.txt"] and fp["tokenizer"]["bpe_vocab_size"] == 30
    (exp / "bpe.model").write_bytes((exp / "bpe.model").read_bytes()[:-1] + b"\0")  # altered after the fact: rebuilt
    assert isinstance(ensure_tokenizer(exp, cfg, TEXTS), BpeTokenizer)
    assert json.loads((exp / "tokenizer.json").read_text())["files"] == fp["files"]


def test_cmvn_fingerprint(tmp_path):
    wavs = [tone(tmp_path / f"w{i}.wav", seed=i) for i in range(3)]
    exp, cfg = tmp_path / "exp", FeatureConfig()
    m1, _ = ensure_cmvn(exp, cfg, wavs[:2])
    fp = json.loads((exp / "cmvn.json").read_text())
    assert fp["n_utts"] == 2 and fp["features"]["n_mels"] == 80 and "dither" not in fp["features"]
    mtime = (exp / "cmvn.npz").stat().st_mtime_ns
    ensure_cmvn(exp, FeatureConfig(dither=0.0), wavs[1::-1])                   # dither and order do not matter
    assert (exp / "cmvn.npz").stat().st_mtime_ns == mtime
    m3, _ = ensure_cmvn(exp, cfg, wavs)                                        # other audio: recomputed
    np.testing.assert_allclose(m3.numpy(), compute_cmvn(wavs, cfg)["mean"])
    m40, _ = ensure_cmvn(exp, FeatureConfig(n_mels=40), wavs)                  # other settings: recomputed
    assert m40.shape == (40,)
    with pytest.raises(CmvnError, match=r"made with other feature settings than the ones resumed with \(features.n_mels: 40 -> 80\)"):
        ensure_cmvn(exp, cfg, wavs, keep=True)
    assert ensure_cmvn(exp, FeatureConfig(n_mels=40), wavs[:1], keep=True)[0].shape == (40,)   # resume: kept


def test_unk_share_exact(tmp_path, caplog):
    tok = CharTokenizer.build(["ab ab"])                    # units: a, b, <space>
    assert unk_share(tok, ["ab", "abc"]) == 1 / 5
    assert unk_share(tok, ["ab ba"]) == 0.0 and unk_share(tok, [""]) == 0.0
    with caplog.at_level(logging.INFO, logger="asr_nb"):
        assert check_unk_share(tok, ["xyz a"], "validation") == 3 / 5
    assert "validation targets: 3 of 5 tokens are <unk> (60.00 %)" in caplog.text and "'x' x1" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="asr_nb"):
        check_unk_share(tok, ["ab"] * 99 + ["abc"], warn_above=0.01)   # 1 of 201 < 1 %: no warning
    assert caplog.text == ""
    assert tok.unk_count == 0


def test_writers_use_atomic_write():
    for mod in (D, T):
        src = inspect.getsource(mod).replace("os.replace(tmp, out)", "")  # synth_corpus commits a whole dir by rename
        for bad in (".write_text(", ".write_bytes(", "os.replace(", "mkstemp("):
            assert bad not in src, (mod.__name__, bad)
    for fn in (F._save_npz_atomic, F.compute_cmvn, F.ensure_cmvn):
        src = inspect.getsource(fn)
        assert "os.replace(" not in src and "mkstemp(" not in src, fn.__name__
    assert "atomic_write" in inspect.getsource(F._save_npz_atomic)


# ---------------------------------------------------------------- a break-it review (session 9): what readers let through
def test_manifest_inputs_that_would_lose_or_split_utterances(tmp_path):
    "ESPnet1 json with a repeated id, a jsonl/PPASR transcript with a line break: one error naming the file (and line)."
    a = tone(tmp_path/"a.wav")
    dup = tmp_path/"data.json"
    dup.write_text('{"utts": {"u1": {"input": [], "output": []}, "u1": {"input": [], "output": []}}}')
    with pytest.raises(DataError, match=r"data.json: duplicate key 'u1'"): D.read_espnet_json(dup)
    man = tmp_path/"m.jsonl"
    man.write_text(json.dumps(dict(key="u1", source=a, target="ok")) + "\n" + json.dumps(dict(key="u2", source=a, target="two\nlines")) + "\n")
    with pytest.raises(DataError, match=r"m.jsonl:2: field 'target' holds a line break"): read_jsonl(man)
    pp = tmp_path/"pp.jsonl"
    pp.write_text(json.dumps(dict(audio_filepath=a, duration=1.0, text="a\r\nb")) + "\n")
    with pytest.raises(DataError, match=r"pp.jsonl:1: field 'text' holds a line break"): read_jsonl(pp)


def test_fairseq_path_with_spaces_gets_an_id_without_whitespace(tmp_path):
    (tmp_path/"sub dir").mkdir(); tone(tmp_path/"sub dir"/"a b.wav"); tone(tmp_path/"sub dir"/"a_b.wav", seed=1)
    tsv = tmp_path/"train.tsv"
    tsv.write_text(f"{tmp_path}\nsub dir/a b.wav\t16000\n")
    (tmp_path/"train.wrd").write_text("hello\n")
    u, = D.read_fairseq_tsv(tsv)
    assert u.key == "sub_dir/a_b" and Path(u.audio).is_file() and u.text == "hello"
    tsv.write_text(f"{tmp_path}\nsub dir/a b.wav\t16000\nsub_dir/a_b.wav\t16000\n"); (tmp_path/"train.wrd").write_text("x\ny\n")
    with pytest.raises(DataError, match=r"train.tsv:3: duplicate path 'sub_dir/a_b.wav' \(its id 'sub_dir/a_b' is first on line 2\)"):
        D.read_fairseq_tsv(tsv)


def test_validate_reports_a_cut_off_wav_and_a_segment_past_its_recording(tmp_path):
    w = tmp_path/"w.wav"; sf.write(w, np.zeros(SR, dtype="int16"), SR, subtype="PCM_16")
    cut = tmp_path/"cut.wav"; cut.write_bytes(w.read_bytes()[:SR])                   # half the sample bytes
    utts = [Utterance("full", str(w), "a"), Utterance("cut", str(cut), "a"),
            Utterance("seg_ok", str(w), "a", start=0.2, end=1.3),                     # 0.3 s over: cut to the file, as Kaldi does
            Utterance("seg_past", str(w), "a", start=0.2, end=1.6)]
    rep = validate_utterances(utts, log=False)
    assert set(rep.bad) == {"cut", "seg_past"}, rep.bad
    assert any(r.startswith("truncated_audio:") and "declares 32000 bytes of samples, the file holds" in r for r in rep.bad["cut"]), rep.bad
    assert any("segment_out_of_range: ends at 1.6s" in r for r in rep.bad["seg_past"]), rep.bad
