#| export
from __future__ import annotations
import contextlib, io, json, math, os, random, shutil, subprocess, tarfile, time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np
import soundfile as sf
import torch
from torch.utils.data import DataLoader, IterableDataset

from asr_nb.core import DataConfig, ExpConfig, UserError, activation_bytes_per_frame, atomic_write, atomic_write_text, get_logger
from asr_nb.data import DataError, Utterance, FRAME_SHIFT_S, fill_num_frames, load_utterances
#### CELL
#| export
SHARD_FORMAT = "asr_nb.shards"   # `format` of index.json
SHARD_VERSION = 1
INDEX_NAME = "index.json"        # written last: a shard dir without it is incomplete
TEXT_NAME = "text"               # Kaldi `key transcript` of every packed utterance (tokenizer training)
AUDIO_EXTS = ("wav", "flac", "ogg", "mp3", "sph")  # member suffixes read as audio

log = get_logger("asr_nb.shards")

class ShardError(DataError):
    "A shard source that cannot be used (no index, a missing shard, a `pipe:` not allowed); names the file."

def shard_name(i: int) -> str: return f"shard-{i:06d}.tar"

def _add_member(tf: tarfile.TarFile, name: str, data: bytes):
    "Append one member with fixed metadata (mtime 0, mode 644), so equal input gives byte-equal shards."
    ti = tarfile.TarInfo(name); ti.size, ti.mtime, ti.mode = len(data), 0, 0o644
    tf.addfile(ti, io.BytesIO(data))
#### CELL
#| export
class ShardWriter:
    "Pack utterances into `shard-NNNNNN.tar` files of `shard_size` utterances each; `close()` writes text, then index.json."
    def __init__(self, out: str | os.PathLike, # the shard dir (created)
                 shard_size: int = 1000,        # utterances per shard
                 source: str = ""):             # what was packed, for the index
        if shard_size < 1: raise ValueError(f"shard_size must be >= 1, got {shard_size}")
        self.out, self.shard_size, self.source = Path(out), shard_size, source
        self.out.mkdir(parents=True, exist_ok=True)
        (self.out/INDEX_NAME).unlink(missing_ok=True)    # an old index would describe shards being replaced
        self.shards, self.texts, self._cur, self._keys = [], [], [], set()

    def add(self, key: str, audio: bytes, ext: str, text: str, num_frames: int, speaker: str | None = None):
        "Queue one utterance: `audio` is a whole encoded file (suffix `ext`), `num_frames` its length in 10 ms frames."
        if key in self._keys: raise DataError(f"{self.out}: duplicate utterance id '{key}'")
        if ext not in AUDIO_EXTS: raise ValueError(f"audio suffix must be one of {AUDIO_EXTS}, got {ext!r}")
        if "/" in key or not key: raise DataError(f"{self.out}: utterance id {key!r} cannot be a tar member name")
        meta = dict(num_frames=int(num_frames), duration=round(num_frames * FRAME_SHIFT_S, 3), speaker=speaker)
        self._keys.add(key); self._cur.append((key, audio, ext, text, meta))
        if len(self._cur) >= self.shard_size: self._flush()

    def _flush(self):
        "Write the queued utterances as the next shard: temp file + rename (`core.atomic_write`)."
        if not self._cur: return
        name = shard_name(len(self.shards))
        with atomic_write(self.out/name) as f, tarfile.open(fileobj=f, mode="w", format=tarfile.USTAR_FORMAT) as tf:
            for key, audio, ext, text, meta in self._cur:
                _add_member(tf, f"{key}.{ext}", audio)
                _add_member(tf, f"{key}.txt", text.encode("utf-8"))
                _add_member(tf, f"{key}.json", json.dumps(meta).encode())
        frames = sum(m["num_frames"] for *_, m in self._cur)
        self.shards.append(dict(name=name, count=len(self._cur), hours=round(frames * FRAME_SHIFT_S / 3600, 6),
                                bytes=(self.out/name).stat().st_size))
        self.texts += [f"{k} {t}" for k, _, _, t, _ in self._cur]; self._cur = []

    def close(self, skipped: dict | None = None) -> dict:
        "Flush the last shard, write `text`, then `index.json` (last: its presence means the dir is complete)."
        self._flush()
        atomic_write_text(self.out/TEXT_NAME, "".join(t + "\n" for t in self.texts))
        index = dict(format=SHARD_FORMAT, version=SHARD_VERSION, source=self.source, shards=self.shards,
                     num_utterances=sum(s["count"] for s in self.shards),
                     total_hours=round(sum(s["hours"] for s in self.shards), 6), skipped=dict(skipped or {}))
        atomic_write_text(self.out/INDEX_NAME, json.dumps(index, indent=1, ensure_ascii=False) + "\n")
        return index
