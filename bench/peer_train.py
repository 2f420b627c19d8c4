"""ESPnet2 trains the same model on the same corpus: the peer side of a real-training comparison.

From a Kaldi-style data dir (wav.scp + text, e.g. exp/tiny_demo/data, read only) and one of our configs
(default conf/tiny.yaml), this script writes what ESPnet2's trainer reads and runs it, with no Kaldi and no recipe
scripts:

1. `OUT/data/{train,dev,test}/`: wav.scp and text (the first `--limit` utterances), ESPnet2's character token list
   (`<blank>`, `<unk>`, the characters with `<space>`, `<sos/eos>`) from the training text;
2. `OUT/config.yaml`: ESPnet2's asr_train config built from ours through bench/peer_espnet.py's key table, plus the
   optimiser, scheduler (our warmup_decay = ESPnet2's warmuplr), epochs, batch (our frames per batch x 160
   samples, ESPnet2's `numel` batches), gradient clipping and best-model criterion;
3. `python -m espnet2.bin.asr_train --collect_stats true` (shapes and the global CMVN statistics), then the training
   for `--epochs` epochs, then `espnet2.bin.asr_inference` (joint CTC/attention, our decode.beam and ctc_weight) on
   the test set, and the CER of its 1-best against the reference;
4. `OUT/peer_train.json`: wall time of each stage and the CER, to compare with our run of the same config.

Front end: ESPnet2's default (STFT 512/400/160, 80 log-mel bins) where ours is Kaldi fbank; everything else follows
the config. Runs with any Python (stdlib only); ESPnet2 runs in the peer venv (bench/peer_setup.sh).

    python bench/peer_train.py --peer /work/scratch/peer_venv --data exp/tiny_demo/data --epochs 24 --out /tmp/peer_tiny
    python bench/peer_train.py ... --epochs 1 --limit 50      # a smoke test (minutes on 2 cores)
"""
from __future__ import annotations
import argparse, json, os, subprocess, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HOP = 160  # samples per 10 ms frame at 16 kHz

def read_kv(path: Path) -> list[tuple[str, str]]:
    out = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip():
            k, _, v = line.strip().partition(" ")
            out.append((k, v.strip()))
    return out

def prepare_split(src: Path, dst: Path, limit: int) -> list[str]:
    "Copy the first `limit` utterances (0 = all) that have both audio and text; returns the keys."
    text = dict(read_kv(src / "text"))
    wavs = [(k, v) for k, v in read_kv(src / "wav.scp") if k in text]
    if limit: wavs = wavs[:limit]
    dst.mkdir(parents=True, exist_ok=True)
    (dst / "wav.scp").write_text("".join(f"{k} {v}\n" for k, v in wavs), encoding="utf-8")
    (dst / "text").write_text("".join(f"{k} {text[k]}\n" for k, _ in wavs), encoding="utf-8")
    return [k for k, _ in wavs]

def token_list(train_text: Path) -> list[str]:
    "ESPnet2's char token list: <blank>, <unk>, characters by frequency (space as <space>), <sos/eos>."
    counts: dict[str, int] = {}
    for _, t in read_kv(train_text):
        for ch in t: counts["<space>" if ch == " " else ch] = counts.get("<space>" if ch == " " else ch, 0) + 1
    return ["<blank>", "<unk>"] + sorted(counts, key=lambda c: (-counts[c], c)) + ["<sos/eos>"]

