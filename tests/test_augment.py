"""The augmentation pipeline (#19) end to end: exact resume after SIGKILL with augmentation on (features made in a
worker process), the built-in noise/room sets and the new-conditions split from the command line, and a bad noise
file stopping training with one error line. Run: `.venv/bin/python -m pytest -q tests/test_augment.py`."""
import hashlib, json, os, signal, subprocess, sys, time
from pathlib import Path
import numpy as np
import pytest
import soundfile as sf
import torch

from asr_nb.checkpoint import latest_checkpoint, load_checkpoint
from asr_nb.train import read_train_log
from cli_helpers import ROOT, TINY_TRAIN as TINY, TRAIN_RUNNER as RUNNER, one_line_error, run, train_env as _env

PY = sys.executable
# every waveform step and SpecSub on, features made in one worker process
AUG = ["augment.speed.prob=0.5", "augment.tempo.prob=0.3", "augment.pitch.prob=0.3", "augment.reverb.prob=0.5",
       "augment.reverb.num_rooms=1", "augment.noise.prob=0.7", "augment.band.prob=0.3", "augment.codec.prob=0.3",
       "augment.volume.prob=0.5", "augment.shift.prob=0.5", "augment.spec_sub.prob=0.5", "data.num_workers=1"]

@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from asr_nb.data import synth_corpus
    return synth_corpus(tmp_path_factory.mktemp("corpus"), n_train=16, n_dev=4, n_test=4, seed=0)

def _losses(exp) -> dict: return {r["step"]: r["loss"] for r in read_train_log(exp)["train"]}

