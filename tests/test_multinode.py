"""Multi-node training really run (#17 part 3): two "nodes" as two network namespaces on this machine, joined by a veth
pair with private addresses this test assigns; each runs `torchrun --nnodes 2 --nproc_per_node 1 --node_rank i
--master_addr <node 0> asr_nb_train ...` (gloo on CPU, torchrun's static rendezvous). The weights they save equal,
bit for bit, those of a one-node `torchrun --nproc_per_node 2` run of the same global batch: the two layouts run the
same two ranks with the same data split, and gloo's all-reduce of two ranks adds the same two numbers whatever the
transport. Needs root and iproute2; skipped with the reason otherwise. Run: `.venv/bin/python -m pytest -q tests/test_multinode.py`."""
import os, random, shutil, socket, subprocess, sys, uuid
from pathlib import Path
import pytest
import torch

from asr_nb.checkpoint import latest_checkpoint, load_checkpoint
from asr_nb.train import read_train_log

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
TRAIN, TORCHRUN = Path(PY).parent/"asr_nb_train", Path(PY).parent/"torchrun"
TINY = ["model.encoder.d_model=32", "model.encoder.attention_heads=2", "model.encoder.linear_units=64", "model.encoder.num_blocks=1",
        "model.decoder.num_blocks=1", "model.decoder.linear_units=64", "model.encoder.cnn_kernel=7",
        "optim.scheduler=warmup_decay", "optim.lr=0.005", "optim.warmup_steps=15", "data.batch_type=example",
        "data.batch_size=4", "data.num_workers=0", "train.tensorboard=false", "train.device=cpu", "train.num_threads=1",
        "train.max_steps=3", "train.log_interval=1", "train.dist_timeout=60"]

def _ip(*args, check=True):
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)

def _why_no_netns() -> str | None:
    "Why this machine cannot make network namespaces here (None: it can)."
    if not (TRAIN.exists() and TORCHRUN.exists()): return f"{TRAIN} or {TORCHRUN} is not installed (pip install -e .)"
    if not sys.platform.startswith("linux"): return "network namespaces are Linux only"
    if os.geteuid() != 0: return "creating network namespaces needs root (ip netns add)"
    if shutil.which("ip") is None: return "no `ip` command (iproute2) to create network namespaces"
    probe = f"asrnbp{uuid.uuid4().hex[:8]}"
    r = _ip("netns", "add", probe, check=False)
    if r.returncode != 0: return f"ip netns add failed: {r.stderr.strip() or r.returncode} (no CAP_SYS_ADMIN in this container?)"
    _ip("netns", "del", probe, check=False)
    return None

@pytest.fixture
def two_nodes():
    "Two namespaces joined by a veth pair: yields [(namespace, interface, address)] for node 0 and node 1; always removed."
    why = _why_no_netns()
    if why: pytest.skip(why)
    sfx = uuid.uuid4().hex[:8]                               # unique names: parallel runs do not collide
    subnet = f"10.{random.randint(100, 250)}.{random.randint(0, 255)}"  # private; each pair lives in its own namespaces anyway
    nodes = [(f"asrnb{sfx}{i}", f"va{sfx}{i}", f"{subnet}.{i + 1}") for i in (0, 1)]
    try:
        for ns, _, _ in nodes: _ip("netns", "add", ns)
        _ip("link", "add", nodes[0][1], "type", "veth", "peer", "name", nodes[1][1])
        for ns, dev, addr in nodes:
            _ip("link", "set", dev, "netns", ns)
            _ip("-n", ns, "addr", "add", f"{addr}/24", "dev", dev)
            _ip("-n", ns, "link", "set", dev, "up"); _ip("-n", ns, "link", "set", "lo", "up")
        yield nodes
    finally:
        for ns, dev, _ in nodes:
            _ip("netns", "del", ns, check=False)               # takes its end of the veth pair with it
            _ip("link", "del", dev, check=False)               # an end that never moved into its namespace

@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from asr_nb.data import synth_corpus
    return synth_corpus(tmp_path_factory.mktemp("corpus"), n_train=16, n_dev=4, n_test=4, seed=0)

def _env(**kw):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1", **kw)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env

def _train_args(corpus, exp):
    return [str(TRAIN), "--train", str(corpus["train"]), "--valid", str(corpus["dev"]), "--exp", str(exp), *TINY]

def node_command(ns: str, node_rank: int, master_addr: str, port: int, train_args: list[str]) -> list[str]:
    "The command node `node_rank` runs (shown in nbs/10_train.ipynb): torchrun inside its namespace."
    return ["ip", "netns", "exec", ns, str(TORCHRUN), "--nnodes", "2", "--nproc_per_node", "1", "--node_rank", str(node_rank),
            "--master_addr", master_addr, "--master_port", str(port), *train_args]

def _weights(exp) -> dict:
    return load_checkpoint(latest_checkpoint(exp))["model"]

def test_two_nodes_equal_one_node(two_nodes, corpus, tmp_path):
    # one node, two processes: the reference
    with socket.socket() as s: s.bind(("127.0.0.1", 0)); port = s.getsockname()[1]
    ref = subprocess.run([str(TORCHRUN), "--nproc_per_node", "2", "--master_addr", "127.0.0.1", "--master_port", str(port),
                          *_train_args(corpus, tmp_path/"one_node")], env=_env(), capture_output=True, text=True, timeout=300)
    assert ref.returncode == 0, ref.stdout[-2000:] + ref.stderr[-3000:]
    # two nodes, one process each; gloo talks over the veth (GLOO_SOCKET_IFNAME), the store is on node 0's address
    master = two_nodes[0][2]
    procs = [subprocess.Popen(node_command(ns, i, master, 29500, _train_args(corpus, tmp_path/"two_nodes")),
                              env=_env(GLOO_SOCKET_IFNAME=dev), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i, (ns, dev, _) in enumerate(two_nodes)]
    try: outs = [p.communicate(timeout=300)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None: p.kill(); p.wait()
    assert [p.returncode for p in procs] == [0, 0], "\n----\n".join(o[-3000:] for o in outs)
    log = (tmp_path/"two_nodes"/"train.log").read_text()
    assert "2 rank(s)" in log and "finished: step 3" in log
    st = load_checkpoint(latest_checkpoint(tmp_path/"two_nodes"))
    assert st["world_size"] == 2 and st["step"] == 3
    a, b = _weights(tmp_path/"one_node"), _weights(tmp_path/"two_nodes")
    assert a.keys() == b.keys()
    for k in a: assert torch.equal(a[k], b[k]), k           # exact: see the module docstring
    la = [r["loss"] for r in read_train_log(tmp_path/"one_node")["train"]]
    assert la == [r["loss"] for r in read_train_log(tmp_path/"two_nodes")["train"]] and len(la) == 3
