"""Training robustness (issue #10, the training side): every failure a user can cause ends in one line naming the
file, exit status 2, the same line in exp/train.log, and nothing lost. Damaged checkpoints are skipped where a good one
exists; a changed config never rewrites the experiment; a run that cannot learn says so; length jitter varies the
number of batches per epoch. Run: `.venv/bin/python -m pytest -q tests/test_robustness_train.py`."""
import errno, hashlib, json
from pathlib import Path
import numpy as np
import pytest
import torch

import asr_nb.checkpoint as C
from asr_nb.checkpoint import latest_checkpoint, list_checkpoints, read_checkpoint, resolve_weights
from asr_nb.cli import average_main, train_main
from asr_nb.core import load_config
from asr_nb.train import read_train_log

TINY = ["model.encoder.d_model=32", "model.encoder.attention_heads=2", "model.encoder.linear_units=64", "model.encoder.num_blocks=2",
        "model.decoder.num_blocks=1", "model.decoder.linear_units=64", "model.encoder.cnn_kernel=7",
        "optim.scheduler=warmup_decay", "optim.lr=0.005", "optim.warmup_steps=15", "data.batch_type=example",
        "data.batch_size=8", "train.tensorboard=false", "train.device=cpu", "train.num_threads=1", "train.log_interval=1"]

@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from asr_nb.data import synth_corpus
    return synth_corpus(tmp_path_factory.mktemp("corpus"), n_train=24, n_dev=4, n_test=2, seed=1)

def run_train(capsys, corpus, exp, *overrides, valid=None):
    "asr_nb_train in this process: (exit status, the stderr lines)."
    capsys.readouterr()
    rc = train_main(["--train", str(corpus["train"]), "--valid", str(valid or corpus["dev"]), "--exp", str(exp), *TINY, *overrides])
    cap = capsys.readouterr()
    run_train.stdout = cap.out
    return rc, cap.err.strip().splitlines()

def assert_one_line_error(rc, err, exp, *parts):
    "Exit 2; the last stderr line is the error, names what it must, holds no traceback or torch advice; also in train.log."
    assert rc == 2, err
    line = err[-1]
    assert line.startswith("asr_nb_train: error: "), err
    for p in parts: assert str(p) in line, (p, line)
    assert "Traceback" not in "\n".join(err) and "weights_only" not in line
    msg = line[len("asr_nb_train: error: "):]
    assert f"ERROR asr_nb.train: {msg}" in (Path(exp)/"train.log").read_text()
    return msg

def digest(exp) -> dict:
    "name -> sha1 of every file of an experiment dir (except the log)."
    return {str(p.relative_to(exp)): hashlib.sha1(p.read_bytes()).hexdigest()
            for p in sorted(Path(exp).rglob("*")) if p.is_file() and p.name != "train.log"}

@pytest.fixture(scope="module")
def base_exp(corpus, tmp_path_factory):
    "Three updates, a checkpoint after each (kept), as a template the tests copy."
    import shutil
    exp = tmp_path_factory.mktemp("base")/"exp"
    assert train_main(["--train", str(corpus["train"]), "--valid", str(corpus["dev"]), "--exp", str(exp), *TINY,
                       "train.max_steps=3", "train.save_interval=1", "train.keep_n_best=10", "train.keep_last_n=10"]) == 0
    return exp

def copy_exp(base, dst):
    import shutil
    shutil.copytree(base, dst); return dst

