"""GPU throughput and model FLOPs utilisation (MFU) of a training step and a short training run.

For conf/aishell_conformer.yaml's model (46 M parameters with 4233 units: 12-block Conformer, 6-block decoder, CTC) on one card:
bf16 autocast, `torch.compile` (eager when it fails, with the reason in the JSON), fused Adam, and the largest batch
that fits (doubling from 16 until the card runs out of memory, keeping the last that fitted). Two measurements:

- `step`: forward + backward + Adam on one fixed batch of `--frames` frames, median of `--steps` steps;
- `train`: `--train-steps` steps of a real training loop (Noam schedule, gradient clipping) over a pool of batches
  with four utterance-length buckets, on synthetic fbank-like features with random transcripts (no corpus needed
  on the card; the loss must fall as the pool is memorised, a sanity check of the loop).

FLOPs per step are counted once per shape with `torch.utils.flop_counter.FlopCounterMode` (matmuls, convolutions,
attention; forward and backward); MFU = counted FLOPs / step time / the card's dense bf16 peak (`PEAK_FLOPS`).
Peak memory is `torch.cuda.max_memory_allocated` (on CPU, the process's peak RSS).

    bash bench/gpu.sh                                   # on a lent H100/H200 -> bench/results/gpu.json
    python bench/bench_gpu.py --device cpu --tiny --out /tmp/gpu.json   # seconds-long smoke test (tests use it)
"""
from __future__ import annotations
import argparse, json, math, os, platform, resource, statistics, sys, time
from pathlib import Path
import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
# dense (no sparsity) bf16 tensor-core peak, FLOP/s, by a substring of torch.cuda.get_device_name; V100 has no
# bf16, its fp16 peak is listed
PEAK_FLOPS = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "V100": 125e12}
TINY = ["model.encoder.d_model=32", "model.encoder.linear_units=64", "model.encoder.num_blocks=2",
        "model.encoder.attention_heads=2", "model.decoder.num_blocks=1", "model.decoder.linear_units=64"]

def peak_flops(device: torch.device) -> tuple[float | None, str]:
    "The card's dense bf16 peak FLOP/s and its name; (None, name) for a card or CPU not in PEAK_FLOPS."
    if device.type != "cuda": return None, platform.processor() or platform.machine()
    name = torch.cuda.get_device_name(device)
    return next((v for k, v in PEAK_FLOPS.items() if k in name.upper()), None), name

def count_flops(fn, device_type: str = "cpu", dtype=None) -> int:
    """FLOPs that `fn()` performs (forward and, if it calls backward, backward), counted by FlopCounterMode; under
    autocast to `dtype` when given (the count is the same, the memory is that of the timed step)."""
    with FlopCounterMode(display=False) as fc, torch.autocast(device_type, dtype=dtype, enabled=dtype is not None): fn()
    return int(fc.get_total_flops())

def make_batch(B: int, T: int, L: int, V: int, device, seed: int = 0, min_frac: float = 1.0):
    "A random padded Batch: lengths uniform in [min_frac*T, T] frames, L tokens each (fewer for short ones)."
    from asr_nb.core import Batch, IGNORE_ID
    g = torch.Generator().manual_seed(seed)
    flens = torch.randint(int(T * min_frac), T + 1, (B,), generator=g); flens[0] = T
    feats = torch.randn(B, T, 80, generator=g) * 3 + 10
    feats *= (torch.arange(T)[None, :] < flens[:, None]).unsqueeze(-1)
    tlens = torch.clamp(flens * L // T, min=1)
    toks = torch.randint(1, V - 1, (B, L), generator=g)
    toks[torch.arange(L)[None, :] >= tlens[:, None]] = IGNORE_ID
    return Batch(feats.to(device), flens.to(device), toks.to(device), tlens.to(device), [str(i) for i in range(B)])

def sync(device):
    if device.type == "cuda": torch.cuda.synchronize(device)

class Trainer:
    "One optimiser step: bf16 autocast forward, backward, gradient clipping, fused Adam, Noam learning rate."
    def __init__(self, model, fwd, device, dtype, lr_peak=1e-3, warmup=25000):
        self.model, self.fwd, self.device, self.dtype = model, fwd, device, dtype
        self.opt = torch.optim.Adam(model.parameters(), lr=lr_peak, betas=(0.9, 0.98), eps=1e-9, fused=True)
        self.sched = torch.optim.lr_scheduler.LambdaLR(
            self.opt, lambda s: min((s + 1) / warmup, math.sqrt(warmup / (s + 1))))
    def step(self, batch) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=self.dtype, enabled=self.dtype is not None):
            loss = self.fwd(batch)["loss"]
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), 5.0)
        self.opt.step(); self.sched.step()
        return loss.detach()

