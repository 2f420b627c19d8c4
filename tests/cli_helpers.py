"""Helpers the CLI tests share: call a console script, check the one-line error rule, make a small corpus, train in a
subprocess (TINY_TRAIN, TRAIN_RUNNER, train_env)."""
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# A tiny Conformer: a few seconds for a dozen epochs of 40 utterances on one CPU core.
TINY_TRAIN = ["model.encoder.d_model=32", "model.encoder.attention_heads=2", "model.encoder.linear_units=64", "model.encoder.num_blocks=2",
              "model.decoder.num_blocks=1", "model.decoder.linear_units=64", "model.encoder.cnn_kernel=7",
              "optim.scheduler=warmup_decay", "optim.lr=0.005", "optim.warmup_steps=15", "data.batch_type=example",
              "data.batch_size=8", "train.tensorboard=false", "train.device=cpu", "train.num_threads=1"]
# `python -c TRAIN_RUNNER exp train dev key=value...`: trains and prints one SUMMARY line (json)
TRAIN_RUNNER = """
import json, sys
from asr_nb.core import load_config
from asr_nb.train import train
exp, tr, dv = sys.argv[1:4]
s = train(load_config(None, sys.argv[4:]), tr, dv, exp)
print("SUMMARY " + json.dumps({k: v for k, v in s.items() if k != "history"}, default=str), flush=True)
"""


def train_env() -> dict:
    "The environment of a training subprocess: one thread, unbuffered, this checkout first on the path."
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    return env


def run(main, argv, capsys):
    "Call a console-script main; return (exit code, stdout, stderr)."
    rc = main([str(a) for a in argv]); out, err = capsys.readouterr()
    return rc, out, err


def one_line_error(rc, err, *needles, skip_info=False):
    "Exit 2 and exactly one 'error:' line on stderr (INFO log lines of a started run left out with skip_info), naming every needle."
    lines = [l for l in err.splitlines() if l.strip() and not (skip_info and "INFO" in l)]
    assert rc == 2 and len(lines) == 1 and 'error:' in lines[0] and 'Traceback' not in err, err
    for n in needles: assert n in lines[0], (n, lines[0])
    return lines[0]


def synth(tmp_path_factory, n_train: int, seed: int) -> dict:
    "A built-in corpus of n_train/4/4 utterances: {'train', 'dev', 'test'} -> data dir."
    from asr_nb.cli import synth_main
    d = tmp_path_factory.mktemp('corpus')/'synth'
    assert synth_main(['--out', str(d), '--n-train', str(n_train), '--n-dev', '4', '--n-test', '4', '--seed', str(seed)]) == 0
    return {s: d/s for s in ('train', 'dev', 'test')}


def synth_and_train(d: Path, overrides, n_train: int, n_dev: int, n_test: int, seed: int) -> Path:
    "A small built-in corpus in d/synth and conf/tiny.yaml trained on it (with `overrides`) in d/exp; returns d."
    from asr_nb.cli import synth_main, train_main
    assert synth_main(['--out', str(d/'synth'), '--n-train', str(n_train), '--n-dev', str(n_dev), '--n-test', str(n_test),
                       '--seed', str(seed)]) == 0
    assert train_main(['--config', str(ROOT/'conf'/'tiny.yaml'), '--train', str(d/'synth'/'train'),
                       '--valid', str(d/'synth'/'dev'), '--exp', str(d/'exp'), *overrides]) == 0
    return d
