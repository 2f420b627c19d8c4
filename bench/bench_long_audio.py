"""Long audio: peak memory and wall time of `Recognizer.transcribe` on 10 and 60 minutes of speech-like audio.

Audio: a pool of espeak-ng utterances (`asr_nb.data.synth_wave`) concatenated in random order with pauses of 0.1-1.5 s
over a faint noise floor (pauses under 0.3 s are bridged by the VAD, longer ones cut), written as a 16 kHz PCM wav file
and read by the recognizer like any file. Model: random weights (memory and time do not depend on the weights, except
through the length of the output), `--model micro` (default: the 15_export test model, d_model 32, 2 blocks; fast enough
for an hour of audio on a busy 2-core machine) or `--model tiny` (the conf/tiny.yaml Conformer, 3.3 M parameters). Each measurement runs in a
fresh process, so that `ru_maxrss` is the peak of that transcription alone (imports and model included; `base_mb` is
the peak before transcribing). Before segmentation (issue #10) 10 minutes took 5.9 GB and 60 minutes failed asking for
one 129.6 GB allocation.

    python bench/bench_long_audio.py                       # 10 and 60 min, ctc_greedy -> bench/results/long_audio.json
    python bench/bench_long_audio.py --minutes 2 --method joint --out /tmp/joint.json
"""
from __future__ import annotations
import argparse, json, os, platform, resource, subprocess, sys, tempfile, time
from pathlib import Path
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SENTENCES = ["the quick brown fox jumps over the lazy dog", "speech recognition turns sound into text",
             "long recordings are cut at pauses", "a window with overlap covers speech without pauses",
             "memory must not grow with the length of the file", "seven green apples fell from the old tree",
             "she sells sea shells by the sea shore", "please call stella and ask her to bring these things"]

def make_audio(path: Path, minutes: float, sr: int = 16000, seed: int = 0) -> dict:
    "Write `minutes` of espeak-ng sentences with random pauses to `path` (16-bit wav); return a description."
    import soundfile as sf
    from asr_nb.data import SynthSpec, synth_wave
    rng = np.random.default_rng(seed)
    pool = [synth_wave(SynthSpec(f"s{i}", s, s, voice, 170, 50, -6.0, 30.0, (seed, i)), sr)
            for i, (s, voice) in enumerate((s, v) for s in SENTENCES for v in ('en-us', 'en-gb'))]
    n_total, n, k = int(minutes * 60 * sr), 0, 0
    with sf.SoundFile(str(path), 'w', sr, 1, 'PCM_16') as f:          # streamed: the parent never holds the whole signal
        while n < n_total:
            pause = (3e-4 * rng.standard_normal(int(rng.uniform(0.1, 1.5) * sr))).astype(np.float32)
            x = np.concatenate([pool[rng.integers(len(pool))], pause])[: n_total - n]
            f.write(x); n += len(x); k += 1
    return dict(seconds=n / sr, utterances=k, pool=len(pool))

def child(wav: str, method: str, max_segment_s: float, threads: int, size: str) -> dict:
    "Build the random tiny model, transcribe `wav` once; peak RSS and wall time of this process."
    import torch
    from dataclasses import replace
    from asr_nb.core import load_config
    from asr_nb.model import build_model
    from asr_nb.tokenizer import CharTokenizer
    from asr_nb.export import Recognizer
    torch.set_num_threads(threads); torch.manual_seed(0)
    cfg = load_config(ROOT/'conf'/'tiny.yaml')
    if size == 'micro':
        m = cfg.model
        cfg = replace(cfg, model=replace(m, encoder=replace(m.encoder, d_model=32, attention_heads=2, linear_units=64, num_blocks=2,
                                                            cnn_kernel=5), decoder=replace(m.decoder, num_blocks=1, linear_units=64)))
    tok = CharTokenizer.build(SENTENCES)
    model = build_model(cfg, tok.vocab_size).eval()
    rec = Recognizer(tok, cfg.features, replace(cfg.decode, method=method, batch_size=1), subsampling=cfg.model.encoder.subsampling,
                     model=model, max_segment_s=max_segment_s)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    text = rec.transcribe(wav)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    n_params = sum(p.numel() for p in model.parameters())
    return dict(peak_rss_mb=round(peak), base_mb=round(base), wall_s=round(wall, 1), chars=len(text), params=n_params)

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--minutes', type=float, nargs='+', default=[10, 60])
    p.add_argument('--method', default='ctc_greedy')
    p.add_argument('--max-segment-s', type=float, default=30.0)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--model', choices=['micro', 'tiny'], default='micro', help='random-init model size (see above)')
    p.add_argument('--out', default=str(ROOT/'bench'/'results'/'long_audio.json'))
    p.add_argument('--child', nargs=1, metavar='WAV', help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.child:
        print(json.dumps(child(a.child[0], a.method, a.max_segment_s, a.threads, a.model))); return 0
    from asr_nb.core import atomic_write_text
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for m in a.minutes:
            wav = Path(tmp)/f"long_{m:g}min.wav"
            desc = make_audio(wav, m)
            cmd = [sys.executable, __file__, '--child', str(wav), '--method', a.method, '--max-segment-s', str(a.max_segment_s),
                   '--threads', str(a.threads), '--model', a.model]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode: sys.exit(f"bench_long_audio: {m:g} min failed (exit {r.returncode}): {r.stderr.strip()[-3000:]}")
            res = json.loads(r.stdout.strip().splitlines()[-1])
            res.update(model=a.model, load_avg=round(os.getloadavg()[0], 1), minutes=m, audio_s=round(desc['seconds'], 1), rtf=round(res['wall_s'] / desc['seconds'], 4), **desc)
            print(json.dumps(res), flush=True); runs.append(res)
    out = dict(title='Long audio: peak memory and wall time of Recognizer.transcribe (segmented)',
               command='python bench/bench_long_audio.py ' + ' '.join(argv if argv is not None else sys.argv[1:]),
               method=a.method, max_segment_s=a.max_segment_s, threads=a.threads, model=f"{a.model} (random init)",
               machine=platform.processor() or platform.machine(), rows=runs,
               notes='peak_rss_mb: ru_maxrss of a fresh process (imports and model included); base_mb: its peak before '
                     'transcribing. Before segmentation (issue #10): 10 min took 5.9 GB, 60 min asked for one 129.6 GB allocation.')
    atomic_write_text(a.out, json.dumps(out, indent=1) + '\n')
    return 0

if __name__ == '__main__': sys.exit(main())
