"""Word n-gram LM decoding (issue #12): WER/CER without and with the LM at tuned alpha/beta, search speed, counting.

1. A word 3-gram (interpolated modified Kneser-Ney, `asr_nb.lm.build_arpa`) from the train transcripts of a trained
   experiment's corpus (default: the tiny demo, /work/main/exp/tiny_demo: a Conformer with a CTC head).
2. The encoder runs once over dev and test (`asr_nb.lm.ctc_posteriors`); alpha/beta are grid-searched on dev with the
   C++ backend (`asr_nb.lm.tune_lm`).
3. Test: CTC greedy, CTC prefix beam (no LM), the readable word-LM search (`ctc_beam_lm`) and the C++ one
   (`ctc_beam_lm_fast`) at beam 300; WER/CER and the search's real-time factor on one thread (search seconds /
   audio seconds; the encoder is not counted: it is the same for every search).
4. The pure-Python prefix beam search (no LM) on a 4 s worst-case posteriorgram (100 frames x 300 units, flat:
   nothing prunes) at beams 50 and 100.
5. `--count N`: count n-grams of N synthetic sentences (Zipf words) and estimate the ARPA; peak RSS and time.

    python bench/bench_lm_decode.py                       # -> bench/results/lm_decode.json
    python bench/bench_lm_decode.py --count 1000000 --skip-decode --out bench/results/lm_count.json
"""
from __future__ import annotations
import argparse, itertools, json, platform, random, resource, tempfile, time
from pathlib import Path
import torch

ROOT = Path(__file__).resolve().parents[1]


def search_texts(posts, fn, tok) -> tuple[dict, float]:
    "1-best text per utterance and the search's CPU seconds."
    out, t0 = {}, time.process_time()
    for k, lp in posts.items():
        hs = fn(lp[None], torch.tensor([lp.size(0)]))[0]
        out[k] = ' '.join(tok.decode(hs[0].tokens).split()) if hs else ''
    return out, time.process_time() - t0


def decode_table(a, work: Path) -> dict:
    from asr_nb.data import decode_utterances
    from asr_nb.decode import (ctc_beam_search_fast, ctc_beam_search_lm, ctc_prefix_beam_search, greedy_hypotheses,
                               score_hyps)
    from asr_nb.export import Recognizer
    from asr_nb.lm import build_arpa, ctc_posteriors, format_tune_table, open_word_lm, tune_lm
    data = Path(a.data)
    train = [l.split()[1:] for l in (data/'train'/'text').read_text().splitlines() if l.split()[1:]]
    t0 = time.perf_counter()
    arpa = build_arpa(train, work/'word3.arpa', order=3)
    build_s = time.perf_counter() - t0
    rec = Recognizer.from_exp(a.exp)
    tok = rec.tokenizer
    wl = open_word_lm(arpa, tok.units)
    sets = {s: decode_utterances(data/s) for s in ('dev', 'test')}
    posts = {s: ctc_posteriors(rec, u) for s, u in sets.items()}
    refs = {s: {u.key: u.text for u in us} for s, us in sets.items()}
    audio_s = {s: sum(u.num_frames or 0 for u in us) / 100 for s, us in sets.items()}
    if not all(audio_s.values()):   # no utt2num_frames: read the headers
        import soundfile as sf
        audio_s = {s: sum(sf.info(u.audio).duration for u in us) for s, us in sets.items()}
    t0 = time.perf_counter()
    tuned = tune_lm(posts['dev'], refs['dev'], wl, tok, a.alphas, a.betas, beam=a.tune_beam, fast=True)
    tune_s = time.perf_counter() - t0
    print(format_tune_table(tuned))
    al, be = tuned['best']['alpha'], tuned['best']['beta']
    methods = {
        'ctc_greedy': lambda lp, L: greedy_hypotheses(lp, L),
        f'ctc_prefix_beam (beam {a.py_beam}, no LM)': lambda lp, L: ctc_prefix_beam_search(lp, L, beam=a.py_beam, nbest=1),
        f'ctc_beam_lm (Python, beam {a.py_beam})': lambda lp, L: ctc_beam_search_lm(lp, L, wl, beam=a.py_beam, alpha=al, beta=be,
                                                                              cutoff_prob=0.99, cutoff_top_n=40, nbest=1),
        f'ctc_beam_lm_fast (beam {a.fast_beam}, no LM)': lambda lp, L: ctc_beam_search_fast(lp, L, None, tok.units, beam=a.fast_beam),
        f'ctc_beam_lm_fast (beam {a.fast_beam})': lambda lp, L: ctc_beam_search_fast(lp, L, wl, beam=a.fast_beam, alpha=al, beta=be),
    }
    rows = []
    for name, fn in methods.items():
        hyps, cpu = search_texts(posts['test'], fn, tok)
        r = score_hyps(refs['test'], hyps)
        rows.append(dict(method=name, wer=r['wer'], cer=r['cer'], search_cpu_s=round(cpu, 3),
                         search_rtf=cpu / audio_s['test']))
        print(f"{name:40s} WER {r['wer']:6.2f}  CER {r['cer']:6.2f}  search RTF {cpu / audio_s['test']:.4f}")
    frames = [p.size(0) for p in posts['test'].values()]
    return dict(exp=str(a.exp), data=str(data), arpa_build_s=round(build_s, 2), train_sentences=len(train),
                lm_words=len(wl.model.words()), dev_utts=len(posts['dev']), test_utts=len(posts['test']),
                test_audio_s=round(audio_s['test'], 1), test_frames_mean=sum(frames) / len(frames),
                vocab_units=tok.vocab_size, tune=dict(rows=tuned['rows'], best=tuned['best'], seconds=round(tune_s, 1),
                                                      beam=a.tune_beam), test=rows)