#### CELL
#| export
def _subtype(info) -> str: return "FLOAT" if info.subtype in ("FLOAT", "DOUBLE") else "PCM_16"

def utterance_audio(u: Utterance) -> tuple[bytes, str]:
    "The bytes a shard stores for `u`: the file itself when it is whole, else the `start`..`end` segment as WAV."
    p = Path(u.audio); ext = p.suffix.lower().lstrip(".")
    if u.start is None and u.end is None and ext in AUDIO_EXTS: return p.read_bytes(), ext
    with sf.SoundFile(u.audio) as f:
        sr, n = f.samplerate, f.frames
        first = 0 if u.start is None else int(round(u.start * sr)); last = n if u.end is None else min(int(round(u.end * sr)), n)
        if last <= first: raise ValueError(f"segment [{u.start}, {u.end}] s is empty")
        f.seek(first); x = f.read(last - first, dtype="float32", always_2d=True)
        buf = io.BytesIO(); sf.write(buf, x, sr, format="WAV", subtype=_subtype(f))
    return buf.getvalue(), "wav"

def write_shards(data: str | os.PathLike, # anything `data.load_utterances` reads: a Kaldi data dir, a jsonl manifest, ...
                 out: str | os.PathLike,  # the shard dir to write
                 shard_size: int = 1000,  # utterances per shard
                ) -> dict:                # the index (also written to out/index.json)
    "Pack a data source into tar shards (audio bytes, transcript, duration per utterance); unreadable ones are reported by key and skipped."
    utts = fill_num_frames(load_utterances(data))
    w, skipped = ShardWriter(out, shard_size, source=str(data)), {}
    for u in utts:
        if u.text is None: skipped[u.key] = "missing_transcript"; continue
        if not u.num_frames: skipped[u.key] = f"unreadable_audio: {u.audio}"; continue
        try: audio, ext = utterance_audio(u)
        except Exception as e: skipped[u.key] = f"unreadable_audio: {u.audio}: {str(e).splitlines()[0] if str(e) else type(e).__name__}"; continue
        w.add(u.key, audio, ext, u.text, u.num_frames, u.speaker)
    if skipped: log.warning(f"{data}: skipped {len(skipped)} of {len(utts)} utterances: " +
                            "; ".join(f"{k}: {r}" for k, r in list(skipped.items())[:5]) + (" ..." if len(skipped) > 5 else ""))
    if not w._keys: raise DataError(f"{data}: no utterance could be packed ({len(skipped)} skipped)")
    return w.close(skipped)
