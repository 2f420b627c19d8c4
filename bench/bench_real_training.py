"""Real training, side by side (#15): ESPnet2 and asr_nb train the same model on the same corpus for the same epochs.

One run, one machine, one toolkit after the other (never both at once):

1. ESPnet2 (`bench/peer_train.py`: `espnet2.bin.asr_train` driven directly, our config mapped through its key table,
   the same schedule, batch frames, clipping, epochs and best-5 average; `--peer-threads` torch threads, default the
   cores) then decodes the test set with joint CTC/attention beam search (`espnet2.bin.asr_inference`, batch 1);
2. asr_nb with the tiny recipe's defaults: one rank per core where each keeps >= 3000 frames of the update
   (`asr_nb.recipes.cpu_train_ranks`; 2 ranks of 1 thread on 2 cores), the same epochs, then the best-5 average by
   validation loss and the joint search of the config (`asr_nb_decode`, batch 8).

Both hypotheses are scored by the same scorer (`asr_nb.decode.score_hyps`, spaces kept), and also with spaces
dropped (peer_train's own count). Throughput is input frames (10 ms) per second of the training stage:
frames of the training set x epochs / wall seconds. ESPnet2's statistics pass (shapes and CMVN) is timed apart;
ours computes CMVN inside its training command, so that time is in ours.

    python bench/bench_real_training.py --epochs 24 --work /tmp/real24        # -> bench/results/real_training.json
    python bench/bench_real_training.py --epochs 1 --limit 80 --work /tmp/rt  --out /tmp/rt.json   # a smoke run
    python bench/bench_real_training.py --work /tmp/real24 --rescore     # score the same hypotheses again
    python bench/bench_real_training.py --alternate 3 --epochs 2 --work /tmp/alt   # throughput, the two alternated

Optional, never in CI: it needs the peer venv (bench/peer_setup.sh) and minutes to hours of CPU.
"""
from __future__ import annotations
import argparse, json, os, sys, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

def frames_of(data_dir: Path) -> int:
    "10 ms frames of a Kaldi-style data dir's audio (utt2num_frames when present, else the wav headers)."
    import soundfile as sf
    f = data_dir / "utt2num_frames"
    if f.exists(): return sum(int(l.split()[1]) for l in f.read_text().splitlines() if l.strip())
    return sum(sf.info(l.split(maxsplit=1)[1]).frames * 100 // sf.info(l.split(maxsplit=1)[1]).samplerate
               for l in (data_dir / "wav.scp").read_text().splitlines() if l.strip())

def score(ref_file: Path, hyp_file: Path) -> dict:
    "CER/WER of a hypothesis `text` file against the reference, our scorer, spaces kept and dropped."
    from asr_nb.decode import score_hyps
    kv = lambda p: dict((l.split(maxsplit=1) + [""])[:2] for l in p.read_text(encoding="utf-8").splitlines() if l.strip())
    refs, hyps = kv(ref_file), kv(hyp_file) if hyp_file.exists() else {}
    hyps = {k: hyps.get(k, "").replace("<space>", " ") for k in refs}
    kept, dropped = score_hyps(refs, hyps, lang="en"), score_hyps(refs, hyps, lang="zh")
    return dict(cer=round(kept["cer"], 2), wer=round(kept["wer"], 2), cer_no_spaces=round(dropped["cer"], 2), n=len(refs))

def _ours_hyps(exp: Path) -> Path:
    "asr_nb_decode's text file: OUT/text for one method (OUT/METHOD/text for several)."
    d = exp / "decode_test"
    return d / "text" if (d / "text").exists() else d / "joint" / "text"

def rescore(out: Path, work: Path, data: Path) -> None:
    "--rescore: score both toolkits' existing hypotheses again (same work dir) and rewrite the test fields of `out`."
    res = json.loads(out.read_text())
    split = (lambda s: data / s) if res["utterances"]["train"] == sum(1 for l in (data / "train" / "wav.scp").read_text().splitlines() if l.strip()) \
        else (lambda s: work / "espnet" / "data" / s)
    res["espnet2"]["test"] = score(split("test") / "text", work / "espnet" / "decode_test" / "1best_recog" / "text")
    res["asr_nb"]["test"] = score(split("test") / "text", _ours_hyps(work / "asr_nb"))
    res["rescored"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    _write_result(out, res); print(json.dumps({k: res[k]["test"] for k in ("espnet2", "asr_nb")}))

def _check_inputs(a, work: Path, names: list[str]) -> None:
    "Before anything runs or is written: the peer venv exists, and `work` holds no run of an earlier invocation (asr_nb_train would resume it)."
    import peer_train
    if not (Path(a.peer) / "bin" / "python").exists():
        peer_train.fail(f"bench_real_training: error: {a.peer}/bin/python not found; make it with bench/peer_setup.sh {a.peer}")
    taken = [n for n in names if (work / n).exists()]
    if taken: peer_train.fail(f"bench_real_training: error: {work / taken[0]} exists from an earlier run "
                              "(asr_nb_train would resume it instead of training): use a new --work")

def _write_result(out: Path, res: dict) -> None:
    from asr_nb.core import atomic_write_text
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(res, indent=1) + "\n")