# ---------------------------------------------------------------------------------------------------------- kind 1
@pytest.mark.parametrize("damage,why", [("truncate", "truncated or corrupt"), ("zero", "zero-filled"), ("empty", "empty file")])
def test_damaged_resume_from_is_one_line(capsys, corpus, base_exp, tmp_path, damage, why):
    exp = copy_exp(base_exp, tmp_path/"exp")
    ck = exp/"checkpoints"/"ckpt-3.pt"; b = ck.read_bytes()
    ck.write_bytes({"truncate": b[:len(b) // 3], "zero": bytes(len(b)), "empty": b""}[damage])
    rc, err = run_train(capsys, corpus, tmp_path/"new", "train.max_steps=4", f"train.resume_from={ck}")
    assert_one_line_error(rc, err, tmp_path/"new", ck, why)

def test_enospc_during_checkpoint_write(capsys, corpus, tmp_path, monkeypatch):
    "The disk fills while ckpt-2 is written: one line naming it, ckpt-1 intact, no temp file left, logged."
    real = C._torch_save
    def writer(obj, f):
        if isinstance(obj, dict) and obj.get("step") == 2 and "model" in obj:
            f.write(b"PK\x03\x04 half a checkpoint"); raise OSError(errno.ENOSPC, "No space left on device")
        real(obj, f)
    monkeypatch.setattr(C, "_torch_save", writer)
    exp = tmp_path/"exp"
    rc, err = run_train(capsys, corpus, exp, "train.max_steps=3", "train.save_interval=1")
    assert_one_line_error(rc, err, exp, exp/"checkpoints"/"ckpt-2.pt", "No space left on device",
                          "the previous checkpoint ckpt-1.pt is intact")
    assert read_checkpoint(exp/"checkpoints"/"ckpt-1.pt")["step"] == 1
    assert sorted(p.name for p in (exp/"checkpoints").iterdir()) == ["ckpt-1.pt", "index.json", "last.pt"]

def test_dev_set_emptied_by_the_length_filter(capsys, corpus, tmp_path):
    "A dev set of one long utterance, data.max_frames below it: the message says it is the validation set and why."
    import soundfile as sf
    from asr_nb.data import load_utterances
    utts = load_utterances(corpus["train"])
    frames = [sf.info(u.audio).frames * 100 // sf.info(u.audio).samplerate for u in utts]
    waves, n = [], 0
    for u in utts:
        w, sr = sf.read(u.audio, dtype="float32"); waves.append(w); n += len(w) * 100 // sr
        if n > max(frames) + 300: break
    dev = tmp_path/"dev_long"; dev.mkdir()
    sf.write(dev/"long.wav", np.concatenate(waves), sr)
    (dev/"wav.scp").write_text(f"long {dev/'long.wav'}\n"); (dev/"text").write_text(f"long {utts[0].text}\n")
    exp = tmp_path/"exp"
    rc, err = run_train(capsys, corpus, exp, "train.max_steps=1", f"data.max_frames={max(frames) + 100}", valid=dev)
    assert_one_line_error(rc, err, exp, f"validation set (--valid {dev})", "length filter", "data.max_frames=")

# ---------------------------------------------------------------------------------------------------------- kind 2
def test_unreadable_newest_checkpoint_falls_back(capsys, corpus, base_exp, tmp_path):
    exp = copy_exp(base_exp, tmp_path/"exp")
    (exp/"checkpoints"/"ckpt-3.pt").write_bytes(bytes(4096))  # zero-filled after a crash
    rc, err = run_train(capsys, corpus, exp, "train.max_steps=4", "train.save_interval=1", "train.keep_n_best=10",
                        "train.keep_last_n=10")
    assert rc == 0, err
    text = (exp/"train.log").read_text()
    warn = [l for l in err if "ckpt-3.pt: unreadable checkpoint: the file is zero-filled" in l]
    assert len(warn) == 1 and "falling back to an older checkpoint" in warn[0] and warn[0].split(": ", 1)[1] in text
    assert "ckpt-2.pt (epoch 1, batch 2, step 2)" in [l for l in text.splitlines() if "resumed from" in l][-1]
    assert latest_checkpoint(exp).name == "ckpt-4.pt" and read_checkpoint(exp/"checkpoints"/"ckpt-3.pt")["step"] == 3

def test_listing_averaging_and_weights_skip_unreadable(capsys, base_exp, tmp_path, monkeypatch, caplog):
    exp = copy_exp(base_exp, tmp_path/"exp")
    # with the index, listing opens no checkpoint
    monkeypatch.setattr(torch, "load", lambda *a, **k: (_ for _ in ()).throw(AssertionError("torch.load called")))
    assert [r["step"] for r in list_checkpoints(exp)] == [1, 2, 3]
    monkeypatch.undo()
    (exp/"checkpoints"/"ckpt-2.pt").write_bytes(b"")                    # damaged: its size no longer matches the index
    (exp/"checkpoints"/"index.json").write_text('{"ckpt-1.pt": 7')      # and a corrupt index
    assert [r["step"] for r in list_checkpoints(exp)] == [1, 3]
    assert "ckpt-2.pt: empty file" in caplog.text and "index.json: unusable index" in caplog.text
    (exp/"checkpoints"/"ckpt-3.pt").write_bytes(bytes(100))
    assert resolve_weights(exp, "last").name == "ckpt-1.pt" and resolve_weights(exp).name == "ckpt-1.pt"
    capsys.readouterr()
    assert average_main(["--exp", str(exp), "--n", "3", "--by", "last"]) == 0
    assert read_checkpoint(exp/"model_avg.pt")["averaged"] == ["ckpt-1.pt"]
    assert "ckpt-3.pt: unreadable checkpoint" in caplog.text

# ---------------------------------------------------------------------------------------------------------- kind 3
def test_changed_model_config_is_refused_before_writing(capsys, corpus, base_exp, tmp_path):
    exp = copy_exp(base_exp, tmp_path/"exp")
    before = digest(exp)
    rc, err = run_train(capsys, corpus, exp, "train.max_steps=5", "model.encoder.d_model=48", "optim.lr=0.001")
    msg = assert_one_line_error(rc, err, exp, f"{exp}: config differs from the checkpoint", "model.encoder.d_model (32 -> 48)",
                                "optim.lr (0.005 -> 0.001)", "use a new --exp, or train.init_from=",
                                f"to resume as it was, pass --config {exp/'config.yaml'}")
    assert "max_steps" not in msg  # may change on resume
    assert digest(exp) == before  # config.yaml, units, cmvn, checkpoints: untouched
    units = (exp/"units.txt").read_text().splitlines(); units[2], units[3] = units[3], units[2]
    (exp/"units.txt").write_text("\n".join(units) + "\n")
    rc, err = run_train(capsys, corpus, exp, "train.max_steps=5")
    assert_one_line_error(rc, err, exp, "config differs from the checkpoint", "units (")

# ---------------------------------------------------------------------------------------------------------- kind 6
def test_run_of_skipped_updates_stops_with_a_diagnosis(capsys, corpus, tmp_path):
    "A learning rate that blows the weights up: the updates after the first are skipped; the run stops after 20."
    exp = tmp_path/"exp"
    rc, err = run_train(capsys, corpus, exp, "optim.scheduler=constant", "optim.lr=1e30", "train.max_epochs=50",
                        "train.valid_interval=0")
    msg = assert_one_line_error(rc, err, exp, str(exp), "updates were skipped", "train.max_skip_rate=0.5")
    assert "best" not in msg and "best_checkpoint" not in run_train.stdout  # no summary naming a "best checkpoint"
    steps = [r["step"] for r in read_train_log(exp)["train"]]
    assert max(steps) == 20

# ---------------------------------------------------------------------------------------------------------- kind 8
def test_length_jitter_varies_batches_per_epoch(capsys, corpus, tmp_path):
    "data.length_jitter > 0: each epoch has its own number of batches; the loop uses each epoch's, none is lost."
    from asr_nb.checkpoint import load_model
    from asr_nb.dataset import make_dataloader
    from asr_nb.data import load_utterances
    ov = ["data.batch_type=length", "data.max_frames_in_batch=2500", "data.length_jitter=0.9", "train.max_epochs=6"]
    exp = tmp_path/"exp"
    rc, err = run_train(capsys, corpus, exp, *ov)
    assert rc == 0, err
    cfg = load_config(exp/"config.yaml")
    _, tok, _ = load_model(exp)
    _, sampler = make_dataloader(load_utterances(corpus["train"]), tok, cfg, train=True, seed=cfg.train.seed)
    counts = []
    for e in range(6): sampler.set_epoch(e); counts.append(len(sampler))
    assert len(set(counts)) > 1, counts  # the jitter does change the count
    log = read_train_log(exp)["train"]
    assert [r["step"] for r in log] == list(range(1, sum(counts) + 1))
    assert [sum(1 for r in log if r["epoch"] == e + 1) for e in range(6)] == counts
