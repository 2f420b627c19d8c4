"""Decoding speed: real-time factor of every search method, batch 1 and batched, beam 10.

The model is the ESPnet2-size 4.6 M Conformer of conf/espnet_4p6m.yaml (6 x d144 encoder, 3-block decoder,
300 BPE units), randomly initialised: speed does not depend on the weights, except through the length of the
output. So that every method does the work of a real transcript, the attention-based searches have their output
length pinned to `--len-ratio` x encoder frames (minlenratio = maxlenratio; 0.15 x 25 frames/s ~ 3.75 BPE units/s,
about English read speech with 300 units). Audio: `--utts` synthetic utterances (sums of gliding tones and noise) of
2-6 s written as 16 kHz wav files and decoded with `asr_nb.decode.decode_data`, the one decoding path. RTF is its one
definition: the wall time a user waits (reading audio, fbank, encoder, search) / audio seconds; lower is faster.

    python bench/bench_decode.py                          # CPU, 2 threads -> bench/results/decode.json
    python bench/bench_decode.py --device cuda --threads 0 --out bench/results/decode_cuda.json

With `--exp DIR --data DATA` it measures a *trained* experiment instead (its config, weights, batch size), every
plain method at `--beam`, at each of `--exp-threads` (default 1,2: one thread, and the 2 a user of `asr_nb_decode` gets
by default on a 2-core machine), noting `os.getloadavg()` before and after each method and the process CPU seconds
(a shared machine's wall times are contended when the load is above the core count; CPU seconds much less so):

    python bench/bench_decode.py --exp exp/tiny_demo/exp --data exp/tiny_demo/data/test --repeats 5   # -> bench/results/decode_tiny.json
    python bench/bench_decode.py --exp exp/tiny_demo/exp --data exp/tiny_demo/data/test --exp-threads 2 --exp-batch-size 32 \
        --out bench/results/decode_tiny_b32.json                                            # batches of 32 utterances
"""
from __future__ import annotations
import argparse, json, math, os, platform, statistics, tempfile, time
from dataclasses import replace
from pathlib import Path
import numpy as np
import soundfile as sf
import torch
from asr_nb.core import DecodeConfig, load_config
from asr_nb.data import Utterance
from asr_nb.decode import SEARCHES, _approx_seconds, decode_data
from asr_nb.model import ASRModel, count_parameters
from asr_nb.tokenizer import Tokenizer

ROOT = Path(__file__).resolve().parents[1]

def synth_utts(out_dir: Path, n: int, min_dur: float, max_dur: float, seed: int = 0, sr: int = 16000) -> list[Utterance]:
    "n wav files of gliding tones plus noise, lengths uniform in [min_dur, max_dur] seconds."
    rng = np.random.default_rng(seed)
    utts = []
    for i in range(n):
        dur = rng.uniform(min_dur, max_dur)
        t = np.arange(int(dur * sr)) / sr
        x = sum(0.1 * np.sin(2 * np.pi * (f0 + slope * t) * t) * (1 + np.sin(2 * np.pi * am * t)) / 2
                for f0, slope, am in rng.uniform([100, -50, 2], [800, 300, 6], (4, 3)))
        x = (x + 0.01 * rng.standard_normal(t.size)).astype(np.float32)
        sf.write(out_dir / f"u{i:03d}.wav", x, sr)
        utts.append(Utterance(f"u{i:03d}", str(out_dir / f"u{i:03d}.wav"), ""))
    return utts

TRAINED_METHODS = "ctc_greedy,ctc_prefix_beam,attention,joint,rescoring"