def _ours_train_cmd(a, exp: Path, split) -> tuple[list[str], int, list[str]]:
    "asr_nb_train with the recipe's CPU layout (one rank per core where each keeps >= 3000 frames of the update)."
    from asr_nb.core import load_config
    from asr_nb.recipes import cpu_rank_overrides, cpu_train_ranks
    py = sys.executable
    cfg = load_config(a.config, [])
    n = cpu_train_ranks(cfg)
    over = [f"train.max_epochs={a.epochs}", *(cpu_rank_overrides(cfg, n) if n > 1 else [])]
    cmd = ([py, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={n}"] if n > 1 else [py]) + [
        str(Path(py).parent / "asr_nb_train"), "--config", a.config, "--train", str(split("train")), "--valid", str(split("dev")),
        "--exp", str(exp), *over]
    return cmd, n, over

def alternate(a, argv) -> dict:
    """Training throughput with the machine's drift shared: `--alternate R` rounds, each a fresh `--epochs`-epoch run of
    ESPnet2 and of asr_nb (no decoding), the order flipping every round. Both times include process start-up (and
    our CMVN pass; ESPnet2's statistics pass is timed apart), as in the full comparison. The ratio is the median of the
    rounds' ratios."""
    import statistics, peer_train
    run = lambda cmd, log: peer_train.run(cmd, log, who="bench_real_training")
    work, data = Path(a.work), Path(a.data)
    _check_inputs(a, work, [f"{t}_r{r}" for r in range(a.alternate) for t in ("asr_nb", "espnet")])
    work.mkdir(parents=True, exist_ok=True)
    split = (lambda s: data / s) if not a.limit else (lambda s: work / "espnet_r0" / "data" / s)
    rows = []
    for r in range(a.alternate):
        row = dict(round=r, order="espnet2 first" if r % 2 == 0 else "asr_nb first", load_1m_start=round(os.getloadavg()[0], 2))
        def espnet2():
            p = peer_train.main(["--peer", a.peer, "--data", str(data), "--config", a.config, "--epochs", str(a.epochs), "--limit",
                                 str(a.limit), "--threads", str(a.peer_threads), "--out", str(work / f"espnet_r{r}"), "--no-decode"])
            row.update(espnet2_train_s=round(p["train_s"], 1), espnet2_collect_stats_s=round(p["collect_stats_s"], 1))
        def ours():
            cmd, n, over = _ours_train_cmd(a, work / f"asr_nb_r{r}", split)
            row.update(asr_nb_train_s=round(run(cmd, work / f"asr_nb_train_r{r}.out"), 1), asr_nb_ranks=n)
        for f in ((espnet2, ours) if r % 2 == 0 else (ours, espnet2)): f()
        row["speedup_train"] = round(row["espnet2_train_s"] / row["asr_nb_train_s"], 3)
        rows.append(row); print(json.dumps(row), flush=True)
    frames = frames_of(split("train")) * a.epochs
    ratios = [r["speedup_train"] for r in rows]
    res = dict(title=f"Training throughput, ESPnet2 vs asr_nb alternated: {a.alternate} rounds of {a.epochs} epoch(s) each, "
                     f"{os.path.relpath(a.config, ROOT)}, same data",
               command="python bench/bench_real_training.py " + " ".join(argv if argv is not None else sys.argv[1:]),
               train_frames_per_round=frames, cpus=os.cpu_count(), espnet2_threads=a.peer_threads, rows=rows,
               espnet2_frames_per_s_median=round(frames / statistics.median(r["espnet2_train_s"] for r in rows), 1),
               asr_nb_frames_per_s_median=round(frames / statistics.median(r["asr_nb_train_s"] for r in rows), 1),
               speedup_train_median=round(statistics.median(ratios), 2), speedup_train_range=[min(ratios), max(ratios)],
               date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
               notes=alternate.__doc__.replace("\n    ", " ").replace("\n", " "))
    out = Path(a.out or ROOT / "bench" / "results" / "real_training_alternated.json")
    _write_result(out, res); print(f"wrote {out}")
    return res

def main(argv=None):
    import peer_train                                                     # bench/ is on the path when run as a script
    ap = peer_train.common_args(argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter))
    ap.add_argument("--peer-threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--work", default=str(ROOT / "bench" / "out" / "real_training"), help="scratch dir for both experiments")
    ap.add_argument("--out", help="default bench/results/real_training.json (real_training_alternated.json with --alternate)")
    ap.add_argument("--rescore", action="store_true", help="only score the hypotheses already in --work again, into --out")
    ap.add_argument("--alternate", type=int, default=0, metavar="R",
                    help="throughput only: R rounds of --epochs epochs per toolkit, alternated (order flips each round), "
                         "fresh runs without decoding; default out bench/results/real_training_alternated.json")
    a = ap.parse_args(argv)
    if a.alternate < 0: ap.error(f"--alternate must be >= 0 (0 = the full comparison), got {a.alternate}")
    if a.alternate: return alternate(a, argv)
    a.out = a.out or str(ROOT / "bench" / "results" / "real_training.json")
    if a.rescore: return rescore(Path(a.out), Path(a.work), Path(a.data))
    run = lambda cmd, log: peer_train.run(cmd, log, who="bench_real_training")
    work, data, py = Path(a.work), Path(a.data), sys.executable
    _check_inputs(a, work, ["asr_nb", "espnet"])                      # checked before anything is written
    work.mkdir(parents=True, exist_ok=True)
    load = [os.getloadavg()[0]]
    # 1. ESPnet2 (it writes the splits it used, `--limit` applied, under work/espnet/data)
    peer = peer_train.main(["--peer", a.peer, "--data", str(data), "--config", a.config, "--epochs", str(a.epochs),
                            "--limit", str(a.limit), "--threads", str(a.peer_threads), "--out", str(work / "espnet")])
    load.append(os.getloadavg()[0])
    split = lambda s: work / "espnet" / "data" / s                  # the utterances ESPnet2 used (wav.scp, text) ...
    if not a.limit: split = lambda s: data / s                       # ... which are all of them without --limit
    peer["test_ours_scorer"] = score(split("test") / "text", work / "espnet" / "decode_test" / "1best_recog" / "text")
    # 2. asr_nb, the recipe's CPU layout
    exp = work / "asr_nb"
    bin_ = lambda name: str(Path(py).parent / name)
    train_cmd, n, over = _ours_train_cmd(a, exp, split)
    ours = dict(ranks=n, overrides=over, train_s=run(train_cmd, work / "asr_nb_train.out"))
    load.append(os.getloadavg()[0])
    ours["average_s"] = run([bin_("asr_nb_average"), "--exp", str(exp), "--n", "5", "--by", "valid_loss"], work / "asr_nb_average.out")
    ours["decode_s"] = run([bin_("asr_nb_decode"), "--exp", str(exp), "--data", str(split("test")), "--method", "joint",
                            "--out", str(exp / "decode_test")], work / "asr_nb_decode.out")
    ours["test_ours_scorer"] = score(split("test") / "text", _ours_hyps(exp))
    load.append(os.getloadavg()[0])
    frames = frames_of(split("train")) * a.epochs
    fps = lambda s: round(frames / s, 1)
    res = dict(
        title=f"Real training side by side: ESPnet2 vs asr_nb, {os.path.relpath(a.config, ROOT)}, {a.epochs} epochs, same data",
        command="python bench/bench_real_training.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        utterances={s: sum(1 for l in (split(s) / "wav.scp").read_text().splitlines() if l.strip()) for s in ("train", "dev", "test")},
        train_frames_per_epoch=frames // a.epochs, epochs=a.epochs, cpus=os.cpu_count(),
        espnet2=dict(threads=a.peer_threads, collect_stats_s=round(peer["collect_stats_s"], 1), train_s=round(peer["train_s"], 1),
                     decode_s=round(peer["decode_s"], 1), frames_per_s=fps(peer["train_s"]),
                     frames_per_s_with_stats=fps(peer["train_s"] + peer["collect_stats_s"]),
                     model=peer["model"], test=peer["test_ours_scorer"], test_peer_scorer=peer["test"]),
        asr_nb=dict(ranks=n, overrides=over, train_s=round(ours["train_s"], 1), average_s=round(ours["average_s"], 1),
                    decode_s=round(ours["decode_s"], 1), frames_per_s=fps(ours["train_s"]), model="model_avg.pt (5 best by valid_loss)",
                    test=ours["test_ours_scorer"]),
        loadavg_1m=dict(start=load[0], after_espnet2=load[1], after_asr_nb_train=load[2], end=load[3]),
        date=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
    res["speedup_train"] = round(peer["train_s"] / ours["train_s"], 2)
    res["speedup_train_with_stats"] = round((peer["train_s"] + peer["collect_stats_s"]) / ours["train_s"], 2)
    res["notes"] = ("speedup_train = ESPnet2's training-stage seconds / ours (ours includes its CMVN pass; "
                    "speedup_train_with_stats adds ESPnet2's statistics pass). Test: joint CTC/attention beam search, "
                    "CER/WER by asr_nb.decode.score_hyps with spaces kept (cer_no_spaces drops them). Front ends differ: "
                    "ESPnet2's STFT log-mel vs our Kaldi fbank.")
    out = Path(a.out)
    _write_result(out, res)
    print(json.dumps(res, indent=1)); print(f"wrote {out}")

if __name__ == "__main__":
    main()
