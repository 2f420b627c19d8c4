"""Streaming recognition (issue 18) of a U2-style model (conf/tiny_streaming.yaml): CER against chunk size (full
context = 0 included, and offline decoding for reference), real-time factor on one thread at chunk 16, first-partial
latency, final latency after the end of speech, and memory per live stream from its cache sizes.

usage: python bench/bench_streaming.py --exp EXP_DIR --data TEST_DATA_DIR [--chunks 0,4,8,16,25] [--method rescoring]
       [--out bench/results/streaming.json] [--plot bench/results/streaming_cer_vs_chunk.png] [--limit N]

Definitions (audio fed in 100 ms pieces as if live; a piece is delivered when its last sample has arrived):
- rtf: compute seconds (wall) of all `accept`/`finish` calls / audio seconds, one PyTorch thread; rtf_cpu: the same in
  process CPU seconds (what a busy shared machine cannot inflate);
- first_partial_latency_s: audio time at the end of the piece whose `accept` first returned a non-empty partial, plus
  that call's compute time (the corpus' utterances start with speech within a few tens of ms);
- final_latency_s: compute time from the delivery of the last piece to the final (attention-rescored) text: the last
  `accept` and `finish` (which computes the last chunk and rescores);
- cache_bytes: the attention + conv caches of one stream at the end of an utterance (left context -1 = all frames:
  it grows with the utterance; with num_left_chunks n it is fixed at n * chunk frames), and stream_bytes adds the
  CTC posteriors and encoder frames a stream keeps for the final rescoring.
"""
import argparse, json, platform, time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from asr_nb.data import read_data_dir
from asr_nb.decode import decode_data
from asr_nb.export import Recognizer
from asr_nb.metrics import cer
from asr_nb.streaming import StreamingEngine


def time_streams(rec, waves, sr, chunk, left, method, piece_s=0.1):
    "Per-utterance timings of live streaming at one chunk size: rtf, latencies, cache sizes, final texts."
    n, compute, cpu, audio, first, final, cache, held, texts = int(piece_s * sr), 0.0, 0.0, 0.0, [], [], [], [], []
    c0 = time.process_time()
    for w in waves:
        st, got_first = rec.stream(chunk_size=chunk, num_left_chunks=left, method=method), None
        pieces = [w[s:s + n] for s in range(0, len(w), n)]
        for i, p in enumerate(pieces):
            t = time.perf_counter(); txt = st.accept(p); dt = time.perf_counter() - t
            compute += dt
            if got_first is None and txt.strip(): got_first = min((i + 1) * n, len(w)) / sr + dt
            last_dt = dt
        t = time.perf_counter(); texts.append(st.finish()); dt = time.perf_counter() - t
        compute += dt; audio += len(w) / sr
        final.append(last_dt + dt)
        if got_first is not None: first.append(got_first)
        if chunk > 0: cache.append(st.engine.cache_bytes())
        held.append(st.cache_bytes())
    cpu = time.process_time() - c0
    pct = lambda xs, q: round(float(np.percentile(xs, q)), 4) if xs else None
    return dict(chunk_size=chunk, num_left_chunks=left, rtf=round(compute / audio, 4), rtf_cpu=round(cpu / audio, 4), audio_s=round(audio, 2),
                first_partial_latency_s=dict(mean=round(float(np.mean(first)), 4) if first else None, p90=pct(first, 90),
                                             utts_with_partial=len(first)),
                final_latency_s=dict(mean=round(float(np.mean(final)), 4), p90=pct(final, 90), max=round(max(final), 4)),
                cache_bytes=dict(mean=int(np.mean(cache)), max=int(max(cache))) if cache else None,
                stream_bytes=dict(mean=int(np.mean(held)), max=int(max(held)))), texts


def per_frame_cache_bytes(rec):
    "Bytes the attention cache grows by per encoder frame, and the fixed conv cache (fp32)."
    enc = rec.model.encoder
    blk = enc.encoders[0]
    att = len(enc.encoders) * blk.self_attn.h * 2 * blk.self_attn.d_k * 4
    cnn = len(enc.encoders) * enc.output_size * (blk.conv_module.lorder if blk.conv_module is not None else 0) * 4
    return att, cnn


