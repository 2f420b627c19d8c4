"""Faults across ranks (#17 part 4), two CPU processes on gloo: a rank killed (SIGKILL) or hung (SIGSTOP) in the middle of
training makes the survivor stop within `train.dist_timeout` + slack with one line naming the silent rank; rerunning the
same command resumes every rank from the last complete checkpoint and ends with the weights of an uninterrupted run.
Run: `.venv/bin/python -m pytest -q tests/test_dist_faults.py`."""
import os, re, shutil, signal, socket, subprocess, sys, time, uuid
from pathlib import Path
import pytest
import torch

from asr_nb.checkpoint import latest_checkpoint, load_checkpoint
from asr_nb.train import read_train_log

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
TRAIN = Path(PY).parent/"asr_nb_train"  # the console script of this venv
# The tiny model of tests/test_train.py; 40 utterances, 4 per batch, 2 ranks: 5 updates per epoch, 10 in all.
TINY = ["model.encoder.d_model=32", "model.encoder.attention_heads=2", "model.encoder.linear_units=64", "model.encoder.num_blocks=2",
        "model.decoder.num_blocks=1", "model.decoder.linear_units=64", "model.encoder.cnn_kernel=7",
        "optim.scheduler=warmup_decay", "optim.lr=0.005", "optim.warmup_steps=15", "data.batch_type=example",
        "data.batch_size=4", "data.num_workers=0", "train.tensorboard=false", "train.device=cpu", "train.num_threads=1",
        "train.max_epochs=2", "train.log_interval=1", "train.save_interval=2", "train.keep_n_best=1"]

pytestmark = pytest.mark.skipif(not TRAIN.exists(), reason=f"{TRAIN} is not installed (pip install -e .)")

def _env(**kw):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **kw)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env

def _free_port():
    with socket.socket() as s: s.bind(("127.0.0.1", 0)); return s.getsockname()[1]

@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from asr_nb.data import synth_corpus
    return synth_corpus(tmp_path_factory.mktemp("corpus"), n_train=40, n_dev=4, n_test=4, seed=0)

def _args(corpus, exp, *ov):
    return [str(TRAIN), "--train", str(corpus["train"]), "--valid", str(corpus["dev"]), "--exp", str(exp), *TINY, *ov]

def _torchrun(corpus, exp, port, *ov):
    "The user's command: `torchrun --nproc_per_node 2 asr_nb_train ...` (one node)."
    return [PY, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port",
            str(port), *_args(corpus, exp, *ov)]

def _rank_env(rank: int, port: int, **kw):
    "What torchrun gives a worker, for launching the two ranks without its agent (nobody else reacts to a fault)."
    return _env(RANK=str(rank), LOCAL_RANK=str(rank), WORLD_SIZE="2", LOCAL_WORLD_SIZE="2", MASTER_ADDR="127.0.0.1",
                MASTER_PORT=str(port), **kw)

def _pid_of_rank(tag: str, rank: int) -> int | None:
    "The pid of the worker whose environment holds ASR_NB_TEST_TAG=tag and RANK=rank (a torchrun child)."
    want = {f"ASR_NB_TEST_TAG={tag}".encode(), f"RANK={rank}".encode()}
    for p in Path("/proc").iterdir():
        if not p.name.isdigit(): continue
        try: env = set((p/"environ").read_bytes().split(b"\0"))
        except OSError: continue
        if want <= env: return int(p.name)
    return None

def _steps(exp) -> int:
    try: return max((r["step"] for r in read_train_log(exp)["train"]), default=0)
    except OSError: return 0

def _wait_for(cond, procs, timeout=240):
    "Poll `cond()` until true; fail if a process ended first or the time ran out."
    t_end = time.time() + timeout
    while time.time() < t_end:
        if cond(): return
        if any(p.poll() is not None for p in procs): pytest.fail(f"a rank ended before the fault: {[p.poll() for p in procs]}")
        time.sleep(0.05)
    pytest.fail("training did not reach the point of the fault in time")

def _error_line(text: str) -> str:
    "The one error line; no traceback from a rank (torchrun's own report of the failed worker may follow it)."
    lines = [l for l in text.splitlines() if "asr_nb_train: error:" in l]
    assert len(lines) == 1 and not re.search(r'\[rank\d+\]: Traceback|File ".*[/\\]asr_nb[/\\]\w+\.py"', text), text[-3000:]
    return lines[0]

def _same_weights(a, b):
    sa, sb = load_checkpoint(a)["model"], load_checkpoint(b)["model"]
    assert sa.keys() == sb.keys()
    for k in sa: assert torch.equal(sa[k], sb[k]), k

