"""Training-step benchmark of the asr_nb training loop (`asr_nb.train.train_step`) on the CPU.

One step = `train_step`: forward (CMVN, SpecAugment, encoder, CTC + attention loss) under the device shim's
autocast, backward, gradient unscale + clip at 5, the non-finite check and Adam, on a batch of 32 utterances x 200
frames x 80 fbank with 20-token transcripts (300-unit vocabulary). Reports the median seconds per step after warm-up
and input frames per second for conf/tiny.yaml and conf/espnet_4p6m.yaml, in fp32 and bf16 autocast; then DDP
scaling on the CPU: one process with T threads against two gloo processes under torchrun with T threads each,
every rank on its own batch (weak scaling; efficiency = frames/s of 2 ranks / (2 x frames/s of 1)).

    .venv/bin/python bench/bench_train.py                 # -> bench/results/train.json and a table
    .venv/bin/python bench/bench_train.py --steps 3 --configs tiny
"""
from __future__ import annotations
import argparse, json, os, platform, socket, statistics, subprocess, sys, time
from pathlib import Path
import torch

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = {"tiny": ROOT/"conf"/"tiny.yaml", "espnet_4p6m": ROOT/"conf"/"espnet_4p6m.yaml"}
# used when conf/tiny.yaml is missing (the recipe owns that file)
TINY_FALLBACK = ["model.encoder.d_model=144", "model.encoder.attention_heads=4", "model.encoder.linear_units=576", "model.encoder.num_blocks=4",
                 "model.decoder.num_blocks=2", "model.decoder.linear_units=576", "optim.scheduler=warmup_decay"]

def load_cfg(name: str):
    from asr_nb.core import load_config
    p = CONFIGS[name]
    return load_config(p) if p.exists() else load_config(None, TINY_FALLBACK)

def make_batch(B: int, T: int, L: int, V: int, seed: int = 0):
    from asr_nb.core import Batch
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(B, T, 80, generator=g) * 3 + 10  # (B, T, 80) raw-fbank-like scale
    toks = torch.randint(1, V - 1, (B, L), generator=g)   # (B, L)
    return Batch(feats, torch.full((B,), T), toks, torch.full((B,), L), [str(i) for i in range(B)])

def time_train_steps(name: str, amp: str, a, ddp: bool = False) -> dict:
    "Median seconds per `train_step` (and the model size) for config `name` and amp 'fp32' | 'bf16'."
    from asr_nb import device as D
    from asr_nb.model import ASRModel
    from asr_nb.train import LRSchedule, build_optimizer, train_step
    cfg, dev = load_cfg(name), torch.device("cpu")
    torch.manual_seed(0)
    model = ASRModel(cfg.model, a.vocab, cfg.specaug, (torch.full((80,), 10.0), torch.full((80,), 1 / 3)))
    n_params = sum(p.numel() for p in model.parameters())
    if ddp: model = torch.nn.parallel.DistributedDataParallel(model)
    dtype = {"fp32": None, "bf16": torch.bfloat16}[amp]
    opt = build_optimizer(model, cfg.optim); sched = LRSchedule(opt, cfg.optim, cfg.model.encoder.d_model)
    scaler = D.make_grad_scaler(dev, dtype)
    batch = make_batch(a.batch, a.frames, a.tokens, a.vocab, seed=D.rank())
    times, skipped = [], 0
    for i in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        r = train_step(model, [batch], opt, scaler, dev, dtype, cfg.train.grad_clip); sched.step()
        if i >= a.warmup: times.append(time.perf_counter() - t0); skipped += r["skipped"]
    s = statistics.median(times)
    return dict(config=name, amp=amp, params_m=round(n_params / 1e6, 2), s_per_step=round(s, 4),
                frames_per_s=round(a.batch * a.frames / s), skipped=skipped)

def ddp_worker(a):
    "Runs under torchrun: every rank times its own batch; rank 0 writes the result."
    import torch.distributed as dist
    from asr_nb import device as D
    torch.set_num_threads(a.threads)
    D.init_distributed(torch.device("cpu"))
    r = time_train_steps(a.ddp_config, "fp32", a, ddp=True)
    t = torch.tensor([r["s_per_step"]]); dist.all_reduce(t, op=dist.ReduceOp.MAX)  # the slowest rank sets the pace
    if D.is_main():
        s = float(t)
        Path(a.ddp_out).write_text(json.dumps(dict(r, s_per_step=round(s, 4),
                                   frames_per_s=round(D.world_size() * a.batch * a.frames / s))))
    dist.barrier()  # nobody leaves the group while another rank still talks to it
    D.cleanup_distributed()

def _free_port() -> int:
    with socket.socket() as s: s.bind(("127.0.0.1", 0)); return s.getsockname()[1]

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--configs", default="tiny,espnet_4p6m")
    ap.add_argument("--amps", default="fp32,bf16")
    ap.add_argument("--vocab", type=int, default=300)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--tokens", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="torch threads per process")
    ap.add_argument("--ddp-config", default="tiny", help="config of the DDP scaling rows ('' = skip them)")
    ap.add_argument("--ddp-out", default="", help=argparse.SUPPRESS)   # set for the torchrun workers
    ap.add_argument("--out", default=str(ROOT/"bench"/"results"/"train.json"))
    a = ap.parse_args(argv)
    if a.ddp_out: return ddp_worker(a)
    torch.set_num_threads(a.threads)
    rows = []
    for name in a.configs.split(","):
        for amp in a.amps.split(","):
            r = time_train_steps(name, amp, a); rows.append(dict(r, processes=1, threads=a.threads))
            print(rows[-1], flush=True)
    if a.ddp_config:
        one = next((r for r in rows if r["config"] == a.ddp_config and r["amp"] == "fp32"), None)
        if one is None:
            one = dict(time_train_steps(a.ddp_config, "fp32", a), processes=1, threads=a.threads); rows.append(one)
        tmp = Path(a.out).with_suffix(".ddp.tmp.json")
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
               "--master_port", str(_free_port()), __file__, "--ddp-out", str(tmp), "--ddp-config", a.ddp_config,
               *[f"--{k}={getattr(a, k)}" for k in ("vocab", "batch", "frames", "tokens", "warmup", "steps", "threads")]]
        env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
        subprocess.run(cmd, check=True, env=env, cwd=ROOT)
        two = json.loads(tmp.read_text()); tmp.unlink()
        two.update(processes=2, threads=a.threads,
                   ddp_efficiency=round(two["frames_per_s"] / (2 * one["frames_per_s"]), 3))
        rows.append(two); print(rows[-1], flush=True)
    res = dict(title="Training step (asr_nb.train.train_step), CPU",
               command="python bench/bench_train.py " + " ".join(argv if argv is not None else sys.argv[1:]),
               rows=rows, batch=a.batch, frames=a.frames, tokens=a.tokens, vocab=a.vocab, warmup=a.warmup,
               steps=a.steps, torch=torch.__version__, machine=platform.processor() or platform.machine(),
               cpus=os.cpu_count(), date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               notes=["one step: forward + backward + unscale/clip/non-finite check + Adam on 32 x 200 frames",
                      "frames_per_s counts input (10 ms) frames of all ranks; DDP rows are weak scaling "
                      "(each rank its own batch), paced by the slowest rank; efficiency 1.0 = perfect",
                      "timings on a shared machine are rough"])
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1))
    cols = ["config", "amp", "processes", "threads", "params_m", "s_per_step", "frames_per_s", "ddp_efficiency"]
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in rows: print("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |")
    print(f"wrote {a.out}")

if __name__ == "__main__":
    main()
