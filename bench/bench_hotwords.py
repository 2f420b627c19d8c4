"""Hotwords (contextual biasing, asr_nb.context): recall of listed words with and without the list.

The trained tiny model (the tiny recipe's exp, read-only) decodes the built-in corpus's 100 test utterances with CTC
prefix beam search and attention rescoring, without hotwords and with a list of test-set words that are the rarest in
training, at a few weights. Per run: the recall of the listed words (their reference occurrences that a word
alignment of reference and hypothesis marks correct), the recall of every other word, its binomial standard error
(the noise level for "not worse"), CER and WER. Decoding goes through `Recognizer.from_exp` with the
`decode.hotwords` / `decode.hotword_weight` overrides, i.e. the path of `asr_nb_decode --hotwords FILE`.

    nice -n 5 python bench/bench_hotwords.py            # -> bench/results/hotwords.json (about 3 minutes on 1 thread)
"""
from __future__ import annotations
import argparse, json, math, platform, tempfile, time
from collections import Counter
from pathlib import Path
import torch
from asr_nb.data import read_data_dir
from asr_nb.decode import decode_data
from asr_nb.export import Recognizer
from asr_nb.metrics import align

ROOT = Path(__file__).resolve().parents[1]

def pick_hotwords(train_text: Path, test_text: Path, n: int, min_chars: int) -> tuple[list[str], Counter, Counter]:
    "The `n` test-set words (of at least `min_chars` characters) with the lowest training counts (ties: alphabetical)."
    words = lambda p: Counter(w for l in p.read_text().splitlines() for w in l.split()[1:])
    tr, te = words(train_text), words(test_text)
    cand = sorted((w for w in te if len(w) >= min_chars), key=lambda w: (tr[w], w))
    return cand[:n], tr, te

def word_recall(refs: dict[str, str], hyps: dict[str, str], listed: set[str]) -> dict:
    "Correct / reference occurrences of the listed words and of the others (word-level Levenshtein alignment)."
    n, ok = Counter(), Counter()
    for k, ref in refs.items():
        for op in align(ref.split(), hyps.get(k, '').split()):
            if op.ref is None: continue
            g = 'listed' if op.ref in listed else 'other'
            n[g] += 1; ok[g] += op.op == 'C'
    rate = lambda g: 100.0 * ok[g] / max(n[g], 1)
    se = lambda g: 100.0 * math.sqrt(rate(g) / 100 * (1 - rate(g) / 100) / max(n[g], 1))
    return dict(listed_recall=rate('listed'), listed_n=n['listed'], other_recall=rate('other'), other_n=n['other'],
                other_recall_se=se('other'), listed_recall_se=se('listed'))

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--exp", default="/work/main/exp/tiny_demo/exp")
    ap.add_argument("--data", default="/work/main/exp/tiny_demo/data")
    ap.add_argument("--n-words", type=int, default=20)
    ap.add_argument("--min-chars", type=int, default=4)
    ap.add_argument("--weights", default="1,2,3,4")
    ap.add_argument("--methods", default="ctc_prefix_beam,rescoring")
    ap.add_argument("--beam", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "hotwords.json"))
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    data = Path(a.data)
    hot, tr, te = pick_hotwords(data / "train" / "text", data / "test" / "text", a.n_words, a.min_chars)
    utts = read_data_dir(data / "test")
    refs = {u.key: u.text for u in utts}
    hw = Path(tempfile.mkdtemp()) / "hotwords.txt"
    hw.write_text("".join(w + "\n" for w in hot))
    methods, runs, t0 = a.methods.split(","), [], time.time()
    for w in [0.0] + [float(x) for x in a.weights.split(",")]:
        ov = [f"decode.beam={a.beam}", "decode.batch_size=8"] + ([f"decode.hotwords={hw}", f"decode.hotword_weight={w}"] if w else [])
        rec = Recognizer.from_exp(a.exp, overrides=ov)
        for m, r in decode_data(rec, utts, methods).items():
            runs.append(dict(method=m, weight=w, cer=r["cer"], wer=r["wer"], rtf=r["rtf"], **word_recall(refs, r["hyps"], set(hot))))
            print(json.dumps(runs[-1]), flush=True)
    res = dict(exp=a.exp, data=str(data / "test"), utts=len(utts), beam=a.beam, hotwords=hot,
               rule=f"the {a.n_words} test words of >= {a.min_chars} characters rarest in training",
               train_counts={w: tr[w] for w in hot}, listed_count=sum(te[w] for w in hot), test_words=sum(te.values()),
               runs=runs, wall_seconds=round(time.time() - t0, 1), threads=a.threads, torch=torch.__version__,
               machine=platform.machine())
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1) + "\n")
    print(f"wrote {a.out} ({res['wall_seconds']} s)")

if __name__ == "__main__":
    main()