# --------------------------------------------------------------------------------------------------------------
def test_kill_one_rank_then_rerun_resumes_exactly(corpus, tmp_path):
    """torchrun, 2 ranks: SIGKILL rank 1 after step 5 (a checkpoint at step 4): rank 0 stops at once with one line naming
    rank 1, train.log holds it; the same command again resumes both ranks from ckpt-4 and ends with the weights (and
    every step's loss) of an uninterrupted run. The resume is exact under DDP because the checkpoint holds every rank's
    random state and sampler position (tests/test_train.py checks the same for one process)."""
    full, part, tag = tmp_path/"full", tmp_path/"part", uuid.uuid4().hex
    ov = ["train.dist_timeout=30"]
    r = subprocess.run(_torchrun(corpus, full, _free_port(), *ov), env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    cmd = _torchrun(corpus, part, _free_port(), *ov)
    p = subprocess.Popen(cmd, env=_env(ASR_NB_TEST_TAG=tag), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_for(lambda: _steps(part) >= 5 and latest_checkpoint(part) is not None, [p])
        victim = _pid_of_rank(tag, 1); assert victim is not None
        t0 = time.time(); os.kill(victim, signal.SIGKILL)
        out, _ = p.communicate(timeout=30 + 30)  # dist_timeout + slack; a closed socket is noticed at once
        took = time.time() - t0
    finally:
        if p.poll() is None: p.kill(); p.wait()
    assert p.returncode != 0 and took < 30, (p.returncode, took)
    line = _error_line(out)
    assert re.search(r"rank 0/2: rank 1 stopped answering \(its connection closed\); the last complete checkpoint is "
                     r"ckpt-\d+\.pt: rerun the same command", line), line
    assert "rank 1 stopped answering" in (part/"train.log").read_text()
    killed_at = _steps(part); assert killed_at < 10
    r = subprocess.run(cmd, env=_env(), capture_output=True, text=True, timeout=300)  # the same command again
    assert r.returncode == 0, r.stderr[-3000:]
    resumed = [l for l in (part/"train.log").read_text().splitlines() if "resumed from" in l]
    assert resumed and "(epoch" in resumed[-1], resumed
    la = {x["step"]: x["loss"] for x in read_train_log(full)["train"]}
    lb = {x["step"]: x["loss"] for x in read_train_log(part)["train"]}
    assert sorted(la) == list(range(1, 11)) and la == lb
    _same_weights(latest_checkpoint(full), latest_checkpoint(part))

# --------------------------------------------------------------------------------------------------------------
def test_hung_rank_is_named_within_the_timeout(corpus, tmp_path):
    """The two ranks launched as torchrun would (no agent to react): SIGSTOP rank 1, as a node that drops off the network
    would leave it (no socket closes). Rank 0 waits train.dist_timeout=8 s in its collective, then stops with exit 2 and
    one line naming rank 1 (its heartbeat stopped). Then: each rank given its own exp dir, as nodes without shared
    storage would see it, refuse to start in one line instead of training from different checkpoints."""
    port, exp, timeout = _free_port(), tmp_path/"exp", 8
    procs = [subprocess.Popen(_args(corpus, exp, f"train.dist_timeout={timeout}"), env=_rank_env(r, port),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for r in (0, 1)]
    try:
        _wait_for(lambda: _steps(exp) >= 3 and latest_checkpoint(exp) is not None, procs)
        t0 = time.time(); os.kill(procs[1].pid, signal.SIGSTOP)
        out, _ = procs[0].communicate(timeout=timeout + 40)
        took = time.time() - t0
    finally:
        for p in procs:
            if p.poll() is None: p.kill()
            p.wait()
    assert procs[0].returncode == 2 and timeout - 1 < took < timeout + 25, (procs[0].returncode, took, out[-3000:])
    line = _error_line(out)
    assert (f"rank 0/2: rank 1 stopped answering (no answer within train.dist_timeout={timeout} s); the last complete "
            f"checkpoint is ckpt-") in line, line
    # not one shared dir: rank 1 sees no checkpoint where rank 0 sees one
    other = tmp_path/"other"; other.mkdir()
    port = _free_port()
    procs = [subprocess.Popen(_args(corpus, exp if r == 0 else other), env=_rank_env(r, port), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for r in (0, 1)]
    outs = [p.communicate(timeout=120)[0] for p in procs]
    assert [p.returncode for p in procs] == [2, 2], outs
    for o in outs: assert "the ranks see different checkpoints to resume from (rank 0: ckpt-" in _error_line(o)
    assert "rank 1: none)" in _error_line(outs[0])
