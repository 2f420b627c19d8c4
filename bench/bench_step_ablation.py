"""What each fast path of the training step brings (#15 part 4): the ESPnet2-size Conformer (conf/espnet_4p6m.yaml),
32 x 200 frames, forward + backward + Adam, fp32 on CPU, one variant after another in rounds (A/B alternation, so
a change of the machine's load hits every variant alike).

Variants (cumulative unless named otherwise):
  plain       the reference paths (`set_impl(model, "plain")`: masked softmax, NCHW subsampling, F.dropout)
  fast_old    the fast paths as they were before this change (SDPA, zero-copy rel-shift, channels-last subsampling,
              16-bit dropout masks), with oneDNN's weight gradient for the subsampling's second convolution
  fast        + `_ConvCL`: that weight gradient as k*k GEMMs over strided views (the shipped default)
  compiled    + `train.compile: true`: `torch.compile` (inductor, C++ backend) of each encoder and decoder layer

    python bench/bench_step_ablation.py --threads 1 --rounds 3   # -> bench/results/step_ablation.json

`cpu_s` is the main thread's CPU time per step (with --threads 1 the least noisy number on a shared machine);
`wall_s` the wall time. Medians over rounds x steps. The compile time of the first step is reported separately.
"""
from __future__ import annotations
import argparse, json, os, statistics, sys, time
from pathlib import Path
import torch
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_model import make_batch, tune_glibc_malloc
import asr_nb.conformer as C
from asr_nb.core import load_config
from asr_nb.model import ASRModel, count_parameters

ROOT = Path(__file__).resolve().parents[1]
VARIANTS = ("plain", "fast_old", "fast", "compiled")

def build(variant: str, cfg, state, vocab: int):
    torch.manual_seed(0)
    cmvn = (torch.full((80,), 10.0), torch.full((80,), 1 / 3))
    model = ASRModel(cfg.model, vocab, cfg.specaug, cmvn)
    model.load_state_dict(state)
    C.set_impl(model, "plain" if variant == "plain" else "sdpa")
    if variant == "compiled":
        from asr_nb.train import compile_layers
        compile_layers(model)
    return model.train()

def steps(model, opt, batch, n: int, wgrad_fast: bool) -> tuple[list[float], list[float]]:
    saved = C._ConvCL.apply
    if not wgrad_fast: C._ConvCL.apply = lambda x, w, b, s: torch.nn.functional.conv2d(x, w, b, s)  # bench only: oneDNN's path
    wall, cpu = [], []
    try:
        for _ in range(n):
            t0, c0 = time.perf_counter(), time.thread_time()
            out = model(batch); opt.zero_grad(set_to_none=True); out["loss"].backward(); opt.step()
            wall.append(time.perf_counter() - t0); cpu.append(time.thread_time() - c0)
    finally: C._ConvCL.apply = saved
    return wall, cpu

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "conf" / "espnet_4p6m.yaml"))
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "step_ablation.json"))
    a = ap.parse_args(argv)
    tune_glibc_malloc(); torch.set_num_threads(a.threads)
    cfg, vocab = load_config(a.config), 300
    torch.manual_seed(0)
    ref = ASRModel(cfg.model, vocab, cfg.specaug, (torch.full((80,), 10.0), torch.full((80,), 1 / 3)))
    state = {k: v.clone() for k, v in ref.state_dict().items()}
    batch = make_batch(a.batch, a.frames, 20, vocab, torch.device("cpu"))
    names = a.variants.split(",")
    runs, first = {}, {}
    for v in names:
        m = build(v, cfg, state, vocab)
        opt = torch.optim.Adam(m.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-9, fused=True)
        t0 = time.perf_counter(); steps(m, opt, batch, 1, v != "fast_old"); first[v] = time.perf_counter() - t0
        runs[v] = (m, opt, [], [])
        print(f"{v}: first step {first[v]:.1f} s", flush=True)
    loads = []
    for r in range(a.rounds):
        loads.append(os.getloadavg()[0])
        for v in (names if r % 2 == 0 else names[::-1]):
            m, opt, w, c = runs[v]
            ww, cc = steps(m, opt, batch, a.steps, v != "fast_old"); w += ww; c += cc
        print(f"round {r + 1}: load {loads[-1]:.1f} " + " ".join(f"{v} {statistics.median(runs[v][3]):.3f}" for v in names), flush=True)
    frames = a.batch * a.frames
    base = statistics.median(runs[names[0]][3])
    rows = [dict(variant=v, cpu_s=round(statistics.median(runs[v][3]), 3), wall_s=round(statistics.median(runs[v][2]), 3),
                 frames_per_cpu_s=round(frames / statistics.median(runs[v][3])),
                 speedup_cpu_vs_first=round(base / statistics.median(runs[v][3]), 2), first_step_s=round(first[v], 1))
            for v in names]
    res = dict(title=f"Training-step ablation, {a.config and os.path.relpath(a.config, ROOT)}, {a.batch} x {a.frames} frames, "
                     f"fp32, {a.threads} thread(s), forward + backward + Adam",
               command=f"python bench/bench_step_ablation.py --threads {a.threads} --rounds {a.rounds} --steps {a.steps}",
               params=count_parameters(ref)["total"], torch=torch.__version__, rows=rows,
               load_1m=f"{min(loads):.1f}-{max(loads):.1f}", date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               notes=__doc__.split("\n\n")[1])
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1) + "\n")
    for r in rows: print(r)
    return res

if __name__ == "__main__":
    main()