#### CELL
#| export
def _open_shard(src: str):
    "A readable binary stream of one shard: a local file, or the stdout of a `pipe:` command."
    if src.startswith("pipe:"):
        proc = subprocess.Popen(src[5:], shell=True, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
        return proc.stdout, proc
    return open(src, "rb"), None

def _split_name(name: str) -> tuple[str, str]:
    "`utt.with.dots.wav` -> ('utt.with.dots', 'wav'): the key ends at the LAST dot (WebDataset's rule is the first)."
    k, _, ext = name.rpartition(".")
    return k, ext

def iter_shard(src: str,            # a shard path or `pipe:CMD`
               audio: bool = True,  # False: skip the audio bytes (transcripts only)
              ) -> Iterator[dict]:
    "Records of one shard in file order: dict(key, shard, audio bytes, ext, text, meta); a broken tar ends with an `error` record."
    f, proc = _open_shard(src); cur = None
    try:
        with tarfile.open(fileobj=f, mode="r|") as tf:   # a stream: one sequential read, no seeks
            for ti in tf:
                if not ti.isfile(): continue
                key, ext = _split_name(ti.name)
                if cur is not None and cur["key"] != key: yield cur; cur = None
                if cur is None: cur = dict(key=key, shard=src)
                if ext in AUDIO_EXTS:
                    cur["ext"] = ext
                    cur["audio"] = tf.extractfile(ti).read() if audio else b""
                elif ext == "txt": cur["text"] = tf.extractfile(ti).read().decode("utf-8", "replace")
                elif ext == "json":
                    try: cur["meta"] = json.loads(tf.extractfile(ti).read())
                    except ValueError: cur["meta"] = None
    except (tarfile.TarError, OSError, EOFError) as e:
        if cur is not None: yield cur; cur = None
        yield dict(key="", shard=src, error=f"unreadable_shard: {src}: {e}")
    finally:
        f.close()
        if proc is not None: proc.wait()
    if cur is not None: yield cur
#### CELL
#| export
def decode_record(r: dict,                # from `iter_shard`
                  sample_rate: int = 16000, # the features' rate; others are resampled
                 ) -> tuple[torch.Tensor | None, str | None]: # (wave (N,) float32, None) or (None, 'reason: detail')
    "Check and decode one member: missing transcript, bad duration, unreadable or multi-channel audio are reasons to skip."
    if "error" in r: return None, r["error"]
    if "audio" not in r: return None, "missing_audio: no audio member"
    if not r.get("text"): return None, "missing_transcript: no .txt member"
    meta = r.get("meta") or {}
    n = meta.get("num_frames")
    if not isinstance(n, int) or n <= 0: return None, f"bad_duration: num_frames={n!r} in the .json member"
    try: x, sr = sf.read(io.BytesIO(r["audio"]), dtype="float32", always_2d=True)
    except Exception as e: return None, f"unreadable_audio: {str(e).splitlines()[0] if str(e) else type(e).__name__}"
    if x.shape[1] != 1: return None, f"unreadable_audio: {x.shape[1]} channels, mono expected"
    if not np.isfinite(x).all(): return None, "nonfinite_audio: NaN/Inf samples"
    got = x.shape[0] * 100 // sr
    if abs(got - n) > 2: return None, f"bad_duration: index says {n} frames, the audio holds {got}"
    wav = torch.from_numpy(np.ascontiguousarray(x[:, 0]))
    if sr != sample_rate:
        import torchaudio.functional as AF
        wav = AF.resample(wav, sr, sample_rate)
    return wav, None
#### CELL
#| export
def _shard_list_file(p: Path) -> bool:
    "A list file: a text file whose non-empty lines all name `.tar` shards (or `pipe:` commands)."
    if not p.is_file() or p.suffix in (".jsonl", ".tsv", ".json"): return False
    try: lines = [l.strip() for l in p.read_text(encoding="utf-8").splitlines() if l.strip()]
    except (UnicodeDecodeError, OSError): return False
    return bool(lines) and all(l.startswith("pipe:") or l.endswith(".tar") for l in lines)

def is_shard_source(path) -> bool:
    "True for a shard dir (holds index.json of format asr_nb.shards) or a list file of shard paths."
    if not isinstance(path, (str, os.PathLike)): return False
    p = Path(path)
    if p.is_dir(): return (p/INDEX_NAME).is_file()
    return _shard_list_file(p)

def _read_index(p: Path) -> dict:
    try: idx = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e: raise ShardError(f"{p}: unreadable shard index ({e})") from None
    if not isinstance(idx, dict) or idx.get("format") != SHARD_FORMAT: raise ShardError(f"{p}: not an asr_nb shard index")
    return idx
#### CELL
#| export
class ShardSource:
    "A shard dir or list file: the shard paths, counts and transcripts from the index; audio is only read by the stream."
    def __init__(self, path: str | os.PathLike, # shard dir, or a text file with one shard path (or `pipe:CMD`) per line
                 allow_pipe: bool = False):     # `data.shard_allow_pipe`: accept `pipe:` entries (they run a shell command)
        self.path = p = Path(path)
        if p.is_dir():
            self.index = _read_index(p/INDEX_NAME) if (p/INDEX_NAME).is_file() else None
            if self.index is None: raise ShardError(f"{p}: no {INDEX_NAME} (an unfinished asr_nb_shard run?)")
            self.shards = [str(p/s["name"]) for s in self.index["shards"]]
            self.counts = [int(s["count"]) for s in self.index["shards"]]
        elif _shard_list_file(p):
            base = p.parent
            self.shards = [l if l.startswith("pipe:") else str(base/l) for l in
                           (l.strip() for l in p.read_text(encoding="utf-8").splitlines()) if l]
            self.index, self.counts = None, None
        else: raise ShardError(f"{p}: neither a shard dir (with {INDEX_NAME}) nor a list file of .tar shards")
        pipes = [s for s in self.shards if s.startswith("pipe:")]
        if pipes and not allow_pipe: raise ShardError(f"{p}: '{pipes[0]}' runs a shell command; set data.shard_allow_pipe=true to allow it")
        missing = [s for s in self.shards if not s.startswith("pipe:") and not Path(s).is_file()]
        if missing: raise ShardError(f"{p}: shard {missing[0]} not found" + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""))
        if not self.shards: raise ShardError(f"{p}: lists no shards")

    def __len__(self) -> int:
        "Utterances in the index (list files without one: counted by reading their `text`)."
        return sum(self.counts) if self.counts is not None else sum(1 for _ in self.texts())

    def __repr__(self) -> str: return f"ShardSource({self.path}, {len(self.shards)} shards)"

    def texts(self) -> Iterator[tuple[str, str]]:
        "(key, transcript) of every utterance: from the dir's `text` file, else by reading the .txt members."
        t = self.path/TEXT_NAME if self.path.is_dir() else None
        if t is not None and t.is_file():
            for line in t.read_text(encoding="utf-8").splitlines():
                k, _, txt = line.partition(" ")
                if k: yield k, txt
        else:
            for s in self.shards:
                for r in iter_shard(s, audio=False): yield r["key"], r.get("text")
