"""bench/bench_gpu.py on CPU (--tiny): the JSON it writes, and its FLOP counting checked against a hand count.
Never needs a GPU; the CUDA-only parts (batch search, MFU against a card's peak) are checked through their inputs."""
import importlib.util, json
from pathlib import Path
import pytest, torch

ROOT = Path(__file__).resolve().parents[1]

def _load():
    spec = importlib.util.spec_from_file_location("bench_gpu", ROOT / "bench" / "bench_gpu.py")
    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
    return m

bg = _load()

def test_linear_flops_forward_backward():
    "One Linear, forward + backward with input gradients: 3 matmuls of 2*B*in*out FLOPs each."
    B, i, o = 8, 16, 24
    lin, x = torch.nn.Linear(i, o), torch.randn(B, i, requires_grad=True)
    assert bg.count_flops(lambda: lin(x).sum().backward()) == 2 * B * i * o * 3
    assert bg.count_flops(lambda: lin(x)) == 2 * B * i * o  # forward alone

def test_peak_table():
    assert bg.peak_flops(torch.device("cpu"))[0] is None
    assert bg.PEAK_FLOPS["H200"] == bg.PEAK_FLOPS["H100"] == 989e12

def test_tiny_cpu_run(tmp_path):
    out = tmp_path / "gpu.json"
    res = bg.main(["--device", "cpu", "--tiny", "--dtype", "fp32", "--steps", "1", "--train-steps", "2", "--pool", "2",
                   "--out", str(out)])
    d = json.loads(out.read_text())
    assert d == json.loads(json.dumps(res))
    assert d["batch"] == 4 and d["compile"] is False and d["peak_flops"] is None
    assert d["params"]["total"] < 200_000  # the tiny overrides took effect
    assert d["flops_per_step"] > 0
    assert d["step"]["flops_per_s"] * d["step"]["median_s"] == pytest.approx(d["flops_per_step"], rel=1e-9)
    for k in ("step", "train"):
        assert d[k]["frames_per_s"] > 0 and d[k]["peak_mem_bytes"] > 0 and d[k]["mfu"] is None
    assert d["train"]["steps"] == 2 and d["train"]["loss_first_pass"] > 0
    assert [r["phase"] for r in d["rows"]] == ["step", "train"]

def test_batch_search_needs_cuda_on_cpu():
    with pytest.raises(SystemExit, match="needs CUDA"):
        bg.main(["--device", "cpu", "--steps", "1", "--out", "/dev/null"])

def test_mfu_is_counted_flops_over_time_over_peak():
    "time_step's MFU and frames/s from its own measured time: a fake 1 TFLOP/s card, a 2-layer model."
    class M(torch.nn.Module):
        def __init__(self): super().__init__(); self.lin = torch.nn.Linear(80, 4)
        def forward(self, b): return {"loss": self.lin(b.feats).pow(2).mean()}
    m = M()
    b = bg.make_batch(2, 10, 3, 10, torch.device("cpu"), min_frac=0.5)
    assert int(b.feat_lens.max()) == 10 and int(b.feat_lens.min()) >= 5
    assert (b.tokens[b.token_lens.argmin(), int(b.token_lens.min()):] == -1).all()  # padded with IGNORE_ID
    r = bg.time_step(m, m, b, torch.device("cpu"), None, 3, flops=1e9, peak=1e12)
    assert r["mfu"] == pytest.approx(1e9 / r["median_s"] / 1e12)
    assert r["frames_per_s"] == pytest.approx(int(b.feat_lens.sum()) / r["median_s"])

@pytest.mark.parametrize("limit,want", [(100, 96), (70, 64), (16, 16), (5000, 4096)])
def test_batch_search_doubles_then_backs_off(monkeypatch, limit, want):
    "A card that fits batches up to `limit`: doubling from 16, then one 1.5x step between the last fit and the failure."
    tried = []
    def fake_fits(make_model, device, dtype, B, T, L, V, log):
        tried.append(B); return B <= limit
    monkeypatch.setattr(bg, "_fits", fake_fits)
    best, _ = bg.find_batch(None, None, None, 100, 5, 10, start=16, cap=4096)
    assert best == want and all(b <= 4096 for b in tried)

def test_batch_search_nothing_fits(monkeypatch):
    monkeypatch.setattr(bg, "_fits", lambda *a: False)
    with pytest.raises(RuntimeError, match="does not fit"): bg.find_batch(None, None, None, 100, 5, 10)
