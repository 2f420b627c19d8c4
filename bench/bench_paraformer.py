"""Paraformer's one-pass decoding against joint CTC/attention beam search (beam 10), same encoder, batch 1 and batched.

The two experiments are trained models with the same Conformer encoder (conf/paraformer_tiny.yaml and conf/tiny.yaml:
4 x d144 blocks, subsampling 4, 30 char units), so output lengths are real ones. Both are decoded on the same data
(default: the built-in corpus's test voices) through `asr_nb.decode.decode_data`, the one decoding path; RTF is the
wall time a user waits (reading audio, fbank, encoder, search) / audio seconds. The target of issue 13: Paraformer's
RTF <= 0.3 x joint's, batched and at batch 1. CER is reported beside it. The joint model's CTC greedy search (the same
encoder and front end, then an argmax) is timed too: no search over that encoder can be faster, so its ratio to joint
(`floor_ratio`) is the lowest any one-pass model with this encoder can reach. With `--repeats N` the three methods are
alternated N times and each RTF is the median.

    python bench/bench_paraformer.py --para-exp /work/scratch/para_tiny/exp --joint-exp /work/main/exp/tiny_demo/exp \
        --data /work/main/exp/tiny_demo/data/test            # -> bench/results/paraformer_rtf.json
"""
from __future__ import annotations
import argparse, json, platform, time
from dataclasses import replace
from pathlib import Path
import torch
from asr_nb.data import load_utterances
from asr_nb.decode import decode_data
from asr_nb.export import Recognizer

ROOT = Path(__file__).resolve().parents[1]

def run(rec: Recognizer, utts, method: str, batch_size: int, beam: int) -> dict:
    rec.decode_cfg = replace(rec.decode_cfg, beam=beam)
    r = decode_data(rec, utts, method, batch_size=batch_size)[method]
    return dict(method=method, batch_size=batch_size, rtf=round(r['rtf'], 5), wall_s=round(r['wall_seconds'], 2),
                audio_s=r['audio_seconds'], cer=None if r['cer'] is None else round(r['cer'], 2), n=r['n'])

def median_run(runs: list[dict]) -> dict:
    "The run with the median RTF, with every run's RTF beside it."
    m = sorted(runs, key=lambda r: r['rtf'])[len(runs) // 2]
    return dict(m, rtf_runs=[r['rtf'] for r in runs]) if len(runs) > 1 else m

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--para-exp", default="exp/paraformer_tiny", help="a trained Paraformer experiment (conf/paraformer_tiny.yaml)")
    ap.add_argument("--joint-exp", default="exp/tiny_demo/exp", help="a trained ctc_attention experiment with the same encoder (asr_nb_demo)")
    ap.add_argument("--data", default="exp/tiny_demo/data/test", help="a data dir or jsonl manifest")
    ap.add_argument("--utts", type=int, default=0, help="first N utterances (0 = all)")
    ap.add_argument("--beam", type=int, default=10)
    ap.add_argument("--batch-sizes", default="1,8")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (0 = torch's default)")
    ap.add_argument("--repeats", type=int, default=1, help="alternate the methods this many times; report median RTFs")
    ap.add_argument("--out", default=str(ROOT/"bench"/"results"/"paraformer_rtf.json"))
    a = ap.parse_args(argv)
    missing = [p for p in (a.para_exp, a.joint_exp, a.data) if not Path(p).exists()]
    if missing:                                      # run_all.py runs every bench: this one needs two trained models
        print(f"bench_paraformer: skipped, not found: {', '.join(missing)} (train conf/paraformer_tiny.yaml and run asr_nb_demo first)")
        return None
    if a.threads: torch.set_num_threads(a.threads)
    utts = load_utterances(a.data)[:a.utts or None]
    para, joint = Recognizer.from_exp(a.para_exp), Recognizer.from_exp(a.joint_exp)
    rows = []
    for bs in [int(b) for b in a.batch_sizes.split(",")]:
        runs = {"paraformer": [], "joint": [], "ctc_greedy": []}
        for rec, m in ((para, "paraformer"), (joint, "joint"), (joint, "ctc_greedy")): run(rec, utts[:bs], m, bs, a.beam)   # warm-up, untimed
        for _ in range(max(1, a.repeats)):
            runs["paraformer"].append(run(para, utts, "paraformer", bs, a.beam)); runs["joint"].append(run(joint, utts, "joint", bs, a.beam))
            runs["ctc_greedy"].append(run(joint, utts, "ctc_greedy", bs, a.beam))
        p, j, g = (median_run(runs[m]) for m in ("paraformer", "joint", "ctc_greedy"))
        g['note'] = "the joint model's CTC greedy: the same encoder with the cheapest search"
        rows += [p, j, g, dict(batch_size=bs, rtf_ratio=round(p['rtf'] / j['rtf'], 4), target=0.3, met=p['rtf'] <= 0.3 * j['rtf'],
                               floor_ratio=round(g['rtf'] / j['rtf'], 4))]
        print(json.dumps(rows[-4:]))
    res = dict(title="Paraformer one pass vs joint CTC/attention beam search (same encoder)",
               command="python bench/bench_paraformer.py " + " ".join(argv if argv is not None else __import__('sys').argv[1:]),
               bench="paraformer_rtf", para_exp=a.para_exp, joint_exp=a.joint_exp, data=a.data, utts=len(utts), beam=a.beam,
               threads=a.threads, machine=dict(cpu=platform.processor() or platform.machine(), torch=torch.__version__),
               date=time.strftime("%Y-%m-%d %H:%M"), rows=rows)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1) + "\n")
    return res

if __name__ == "__main__": main()