#### CELL
#| export
def epoch_shards(n: int,            # shards in the source
                 epoch: int, seed: int = 0,
                 shuffle: bool = True,
                 rank: int = 0, world_size: int = 1,
                ) -> list[int]:
    "This rank's shard indices for `epoch`: a permutation seeded by (seed, epoch), then every `world_size`-th from `rank`."
    order = list(range(n))
    if shuffle: random.Random(seed * 1_000_003 + epoch).shuffle(order)
    return order[rank::world_size]

def worker_shards(mine: Sequence[int], done: set, worker: int, num_workers: int) -> list[int]:
    "What one dataloader worker reads: the rank's shards not yet done this epoch, every `num_workers`-th from `worker`."
    return [s for s in mine if s not in done][worker::num_workers]
#### CELL
#| export
@dataclass
class _Item:
    key: str; shard: int; frames: int; tokens: list; wave: torch.Tensor | None = None

class ShardStream(IterableDataset):
    "Shards -> (Batch or None, info) for one rank: shard order, shuffle buffer, decode, sort buffer, `make_batches`, collate."
    def __init__(self, shards: Sequence[str], # shard paths (or pipe: commands)
                 tokenizer,                    # with `encode(text) -> list[int]`
                 cfg: ExpConfig,               # data (budgets, buffers, length limits), features
                 *, train: bool,               # shuffle, speed perturbation, dither
                 rank: int = 0, world_size: int = 1, seed: int = 0,
                 length_rule: Callable[[int], int] | None = None, # the CTC check of `dataset.filter_utterances`
                ):
        from asr_nb.features import make_frontend
        self.shards, self.tok, self.cfg, self.train = list(shards), tokenizer, cfg, train
        self.rank, self.world_size, self.seed, self.length_rule = rank, world_size, seed, length_rule
        self.frontend = make_frontend(cfg.features)
        self.epoch, self.done = 0, set()      # set by the loader before each iter(); copied into the workers

    def __iter__(self) -> Iterator[tuple]: return self._stream()   # the pipeline is `_stream`, below

    def my_shards(self, worker: int = 0, num_workers: int = 1) -> list[int]:
        "Shard indices this (rank, worker) reads in the current epoch, in order."
        mine = epoch_shards(len(self.shards), self.epoch, self.seed, self.train and self.cfg.data.shuffle, self.rank, self.world_size)
        return worker_shards(mine, self.done, worker, num_workers)