def worst_case_prefix(beams) -> list[dict]:
    "The pure-Python prefix search on flat posteriors: 100 frames (4 s at 25 frames/s) x 300 units."
    from asr_nb.decode import ctc_prefix_beam_search
    torch.manual_seed(0)
    lp = torch.randn(1, 100, 300).log_softmax(-1)
    out = []
    for b in beams:
        t0 = time.process_time(); ctc_prefix_beam_search(lp, torch.tensor([100]), beam=b)
        out.append(dict(beam=b, cpu_s=round(time.process_time() - t0, 2)))
        print(f"worst-case 4 s posteriorgram, prefix beam {b}: {out[-1]['cpu_s']} s")
    return out


def count_bench(n: int, work: Path) -> dict:
    "Stream n synthetic sentences (Zipf over 20k words, 5-25 words) through build_arpa; peak RSS and seconds."
    from asr_nb.lm import build_arpa
    words = [f"w{i}" for i in range(20000)]
    cum = list(itertools.accumulate(1 / (i + 1) for i in range(len(words))))
    def sents():
        r = random.Random(0)
        for _ in range(n): yield r.choices(words, cum_weights=cum, k=r.randint(5, 25))
    t0 = time.perf_counter()
    p = build_arpa(sents(), work/'count.arpa', order=3)
    secs = time.perf_counter() - t0
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20   # KiB -> GiB
    head = p.read_text(encoding='utf-8', errors='replace')[:200].split('\n')
    res = dict(sentences=n, order=3, seconds=round(secs, 1), peak_rss_gib=round(rss, 2), arpa_mib=round(p.stat().st_size / 2**20, 1),
               counts=[l for l in head if l.startswith('ngram ')])
    print(res)
    return res


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--exp', default='/work/main/exp/tiny_demo/exp')
    ap.add_argument('--data', default='/work/main/exp/tiny_demo/data', help='holds train/, dev/, test/ data dirs')
    ap.add_argument('--alphas', default='0,0.25,0.5,1,1.5,2,3'); ap.add_argument('--betas', default='-1,0,1,2,3,4')
    ap.add_argument('--tune-beam', type=int, default=100); ap.add_argument('--fast-beam', type=int, default=300)
    ap.add_argument('--py-beam', type=int, default=20)
    ap.add_argument('--prefix-beams', default='50,100'); ap.add_argument('--skip-decode', action='store_true')
    ap.add_argument('--count', type=int, default=0, help='also count this many synthetic sentences')
    ap.add_argument('--out', default=str(ROOT/'bench'/'results'/'lm_decode.json'))
    a = ap.parse_args(argv)
    a.alphas = [float(x) for x in a.alphas.split(',')]; a.betas = [float(x) for x in a.betas.split(',')]
    torch.set_num_threads(1)
    res = dict(machine=platform.processor() or platform.machine(), threads=1, torch=torch.__version__)
    with tempfile.TemporaryDirectory() as d:
        if not a.skip_decode:
            res['decode'] = decode_table(a, Path(d))
            res['worst_case_prefix_search'] = worst_case_prefix([int(b) for b in a.prefix_beams.split(',')])
        if a.count: res['count'] = count_bench(a.count, Path(d))
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1) + '\n')
    print(f"-> {a.out}")


if __name__ == '__main__':
    main()
