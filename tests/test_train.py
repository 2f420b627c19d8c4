"""Training loop end to end (CPU): learning, exact resume after SIGKILL, atomic checkpoints, DDP with two processes,
non-finite updates skipped, checkpoint averaging. Run: `.venv/bin/python -m pytest -q tests/test_train.py`."""
import json, os, signal, socket, subprocess, sys, time
from pathlib import Path
import numpy as np
import pytest
import torch
from torch import nn

from asr_nb.core import load_config
from asr_nb.checkpoint import (atomic_save, load_checkpoint, latest_checkpoint, list_checkpoints, load_model,
                               remove_stale_tmp)
from asr_nb.train import read_train_log, train
from asr_nb.average import average_checkpoints, average_exp

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
from cli_helpers import TINY_TRAIN as TINY, TRAIN_RUNNER as RUNNER, train_env as _env

@pytest.fixture(scope="session")
def corpus(tmp_path_factory):
    from asr_nb.data import synth_corpus
    return synth_corpus(tmp_path_factory.mktemp("corpus"), n_train=40, n_dev=8, n_test=4, seed=0)

@pytest.fixture(scope="session")
def runner(tmp_path_factory):
    p = tmp_path_factory.mktemp("runner")/"run_train.py"; p.write_text(RUNNER); return p

def _cmd(runner, exp, corpus, *overrides):
    return [PY, str(runner), str(exp), str(corpus["train"]), str(corpus["dev"]), *TINY, *overrides]

def _losses(exp) -> dict:
    return {r["step"]: r["loss"] for r in read_train_log(exp)["train"]}

def _same_weights(a, b):
    sa, sb = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    assert sa.keys() == sb.keys()
    for k in sa: assert torch.equal(sa[k], sb[k]), k

# --------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def trained(corpus, tmp_path_factory):
    "12 epochs of the tiny model (60 updates), TensorBoard on."
    exp = tmp_path_factory.mktemp("trained")/"exp"
    cfg = load_config(None, TINY + ["train.max_epochs=12", "train.log_interval=5", "train.keep_n_best=2",
                                    "train.tensorboard=true"])
    return cfg, exp, train(cfg, corpus["train"], corpus["dev"], exp)

def test_loss_falls(corpus, trained):
    cfg, exp, s = trained
    log = read_train_log(exp)
    first, last = log["train"][0]["loss"], log["train"][-1]["loss_epoch"]
    assert last < 0.8 * first, (first, last)  # 60 updates: out of the first plateau, not yet aligned
    assert log["valid"][-1]["loss"] < log["valid"][0]["loss"]
    assert s["step"] == 60 and s["epoch"] == 12 and s["skipped_steps"] == 0
    # the exp dir holds everything decoding needs
    for f in ("config.yaml", "units.txt", "cmvn.npz", "train.log", "checkpoints/last.pt"): assert (exp/f).exists(), f
    assert list((exp/"tensorboard").glob("events.out.tfevents.*"))
    kept = list_checkpoints(exp)
    assert len(kept) <= 3 and kept[-1]["step"] == 60  # 2 best + the newest
    model, tok, cfg2 = load_model(exp)
    assert not model.training and tok.vocab_size == model.vocab_size and cfg2.model.encoder.d_model == 32
    # same command again: nothing left to do, nothing changes
    s2 = train(cfg, corpus["train"], corpus["dev"], exp)
    assert s2["step"] == 60 and s2["resumed_from"].endswith("ckpt-60.pt") and latest_checkpoint(exp).name == "ckpt-60.pt"

def test_resume_from_and_init_from(corpus, trained, tmp_path):
    cfg, exp, _ = trained
    # resume_from an earlier epoch-end checkpoint into a new dir: the same final weights as the original run
    ck = [c for c in list_checkpoints(exp) if c["batch_idx"] == 0 and c["step"] < 60][-1]
    c2 = load_config(None, TINY + ["train.max_epochs=12", "train.log_interval=5", f"train.resume_from={ck['path']}"])
    s = train(c2, corpus["train"], corpus["dev"], tmp_path/"resumed")
    assert s["step"] == 60 and s["resumed_from"] == str(ck["path"])
    _same_weights(tmp_path/"resumed"/"checkpoints"/"ckpt-60.pt", exp/"checkpoints"/"ckpt-60.pt")
    # init_from, same vocabulary: the tokenizer and CMVN are copied, every tensor is loaded
    c3 = load_config(None, TINY + ["train.max_steps=1", f"train.init_from={exp}", "train.init_lr_factor=0.5"])
    train(c3, corpus["train"], corpus["dev"], tmp_path/"ft")
    assert (tmp_path/"ft"/"units.txt").read_text() == (exp/"units.txt").read_text()
    assert "every tensor copied" in (tmp_path/"ft"/"train.log").read_text()
    # init_from with a new vocabulary (one more unit): the vocabulary-sized layers start afresh
    units = (exp/"units.txt").read_text().split()
    (tmp_path/"ft2").mkdir()
    (tmp_path/"ft2"/"units.txt").write_text("\n".join(units[:-1] + ["~", units[-1]]) + "\n")
    train(c3, corpus["train"], corpus["dev"], tmp_path/"ft2")
    text = (tmp_path/"ft2"/"train.log").read_text()
    assert "new vocabulary, re-initialised" in text and "ctc" in text