#### CELL
#| export
def _check_item(self: ShardStream, r: dict) -> tuple[_Item | None, str | None]:
    "A record as an `_Item` (tokens, frames), or a skip reason: the length limits of `dataset.filter_utterances`."
    from asr_nb.data import ctc_length_check
    d = self.cfg.data
    wav, why = decode_record(r, self.cfg.features.sample_rate)
    if why: return None, why
    frames, tokens = r["meta"]["num_frames"], self.tok.encode(r["text"])
    if frames < d.min_frames: return None, f"too_short: {frames} frames < min_frames {d.min_frames}"
    if frames > d.max_frames: return None, f"too_long: {frames} frames > max_frames {d.max_frames}"
    if len(tokens) > d.max_tokens: return None, f"too_many_tokens: {len(tokens)} > max_tokens {d.max_tokens}"
    if self.length_rule is not None and (c := ctc_length_check(frames, tokens, self.length_rule)): return None, f"too_long_for_ctc: {c}"
    return _Item(r["key"], r["shard_idx"], frames, tokens, wav), None

def _records(self: ShardStream, order: list[int], g: random.Random, left: Counter) -> Iterator[dict]:
    "Records of the shards in `order`, through a shuffle buffer of `data.shard_shuffle_buffer` (training only); counts them in `left`."
    size = self.cfg.data.shard_shuffle_buffer if self.train and self.cfg.data.shuffle else 0
    buf = []
    for s in order:
        for r in iter_shard(self.shards[s]):
            r["shard_idx"] = s; left[s] += 1
            if size <= 1: yield r; continue
            buf.append(r)
            if len(buf) >= size: j = g.randrange(len(buf)); buf[j], buf[-1] = buf[-1], buf[j]; yield buf.pop()
        yield dict(end_of_shard=s)      # the shard's records have all entered the pipeline
    g.shuffle(buf); yield from buf

ShardStream._check_item, ShardStream._records = _check_item, _records
#### CELL
#| export
def _features(self: ShardStream, it: _Item, g: torch.Generator) -> torch.Tensor:
    "Speed perturbation (training) and the front end, as `dataset.ASRDataset` does for a file."
    from asr_nb.features import speed_perturb
    wav, fc = it.wave, self.cfg.features
    if self.train:
        factor = float(fc.speed_perturb[int(torch.randint(len(fc.speed_perturb), (), generator=g))])
        if factor != 1.0: wav = speed_perturb(wav, fc.sample_rate, factor)
    return self.frontend(wav, train=self.train)       # (T, dim)

def _cut(self: ShardStream, items: list[_Item], g: random.Random, fg: torch.Generator) -> Iterator[tuple]:
    "Sort a buffer by length and cut it with `dataset.make_batches` (the map-style rule); batches in random order when training."
    from asr_nb.dataset import collate, make_batches
    batches, _ = make_batches([i.frames for i in items], [len(i.tokens) for i in items], self.cfg.data,
                              feat_dim=self.frontend.dim)
    if self.train and self.cfg.data.shuffle: g.shuffle(batches)
    for b in batches:
        feats = [dict(key=items[i].key, feats=self._features(items[i], fg), tokens=torch.tensor(items[i].tokens, dtype=torch.long))
                 for i in b]
        yield collate(feats, self.cfg.data.sort_batch_by_length), [items[i].shard for i in b]

ShardStream._features, ShardStream._cut = _features, _cut
#### CELL
#| export
def _iter(self: ShardStream) -> Iterator[tuple]:
    "(Batch, info) where info = dict(done=[shards finished], bad=[(shard, key, reason)]); the last item has batch None."
    wi = torch.utils.data.get_worker_info()
    w, nw = (0, 1) if wi is None else (wi.id, wi.num_workers)
    order = self.my_shards(w, nw)
    g = random.Random((self.seed * 1_000_003 + self.epoch) * 1009 + self.rank * 101 + w)
    fg = torch.Generator().manual_seed((self.seed * 1_000_003 + self.epoch) * 1009 + self.rank * 101 + w)
    left, ended, bad, buf = Counter(), set(), [], []
    size = max(1, self.cfg.data.shard_sort_buffer)

    def finished():        # shards whose every record has entered the pipeline and left it
        out = sorted(s for s in ended if left[s] == 0); ended.difference_update(out); return out

    def emit(items):
        nonlocal bad
        for batch, shards in self._cut(items, g, fg):
            for s in shards: left[s] -= 1
            yield batch, dict(done=finished(), bad=bad); bad = []

    for r in self._records(order, g, left):
        if "end_of_shard" in r: ended.add(r["end_of_shard"]); continue
        it, why = self._check_item(r)
        if why is not None:
            left[r["shard_idx"]] -= 1; bad.append((self.shards[r["shard_idx"]], r["key"], why))
            log.warning(f"shard {self.shards[r['shard_idx']]}: skipping {r['key'] or '(tar)'}: {why}"); continue
        buf.append(it)
        if len(buf) >= size: yield from emit(buf); buf = []
    if buf: yield from emit(buf)
    yield None, dict(done=finished(), bad=bad)

