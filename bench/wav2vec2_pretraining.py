"""What pre-training buys, at a tiny scale (issue 14): wav2vec 2.0 pre-trained on all the built-in corpus' training audio
(transcripts unused), then CTC fine-tuned on a small labelled subset, against the same network trained from scratch on
that subset with the same number of updates. Test-set CER/WER by CTC greedy search.

    .venv/bin/python bench/wav2vec2_pretraining.py --data exp/tiny_demo/data --work /tmp/w2v_exp   # -> bench/results/wav2vec2_pretraining.json
"""
from __future__ import annotations
import argparse, json, os, platform, time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="a corpus dir with train/ dev/ test/ data dirs (asr_nb_synth)")
    p.add_argument("--work", required=True); p.add_argument("--labelled", type=int, default=100)
    p.add_argument("--pt-steps", type=int, default=300); p.add_argument("--ft-steps", type=int, default=300)
    p.add_argument("--out", default=str(ROOT/"bench"/"results"/"wav2vec2_pretraining.json"))
    a = p.parse_args()
    from asr_nb.cli import decode_main, train_main
    from asr_nb.data import load_utterances, write_data_dir
    from asr_nb.wav2vec2 import pretrain_main
    data, work = Path(a.data), Path(a.work); work.mkdir(parents=True, exist_ok=True)
    t0, times = time.time(), {}
    pt = work/"pretrain"
    if not (pt/"pretrained.pt").exists():
        assert pretrain_main(["--config", str(ROOT/"conf"/"wav2vec2_pretrain_tiny.yaml"), "--data", str(data/"train"), "--exp", str(pt),
                              f"train.max_steps={a.pt_steps}", f"optim.total_steps={a.pt_steps}"]) == 0
    fin = [l for l in (pt/"pretrain.log").read_text().splitlines() if "finished: " in l]
    times["pretrain"] = json.loads(fin[-1].split("finished: ", 1)[1]) if fin else {}   # last losses, perplexities, elapsed_s
    sub = work/f"train{a.labelled}"
    write_data_dir(load_utterances(data/"train")[:a.labelled], sub)
    ft = [f"train.max_steps={a.ft_steps}", f"optim.total_steps={a.ft_steps}", f"train.valid_interval={a.ft_steps // 3}",
          f"train.save_interval={a.ft_steps // 3}"]
    runs = {"pretrained": [f"model.wav2vec2.pretrained={pt/'pretrained.pt'}"],
            "scratch": ["model.wav2vec2.freeze_feature_encoder=false", "model.wav2vec2.freeze_finetune_updates=0"]}
    res = {}
    for name, extra in runs.items():
        t1, exp, dec = time.time(), work/name, work/f"{name}_dec"
        if (dec/"result.json").exists() and (exp/"train.log").exists():   # done by an earlier invocation
            r = json.loads((dec/"result.json").read_text())
            res[name] = dict(cer=r.get("cer"), wer=r.get("wer"), n=r.get("n"), overrides=extra, train_s=None); continue
        assert train_main(["--config", str(ROOT/"conf"/"wav2vec2_tiny.yaml"), "--train", str(sub), "--valid", str(data/"dev"),
                           "--exp", str(exp), *ft, *extra]) == 0
        assert decode_main(["--exp", str(exp), "--data", str(data/"test"), "--method", "ctc_greedy", "--out", str(dec)]) == 0
        r = json.loads((dec/"result.json").read_text())                 # one method: its files are written in --out itself
        res[name] = dict(cer=r.get("cer"), wer=r.get("wer"), n=r.get("n"), overrides=extra, train_s=round(time.time() - t1, 1))
    out = dict(experiment="wav2vec 2.0: pre-trained then fine-tuned vs from scratch, same fine-tuning budget",
               corpus=str(data), labelled_utterances=a.labelled, pretrain_utterances=len(load_utterances(data/"train")),
               pretrain_steps=a.pt_steps, finetune_steps=a.ft_steps, configs=["conf/wav2vec2_pretrain_tiny.yaml", "conf/wav2vec2_tiny.yaml"],
               results=res, **times, machine=platform.processor() or platform.machine(), cpus=os.cpu_count(),
               command="python bench/wav2vec2_pretraining.py " + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(a).items() if k != "out"))
    Path(a.out).write_text(json.dumps(out, indent=1) + "\n"); print(json.dumps(out, indent=1))


if __name__ == "__main__": main()