# --------------------------------------------------------------------------------------------------------------
def test_kill9_resume_is_exact(corpus, runner, tmp_path):
    "SIGKILL mid-epoch, restart with the same command: the same losses and final weights as an uninterrupted run."
    ov = ["data.batch_size=4", "train.max_epochs=3", "train.save_interval=3", "train.valid_interval=3",
          "train.log_interval=1", "train.keep_n_best=1"]
    a, b = tmp_path/"a", tmp_path/"b"
    subprocess.run(_cmd(runner, a, corpus, *ov), check=True, env=_env(), capture_output=True, timeout=600)
    p = subprocess.Popen(_cmd(runner, b, corpus, *ov), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 300
        while time.time() < deadline and p.poll() is None:
            if (b/"train.log").exists() and max(_losses(b), default=0) >= 4 and latest_checkpoint(b) is not None: break
            time.sleep(0.005)
        assert p.poll() is None, "the run finished before it could be killed"
        os.kill(p.pid, signal.SIGKILL)
    finally: p.wait()
    killed_at = max(_losses(b)); assert killed_at < 30
    out = subprocess.run(_cmd(runner, b, corpus, *ov), check=True, env=_env(), capture_output=True, text=True, timeout=600)
    text = (b/"train.log").read_text()
    assert "resumed from" in text
    resumed = [l for l in text.splitlines() if "resumed from" in l][-1]
    assert "batch 0," not in resumed, f"expected a mid-epoch resume: {resumed}"
    la, lb = _losses(a), _losses(b)
    assert sorted(la) == list(range(1, 31)) and la == lb  # every step's loss, including those after the resume
    va, vb = read_train_log(a)["valid"], read_train_log(b)["valid"]
    assert [v["loss"] for v in va] == [v["loss"] for v in vb]
    _same_weights(latest_checkpoint(a), latest_checkpoint(b))

# --------------------------------------------------------------------------------------------------------------
WRITER = """
import sys, torch
from asr_nb.checkpoint import atomic_save
i = 1
while True:
    atomic_save({"model": {"w": torch.full((4_000_000,), float(i))}, "step": i}, sys.argv[1]); i += 1
"""

def test_checkpoint_killed_mid_write_never_replaces_a_good_one(tmp_path):
    f = tmp_path/"ckpt.pt"
    atomic_save({"model": {"w": torch.zeros(4_000_000)}, "step": 0}, f)
    (tmp_path/"w.py").write_text(WRITER)
    torn = 0
    for attempt in range(3):  # each time: wait until a write is under way (its temp file exists), then SIGKILL
        p = subprocess.Popen([PY, str(tmp_path/"w.py"), str(f)], env=_env())
        deadline = time.time() + 120
        while time.time() < deadline and not list(tmp_path.glob(".*.tmp")): time.sleep(0.0005)
        time.sleep(0.002 * attempt)
        os.kill(p.pid, signal.SIGKILL); p.wait()
        torn += len(list(tmp_path.glob(".*.tmp")))  # a write was cut short
        st = torch.load(f, weights_only=True)
        w = st["model"]["w"]
        assert w.numel() == 4_000_000 and bool((w == float(st["step"])).all())  # complete, never torn
        remove_stale_tmp(tmp_path)
    assert torn >= 1, "no kill landed inside a write"
    remove_stale_tmp(tmp_path); assert not list(tmp_path.glob(".*.tmp"))

def test_failed_save_keeps_the_old_file(tmp_path):
    class Boom:
        def __reduce__(self): raise OSError("no space left on device")
    f = tmp_path/"ckpt.pt"
    atomic_save({"w": torch.ones(3)}, f)
    with pytest.raises(OSError): atomic_save({"w": torch.zeros(10**6), "x": Boom()}, f)
    assert torch.equal(torch.load(f, weights_only=True)["w"], torch.ones(3)) and len(list(tmp_path.iterdir())) == 1

# --------------------------------------------------------------------------------------------------------------
def _free_port():
    with socket.socket() as s: s.bind(("127.0.0.1", 0)); return s.getsockname()[1]

def _torchrun(runner, exp, corpus, *ov):
    cmd = [PY, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), *_cmd(runner, exp, corpus, *ov)[1:]]
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return r

