"""ESPnet2's Conformer built from one of our configs, timed on the same batch as bench/bench_model.py.

Runs in the peer venv (bench/peer_setup.sh), not in ours: it imports ESPnet2 and, for reading our YAML the same
way the toolkit does, only `asr_nb.core` (numpy, torch and yaml, which the peer venv has) from this checkout.

The model is ESPnet2's `ESPnetASRModel`: `GlobalMVN` (statistics chosen to equal the benchmark's fixed CMVN),
`SpecAug`, `ConformerEncoder`, `TransformerDecoder` and `CTC`, with every hyper-parameter taken from our config
through the one table `KEYMAP` below. One step is forward + backward + Adam (fused, as ours) on the batch
`make_batch` builds: the same seeded generator as ours, so both toolkits see identical tensors.

    PEER=/work/scratch/peer_venv
    $PEER/bin/python bench/peer_espnet.py --steps 5             # one JSON line: parameters and step times
    $PEER/bin/python bench/peer_espnet.py --serve               # long-lived: bench_model.py --peer drives it

`--serve` reads one JSON command per line on stdin ({"steps": N, "warmup": W, "threads": T, "dtype": "fp32"}: W
untimed steps, then N timed ones) and answers
each with one line `PEER_JSON {...}` on stdout (other library output may share stdout; the prefix finds it).
"""
from __future__ import annotations
import argparse, dataclasses, json, os, statistics, sys, tempfile, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# ours (asr_nb.core ModelConfig / SpecAugConfig path) -> ESPnet2 (section, key), with a value converter.
# One row per hyper-parameter; `espnet_conf` applies it and also sets ESPnet2's fixed choices (FIXED).
KEYMAP = [
    ("encoder.d_model", "encoder_conf", "output_size", None),
    ("encoder.attention_heads", "encoder_conf", "attention_heads", None),
    ("encoder.linear_units", "encoder_conf", "linear_units", None),
    ("encoder.num_blocks", "encoder_conf", "num_blocks", None),
    ("encoder.dropout", "encoder_conf", "dropout_rate", None),
    ("encoder.positional_dropout", "encoder_conf", "positional_dropout_rate", None),
    ("encoder.attention_dropout", "encoder_conf", "attention_dropout_rate", None),
    ("encoder.subsampling", "encoder_conf", "input_layer", {4: "conv2d", 6: "conv2d6", 8: "conv2d8"}.__getitem__),
    ("encoder.pos_enc", "encoder_conf", "pos_enc_layer_type", {"rel_pos": "rel_pos", "abs_pos": "abs_pos"}.__getitem__),
    ("encoder.macaron", "encoder_conf", "macaron_style", None),
    ("encoder.cnn_module", "encoder_conf", "use_cnn_module", None),
    ("encoder.cnn_kernel", "encoder_conf", "cnn_module_kernel", None),
    ("encoder.activation", "encoder_conf", "activation_type", None),
    ("decoder.num_blocks", "decoder_conf", "num_blocks", None),
    ("decoder.linear_units", "decoder_conf", "linear_units", None),
    ("decoder.attention_heads", "decoder_conf", "attention_heads", "heads"),  # 0 = the encoder's
    ("decoder.dropout", "decoder_conf", "dropout_rate", None),
    ("decoder.attention_dropout", "decoder_conf", "self_attention_dropout_rate", None),
    ("decoder.attention_dropout", "decoder_conf", "src_attention_dropout_rate", None),
    ("loss.ctc_weight", "model_conf", "ctc_weight", None),
    ("loss.lsm_weight", "model_conf", "lsm_weight", None),
    ("loss.length_normalized_loss", "model_conf", "length_normalized_loss", None),
    ("specaug.time_warp", "specaug_conf", "time_warp_window", None),
    ("specaug.freq_mask_width", "specaug_conf", "freq_mask_width_range", lambda w: [0, w]),
    ("specaug.num_freq_masks", "specaug_conf", "num_freq_mask", None),
    ("specaug.time_mask_ratio", "specaug_conf", "time_mask_width_ratio_range", "time_mask"),  # 0: width range
    ("specaug.num_time_masks", "specaug_conf", "num_time_mask", None),
]
# ESPnet2's names for what our Conformer always does (pre-norm blocks, "latest" relative positions)
FIXED = dict(encoder_conf=dict(normalize_before=True, rel_pos_type="latest", selfattention_layer_type="rel_selfattn",
                               positionwise_layer_type="linear"),
             decoder_conf=dict(input_layer="embed", normalize_before=True),
             specaug_conf=dict(apply_time_warp=True, time_warp_mode="bicubic", apply_freq_mask=True, apply_time_mask=True),
             model_conf=dict(report_cer=False, report_wer=False))