ShardStream._stream = _iter
#### CELL
#| export
class ShardLoader:
    "The streaming loader with the sampler protocol `train` uses: set_epoch, advance, state_dict, load_state_dict, len (an upper bound)."
    streaming = True
    def __init__(self, stream: ShardStream, num_workers: int = 0, pin_memory: bool = False, counts: list[int] | None = None,
                 worker_init: Callable[[int], None] | None = None):
        self.stream, self.num_workers, self.pin_memory, self.counts = stream, num_workers, pin_memory, counts
        self.worker_init = worker_init
        self.epoch, self.consumed, self.done, self._resuming = 0, 0, set(), False
        self.num_bad, self.bad_reasons = 0, Counter()

    def __len__(self) -> int:
        "An upper bound on this epoch's batches: the utterances left in this rank's shards (each batch holds >= 1)."
        mine = [s for s in self.stream.my_shards() if s not in self.done]
        return self.consumed + (sum(self.counts[s] for s in mine) if self.counts else 10 ** 9)

    def __iter__(self) -> Iterator:
        "This rank's batches (None: every utterance of a batch was bad); records which shards are finished."
        self._resuming = False
        self.stream.epoch, self.stream.done = self.epoch, set(self.done)
        nw = min(self.num_workers, max(1, len(self.stream.my_shards())))
        dl = DataLoader(self.stream, batch_size=None, num_workers=nw, pin_memory=self.pin_memory,
                        worker_init_fn=self.worker_init if nw > 0 else None)
        for batch, info in dl:
            for shard, key, why in info["bad"]: self.num_bad += 1; self.bad_reasons[why.split(":")[0]] += 1
            self.done.update(info["done"])
            if batch is not None: yield batch
        self.consumed, self.done = 0, set()    # the whole epoch was read: a new iteration starts it again
#### CELL
#| export
def _set_epoch(self: ShardLoader, epoch: int):
    "Start `epoch` (right after `load_state_dict`: continue the loaded epoch, skipping its finished shards)."
    if not (self._resuming and epoch == self.epoch): self.epoch, self.consumed, self.done = epoch, 0, set()
    self._resuming = False

def _advance(self: ShardLoader, n: int = 1): self.consumed += n

def _state_dict(self: ShardLoader) -> dict:
    "Epoch, the shards this rank has finished in it, and what must match to resume."
    s = self.stream
    return dict(kind="shards", epoch=self.epoch, batches_consumed=self.consumed, done_shards=sorted(self.done),
                seed=s.seed, rank=s.rank, world_size=s.world_size, num_shards=len(s.shards),
                num_bad=self.num_bad)

def _load_state_dict(self: ShardLoader, state: dict):
    "Continue the saved epoch: its finished shards are not read again (see 'What resume guarantees')."
    now = self.state_dict()
    bad = [f"{k}: saved {state.get(k)!r}, now {now[k]!r}" for k in ("kind", "seed", "world_size", "num_shards") if state.get(k) != now[k]]
    if bad: raise ValueError("loader state does not match this data/config, cannot resume exactly: " + "; ".join(bad))
    self.epoch, self.consumed, self.done = int(state["epoch"]), int(state["batches_consumed"]), set(state["done_shards"])
    self.num_bad, self._resuming = int(state.get("num_bad", 0)), True