def _is_oom(e: Exception) -> bool:
    return isinstance(e, torch.cuda.OutOfMemoryError) or (isinstance(e, RuntimeError) and "out of memory" in str(e).lower())

def _fits(make_model, device, dtype, B, T, L, V, log) -> bool:
    "One eager training step at batch B; False (memory released) when the card runs out of memory."
    model = tr = batch = None
    try:
        model = make_model(); tr = Trainer(model, model, device, dtype)
        batch = make_batch(B, T, L, V, device); tr.step(batch); sync(device)
        log.append(dict(batch=B, fits=True, peak_bytes=torch.cuda.max_memory_allocated(device)))
        return True
    except Exception as e:
        if not _is_oom(e): raise
        log.append(dict(batch=B, fits=False))
        return False
    finally:
        del model, tr, batch
        torch.cuda.empty_cache(); torch.cuda.reset_peak_memory_stats(device)

def find_batch(make_model, device, dtype, T, L, V, start=16, cap=4096) -> tuple[int, list]:
    """Largest batch whose eager step fits on the card: doubling from `start` (at most `cap`) until one does not fit,
    then one step back up between the last fit and the failure (1.5x); the trial log too."""
    best, log, B = 0, [], start
    while B <= cap and _fits(make_model, device, dtype, B, T, L, V, log): best, B = B, B * 2
    if not best: raise RuntimeError(f"bench_gpu: even batch {start} x {T} frames does not fit on the card")
    if B <= cap and _fits(make_model, device, dtype, best * 3 // 2, T, L, V, log): best = best * 3 // 2
    return best, log

def peak_memory(device) -> int:
    "Peak bytes: torch's allocated peak on CUDA, the process's peak RSS (ru_maxrss) on CPU."
    if device.type == "cuda": return int(torch.cuda.max_memory_allocated(device))
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "conf" / "aishell_conformer.yaml"))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--tiny", action="store_true", help="a 2-block d 32 model, batch 4 x 64 frames: CPU smoke test")
    ap.add_argument("--vocab", type=int, default=4233, help="AISHELL-1's character units")
    ap.add_argument("--frames", type=int, default=600, help="longest utterance, 10 ms frames (AISHELL-1: mean ~450)")
    ap.add_argument("--tokens", type=int, default=20)
    ap.add_argument("--batch", type=int, default=0, help="0 = largest that fits (doubling until out of memory)")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--train-steps", type=int, default=300)
    ap.add_argument("--pool", type=int, default=8, help="distinct batches the short training cycles through")
    ap.add_argument("--dtype", default="bf16", choices=["bf16", "fp16", "fp32"])
    ap.add_argument("--compile", default="auto", choices=["auto", "on", "off"], help="auto: on for CUDA, off on CPU")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "gpu.json"))
    a = ap.parse_args(argv)
    from asr_nb.core import load_config
    from asr_nb.model import build_model, count_parameters
    if a.tiny: a.vocab, a.frames, a.tokens, a.batch = 50, 64, 8, a.batch or 4
    device, dtype = torch.device(a.device), {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[a.dtype]
    cfg = load_config(a.config, TINY if a.tiny else None)
    cmvn = (torch.full((80,), 10.0), torch.full((80,), 1 / 3))
    make_model = lambda: build_model(cfg, a.vocab, cmvn).to(device)
    res = dict(title=f"GPU training throughput and MFU, {Path(a.config).name}" + (" (tiny smoke test)" if a.tiny else ""),
               command="bash bench/gpu.sh", config=os.path.relpath(a.config, ROOT), tiny=a.tiny, device=str(device),
               dtype=a.dtype, vocab=a.vocab, frames=a.frames, tokens=a.tokens, torch=torch.__version__,
               date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), loadavg_1m=os.getloadavg()[0])
    res["peak_flops"], res["card"] = peak_flops(device)
    if not a.batch:
        if device.type != "cuda": raise SystemExit("bench_gpu: --batch 0 (search) needs CUDA; give --batch N on CPU")
        a.batch, res["batch_search"] = find_batch(make_model, device, dtype, a.frames, a.tokens, a.vocab)
    res["batch"] = a.batch
    torch.manual_seed(0)
    model = make_model()
    res["params"] = count_parameters(model)
    batch = make_batch(a.batch, a.frames, a.tokens, a.vocab, device)
    # FLOPs of one eager forward + backward (compile runs the same math); counted before compiling
    res["flops_per_step"] = count_flops(lambda: model(batch)["loss"].backward(), device.type, dtype)
    model.zero_grad(set_to_none=True)
    use_compile = a.compile == "on" or (a.compile == "auto" and device.type == "cuda")
    fwd, res["compile"] = model, False
    if use_compile:
        try:
            fwd = torch.compile(model); Trainer(model, fwd, device, dtype, warmup=10**9).step(batch); sync(device)
            res["compile"] = True
        except Exception as e:  # a compiler failure must not lose the measurement: eager, with the reason
            fwd, res["compile_error"] = model, f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
            print(f"bench_gpu: torch.compile failed, timing eager: {res['compile_error']}", file=sys.stderr)
    else: res["compile_note"] = "off" if a.compile == "off" else "off by default on CPU (--compile on forces it)"
    res["step"] = time_step(model, fwd, batch, device, dtype, a.steps, res["flops_per_step"], res["peak_flops"])
    try: res["train"] = short_training(model, fwd, device, dtype, a, res["peak_flops"])
    except Exception as e:  # a recompilation for the other lengths failed: the training eager, with the reason
        if fwd is model or _is_oom(e): raise
        res["train_compile_error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300] if str(e) else ''}"
        print(f"bench_gpu: compiled training failed, eager: {res['train_compile_error']}", file=sys.stderr)
        res["train"] = short_training(model, model, device, dtype, a, res["peak_flops"])
    res["rows"] = [dict(phase=k, batch=a.batch, frames_per_s=round(res[k]["frames_per_s"]),
                        mfu=None if res[k]["mfu"] is None else round(res[k]["mfu"], 3),
                        peak_mem_gib=round(res[k]["peak_mem_bytes"] / 2**30, 2)) for k in ("step", "train")]
    res["mfu_target"] = 0.35
    res["notes"] = ("MFU counts FLOPs with torch.utils.flop_counter (matmul, convolution, attention; forward + backward) "
                    "against the card's dense bf16 peak; element-wise work and the optimiser are not counted. "
                    "`train` uses synthetic features with four length buckets, so its frames are real (unpadded) frames.")
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res["rows"]), f"-> {a.out}")
    return res

