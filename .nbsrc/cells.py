md('''
# Sharded streaming data
> Tar shards (`asr_nb_shard`), a streaming loader that shuffles shards and a buffer, splits by rank and worker, buckets by length inside the stream, resumes at shard boundaries and reports bad members; and a memory budget for batches.

A map-style dataset (`06_dataset`) opens one audio file per utterance and its sampler sorts every length up front.
That is fine for a few hundred hours on a local disk. For thousands of hours on network storage, the cost is the
*random small reads*: a million files means a million opens and seeks on NFS, Lustre or an object store. WeNet
(`data.list` of tar shards with `shuffle`/`sort` buffers), icefall/lhotse (Lhotse Shar) and NeMo (tarred datasets)
all pack utterances into **tar shards** of about a thousand utterances: one shard is one sequential read of a few
hundred MB, which network storage serves at full bandwidth, and a shard list can be split between ranks and workers
without any random access.

What a stream gives up is the global view: no sampler can sort the whole corpus by length, and "where am I in the
epoch" is a position in a sequence of shards. So this notebook builds the pieces that replace the global view:

1. a **writer** (`write_shards`, `asr_nb_shard DATA OUT --shard-size N`) that packs anything `data.load_utterances`
   reads into `shard-NNNNNN.tar` files (audio bytes with segments cut, transcript, duration), each written atomically,
   plus `text` (all transcripts: the tokenizer's input) and `index.json` (counts and hours; written last);
2. a **stream** (`ShardStream`): a per-epoch shard permutation seeded by (seed, epoch), split by rank then by
   dataloader worker, a shuffle buffer, and length bucketing inside a sort buffer, cut into batches by the *same*
   `dataset.make_batches` rule as the map-style sampler;
3. a **loader** (`ShardLoader`) with the sampler protocol `train` already speaks (`set_epoch`, `advance`,
   `state_dict`): resume is exact at shard granularity;
4. a **memory budget** for batches (`batch_type: memory`).

**Why plain `tarfile` and not the `webdataset` package** (1.0.2 installs fine): the shards *are* WebDataset shards
(`KEY.wav`, `KEY.txt`, `KEY.json` members, read by `wds.WebDataset` too), but its iterator does not give what resume
and error reporting need here. (1) Exact resume needs to know when the *last* utterance of a shard has left the
shuffle and sort buffers; WebDataset's pipeline stages hide shard boundaries after `shuffle`. (2) A bad member must be
reported by shard *and* key; WebDataset's handlers see an exception, not which member of which shard caused it.
(3) WebDataset groups members by the text before the *first* dot, so an utterance id with a dot (`spk1.utt2`) splits
into two samples; we split at the last dot. (4) Rank and worker splitting is ours to seed and to record. Reading a tar
stream is twenty lines with `tarfile` in stream mode (`r|`), which also reads from a `pipe:` command.
''')
py('''
import tempfile
from asr_nb.core import ExpConfig, DataConfig, FeatureConfig
from asr_nb.data import Utterance, write_data_dir, write_jsonl
from asr_nb.tokenizer import CharTokenizer

def fabricate(root, n=24, seed=0, sr=16000):
    "A tiny corpus: n sine-tone utterances of 0.3-1.2 s with transcripts, as a Kaldi data dir."
    root = Path(root); (root/'wav').mkdir(parents=True, exist_ok=True); g = np.random.default_rng(seed); utts = []
    for i in range(n):
        x = 0.3 * np.sin(2 * np.pi * (200 + 20 * i) * np.arange(int(sr * g.uniform(0.3, 1.2))) / sr)
        p = root/'wav'/f'u{i:03d}.wav'; sf.write(p, x.astype('float32'), sr, subtype='PCM_16')
        utts.append(Utterance(f'u{i:03d}', str(p), 'ab ba'[: 1 + i % 5], speaker='s0'))
    return write_data_dir(utts, root/'data')

tmp = Path(tempfile.mkdtemp())
data = fabricate(tmp)
tok = CharTokenizer.build(['ab ba'])
''')
md('''
## Writing shards

A shard is a plain tar file. Each utterance is three members with the same key: the audio (`KEY.wav`, or the
original `.flac`/`.ogg` file copied byte for byte), the transcript (`KEY.txt`, UTF-8) and its length
(`KEY.json`: `num_frames` in 10 ms frames, `duration` in seconds, `speaker`). Members are written with fixed
metadata, so the same input gives byte-identical shards. Each shard goes through `core.atomic_write` (a temp file,
fsync, rename): a crash leaves either the whole shard or none. `close()` writes `text` and then `index.json`; the
index is the "done" marker: a shard dir without it is an unfinished run and is refused.
''')
ex()
ex()
py('''
w = ShardWriter(tmp/'w', shard_size=2)
for k in ('a', 'b', 'c'): w.add(k, b'RIFF', 'wav', f'text {k}', 100)
idx = w.close()
test_eq([s['count'] for s in idx['shards']], [2, 1]); test_eq(idx['num_utterances'], 3)
test_close(idx['total_hours'], 3 * 1.0 / 3600, eps=1e-6)
test_eq(tarfile.open(tmp/'w'/'shard-000000.tar').getnames(), ['a.wav', 'a.txt', 'a.json', 'b.wav', 'b.txt', 'b.json'])
test_eq((tmp/'w'/'text').read_text(), 'a text a\\nb text b\\nc text c\\n')
test_fail(lambda: ShardWriter(tmp/'w2').add('x/y', b'', 'wav', 't', 1), contains="cannot be a tar member")
''')
md('''
`write_shards` packs any data source through the one loader, `data.load_utterances` (Kaldi dir, jsonl, PPASR or fairseq
manifest), so it reads every format the rest of asr_nb reads. A segment (`segments` file) is cut and stored as its
own WAV; a whole file is stored as it is. Utterances without a transcript or with unreadable audio are skipped,
named with their reason in the log and in the index's `skipped`.
''')
ex()
py('''
idx = write_shards(data, tmp/'shards', shard_size=5)
test_eq(idx['num_utterances'], 24); test_eq(len(idx['shards']), 5); test_eq([s['count'] for s in idx['shards']][-1], 4)
test_eq(sorted(p.name for p in (tmp/'shards').iterdir()), [INDEX_NAME] + [shard_name(i) for i in range(5)] + ['text'])
# a segment is cut: 0.1..0.3 s of u000 becomes a 0.2 s WAV of its own
seg = Utterance('seg', str(tmp/'wav'/'u000.wav'), 'a', start=0.1, end=0.3)
b, ext = utterance_audio(seg); test_eq(ext, 'wav'); test_eq(sf.info(io.BytesIO(b)).frames, 3200)
# a manifest with a missing file: skipped and named in the index
bad = [Utterance('ok', str(tmp/'wav'/'u001.wav'), 'a'), Utterance('gone', str(tmp/'nope.wav'), 'b')]
idx2 = write_shards(write_jsonl(bad, tmp/'bad.jsonl'), tmp/'shards_bad', 10)
test_eq(idx2['num_utterances'], 1); assert idx2['skipped']['gone'].startswith('unreadable_audio'), idx2['skipped']
''')
md('''
## Reading members

`iter_shard` reads one shard as a stream (`tarfile` mode `r|`: no seeks) and groups consecutive members by key.
`decode_record` is the member check: a record without audio or transcript, a `num_frames` that is missing or does
not match the audio (more than 20 ms apart), unreadable, multi-channel or non-finite audio is **bad**: it gets a
reason code (`missing_transcript`, `bad_duration`, `unreadable_audio`, ...), the same codes the validator of
`02_data` uses, and the stream reports it by shard and key, skips it and counts it. A truncated tar ends with one
`unreadable_shard` record: the members read before the damage are kept.
''')
ex()
ex()
py('''
shard0 = str(tmp/'shards'/shard_name(0))
recs = list(iter_shard(shard0))
test_eq([r['key'] for r in recs], ['u000', 'u001', 'u002', 'u003', 'u004'])
wav, why = decode_record(recs[0]); test_eq(why, None); test_eq(wav.dtype, torch.float32)
test_eq(_split_name('spk1.utt2.wav'), ('spk1.utt2', 'wav'))
# fabricated bad members: each reason is named
w = ShardWriter(tmp/'badshard', 10)
good = recs[1]
w.add('no_text', good['audio'], 'wav', '', good['meta']['num_frames'])
w.add('bad_dur', good['audio'], 'wav', 'ab', good['meta']['num_frames'] + 50)
w.add('garbage', b'not audio at all', 'wav', 'ab', 100)
w.add('fine', good['audio'], 'wav', 'ab', good['meta']['num_frames']); w.close()
whys = {r['key']: decode_record(r)[1] for r in iter_shard(str(tmp/'badshard'/'shard-000000.tar'))}
test_eq(whys['fine'], None)
for k, code in [('no_text', 'missing_transcript'), ('bad_dur', 'bad_duration'), ('garbage', 'unreadable_audio')]:
    assert whys[k].startswith(code), (k, whys[k])
# a truncated shard: what was read survives, then one error record
raw = (tmp/'shards'/shard_name(1)).read_bytes(); (tmp/'cut.tar').write_bytes(raw[: len(raw) // 2])
cut = list(iter_shard(str(tmp/'cut.tar')))
assert 'unreadable_shard' in cut[-1]['error'] and len(cut) >= 2, cut[-1]
''')
md('''
## Shard sources

Every command that takes data also takes a **shard source**: a shard dir (it holds `index.json`) or a **list file**,
a text file with one shard path per line (relative to the list file), like WeNet's `data.list`. A line `pipe:CMD`
reads the shard from the output of a shell command (`pipe:aws s3 cp s3://b/shard-000001.tar -`); because that runs
a command named by a data file, it is refused unless `data.shard_allow_pipe=true`. `is_shard_source` is the one test
for "is this a shard source"; the CLI's data resolution (`cli.usable_utterances`) and `train` call it.
''')
ex()
ex()
py('''
src = ShardSource(tmp/'shards')
test_eq(len(src), 24); test_eq(len(src.shards), 5); assert is_shard_source(tmp/'shards') and not is_shard_source(data)
test_eq(next(src.texts()), ('u000', 'a'))
lst = tmp/'train.list'; lst.write_text('shards/shard-000000.tar\\nshards/shard-000001.tar\\n')
assert is_shard_source(lst); test_eq(len(ShardSource(lst).shards), 2)
test_eq(len(ShardSource(lst)), 10)                                           # no index: counted from the members
(tmp/'pipe.list').write_text(f'pipe:cat {tmp}/shards/shard-000000.tar\\n')
test_fail(lambda: ShardSource(tmp/'pipe.list'), contains="shard_allow_pipe")
test_eq(len(ShardSource(tmp/'pipe.list', allow_pipe=True)), 5)
(tmp/'missing.list').write_text('shards/shard-000009.tar\\n')
test_fail(lambda: ShardSource(tmp/'missing.list'), contains="shard-000009.tar not found")
test_fail(lambda: ShardSource(tmp/'w2'), contains="no index.json")
''')
md('''
## Splitting an epoch: shards, ranks, workers

Each epoch starts from a permutation of the shard list seeded by `(seed, epoch)`, the same on every rank. Rank `r`
of `W` takes every `W`-th shard from `r`; inside a rank, dataloader worker `w` of `N` takes every `N`-th of the rank's
shards that are not finished yet. So every shard is read by exactly one (rank, worker) per epoch, whatever the
number of workers; the ranks must agree only on the seed and the epoch. With fewer shards than `W * N` some workers
are idle, so write at least `W * N` shards (a shard of 1000 AISHELL utterances is about 1.2 h, 150 MB).
''')
ex()
py('''
for W, N in [(1, 1), (2, 2), (3, 2)]:
    got = [s for r in range(W) for w in range(N) for s in worker_shards(epoch_shards(11, 3, 7, True, r, W), set(), w, N)]
    test_eq(sorted(got), list(range(11)))                              # each shard once
test_ne(epoch_shards(11, 0, 7), epoch_shards(11, 1, 7)); test_eq(epoch_shards(11, 1, 7), epoch_shards(11, 1, 7))
test_eq(epoch_shards(5, 0, shuffle=False, rank=1, world_size=2), [1, 3])
test_eq(worker_shards([4, 1, 3, 0], {1}, 1, 2), [3])                   # finished shards are left out
''')
md('''
## The stream

`ShardStream` is an `IterableDataset` for one rank. In each worker, records flow through:

1. **shards** in this worker's order (above);
2. a **shuffle buffer** of `data.shard_shuffle_buffer` records (training): a record is emitted at a random
   position once the buffer is full, so utterances of neighbouring shards mix (WeNet's `shuffle`);
3. the **member check** (`decode_record`) and the **length limits** of the map-style filter (`min_frames`,
   `max_frames`, `max_tokens`, the CTC length rule); a failure is logged by shard and key and counted;
4. a **sort buffer** of `data.shard_sort_buffer` utterances, sorted by length and cut into batches by
   `dataset.make_batches`, the same budget rule (`batch_type` and its budget) as the map-style sampler, so a config
   means the same batches in both paths; the batches of a buffer are then shuffled (training);
5. speed perturbation and the front end (`features.make_frontend`) per utterance, then `dataset.collate`.

Each batch travels with `info`: the shards whose last utterance has now left the pipeline (`done`) and the bad
members met since the previous batch. That is what the loader records for resume.
''')
ex()
ex()
ex()
ex()
py('''
cfg = ExpConfig(data=DataConfig(batch_type='length', max_frames_in_batch=400, min_frames=1, shard_shuffle_buffer=4, shard_sort_buffer=6))
st = ShardStream(src.shards, tok, cfg, train=True, seed=1)
out = list(st)
batches = [b for b, _ in out if b is not None]
keys = [k for b in batches for k in b.keys]
test_eq(sorted(keys), [f'u{i:03d}' for i in range(24)])                  # every utterance once
test_eq(sorted(s for _, i in out for s in i['done']), list(range(5)))   # every shard reported finished once
assert all(int(b.feat_lens.max()) * len(b.keys) <= 400 * 1.02 or len(b.keys) == 1 for b in batches)  # the budget (fbank frames ~ 10 ms frames)
test_eq(batches[0].feats.shape[-1], 80)
# bad members are skipped, counted and named by shard and key
st_bad = ShardStream([str(tmp/'badshard'/'shard-000000.tar')], tok, cfg, train=False)
got = list(st_bad)
test_eq([k for b, _ in got if b is not None for k in b.keys], ['fine'])
test_eq(sorted(k for _, i in got for _, k, _ in i['bad']), ['bad_dur', 'garbage', 'no_text'])
''')
md('''
## The loader, and what resume guarantees

`ShardLoader` wraps the stream in a `DataLoader` (workers get the epoch and the finished shards when an epoch's
iterator starts) and speaks the sampler protocol of `train`: `set_epoch`, `advance`, `state_dict`,
`load_state_dict`. Its `len()` is an upper bound (the utterances left in this rank's shards: a batch holds at least
one), because a stream does not know its batch count in advance; `train` ends the epoch when the stream of *any*
rank ends, agreed by one all-reduce per step (WeNet's `join` for uneven shard streams). With equal shards and a
shard count that divides by `W * N`, the ranks end within a batch or two of each other.

**Resume is exact at shard granularity.** The state saved in each checkpoint (per rank) is the epoch and the set of
shards whose every utterance has been *yielded to the training loop* (trained on, or reported bad). On rerun those
shards are not read again, and the rest of the epoch's shards are read in the same per-epoch permutation, split by
rank as before (the number of workers may change).

Inside a shard that was partly consumed at the checkpoint, the guarantee is weaker, and stated here exactly: such a
shard is read again **from its start**, so the utterances of it that were already trained on are seen a second time
in that epoch (at most the shards in flight: one per worker, plus what the shuffle and sort buffers hold), and the
order of utterances and batch composition after the resume point differ from an uninterrupted run (the buffers
restart empty). No utterance of the epoch is missed. The random state of speed perturbation and dither is seeded per
(seed, epoch, rank, worker), not restored mid-shard.
''')
ex()
ex()
ex()
py('''
def epoch_keys(world, workers, epoch=0, seed=3):
    "Keys each rank's loader yields in one epoch."
    c = ExpConfig(data=DataConfig(max_frames_in_batch=300, min_frames=1, num_workers=workers, shard_shuffle_buffer=3, shard_sort_buffer=4))
    out = []
    for r in range(world):
        ld, _ = make_shard_loader(tmp/'shards', tok, c, train=True, rank=r, world_size=world, seed=seed)
        ld.set_epoch(epoch); out.append([k for b in ld for k in b.keys])
    return out

per_rank = epoch_keys(2, 2)
allk = [k for ks in per_rank for k in ks]
test_eq(len(allk), 24); test_eq(sorted(allk), [f'u{i:03d}' for i in range(24)])    # 2 ranks x 2 workers: each once
test_eq(len(set(per_rank[0]) & set(per_rank[1])), 0)
test_ne(epoch_keys(1, 1, epoch=0)[0], epoch_keys(1, 1, epoch=1)[0])                  # a new order each epoch
''')
md('''Resume: stop after a few batches, save the state, rebuild the loader and continue. Every finished shard is
skipped; the union of what was yielded before and after covers the epoch, and the only repeats are utterances of
shards that were in flight.''')
py('''
c = ExpConfig(data=DataConfig(max_frames_in_batch=300, min_frames=1, shard_shuffle_buffer=1, shard_sort_buffer=5))
ld, _ = make_shard_loader(tmp/'shards', tok, c, train=True, seed=5); ld.set_epoch(2)
it, before = iter(ld), []
while len(ld.done) < 2: b = next(it); before += b.keys; ld.advance()
state = ld.state_dict(); test_eq(len(state['done_shards']), 2); test_eq(state['epoch'], 2)
ld2, _ = make_shard_loader(tmp/'shards', tok, c, train=True, seed=5)
ld2.load_state_dict(state); ld2.set_epoch(2)                                     # the training loop's order of calls
after = [k for b in ld2 for k in b.keys]
done_keys = {r['key'] for s in state['done_shards'] for r in iter_shard(src.shards[s], audio=False)}
test_eq(set(before) | set(after), {f'u{i:03d}' for i in range(24)})             # none missed
test_eq(done_keys & set(after), set())                                           # finished shards are not read again
assert set(before) - done_keys == set(before) & set(after)                       # repeats: only in-flight shards
ld3, _ = make_shard_loader(tmp/'shards', tok, c, train=True, seed=6)
test_fail(lambda: ld3.load_state_dict(state), contains="seed")
''')
md('''
## Tokenizer and CMVN from shards

Both need a pass over the training data before training starts. The **tokenizer** reads `text`, which the writer
stores beside the shards (every transcript, a few MB for AISHELL): `ShardSource.texts()` yields it without touching
the audio (a list file without `text` reads only the `.txt` members). **Global CMVN** is computed, as WeNet does when
given `--num_utts`, over the first `data.shard_cmvn_utts` good utterances in shard order (default 1000, about 1.2 h
of AISHELL: the mean and variance of log-mel energies settle long before that). `cmvn_utterances` unpacks them to a
folder so `features.ensure_cmvn` reads them as files; `train` removes the folder afterwards. The statistics and their
fingerprint land in `exp/cmvn.npz` as for a data dir.
''')
ex()
py('''
cu = cmvn_utterances(src, tmp/'cmvn_audio', k=7)
test_eq(len(cu), 7); test_eq(cu[0].key, 'u000'); assert all(Path(u.audio).is_file() for u in cu)
from asr_nb.features import compute_cmvn
stats = compute_cmvn(cu, FeatureConfig()); test_eq(stats['mean'].shape, (80,))
''')
md('''
## Memory-bounded batches

`batch_type: length` bounds *padded frames*, which is the right unit only for one model: the same 12000 frames fit a
small model and overflow a wide one. `batch_type: memory` states the budget in memory: `data.max_batch_mb` MiB of
activations, at `data.bytes_per_frame` bytes per padded input frame. Left at 0, `bytes_per_frame` is estimated from
the model width (`core.activation_bytes_per_frame`: about `17 d + 4.5 u` fp32 values per encoder frame and block,
over the subsampling, plus the conv front end; 173 KB per frame for the AISHELL Conformer, d=256, u=2048, 12
blocks); set it from a measurement (peak memory of one step / padded frames) to be exact. The MiB budget becomes a
padded-frame budget once, in `dataset.batch_budget`, and everything else (`make_batches`, the sampler, the stream)
is unchanged: one rule, one place. A long utterance then gets a smaller batch instead of an out-of-memory error; one
that is over the budget on its own gets a batch of its own and a warning.

Padding is kept low by **sorting within a bucket**: the map-style sampler sorts the whole epoch; the stream sorts each
sort buffer. `simulate_lengths` draws AISHELL-1-like durations (log-normal, mean 4.5 s, clipped to 1.2-14.5 s) to
check both.
''')
ex()
py('''
from asr_nb.dataset import make_batches, padding_stats, batch_budget
lens = simulate_lengths(20000, seed=0); d = np.array(lens) / 100
assert 1.2 <= d.min() and d.max() <= 14.5 and abs(d.mean() - 4.5) < 0.2, (d.min(), d.max(), d.mean())
mem = load_config_memory = ExpConfig(data=DataConfig(batch_type='memory', max_batch_mb=2000))
test_close(mem.data.bytes_per_frame, activation_bytes_per_frame(mem), eps=1e-6)
toks = [max(1, f // 25) for f in lens]
# map-style: one sort over the epoch
eff_map = padding_stats(make_batches(lens, toks, mem.data)[0], lens, toks)['frame_efficiency']
# stream: sort buffers of shard_sort_buffer utterances in arrival order
B = mem.data.shard_sort_buffer; bl = []
for i in range(0, len(lens), B):
    bb, _ = make_batches(lens[i:i + B], toks[i:i + B], mem.data); bl += [[i + j for j in b] for b in bb]
eff_stream = padding_stats(bl, lens, toks)['frame_efficiency']
assert eff_map >= 0.99 and eff_stream >= 0.9, (eff_map, eff_stream)
# the budget holds: padded frames x bytes per frame <= max_batch_mb (unless one utterance alone is over it)
assert all(len(b) * max(lens[i] for i in b) * mem.data.bytes_per_frame <= 2000 * 2**20 or len(b) == 1 for b in bl)
eff_stream
''')
md('''
## The command line: `asr_nb_shard`

```
asr_nb_shard data/train shards/train --shard-size 1000
asr_nb_train --config conf/tiny.yaml --train shards/train --valid data/dev --exp exp/tiny_shards
```

A thin wrapper over `write_shards` (the parsing lives here, not in `16_cli`, as `asr_nb_pretrain` lives in
`32_wav2vec2`); bad input ends in one error line and exit status 2, like every `asr_nb_<verb>`.
''')
ex()
py('''
import contextlib
with contextlib.redirect_stdout(io.StringIO()) as o: rc = shard_main([str(data), str(tmp/'cli'), '--shard-size', '10'])
test_eq(rc, 0); assert '24 utterances' in o.getvalue() and (tmp/'cli'/INDEX_NAME).is_file()
with contextlib.redirect_stderr(io.StringIO()) as e: rc = shard_main([str(tmp/'nothing'), str(tmp/'cli2')])
test_eq(rc, 2); assert 'error: data not found' in e.getvalue(), e.getvalue()
''')
md('''
## How it fits

- `asr_nb_train --train SHARD_SOURCE` (and `--valid`): `cli.usable_utterances` returns a `ShardSource` instead of a
  list; `train` builds the tokenizer from `src.texts()`, CMVN from `cmvn_utterances`, and the loader with
  `make_shard_loader`, which yields the same `core.Batch` (feats (B, T, D), feat_lens, tokens (B, L), token_lens,
  keys) as `dataset.make_dataloader`. The loader is its own sampler: its `state_dict` goes into each checkpoint.
- Recipes: pack once with `asr_nb_shard data/train_sp shards/train --shard-size 1000`, then train from the shards.
- `bench/bench_shards.py` measures the read rate, the loader's memory over an epoch of 100k utterances and the
  padding efficiency (`bench/results/shards.json`).
''')
py('''
#| hide
shutil.rmtree(tmp, ignore_errors=True)
''')