ShardLoader.set_epoch, ShardLoader.advance = _set_epoch, _advance
ShardLoader.state_dict, ShardLoader.load_state_dict = _state_dict, _load_state_dict
#### CELL
#| export
def make_shard_loader(src: ShardSource | str, # shard source
                      tokenizer, cfg: ExpConfig, *, train: bool,
                      rank: int = 0, world_size: int = 1, seed: int = 0,
                      length_rule: Callable[[int], int] | None = None,
                      worker_init: Callable[[int], None] | None = None,
                     ) -> tuple[ShardLoader, ShardLoader]:
    "The streaming counterpart of `dataset.make_dataloader`: returns (loader, loader) since the loader is its own sampler."
    from asr_nb.features import check_config
    from asr_nb.dataset import _pin_memory
    check_config(cfg)
    if not isinstance(src, ShardSource): src = ShardSource(src, cfg.data.shard_allow_pipe)
    stream = ShardStream(src.shards, tokenizer, cfg, train=train, rank=rank, world_size=world_size, seed=seed, length_rule=length_rule)
    ld = ShardLoader(stream, cfg.data.num_workers, _pin_memory(cfg), src.counts, worker_init)
    return ld, ld
#### CELL
#| export
def cmvn_utterances(src: ShardSource, # the training shards
                    out: str | os.PathLike, # a folder for the extracted audio (e.g. exp/.cmvn_audio; removed by the caller)
                    k: int = 1000,          # `data.shard_cmvn_utts`: how many utterances (WeNet: a subset is enough)
                    sample_rate: int = 16000,
                   ) -> list[Utterance]:
    "The first `k` good utterances of the shards in index order, unpacked to `out` so `features.ensure_cmvn` reads them as files."
    out, utts = Path(out), []
    out.mkdir(parents=True, exist_ok=True)
    for s in src.shards:
        with contextlib.closing(iter_shard(s)) as recs:     # closed when we stop early: the tar file is released now
            for r in recs:
                if len(utts) >= k: return utts
                wav, why = decode_record(r, sample_rate)
                if why: continue
                p = out/f"{len(utts):07d}.{r['ext']}"; p.write_bytes(r["audio"])
                utts.append(Utterance(r["key"], str(p), r["text"], num_frames=r["meta"]["num_frames"]))
    return utts
#### CELL
#| export
def simulate_lengths(n: int = 20000, seed: int = 0,
                     lo: float = 1.2, hi: float = 14.5, mean: float = 4.5, # seconds: AISHELL-1 train's range and mean
                    ) -> list[int]:
    "Utterance lengths in 10 ms frames drawn like AISHELL-1's: a log-normal around `mean`, clipped to [lo, hi] s."
    g = np.random.default_rng(seed)
    sigma = 0.45; mu = math.log(mean) - sigma ** 2 / 2          # E[lognormal] = exp(mu + sigma^2/2) = mean
    d = np.clip(g.lognormal(mu, sigma, n), lo, hi)
    return [int(x * 100) for x in d]
#### CELL
#| export
def shard_parser():
    import argparse
    p = argparse.ArgumentParser(prog="asr_nb_shard", description="Pack a data dir or manifest into tar shards for streaming training.",
                                epilog="example:\n  asr_nb_shard data/train shards/train --shard-size 1000\n"
                                       "  asr_nb_train --config conf/tiny.yaml --train shards/train --valid data/dev --exp exp/tiny_shards",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", help="Kaldi data dir or .jsonl manifest (anything asr_nb_train takes)")
    p.add_argument("out", help="shard dir to write (shard-NNNNNN.tar, text, index.json)")
    p.add_argument("--shard-size", type=int, default=1000, metavar="N", help="utterances per shard")
    return p

def shard_main(argv: Sequence[str] | None = None) -> int:
    "Console script `asr_nb_shard` (one error line and exit 2 for bad input, as every asr_nb_<verb>)."
    import sys
    from asr_nb.cli import cli_entry
    return cli_entry("asr_nb_shard")(_shard)(sys.argv[1:] if argv is None else list(argv))

def _shard(argv) -> int:
    a = shard_parser().parse_args(argv)
    if a.shard_size < 1: raise DataError(f"--shard-size must be >= 1, got {a.shard_size}")
    from asr_nb.data import check_data
    check_data(a.data, "data")
    idx = write_shards(a.data, a.out, a.shard_size)
    print(f"asr_nb_shard: {idx['num_utterances']} utterances, {idx['total_hours']:.3f} h in {len(idx['shards'])} shards "
          f"-> {a.out} ({len(idx['skipped'])} skipped)")
    return 0
