"""Helpers the CLI tests share: call a console script, check the one-line error rule, make a small corpus."""
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


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