def test_ddp_two_processes_train_and_resume(corpus, runner, tmp_path):
    "torchrun, gloo, 2 ranks: trains; stopping at step 4 and continuing to 8 equals running to 8."
    ov = ["train.log_interval=1", "train.save_interval=2"]
    _torchrun(runner, tmp_path/"full", corpus, *ov, "train.max_steps=8")
    _torchrun(runner, tmp_path/"part", corpus, *ov, "train.max_steps=4")
    assert max(_losses(tmp_path/"part")) == 4
    _torchrun(runner, tmp_path/"part", corpus, *ov, "train.max_steps=8")
    text = (tmp_path/"part"/"train.log").read_text()
    assert "resumed from" in text and "2 rank(s)" in text
    lf, lp = _losses(tmp_path/"full"), _losses(tmp_path/"part")
    assert sorted(lf) == list(range(1, 9)) and lf == lp
    _same_weights(latest_checkpoint(tmp_path/"full"), latest_checkpoint(tmp_path/"part"))
    st = load_checkpoint(tmp_path/"full")
    assert st["world_size"] == 2 and len(st["ranks"]) == 2 and st["ranks"][1]["sampler"]["rank"] == 1

# --------------------------------------------------------------------------------------------------------------
def test_nan_batch_is_skipped_and_counted(corpus, tmp_path, monkeypatch):
    """Non-finite features in one batch (as from an overflow upstream of the model): that update is skipped, counted and
    logged, and the weights stay finite. (NaN *audio* never gets this far: the reader refuses it, see
    tests/test_robustness_data.py.)"""
    import soundfile as sf
    import asr_nb.features as F
    from asr_nb.data import load_utterances
    utts = load_utterances(corpus["train"])
    target = sf.info(utts[0].audio).frames
    clean = F.FbankFrontend._compute
    def poisoned(self, wave, dither):  # utts[0]'s features become NaN (CMVN skips them: its statistics stay finite)
        x = clean(self, wave, dither)
        return torch.full_like(x, float("nan")) if wave.numel() == target else x
    monkeypatch.setattr(F.FbankFrontend, "_compute", poisoned)
    cfg = load_config(None, TINY + ["train.max_epochs=2", "train.log_interval=1", "data.shuffle=false", "data.num_workers=0"])
    s = train(cfg, utts, corpus["dev"], tmp_path/"exp")
    assert s["skipped_steps"] == 2  # the batch holding it, once per epoch
    assert "update skipped" in (tmp_path/"exp"/"train.log").read_text()
    for v in load_checkpoint(tmp_path/"exp")["model"].values():
        if v.is_floating_point(): assert torch.isfinite(v).all()
    losses = [r["loss"] for r in read_train_log(tmp_path/"exp")["train"]]
    assert sum(not np.isfinite(x) for x in losses) == 2  # log lines of windows holding only a skipped update