def plot(rows, offline_cer, path):
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    xs = [r['chunk_size'] for r in rows if r['chunk_size'] > 0]
    ys = [r['cer_pct'] for r in rows if r['chunk_size'] > 0]
    full = [r['cer_pct'] for r in rows if r['chunk_size'] == 0]
    fig, ax = plt.subplots(figsize=(4.5, 3))
    ax.plot(xs, ys, 'o-', label='streaming (chunk)')
    if full: ax.axhline(full[0], color='g', ls='--', label='streaming, full context')
    ax.axhline(offline_cer, color='gray', ls=':', label='offline')
    ax.set_xlabel('chunk size (encoder frames, 40 ms each)'); ax.set_ylabel('CER %'); ax.legend(fontsize=7)
    ax.set_title('CER against chunk size', fontsize=9)
    plt.tight_layout(); Path(path).parent.mkdir(parents=True, exist_ok=True); plt.savefig(path, dpi=70); plt.close()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--exp', required=True); p.add_argument('--data', required=True)
    p.add_argument('--chunks', default='0,4,8,16,25', help='chunk sizes (0 = full context)')
    p.add_argument('--num-left-chunks', type=int, default=-1)
    p.add_argument('--method', default='rescoring')
    p.add_argument('--limit', type=int, default=0, help='first N utterances only (0: all)')
    p.add_argument('--out', default=str(Path(__file__).parent/'results'/'streaming.json'))
    p.add_argument('--plot', default=str(Path(__file__).parent/'results'/'streaming_cer_vs_chunk.png'))
    a = p.parse_args()
    torch.set_num_threads(1)
    utts = read_data_dir(a.data)
    utts = utts[:a.limit] if a.limit else utts
    refs = [u.text for u in utts]
    reads = [sf.read(u.audio, dtype='float32') for u in utts]
    waves, sr = [w for w, _ in reads], reads[0][1]
    rec = Recognizer.from_exp(a.exp)
    t = time.perf_counter(); off = decode_data(rec, utts, a.method)[a.method]; off_wall = time.perf_counter() - t
    rows = []
    for c in [int(x) for x in a.chunks.split(',')]:
        r = decode_data(StreamingEngine(rec, c, a.num_left_chunks), utts, a.method)[a.method]
        rows.append(dict(chunk_size=c, cer_pct=round(r['cer'], 2), wer_pct=round(r['wer'], 2), rtf=round(r['rtf'], 4),
                         ratio_to_full_context=None))
    full = [r['cer_pct'] for r in rows if r['chunk_size'] == 0]
    for r in rows: r['ratio_to_full_context'] = round(r['cer_pct'] / full[0], 3) if full and full[0] > 0 else None
    live, texts = time_streams(rec, waves, sr, 16, a.num_left_chunks, a.method)
    att_pf, cnn_b = per_frame_cache_bytes(rec)
    res = dict(title="Streaming recognition (Recognizer.stream) of the U2-style tiny model (conf/tiny_streaming.yaml)",
               command=f'.venv/bin/python bench/bench_streaming.py --exp {a.exp} --data {a.data} --chunks {a.chunks} --method {a.method}',
               exp=str(a.exp), data=str(a.data), utts=len(utts), method=a.method, machine=platform.processor() or platform.machine(),
               threads=1, offline=dict(cer_pct=round(off['cer'], 2), wer_pct=round(off['wer'], 2), rtf=round(off['rtf'], 4)),
               cer_vs_chunk=rows, chunk16_live=live,
               cache_model=dict(att_bytes_per_frame=att_pf, conv_cache_bytes=cnn_b,
                                att_bytes_at_16x4_left_chunks=att_pf * 64,
                                note='att cache = att_bytes_per_frame * cached encoder frames (40 ms each at 4x)'),
               targets=dict(rtf_le=0.1, cer_ratio_chunk16_le=1.15))
    c16 = [r for r in rows if r['chunk_size'] == 16]
    res['targets']['met'] = dict(rtf=live['rtf'] <= 0.1, rtf_cpu=live['rtf_cpu'] <= 0.1,
                                 cer_ratio=(c16[0]['ratio_to_full_context'] or 0) <= 1.15 if c16 and c16[0]['ratio_to_full_context'] else None)
    Path(a.out).parent.mkdir(parents=True, exist_ok=True)
    Path(a.out).write_text(json.dumps(res, indent=1) + '\n')
    if a.plot: plot(rows, off['cer'], a.plot)
    print(json.dumps(res, indent=1))


if __name__ == '__main__':
    main()
