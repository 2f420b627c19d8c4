"""Feature-extraction speed on ONE CPU thread, in x real time (seconds of audio per second of compute).

Usage: python bench/bench_features.py [--seconds 60] [--runs 5] [--out bench/results/features.json]

Synthesises `--seconds` of 16 kHz audio in the script (12 utterances of equal length: linear chirps 100-4000 Hz with
harmonics, amplitude-modulated, plus white noise), then times, with torch.set_num_threads(1):
  1. fbank           -- asr_nb.features.fbank (Kaldi-compatible, 80 mel, 25/10 ms, dither 1.0), per utterance;
     beside it, torchaudio.compliance.kaldi.fbank with the same settings (the reference it is tested against);
  2. speed 1.1+fbank -- speed_perturb(factor 1.1) then fbank, the training path with perturbation;
  3. read+fbank      -- load_audio from 16-bit wav files on disk, then fbank (what the data loader does).
Each figure is the median over `--runs` full passes, the cases taking turns within each pass. Writes JSON and prints one table row per measurement.
"""
import argparse
import json
import math
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from asr_nb.core import FeatureConfig
import torchaudio.compliance.kaldi as kaldi
from asr_nb.features import fbank, load_audio, speed_perturb

ROOT = Path(__file__).resolve().parent


def synth(seconds: float, n_utts: int = 12, sr: int = 16000, seed: int = 0) -> list[torch.Tensor]:
    "Chirps with harmonics, slow amplitude modulation and noise; `n_utts` pieces totalling `seconds`."
    g = torch.Generator().manual_seed(seed)
    n = int(seconds * sr / n_utts)
    t = torch.arange(n, dtype=torch.float64) / sr
    dur = n / sr
    out = []
    for i in range(n_utts):
        f0, f1 = 100 + 20 * i, 4000 - 100 * i
        phase = 2 * math.pi * (f0 * t + (f1 - f0) * t ** 2 / (2 * dur))  # linear chirp f0 -> f1
        x = sum(torch.sin(k * phase) / k for k in (1, 2, 3))
        x = x * (0.6 + 0.4 * torch.sin(2 * math.pi * 3 * t)) * 0.2 + 0.01 * torch.randn(n, generator=g, dtype=torch.float64)
        out.append(x.float())
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", default=str(ROOT / "results" / "features.json"))
    a = ap.parse_args()
    torch.set_num_threads(1)
    cfg = FeatureConfig()
    wavs = synth(a.seconds)
    audio_s = sum(w.shape[0] for w in wavs) / cfg.sample_rate
    tmp = Path(tempfile.mkdtemp())
    paths = []
    for i, w in enumerate(wavs):
        p = tmp / f"u{i}.wav"; sf.write(p, w.numpy(), cfg.sample_rate, subtype="PCM_16"); paths.append(p)
    torch.manual_seed(0)
    cases = {
        "fbank": lambda: [fbank(w, cfg, dither=1.0) for w in wavs],
        "torchaudio kaldi.fbank (reference)": lambda: [kaldi.fbank(w.unsqueeze(0) * 32768, num_mel_bins=cfg.n_mels, dither=1.0,
                                                                 energy_floor=0.0) for w in wavs],
        "speed 1.1 + fbank": lambda: [fbank(speed_perturb(w, cfg.sample_rate, 1.1), cfg, dither=1.0) for w in wavs],
        "read wav + fbank": lambda: [fbank(load_audio(p, sample_rate=cfg.sample_rate), cfg, dither=1.0) for p in paths],
    }
    rows, times = [], {name: [] for name in cases}
    for fn in cases.values(): fn()                               # warm-up (tables, caches)
    for _ in range(a.runs):                                      # round robin: each case sees the same machine
        for name, fn in cases.items():
            t = time.perf_counter(); fn(); times[name].append(time.perf_counter() - t)
    for name in cases:
        med = statistics.median(times[name])
        rows.append({"step": name, "audio_s": round(audio_s, 1), "median_s": round(med, 4),
                     "x_real_time": round(audio_s / med, 1), "threads": torch.get_num_threads(), "runs": a.runs})
        print(f"| {name} | {audio_s:.0f} s audio | {med:.3f} s | {audio_s / med:.0f}x real time | 1 thread |", flush=True)
    for p in paths: p.unlink()
    tmp.rmdir()
    res = {"title": "Feature extraction speed (one CPU thread)",
           "command": "python bench/bench_features.py",
           "rows": rows,
           "fbank_x_real_time": rows[0]["x_real_time"],
           "fbank_vs_torchaudio": round(rows[1]["median_s"] / rows[0]["median_s"], 2),
           "torch": torch.__version__, "cpu": platform.processor() or platform.machine(),
           "notes": ("80-dim Kaldi fbank (asr_nb.features.fbank; torchaudio.compliance.kaldi.fbank beside it) with dither, 12 synthetic utterances "
                     f"of {audio_s / 12:.1f} s, median of {a.runs} passes (cases in turn) after one warm-up, torch.set_num_threads(1). "
                     "x real time = seconds of audio processed per second of compute.")}
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=2) + "\n")


if __name__ == "__main__":
    main()