def bench_exp(a):
    "RTF of every method on a trained experiment and a data set, each method once, with the load average noted."
    from asr_nb.data import read_data_dir
    from asr_nb.export import Recognizer
    rec = Recognizer.from_exp(a.exp)
    rec.decode_cfg = replace(rec.decode_cfg, beam=a.beam, batch_size=a.exp_batch_size or rec.decode_cfg.batch_size)
    utts = read_data_dir(a.data)
    decode_data(rec, utts[:4], [a.methods.split(",")[0]])  # warm-up
    rows, stages = [], {}
    for th in [int(x) for x in a.exp_threads.split(",")]:
        torch.set_num_threads(th)
        for method in a.methods.split(","):
            load, runs, cpus = os.getloadavg(), [], []
            for _ in range(a.repeats):                                   # --repeats runs; the median is the row's value
                cpu = time.process_time()
                runs.append(decode_data(rec, utts, [method])[method]); cpus.append(time.process_time() - cpu)
            r = sorted(runs, key=lambda x: x['rtf'])[(len(runs) - 1) // 2]   # the median run (the lower one of an even count)
            rows.append(dict(method=method, threads=th, batch_size=rec.decode_cfg.batch_size, beam=a.beam, rtf=r['rtf'],
                             wall_seconds=r['wall_seconds'], cpu_seconds=round(statistics.median(cpus), 3),
                             audio_seconds=r['audio_seconds'], cer=r['cer'], repeats=a.repeats,
                             rtf_runs=[round(x['rtf'], 5) for x in runs],
                             loadavg_before=[round(x, 2) for x in load], loadavg_after=[round(x, 2) for x in os.getloadavg()]))
            print(f"{method:16s} threads {th} RTF {r['rtf']:.4f} (median of {a.repeats})  CER {r['cer']:.2f}  load {load[0]:.2f}", flush=True)
        stages[th] = stage_seconds(rec, utts)
        print(f"stages (s), {th} thread(s):", stages[th], flush=True)
    return dict(title=f"Decoding real-time factor of a trained model ({a.exp})", rows=rows, stage_seconds=stages, exp=str(a.exp), data=str(a.data),
                utts=len(utts), threads=a.exp_threads, cpus=os.cpu_count(), torch=torch.__version__,
                python=platform.python_version(),
                notes=("rtf = wall time a user waits (audio reading, fbank, CMVN, encoder, search) / audio seconds; lower "
                       "is faster. loadavg over os.cpu_count() cores: above it the machine was shared and the numbers "
                       "are contended (slower than on a quiet machine)."))

def stage_seconds(rec, utts, methods=("ctc_greedy", "joint")) -> dict:
    "Where the time of `decode_data` goes, stage by stage (batches of decode.batch_size, longest first, as it runs them)."
    from asr_nb.decode import SEARCHES, check_method
    from asr_nb.features import load_audio, make_frontend
    order = sorted(utts, key=lambda u: -_approx_seconds(u))
    bs, fe, m = rec.decode_cfg.batch_size, make_frontend(rec.feat_cfg), rec.model
    out = {k: 0.0 for k in ("audio_read", "fbank", "cmvn", "encoder", "ctc_head")}
    out.update({f"search_{k}": 0.0 for k in methods})
    with torch.inference_mode():
        for s in range(0, len(order), bs):
            t = time.perf_counter(); w = [load_audio(u.audio, sample_rate=rec.sample_rate) for u in order[s:s + bs]]
            t1 = time.perf_counter(); x, lens = fe.batch(w)
            t2 = time.perf_counter(); xc = m.cmvn(x) if m.cmvn is not None else x
            t3 = time.perf_counter(); enc, el = m.encoder(xc, lens)
            t4 = time.perf_counter(); lp = m.ctc_log_probs(enc)
            t5 = time.perf_counter()
            for k, v in zip(("audio_read", "fbank", "cmvn", "encoder", "ctc_head"), (t1 - t, t2 - t1, t3 - t2, t4 - t3, t5 - t4)): out[k] += v
            for meth in methods:
                cfg = replace(rec.decode_cfg, method=meth); sch = check_method(meth, m.capabilities)
                t = time.perf_counter(); sch.fn(m, enc, el, lp, cfg, None); out[f"search_{meth}"] += time.perf_counter() - t
    return {k: round(v, 3) for k, v in out.items()}

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "conf" / "espnet_4p6m.yaml"))
    ap.add_argument("--vocab", type=int, default=300)
    ap.add_argument("--utts", type=int, default=20)
    ap.add_argument("--min-dur", type=float, default=2.0)
    ap.add_argument("--max-dur", type=float, default=6.0)
    ap.add_argument("--beam", type=int, default=10)
    ap.add_argument("--batch-sizes", default="1,10")
    ap.add_argument("--methods", default=",".join(SEARCHES))
    ap.add_argument("--len-ratio", type=float, default=0.15, help="attention output length / encoder frames")
    ap.add_argument("--repeats", type=int, default=1, help="runs per cell (with --exp: per method and thread count); the median is reported")
    ap.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (0 = leave torch's default)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=None)
    ap.add_argument("--exp", default=None, help="a trained experiment dir: measure it on --data instead of a random model")
    ap.add_argument("--data", default=None, help="with --exp: the data dir to decode")
    ap.add_argument("--exp-threads", default="1,2", help="with --exp: thread counts to measure, each in turn")
    ap.add_argument("--exp-batch-size", type=int, default=0, help="with --exp: utterances per batch (default: the experiment's decode.batch_size)")
    a = ap.parse_args(argv)
    if a.exp and not a.data: ap.error("--exp needs --data (the data dir to decode)")
    if a.exp:
        if a.threads == 2: a.threads = 1                     # a trained model is measured on one thread unless told
        if a.methods == ",".join(SEARCHES): a.methods = TRAINED_METHODS
    if a.threads: torch.set_num_threads(a.threads)
    if a.exp:
        res = bench_exp(a)
        res["command"] = "python bench/bench_decode.py " + " ".join(argv if argv is not None else __import__("sys").argv[1:])
        out = Path(a.out or ROOT / "bench" / "results" / "decode_tiny.json")
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=2) + "\n")
        print(f"wrote {out}")
        return
    dev = torch.device(a.device)
    out = Path(a.out or ROOT / "bench" / "results" / ("decode.json" if dev.type == "cpu" else f"decode_{dev.type}.json"))
    cfg = load_config(a.config, [])
    torch.manual_seed(0)
    model = ASRModel(cfg.model, a.vocab).to(dev).eval()
    tok = Tokenizer(["<blank>", "<unk>", *[f"u{i}" for i in range(a.vocab - 3)], "<sos/eos>"])
    tok.detokenize = lambda toks: " ".join(toks)   # ids -> text only; the units are placeholders
    base = replace(cfg.decode, beam=a.beam, minlenratio=a.len_ratio, maxlenratio=a.len_ratio, lm_weight=0.0)
    rows = []
    with tempfile.TemporaryDirectory() as d:
        utts = synth_utts(Path(d), a.utts, a.min_dur, a.max_dur)
        kw = dict(tokenizer=tok, feat_cfg=cfg.features, decode_cfg=base)
        decode_data(model, utts[:2], "joint", batch_size=2, **kw)  # warm-up
        for method in a.methods.split(","):
            for bs in [int(x) for x in a.batch_sizes.split(",")]:
                runs = [decode_data(model, utts, method, batch_size=bs, **kw)[method] for _ in range(a.repeats)]
                med = lambda k: statistics.median(r[k] for r in runs)
                rows.append(dict(method=method, batch_size=bs, beam=a.beam, rtf=med("rtf"),
                                 wall_seconds=med("wall_seconds"), audio_seconds=runs[0]["audio_seconds"]))
                print(f"{method:16s} batch {bs:3d}  RTF {rows[-1]['rtf']:.4f}",
                      flush=True)
    res = dict(title=f"Decoding real-time factor ({dev.type})",
               command="python bench/bench_decode.py " + " ".join(argv if argv is not None else __import__("sys").argv[1:]),
               rows=rows, device=str(dev), threads=torch.get_num_threads(), torch=torch.__version__,
               python=platform.python_version(), params=count_parameters(model)["total"], vocab=a.vocab,
               utts=a.utts, audio_seconds=rows[0]["audio_seconds"] if rows else 0.0, len_ratio=a.len_ratio,
               ctc_weight=base.ctc_weight,
               notes=("Random-init model of conf/espnet_4p6m.yaml size; attention output length pinned to len_ratio x "
                      "encoder frames; rtf = wall time including audio reading and fbank / audio seconds. "
                      "Lower is faster."))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2))
    print(f"wrote {out}")

if __name__ == "__main__":
    main()
