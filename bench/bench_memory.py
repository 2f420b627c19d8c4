"""Peak memory of one training step and of decoding, per config.

Each case (config x phase) runs in a fresh Python process, so its peak resident set size (`ru_maxrss`, which only
grows) belongs to that case alone. A case reports the peak RSS before the phase (torch imported, model built, batch
made) and at its end; the difference is what the phase itself added. On CUDA, `torch.cuda.max_memory_allocated`
is reported too (on CPU torch keeps no such count, so it is null).

Phases: `train` = forward + backward + Adam step on `--batch` utterances of `--frames` model-input frames with
`--tokens`-token transcripts; `greedy` and `joint` = `decode.decode_batch` with `ctc_greedy` (Paraformer: its
one-pass search) and `joint` (the config's beam and CTC weight) on `--decode-batch` utterances. Models are
untrained (random weights, seed 0): the joint search's length is capped by `decode.maxlenratio=0.2` so an untrained
decoder that never emits <eos> stops at the same length for every config. One thread per case.

    python bench/bench_memory.py                       # all configs -> bench/results/memory.json
    python bench/bench_memory.py --case conf/tiny.yaml train   # one case, JSON on stdout (what the parent runs)
"""
from __future__ import annotations
import argparse, json, os, resource, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# vocabulary of each config's recipe: tiny corpus characters, BPE 300, AISHELL-1 characters
CONFIGS = {"conf/tiny.yaml": 60, "conf/espnet_4p6m.yaml": 300, "conf/paraformer_tiny.yaml": 60,
           "conf/deepspeech2_tiny.yaml": 60, "conf/aishell_conformer.yaml": 4233}
PHASES = ("train", "greedy", "joint")

def maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

def run_case(config: str, phase: str, batch: int, frames: int, tokens: int, decode_batch: int, device: str) -> dict:
    "One case in this process: build the model of `config`, run `phase` once, return the memory figures."
    import torch
    torch.set_num_threads(1)
    from asr_nb.core import Batch, load_config
    from asr_nb.decode import decode_batch as run_decode, methods_for
    from asr_nb.model import build_model, count_parameters, frontend_dim
    dev = torch.device(device)
    cfg = load_config(ROOT / config, ["decode.maxlenratio=0.2"])
    V = CONFIGS.get(config, 100)
    torch.manual_seed(0)
    model = build_model(cfg, V).to(dev)
    D, B = frontend_dim(cfg), batch if phase == "train" else decode_batch
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(B, frames, D, generator=g).to(dev)
    lens = torch.full((B,), frames, device=dev)
    res = dict(config=config, phase=phase, vocab=V, params=count_parameters(model)["total"], input_dim=D,
               batch=B, frames=frames, rss_before_mib=maxrss_mib())
    if dev.type == "cuda": torch.cuda.reset_peak_memory_stats(dev)
    t0 = time.perf_counter()
    if phase == "train":
        toks = torch.randint(1, V - 1, (B, tokens), generator=g).to(dev)
        model.train()
        opt = torch.optim.Adam(model.parameters(), lr=1e-4, fused=True)
        out = model(Batch(feats, lens, toks, torch.full((B,), tokens, device=dev), [str(i) for i in range(B)]))
        out["loss"].backward(); opt.step()
    else:
        have = methods_for(model.capabilities)
        method = ("paraformer" if "paraformer" in have else "ctc_greedy") if phase == "greedy" else "joint"
        if method not in have: return dict(res, method=method, skipped=f"needs {sorted(set(['ctc', 'decoder']) - set(model.capabilities))}")
        model.eval()
        cfg.decode.method = method
        run_decode(model, feats, lens, cfg.decode)
        res["method"] = method
    res.update(seconds=time.perf_counter() - t0, peak_rss_mib=maxrss_mib())
    res["phase_added_mib"] = res["peak_rss_mib"] - res["rss_before_mib"]
    res["torch_max_allocated_mib"] = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None
    return res

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--case", nargs=2, metavar=("CONFIG", "PHASE"), help="run one case here and print its JSON")
    ap.add_argument("--configs", nargs="*", default=list(CONFIGS))
    ap.add_argument("--phases", nargs="*", default=list(PHASES))
    ap.add_argument("--batch", type=int, default=8, help="training utterances")
    ap.add_argument("--frames", type=int, default=500, help="model-input frames per utterance (5 s of 10 ms fbank)")
    ap.add_argument("--tokens", type=int, default=20)
    ap.add_argument("--decode-batch", type=int, default=4)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "memory.json"))
    a = ap.parse_args(argv)
    if a.case:
        print("MEMORY_JSON " + json.dumps(run_case(*a.case, a.batch, a.frames, a.tokens, a.decode_batch, a.device)))
        return
    cases, la = [], [os.getloadavg()[0]]
    for config in a.configs:
        for phase in a.phases:
            cmd = [sys.executable, __file__, "--case", config, phase, "--batch", str(a.batch), "--frames", str(a.frames),
                   "--tokens", str(a.tokens), "--decode-batch", str(a.decode_batch), "--device", a.device]
            p = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
            line = next((l for l in p.stdout.splitlines() if l.startswith("MEMORY_JSON ")), None)
            r = json.loads(line[12:]) if line else dict(config=config, phase=phase, error=(p.stderr.strip().splitlines() or ["?"])[-1])
            print(json.dumps(r), flush=True)
            cases.append(r)
    la.append(os.getloadavg()[0])
    rows = [dict(config=r["config"], phase=r["phase"], method=r.get("method", ""), params_m=round(r["params"] / 1e6, 2),
                 batch=f"{r['batch']} x {r['frames']}", rss_before_mib=round(r["rss_before_mib"]), peak_rss_mib=round(r["peak_rss_mib"]),
                 phase_added_mib=round(r["phase_added_mib"]), seconds=round(r["seconds"], 2))
            if "peak_rss_mib" in r else dict(config=r["config"], phase=r["phase"], method=r.get("method", ""),
                                             note=r.get("skipped") or r.get("error")) for r in cases]
    res = dict(title="Peak memory of a training step and of decoding, per config",
               command="python bench/bench_memory.py", device=a.device, threads=1,
               train_batch=f"{a.batch} utterances x {a.frames} frames, {a.tokens} tokens",
               decode_batch=f"{a.decode_batch} utterances x {a.frames} frames", loadavg_1m=la,
               date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), rows=rows,
               notes=("peak_rss_mib: the case's process peak RSS (ru_maxrss; includes Python, torch and the model); "
                      "phase_added_mib: what the step or the search added over the peak before it. Random weights; "
                      "the joint search is capped at decode.maxlenratio=0.2. Frames are 10 ms fbank frames; "
                      "greedy is Paraformer's own one-pass search for the paraformer family. One thread per case."))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1) + "\n")
    print(f"-> {a.out}")
    return res

if __name__ == "__main__":
    main()