def _get(cfg, path: str):
    for k in path.split("."): cfg = getattr(cfg, k)
    return cfg

def espnet_conf(cfg) -> dict:
    """ESPnet2 `encoder_conf`, `decoder_conf`, `model_conf`, `specaug_conf` dicts for our `ExpConfig` `cfg`.

    Raises ValueError naming the key when our value has no ESPnet2 equivalent (e.g. subsampling 2)."""
    if cfg.model.encoder.kind != "conformer" or cfg.model.family != "ctc_attention":
        raise ValueError(f"peer_espnet: only the ctc_attention Conformer maps to ESPnet2, not {cfg.model.family}/{cfg.model.encoder.kind}")
    out = {k: dict(v) for k, v in FIXED.items()}
    for ours, sect, key, conv in KEYMAP:
        v = _get(cfg.specaug if ours.startswith("specaug.") else cfg.model, ours.split(".", 1)[1] if ours.startswith("specaug.") else ours)
        try:
            if conv == "heads": v = v or cfg.model.encoder.attention_heads
            elif conv == "time_mask":  # a ratio of the utterance when > 0, else our absolute width in frames
                key, v = ("time_mask_width_ratio_range", [0.0, v]) if v > 0 else ("time_mask_width_range", [0, cfg.specaug.time_mask_width])
            elif conv is not None: v = conv(v)
        except KeyError: raise ValueError(f"peer_espnet: {ours}={v!r} has no ESPnet2 equivalent") from None
        out[sect][key] = v
    if not cfg.specaug.enable: out["specaug_conf"] = None
    return out

def make_batch(B: int, T: int, L: int, V: int, seed: int = 0):
    "The benchmark batch, identical to bench_model.make_batch: (feats (B,T,80), lengths (B,), tokens (B,L), lengths)."
    import torch
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(B, T, 80, generator=g) * 3 + 10
    toks = torch.randint(1, V - 1, (B, L), generator=g)
    return feats, torch.full((B,), T), toks, torch.full((B,), L)

def build_model(cfg, vocab: int, n_mels: int = 80, cmvn_mean: float = 10.0, cmvn_std: float = 3.0):
    "ESPnet2's ESPnetASRModel for our config; GlobalMVN statistics give mean `cmvn_mean` and std `cmvn_std`."
    import numpy as np
    from espnet2.asr.ctc import CTC
    from espnet2.asr.decoder.transformer_decoder import TransformerDecoder
    from espnet2.asr.encoder.conformer_encoder import ConformerEncoder
    from espnet2.asr.espnet_model import ESPnetASRModel
    from espnet2.asr.specaug.specaug import SpecAug
    from espnet2.layers.global_mvn import GlobalMVN
    c = espnet_conf(cfg)
    stats = Path(tempfile.mkdtemp()) / "feats_stats.npz"
    n = 1000.0
    np.savez(stats, count=n, sum=np.full(n_mels, cmvn_mean * n), sum_square=np.full(n_mels, (cmvn_mean ** 2 + cmvn_std ** 2) * n))
    tokens = ["<blank>"] + [f"u{i}" for i in range(1, vocab - 1)] + ["<sos/eos>"]
    enc = ConformerEncoder(n_mels, **c["encoder_conf"])
    dec = TransformerDecoder(vocab, enc.output_size(), **c["decoder_conf"])
    return ESPnetASRModel(vocab_size=vocab, token_list=tokens, frontend=None,
                          specaug=SpecAug(**c["specaug_conf"]) if c["specaug_conf"] else None,
                          normalize=GlobalMVN(str(stats)), preencoder=None, encoder=enc, postencoder=None,
                          decoder=dec, ctc=CTC(vocab, enc.output_size()), joint_network=None, **c["model_conf"])

