"""Paraformer's one-pass decoding against joint CTC/attention beam search (beam 10), same encoder, batch 1 and batched.

The two experiments are trained models with the same Conformer encoder (conf/paraformer_tiny.yaml and conf/tiny.yaml:
4 x d144 blocks, subsampling 4, 30 char units), so output lengths are real ones. Both are decoded on the same data
(default: the built-in corpus's test voices) through `asr_nb.decode.decode_data`, the one decoding path; RTF is the
wall time a user waits (reading audio, fbank, encoder, search) / audio seconds. The target of issue 13: Paraformer's
RTF <= 0.3 x joint's, batched and at batch 1. CER is reported beside it.

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

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--para-exp", default="exp/paraformer_tiny", help="a trained Paraformer experiment (conf/paraformer_tiny.yaml)")
    ap.add_argument("--joint-exp", default="exp/tiny_demo/exp", help="a trained ctc_attention experiment with the same encoder (asr_nb_demo)")
    ap.add_argument("--data", default="exp/tiny_demo/data/test", help="a data dir or jsonl manifest")
    ap.add_argument("--utts", type=int, default=0, help="first N utterances (0 = all)")
    ap.add_argument("--beam", type=int, default=10)
    ap.add_argument("--batch-sizes", default="1,8")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (0 = torch's default)")
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
        p, j = run(para, utts, "paraformer", bs, a.beam), run(joint, utts, "joint", bs, a.beam)
        rows += [p, j, dict(batch_size=bs, rtf_ratio=round(p['rtf'] / j['rtf'], 4), target=0.3, met=p['rtf'] <= 0.3 * j['rtf'])]
        print(json.dumps(rows[-3:]))
    res = dict(title="Paraformer one pass vs joint CTC/attention beam search (same encoder)",
               command="python bench/bench_paraformer.py " + " ".join(argv if argv is not None else __import__('sys').argv[1:]),
               bench="paraformer_rtf", para_exp=a.para_exp, joint_exp=a.joint_exp, data=a.data, utts=len(utts), beam=a.beam,
               threads=a.threads, machine=dict(cpu=platform.processor() or platform.machine(), torch=torch.__version__),
               date=time.strftime("%Y-%m-%d %H:%M"), rows=rows)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1) + "\n")
    return res

if __name__ == "__main__": main()