def updates_per_epoch(split: Path, ours: dict) -> int:
    "Our updates per epoch on `split` (wav.scp of PCM wav files), estimated as its 10 ms frames / frames per batch."
    import wave
    frames = 0
    for _, path in read_kv(split / "wav.scp"):
        with wave.open(path) as w: frames += w.getnframes() * 100 // w.getframerate()
    return max(1, -(-frames // (ours["data"].get("max_frames_in_batch") or 6000)))

def espnet_train_config(ours: dict, conf: dict, epochs: int, tokens: Path,
                        steps_per_epoch: int = 0, # updates per epoch, for a tri_stage schedule over the whole run
                       ) -> dict:
    """ESPnet2 asr_train keys from our resolved config `ours` (dataclasses.asdict) and the key-table output `conf`.
    The global CMVN (`--normalize global_mvn`) is given on the training command line: the statistics run makes it.
    Schedules: our warmup_decay is ESPnet2's warmuplr, our tri_stage its tristagelr (`optim.total_steps` 0, the whole
    run, becomes `steps_per_epoch` x epochs)."""
    o, t, d = ours["optim"], ours["train"], ours["data"]
    frames = d.get("max_frames_in_batch") or 6000
    sched = (None, None)
    if o.get("scheduler") == "warmup_decay": sched = ("warmuplr", {"warmup_steps": o.get("warmup_steps", 25000)})
    elif o.get("scheduler") == "tri_stage":
        steps = o.get("total_steps") or steps_per_epoch * epochs
        if not steps: fail("peer_train: error: tri_stage over the whole run needs the updates per epoch (steps_per_epoch)")
        w, h, dcy = o.get("phase_ratio", [0.1, 0.4, 0.5])
        sched = ("tristagelr", dict(max_steps=steps, warmup_ratio=w, hold_ratio=h, decay_ratio=dcy,
                                    init_lr_scale=o.get("init_lr_scale", 0.01), final_lr_scale=o.get("final_lr_scale", 0.05)))
    crit = {"valid_loss": ["valid", "loss", "min"], "valid_acc": ["valid", "acc", "max"]}.get(t.get("best_metric"), ["valid", "loss", "min"])
    return dict(
        token_list=str(tokens), token_type="char", max_epoch=epochs, seed=0, num_workers=0, ngpu=0,
        batch_type="numel", batch_bins=frames * HOP, accum_grad=t.get("accum_grad", 1), grad_clip=t.get("grad_clip", 5.0),
        best_model_criterion=[crit], keep_nbest_models=t.get("keep_n_best", 5), log_interval=20,
        use_tensorboard=False, num_att_plot=0,  # no tensorboard in the peer venv; no attention pictures
        frontend="default", frontend_conf=dict(fs=16000, n_fft=512, win_length=400, hop_length=HOP, n_mels=80),
        specaug="specaug" if conf["specaug_conf"] else None, specaug_conf=conf["specaug_conf"] or {},
        encoder="conformer", encoder_conf=conf["encoder_conf"], decoder="transformer", decoder_conf=conf["decoder_conf"],
        model_conf={k: v for k, v in conf["model_conf"].items() if k not in ("report_cer", "report_wer")},
        optim="adam", optim_conf=dict(lr=o.get("lr", 1e-3)), scheduler=sched[0], scheduler_conf=sched[1] or {})

def edit_distance(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1): cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]

def cer(ref: Path, hyp: Path) -> dict:
    "Character error rate over the reference keys (spaces ignored, as ESPnet2's char scoring of this corpus); a missing hypothesis counts as empty."
    r, h = dict(read_kv(ref)), dict(read_kv(hyp)) if hyp.exists() else {}
    norm = lambda s: s.replace("<space>", " ").replace(" ", "")
    errs = sum(edit_distance(norm(r[k]), norm(h.get(k, ""))) for k in r)
    n = sum(len(norm(v)) for v in r.values())
    return dict(cer=100.0 * errs / max(n, 1), errors=errs, chars=n, utterances=len(r), missing=sum(k not in h for k in r))

def fail(msg: str):
    "One error line on stderr, exit status 2 (bad input or a failed stage)."
    print(msg, file=sys.stderr); raise SystemExit(2)

def run(cmd: list[str], log: Path, who: str = "peer_train") -> float:
    "Run `cmd`, its output to `log`; wall seconds. One line naming the program and the log on failure."
    t0 = time.perf_counter()
    with open(log, "w") as f: rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT).returncode
    name = (cmd[cmd.index('-m') + 1] if '-m' in cmd else
            Path(cmd[1]).name if Path(cmd[0]).name.startswith('python') and len(cmd) > 1 else Path(cmd[0]).name)
    if rc: fail(f"{who}: error: {name} exited {rc}; see {log}")
    return time.perf_counter() - t0

def common_args(ap: argparse.ArgumentParser) -> argparse.ArgumentParser:
    "The options this script shares with bench/bench_real_training.py: the peer venv, the data, the config, epochs, --limit."
    ap.add_argument("--peer", default="/work/scratch/peer_venv", help="venv made by bench/peer_setup.sh")
    ap.add_argument("--data", default=str(ROOT / "exp" / "tiny_demo" / "data"), help="dir with train/, dev/, test/ (Kaldi style)")
    ap.add_argument("--config", default=str(ROOT / "conf" / "tiny.yaml"))
    ap.add_argument("--epochs", type=int, default=24)
    ap.add_argument("--limit", type=int, default=0, help="first N utterances of each split (0 = all): smoke runs")
    return ap