def time_step(model, fwd, batch, device, dtype, steps, flops, peak) -> dict:
    "Median step time on one fixed batch, frames/s (padded = real here), MFU and peak memory."
    tr = Trainer(model, fwd, device, dtype, warmup=10**9)
    for _ in range(2): tr.step(batch)
    sync(device)
    if device.type == "cuda": torch.cuda.reset_peak_memory_stats(device)
    times = []
    for _ in range(steps):
        sync(device); t0 = time.perf_counter(); tr.step(batch); sync(device); times.append(time.perf_counter() - t0)
    med = statistics.median(times)
    return dict(steps=steps, median_s=med, min_s=min(times), frames_per_s=int(batch.feat_lens.sum()) / med,
                flops_per_s=flops / med, mfu=flops / med / peak if peak else None, peak_mem_bytes=peak_memory(device))

def short_training(model, fwd, device, dtype, a, peak) -> dict:
    "`a.train_steps` training steps over `a.pool` batches in 4 length buckets; loss at the start and end, FLOPs counted per bucket."
    buckets = [max(16, a.frames * k // 4) for k in (1, 2, 3, 4)]
    pool = [make_batch(a.batch, buckets[i % 4], max(1, a.tokens * (i % 4 + 1) // 4), a.vocab, device, seed=100 + i,
                       min_frac=0.8) for i in range(a.pool)]
    flops = []
    for b in pool:
        flops.append(count_flops(lambda: model(b)["loss"].backward(), device.type, dtype)); model.zero_grad(set_to_none=True)
    tr = Trainer(model, fwd, device, dtype, lr_peak=1e-3, warmup=max(1, a.train_steps // 4))
    for b in pool[:4]: tr.step(b)  # one shape per bucket: compiles outside the timed loop
    sync(device)
    if device.type == "cuda": torch.cuda.reset_peak_memory_stats(device)
    losses, frames, fl = [], 0, 0
    t0 = time.perf_counter()
    for s in range(a.train_steps):
        i = s % len(pool)
        losses.append(tr.step(pool[i])); frames += int(pool[i].feat_lens.sum()); fl += flops[i]
    sync(device)
    wall = time.perf_counter() - t0
    losses, n = [float(x) for x in losses], min(len(pool), len(losses))
    # the same batches at the start and at the end: the mean loss of the first and of the last pass over the pool
    return dict(steps=a.train_steps, wall_s=wall, frames_per_s=frames / wall, flops_per_s=fl / wall,
                mfu=fl / wall / peak if peak else None, loss_first_pass=statistics.mean(losses[:n]),
                loss_last_pass=statistics.mean(losses[-n:]),
                peak_mem_bytes=peak_memory(device), data=f"synthetic fbank-like features, random transcripts, {len(pool)} batches")

if __name__ == "__main__":
    main()