def test_kill9_resume_is_exact_with_augmentation(corpus, tmp_path):
    "SIGKILL mid-epoch with every augmentation step on, restart: the same losses and final weights as an uninterrupted run."
    runner = tmp_path/"run_train.py"; runner.write_text(RUNNER)
    ov = [*TINY, *AUG, "data.batch_size=4", "train.max_epochs=2", "train.save_interval=2", "train.valid_interval=4",
          "train.log_interval=1", "train.keep_n_best=1"]
    cmd = lambda exp: [PY, str(runner), str(exp), str(corpus["train"]), str(corpus["dev"]), *ov]
    a, b = tmp_path/"a", tmp_path/"b"
    err_a = open(tmp_path/"a.err", "w")                        # the uninterrupted run, alongside
    pa = subprocess.Popen(cmd(a), env=_env(), stdout=subprocess.DEVNULL, stderr=err_a)
    p = subprocess.Popen(cmd(b), env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 200
        while time.time() < deadline and p.poll() is None:
            if (b/"train.log").exists() and max(_losses(b), default=0) >= 3 and latest_checkpoint(b) is not None: break
            time.sleep(0.005)
        assert p.poll() is None, "the run finished before it could be killed"
        os.kill(p.pid, signal.SIGKILL)
    finally: p.wait()
    assert pa.wait(timeout=300) == 0, (tmp_path/"a.err").read_text()[-2000:]
    err_a.close()
    assert "augmentation: Augmenter(speed:0.5, tempo:0.3" in (a/"train.log").read_text()   # the pipeline was on
    assert max(_losses(b)) < 8
    r = subprocess.run(cmd(b), env=_env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    resumed = [l for l in (b/"train.log").read_text().splitlines() if "resumed from" in l][-1]
    assert "batch 0," not in resumed, f"expected a mid-epoch resume: {resumed}"
    la, lb = _losses(a), _losses(b)
    assert sorted(la) == list(range(1, 9)) and la == lb      # every step's loss, bit for bit, across the kill
    sa, sb = load_checkpoint(latest_checkpoint(a))["model"], load_checkpoint(latest_checkpoint(b))["model"]
    for k in sa: assert torch.equal(sa[k], sb[k]), k

def test_augmentation_changes_training(corpus, tmp_path):
    "The same run without the pipeline has other losses (the hook is live), and the loss stays finite with it."
    from asr_nb.core import load_config
    from asr_nb.train import train
    base = [*TINY, "train.max_steps=3", "train.log_interval=1"]
    train(load_config(None, base), corpus["train"], corpus["dev"], tmp_path/"plain")
    train(load_config(None, base + AUG[:-1]), corpus["train"], corpus["dev"], tmp_path/"aug")
    lp, la = _losses(tmp_path/"plain"), _losses(tmp_path/"aug")
    assert lp.keys() == la.keys() and lp != la and all(np.isfinite(list(la.values())))

def _digest(d: Path) -> str:
    return hashlib.sha256(b"".join(f.name.encode() + f.read_bytes() for f in sorted(d.rglob("*")) if f.is_file())).hexdigest()

def test_augment_data_cli(corpus, tmp_path, capsys):
    "`asr_nb_augment_data sets` and `conditions`: usable folders, deterministic; bad input is one error line."
    from asr_nb.cli import augment_data_main
    from asr_nb.augment import NoiseSource, RirSource
    from asr_nb.data import read_data_dir
    rc, out, _ = run(augment_data_main, ["sets", "--out", tmp_path/"aug", "--babble-from", corpus["train"],
                                         "--n-per-kind", "1", "--n-rooms", "2"], capsys)
    assert rc == 0 and "rooms" in out
    assert len(NoiseSource(tmp_path/"aug"/"noise").files) == 6 and len(RirSource(tmp_path/"aug"/"rooms")) == 2
    for o in ("c1", "c2"):
        rc, _, _ = run(augment_data_main, ["conditions", "--data", corpus["test"], "--out", tmp_path/o,
                                           "--rir-dir", tmp_path/"aug"/"rooms", "--telephone-prob", "1"], capsys)
        assert rc == 0
    assert _digest(tmp_path/"c1"/"wav") == _digest(tmp_path/"c2"/"wav")          # deterministic under the seed
    clean, cond = read_data_dir(corpus["test"]), read_data_dir(tmp_path/"c1")
    assert [(u.key, u.text) for u in clean] == [(u.key, u.text) for u in cond]
    conditions = json.loads((tmp_path/"c1"/"conditions.json").read_text())["utterances"]
    assert all(c["telephone"] and c["room"].startswith("room_") for c in conditions.values())
    x, fs = sf.read(cond[0].audio)
    spec = np.abs(np.fft.rfft(x)); f = np.fft.rfftfreq(len(x), 1 / fs)
    assert spec[f > 4500].max() < 0.05 * spec.max()                                # the telephone band: nothing above 4 kHz
    one_line_error(*run(augment_data_main, ["conditions", "--data", tmp_path/"nope", "--out", tmp_path/"c3"], capsys)[::2], "nope")

def test_bad_noise_file_is_one_error_line(corpus, tmp_path, capsys):
    "A noise folder holding a broken file stops asr_nb_train before training, one line naming the file."
    from asr_nb.cli import train_main
    (tmp_path/"noise").mkdir(); (tmp_path/"noise"/"broken.wav").write_bytes(b"RIFF\x00\x00not audio")
    rc, _, err = run(train_main, ["--config", ROOT/"conf"/"tiny.yaml", "--train", corpus["train"], "--valid", corpus["dev"],
                                  "--exp", tmp_path/"exp", *TINY, "augment.noise.prob=0.5", f"augment.noise.dir={tmp_path/'noise'}",
                                  "train.max_steps=1"], capsys)
    one_line_error(rc, err, "broken.wav", "bad noise file", skip_info=True)
    assert "broken.wav" in (tmp_path/"exp"/"train.log").read_text()

def test_tiny_augment_conf_is_tiny_plus_the_pipeline():
    """conf/tiny_augment.yaml = conf/tiny.yaml + an augment section, except the schedule: the augmentation table
    of session 5 (bench/results/augment_effect_s5.json) was measured with the warmup_decay schedule conf/tiny.yaml had
    until #15 part 5, so this config keeps it and that table stays reproducible."""
    import dataclasses
    from asr_nb.core import load_config
    a, t = dataclasses.asdict(load_config(ROOT/"conf"/"tiny_augment.yaml")), dataclasses.asdict(load_config(ROOT/"conf"/"tiny.yaml"))
    aug = a.pop("augment"); assert t.pop("augment") != aug
    ao, to = a.pop("optim"), t.pop("optim"); assert a == t
    assert (ao["scheduler"], ao["warmup_steps"], to["scheduler"], to["total_steps"]) == ("warmup_decay", 300, "tri_stage", 0)
    assert {k: v for k, v in ao.items() if k in ("optimizer", "lr", "betas", "eps")} == {k: v for k, v in to.items() if k in ("optimizer", "lr", "betas", "eps")}
    assert all(aug[s]["prob"] > 0 for s in ("speed", "reverb", "noise", "band", "codec", "volume", "shift"))

def test_tiny_augment_light_conf_is_tiny_plus_rarer_milder_distortions():
    """conf/tiny_augment_light.yaml = conf/tiny.yaml (its tri_stage schedule included: session 8 measured the two side by
    side, bench/results/augment_effect.json) + conf/tiny_augment.yaml's steps, the distorting ones rarer and milder."""
    import dataclasses
    from asr_nb.core import load_config
    t, f, l = (dataclasses.asdict(load_config(ROOT/"conf"/n)) for n in ("tiny.yaml", "tiny_augment.yaml", "tiny_augment_light.yaml"))
    fa, la = f.pop("augment"), l.pop("augment"); t.pop("augment")
    assert l == t
    for s in ("pitch", "reverb", "noise", "band", "codec"): assert 0 < la[s]["prob"] < fa[s]["prob"], s
    assert la["noise"]["snr_db"][0] > fa["noise"]["snr_db"][0]
    for s in ("speed", "volume", "shift"): assert la[s] == fa[s], s

def test_tiny_augment_channel_conf_is_tiny_plus_the_channel_steps():
    """conf/tiny_augment_channel.yaml = conf/tiny.yaml at 48 epochs + the light pipeline without speed or pitch change and
    with rooms and the telephone band at 0.25: the 'channel' run of bench/results/augment_effect_48.json (and, at 24
    epochs, of augment_effect.json), which name it."""
    import dataclasses
    from asr_nb.core import load_config
    t, l, c = (dataclasses.asdict(load_config(ROOT/"conf"/n)) for n in ("tiny.yaml", "tiny_augment_light.yaml", "tiny_augment_channel.yaml"))
    la, ca = l.pop("augment"), c.pop("augment"); t.pop("augment")
    assert (t["train"].pop("max_epochs"), c["train"].pop("max_epochs")) == (24, 48)
    assert c == t
    r48 = json.loads((ROOT/"bench"/"results"/"augment_effect_48.json").read_text())
    assert r48["config_files"]["channel"].startswith("conf/tiny_augment_channel.yaml") and r48["configs"]["channel"] == \
        "reverb 0.25, noise 0.3, band 0.25, codec 0.05, volume 0.5, shift 0.5"
    assert {b["epochs"] for b in r48["budget"].values()} == {48}
    assert (ca["speed"]["prob"], ca["pitch"]["prob"], ca["reverb"]["prob"], ca["band"]["prob"]) == (0, 0, 0.25, 0.25)
    for s in ("noise", "codec", "volume", "shift"): assert ca[s] == la[s], s
    res = json.loads((ROOT/"bench"/"results"/"augment_effect.json").read_text())
    assert res["config_files"]["channel"] == "conf/tiny_augment_channel.yaml"
    assert res["configs"]["channel"] == "reverb 0.25, noise 0.3, band 0.25, codec 0.05, volume 0.5, shift 0.5"