def main(argv=None):
    ap = common_args(argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "exp" / "peer_tiny"))
    ap.add_argument("--no-decode", action="store_true", help="train only (throughput rounds of bench_real_training.py --alternate)")
    a = ap.parse_args(argv)
    py, out, data = str(Path(a.peer) / "bin" / "python"), Path(a.out), Path(a.data)
    if not Path(py).exists(): fail(f"peer_train: error: {py} not found; make it with bench/peer_setup.sh {a.peer}")
    for s in ("train", "dev", "test"):
        if not (data / s / "wav.scp").exists(): fail(f"peer_train: error: {data / s / 'wav.scp'} not found")
    out.mkdir(parents=True, exist_ok=True)
    n = {s: len(prepare_split(data / s, out / "data" / s, a.limit)) for s in ("train", "dev", "test")}
    (out / "tokens.txt").write_text("\n".join(token_list(out / "data" / "train" / "text")) + "\n", encoding="utf-8")
    # our config, resolved by our loader, and the key table, both run in the peer venv (asr_nb.core needs only torch/yaml)
    q = ("import sys, json, dataclasses; sys.path[:0] = [sys.argv[1], sys.argv[1] + '/bench']; from asr_nb.core import load_config; "
         "import peer_espnet as pe; c = load_config(sys.argv[2]); print(json.dumps([dataclasses.asdict(c), pe.espnet_conf(c)]))")
    ours, conf = json.loads(subprocess.run([py, "-c", q, str(ROOT), a.config], capture_output=True, text=True, check=True).stdout)
    stats = out / "stats" / "train" / "feats_stats.npz"
    cfg = espnet_train_config(ours, conf, a.epochs, out / "tokens.txt", steps_per_epoch=updates_per_epoch(out / "data" / "train", ours))
    (out / "config.yaml").write_text(json.dumps(cfg, indent=1) + "\n")  # JSON is YAML
    env_threads = ["env", f"OMP_NUM_THREADS={a.threads}", f"MKL_NUM_THREADS={a.threads}"]
    data_args = lambda split, shape: [
        f"--{split}_data_path_and_name_and_type", f"{out}/data/{'train' if split == 'train' else 'dev'}/wav.scp,speech,sound",
        f"--{split}_data_path_and_name_and_type", f"{out}/data/{'train' if split == 'train' else 'dev'}/text,text,text",
        f"--{split}_shape_file", shape(split)]
    times = {}
    # 1. shapes + CMVN statistics (the key file stands in for a shape file with unsorted batches)
    times["collect_stats_s"] = run(env_threads + [py, "-m", "espnet2.bin.asr_train", "--config", str(out / "config.yaml"),
        "--collect_stats", "true", "--batch_type", "unsorted", "--batch_size", "8", "--output_dir", str(out / "stats"),
        *data_args("train", lambda s: f"{out}/data/train/wav.scp"), *data_args("valid", lambda s: f"{out}/data/dev/wav.scp")],
        out / "collect_stats.log")
    # 2. training
    times["train_s"] = run(env_threads + [py, "-m", "espnet2.bin.asr_train", "--config", str(out / "config.yaml"),
        "--output_dir", str(out / "exp"), "--resume", "false", "--normalize", "global_mvn", "--normalize_conf", f"stats_file={stats}",
        *data_args("train", lambda s: f"{out}/stats/train/speech_shape"),
        *data_args("valid", lambda s: f"{out}/stats/valid/speech_shape")], out / "train.log")
    if a.no_decode:
        res = dict(toolkit="espnet2", utterances=n, epochs=a.epochs, threads=a.threads, **times)
        (out / "peer_train.json").write_text(json.dumps(res, indent=1) + "\n")
        return res
    # 3. decoding the test set with the best checkpoint (averaged when ESPnet2 wrote one)
    exp = out / "exp"
    model = next((p for p in sorted(exp.glob("valid.*.ave*.pth")) if p.exists()), None) or next(iter(sorted(exp.glob("valid.*.best.pth"))), exp / "latest.pth")
    dec = ours["decode"]
    times["decode_s"] = run(env_threads + [py, "-m", "espnet2.bin.asr_inference", "--asr_train_config", str(exp / "config.yaml"),
        "--asr_model_file", str(model), "--data_path_and_name_and_type", f"{out}/data/test/wav.scp,speech,sound",
        "--output_dir", str(out / "decode_test"), "--batch_size", "1", "--ngpu", "0", "--beam_size", str(dec.get("beam", 10)),
        "--ctc_weight", str(dec.get("ctc_weight", 0.3)), "--lm_weight", "0.0", "--nbest", "1"], out / "decode.log")
    score = cer(out / "data" / "test" / "text", out / "decode_test" / "1best_recog" / "text")
    res = dict(toolkit="espnet2", config=os.path.relpath(a.config, ROOT), data=str(data), utterances=n, epochs=a.epochs,
               threads=a.threads, model=model.name, loadavg_1m=os.getloadavg()[0], **times, test=score,
               date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    (out / "peer_train.json").write_text(json.dumps(res, indent=1) + "\n")
    print(json.dumps(res))
    return res

if __name__ == "__main__":
    main()