def count_params(model) -> dict:
    "Trainable parameters by part, named as asr_nb.model.count_parameters names ours."
    n = lambda m: sum(p.numel() for p in m.parameters() if p.requires_grad)
    return dict(encoder=n(model.encoder), ctc=n(model.ctc), decoder=n(model.decoder), total=n(model))

class Stepper:
    "Forward + backward + fused Adam on one fixed batch; `run(n)` returns n (wall, main-thread CPU) seconds."
    def __init__(self, model, batch, dtype=None):
        import torch
        self.torch, self.model, self.batch, self.dtype = torch, model, batch, dtype
        self.opt = torch.optim.Adam(model.parameters(), lr=1e-4, betas=(0.9, 0.98), eps=1e-9, fused=True)
        model.train()
    def step(self):
        torch = self.torch
        with torch.autocast("cpu", dtype=self.dtype, enabled=self.dtype is not None):
            loss, _, _ = self.model(*self.batch)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        if not torch.isfinite(loss): raise RuntimeError("non-finite loss in peer benchmark")
    def run(self, n: int):
        wall, cpu = [], []
        for _ in range(n):
            t0, c0 = time.perf_counter(), time.thread_time()
            self.step()
            wall.append(time.perf_counter() - t0); cpu.append(time.thread_time() - c0)
        return wall, cpu

def setup(a):
    import torch
    sys.path.insert(0, str(ROOT))
    from asr_nb.core import load_config
    cfg = load_config(a.config)
    torch.manual_seed(0)
    model = build_model(cfg, a.vocab)
    batch = make_batch(a.batch, a.frames, a.tokens, a.vocab)
    import espnet, importlib.metadata as md
    info = dict(toolkit="espnet2", espnet=md.version("espnet"), torch=torch.__version__, params=count_params(model),
                espnet_conf=espnet_conf(cfg))
    return model, batch, info

def serve(model, batch, info):
    "Answer JSON commands on stdin, one `PEER_JSON` line each; the first line announces the model."
    import torch
    steppers = {}
    print("PEER_JSON " + json.dumps(info), flush=True)
    for line in sys.stdin:
        if not line.strip(): continue
        cmd = json.loads(line)
        if cmd.get("quit"): break
        if cmd.get("threads"): torch.set_num_threads(int(cmd["threads"]))
        dt = cmd.get("dtype", "fp32")
        if dt not in steppers: steppers[dt] = Stepper(model, batch, {"fp32": None, "bf16": torch.bfloat16}[dt])
        steppers[dt].run(int(cmd.get("warmup", 1)))
        wall, cpu = steppers[dt].run(int(cmd["steps"]))
        print("PEER_JSON " + json.dumps(dict(wall=wall, cpu=cpu, threads=torch.get_num_threads(), dtype=dt)), flush=True)

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "conf" / "espnet_4p6m.yaml"))
    ap.add_argument("--vocab", type=int, default=300)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--frames", type=int, default=200)
    ap.add_argument("--tokens", type=int, default=20)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--serve", action="store_true", help="long-lived: JSON commands on stdin (see the docstring)")
    a = ap.parse_args(argv)
    import torch
    torch.set_num_threads(a.threads)
    model, batch, info = setup(a)
    if a.serve: return serve(model, batch, info)
    s = Stepper(model, batch)
    s.run(a.warmup)
    wall, cpu = s.run(a.steps)
    info.update(batch=a.batch, frames=a.frames, threads=a.threads, steps=a.steps, median_s=statistics.median(wall),
                main_thread_cpu_median_s=statistics.median(cpu), frames_per_s=a.batch * a.frames / statistics.median(wall),
                loadavg_1m=os.getloadavg()[0])
    print(json.dumps(info))

if __name__ == "__main__":
    main()