# --------------------------------------------------------------------------------------------------------------
class _Tied(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(5, 4); self.bn = nn.BatchNorm1d(4); self.out = nn.Linear(4, 5)
        self.out.weight = self.emb.weight  # tied

def test_average_equals_hand_computed_mean(tmp_path):
    sds = []
    for i in range(3):
        torch.manual_seed(i); m = _Tied(); m.bn.num_batches_tracked.fill_(10 + i)
        m.bn.running_mean.uniform_(); sds.append({k: v.clone() for k, v in m.state_dict().items()})
        atomic_save({"model": m.state_dict(), "step": i + 1, "epoch": i + 1, "batch_idx": 0,
                     "metrics": {"valid_loss": float(3 - i)}}, tmp_path/"checkpoints"/f"ckpt-{i + 1}.pt")
    avg = average_checkpoints(sorted((tmp_path/"checkpoints").glob("ckpt-*.pt")))
    for k in ("emb.weight", "out.bias", "bn.weight", "bn.running_mean", "bn.running_var"):
        torch.testing.assert_close(avg[k], (sds[0][k] + sds[1][k] + sds[2][k]) / 3)
    assert avg["bn.num_batches_tracked"].dtype == torch.long and int(avg["bn.num_batches_tracked"]) == (10 + 11 + 12) // 3
    assert avg["out.weight"].data_ptr() == avg["emb.weight"].data_ptr()  # still tied, averaged once
    m = _Tied(); m.load_state_dict(avg)
    # best 2 by valid_loss are steps 3 and 2
    out = average_exp(tmp_path, n=2, by="valid_loss")
    st = torch.load(out, weights_only=True)
    torch.testing.assert_close(st["model"]["emb.weight"], (sds[1]["emb.weight"] + sds[2]["emb.weight"]) / 2)
    assert st["averaged"] == ["ckpt-2.pt", "ckpt-3.pt"]

def test_resume_false_starts_afresh(corpus, tmp_path):
    "train.resume=false keeps nothing of an earlier run's state: its checkpoints are moved aside, not mixed in."
    c = load_config(None, TINY + ["train.max_steps=2", "train.log_interval=1"])
    train(c, corpus["train"], corpus["dev"], tmp_path/"exp")
    s = train(load_config(None, TINY + ["train.max_steps=1", "train.resume=false"]), corpus["train"], corpus["dev"],
              tmp_path/"exp")
    assert s["step"] == 1 and s["resumed_from"] == ""
    assert latest_checkpoint(tmp_path/"exp").name == "ckpt-1.pt"
    old = list(tmp_path.glob("exp/checkpoints.old-*"))
    assert len(old) == 1 and (old[0]/"ckpt-2.pt").exists()

# --------------------------------------------------------------------------------------------------------------
def _cli(exp, corpus, *overrides):
    "asr_nb_train as a user runs it (python -m asr_nb.cli train ...)."
    return [PY, "-m", "asr_nb.cli", "train", "--train", str(corpus["train"]), "--valid", str(corpus["dev"]),
            "--exp", str(exp), *TINY, *overrides]

def _wait_for_step(p, exp, step: int, timeout: float = 300):
    deadline = time.time() + timeout
    while time.time() < deadline and p.poll() is None:
        if (exp/"train.log").exists() and max(_losses(exp), default=0) >= step: return
        time.sleep(0.005)
    assert p.poll() is None, "the run finished before the test could act"

def test_sigterm_saves_and_resumes_exactly(corpus, tmp_path):
    "SIGTERM (preemption, Ctrl-C): the step finishes, a checkpoint is saved, exit 143; the same command continues exactly."
    ov = ["data.batch_size=4", "train.max_epochs=2", "train.log_interval=1", "train.keep_n_best=1", "data.num_workers=1"]
    a, b = tmp_path/"a", tmp_path/"b"
    subprocess.run(_cli(a, corpus, *ov), check=True, env=_env(), capture_output=True, timeout=600)
    p = subprocess.Popen(_cli(b, corpus, *ov), env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        _wait_for_step(p, b, 3)
        os.kill(p.pid, signal.SIGTERM)
        out, err = p.communicate(timeout=300)
    finally:
        if p.poll() is None: p.kill()
    assert p.returncode == 143, err
    line = err.strip().splitlines()[-1]
    assert line.startswith("asr_nb_train: stopped by SIGTERM at step ") and "rerun the same command to resume" in line, err
    stopped_at = int(line.split("at step ")[1].split(";")[0])
    assert latest_checkpoint(b).name == f"ckpt-{stopped_at}.pt" and stopped_at < max(_losses(a))
    subprocess.run(_cli(b, corpus, *ov), check=True, env=_env(), capture_output=True, timeout=600)
    assert _losses(a) == _losses(b)   # every step's loss, before and after the stop
    _same_weights(latest_checkpoint(a), latest_checkpoint(b))

def test_second_training_into_one_exp_is_refused(corpus, tmp_path, capsys):
    "Two trainings in one exp dir would prune each other's checkpoints: the second is refused at once, in one line."
    from asr_nb.cli import train_main
    exp = tmp_path/"exp"
    p = subprocess.Popen(_cli(exp, corpus, "data.batch_size=4", "train.max_epochs=50"), env=_env(),
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_for_step(p, exp, 1)
        before = sorted(x.name for x in (exp/"checkpoints").glob("*")) if (exp/"checkpoints").exists() else []
        rc = train_main(["--train", str(corpus["train"]), "--valid", str(corpus["dev"]), "--exp", str(exp), *TINY])
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and "in use by another training" in err[0] and f"pid {p.pid}" in err[0], err
        assert str(exp) in err[0]
    finally:
        p.kill(); p.wait()
    # the kernel released the lock with the killed process: the same command now runs (and resumes)
    rc = train_main(["--train", str(corpus["train"]), "--valid", str(corpus["dev"]), "--exp", str(exp), *TINY,
                     "data.batch_size=4", "train.max_steps=2"])
    assert rc == 0
