"""Sharded streaming data (#17): each utterance once per epoch across 2 ranks x 2 workers, resume at the shard
boundary, bad members reported by shard and key, and `asr_nb_train --train SHARD_DIR` trains a few steps and saves."""
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from asr_nb.core import DataConfig, ExpConfig
from asr_nb.data import Utterance, write_data_dir
from asr_nb.shards import ShardSource, ShardWriter, iter_shard, make_shard_loader, shard_main, write_shards
from asr_nb.tokenizer import CharTokenizer

ROOT = Path(__file__).resolve().parents[1]
WORDS = ['ab', 'ba', 'abba', 'b a', 'a b b']


def fabricate(root: Path, n: int, sr: int = 16000, seed: int = 0) -> Path:
    "n tone utterances of 0.3-1.0 s with short transcripts, as a Kaldi data dir (one utterance per file)."
    (root/'wav').mkdir(parents=True, exist_ok=True); g, utts = np.random.default_rng(seed), []
    for i in range(n):
        t = np.arange(int(sr * g.uniform(0.3, 1.0))) / sr
        p = root/'wav'/f'u{i:04d}.wav'; sf.write(p, (0.3 * np.sin(2 * np.pi * (150 + 7 * i) * t)).astype('float32'), sr)
        utts.append(Utterance(f'u{i:04d}', str(p), WORDS[i % len(WORDS)], speaker=f's{i % 3}'))
    return write_data_dir(utts, root/'data')


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp('shards')
    data = fabricate(root, 48)
    write_shards(data, root/'shards', shard_size=4)               # 12 shards of 4
    return root, data, root/'shards'


TOK = CharTokenizer.build(WORDS)


def _cfg(**kw) -> ExpConfig:
    return ExpConfig(data=DataConfig(max_frames_in_batch=400, min_frames=1, shard_shuffle_buffer=5, shard_sort_buffer=6, **kw))


def _epoch(shards, world, workers, epoch, seed=11):
    "Keys per rank for one epoch of training streams."
    out = []
    for r in range(world):
        ld, sampler = make_shard_loader(shards, TOK, _cfg(num_workers=workers), train=True, rank=r, world_size=world, seed=seed)
        sampler.set_epoch(epoch); out.append([k for b in ld for k in b.keys])
    return out


def test_every_utterance_once_per_epoch_2_ranks_x_2_workers(corpus):
    _, _, shards = corpus
    want = sorted(f'u{i:04d}' for i in range(48))
    orders = []
    for epoch in (0, 1):
        per_rank = _epoch(shards, 2, 2, epoch)
        got = [k for ks in per_rank for k in ks]
        assert len(got) == len(set(got)), 'duplicates'                 # no utterance twice
        assert sorted(got) == want                                      # none missed
        assert all(len(ks) == 24 for ks in per_rank)                    # 6 shards of 4 each
        orders.append(per_rank[0])
    assert orders[0] != orders[1]                                       # shard order and buffers reseeded per epoch
    assert _epoch(shards, 2, 2, 0) == _epoch(shards, 2, 2, 0)          # and reproducible


def test_resume_continues_at_the_shard_boundary(corpus):
    _, _, shards = corpus
    src = ShardSource(shards)
    cfg = _cfg(num_workers=2)
    ld, _ = make_shard_loader(shards, TOK, cfg, train=True, rank=1, world_size=2, seed=3)
    ld.set_epoch(4)
    it, before = iter(ld), []
    while len(ld.done) < 3: before += next(it).keys; ld.advance()
    state = json.loads(json.dumps(ld.state_dict()))                     # as stored in a checkpoint
    del it
    ld2, s2 = make_shard_loader(shards, TOK, cfg, train=True, rank=1, world_size=2, seed=3)
    s2.load_state_dict(state); s2.set_epoch(4)
    after = [k for b in ld2 for k in b.keys]
    done = {r['key'] for s in state['done_shards'] for r in iter_shard(src.shards[s], audio=False)}
    full = set(_epoch(shards, 2, 2, 4, seed=3)[1])
    assert set(before) | set(after) == full                            # the rank's epoch is covered
    assert not (done & set(after))                                      # finished shards are not read again
    assert set(before) & set(after) <= set(before) - done               # repeats only from shards in flight
    assert len(after) == len(set(after))


def _write_shard(corpus, out: Path, members: list[tuple]) -> None:
    "One shard in `out` of (key, text[, audio bytes, num_frames]) members; the audio and length default to a good utterance's."
    good = next(iter_shard(ShardSource(corpus[2]).shards[0]))
    w = ShardWriter(out, 10)
    for key, text, *rest in members:
        audio, frames = (rest + [None, None])[:2]
        w.add(key, audio if audio is not None else good['audio'], 'wav', text, frames or good['meta']['num_frames'])
    w.close()


def test_bad_members_reported_by_shard_and_key(corpus, tmp_path, caplog):
    _write_shard(corpus, tmp_path/'bad', [('fine', 'ab'), ('notext', ''), ('garbage', 'ab', b'RIFF....', 50), ('baddur', 'ab', None, 5000)])
    ld, _ = make_shard_loader(tmp_path/'bad', TOK, _cfg(), train=False)
    with caplog.at_level('WARNING'): keys = [k for b in ld for k in b.keys]
    assert keys == ['fine'] and ld.num_bad == 3
    assert ld.bad_reasons == {'missing_transcript': 1, 'unreadable_audio': 1, 'bad_duration': 1}
    assert any('shard-000000.tar' in r.message and 'garbage' in r.message for r in caplog.records)



def _damaged_copy(shards: Path, dst: Path, cut=None, count=None) -> Path:
    "A copy of the shard dir with shard-000001.tar (keys u0004..u0007) cut by `cut(members) -> byte offset`, or its index count set."
    shutil.copytree(shards, dst)
    p = dst/'shard-000001.tar'
    if cut is not None:
        with tarfile.open(p) as tf: ms = tf.getmembers()                 # 3 members per record: wav, txt, json
        p.write_bytes(p.read_bytes()[:cut(ms)])
    if count is not None:
        idx = json.loads((dst/'index.json').read_text()); idx['shards'][1]['count'] = count
        (dst/'index.json').write_text(json.dumps(idx))
    return dst


@pytest.mark.parametrize('how, kept, lost, detail', [
    ('mid_member', ['u0004'], 3, 'unexpected end of data in member u0005.wav, after 1 of the 4 records'),
    ('boundary', ['u0004', 'u0005'], 2, 'the tar ends after 2 of the 4 records'),
    ('index_count', ['u0004', 'u0005', 'u0006', 'u0007'], 2, 'the tar ends after 4 of the 6 records')])
def test_a_shard_that_ends_early_is_reported_skipped_and_counted(corpus, tmp_path, caplog, capsys, how, kept, lost, detail):
    "Cut inside a member, cut at a record boundary (a clean end for tarfile), or fewer records than index.json lists."
    from asr_nb.cli import validate_main
    from asr_nb.data import load_utterances
    _, _, shards = corpus
    d = _damaged_copy(shards, tmp_path/how, cut={'mid_member': lambda ms: ms[3].offset_data + 100,
                                                  'boundary': lambda ms: ms[6].offset}.get(how),
                      count=6 if how == 'index_count' else None)
    recs = list(iter_shard(str(d/'shard-000001.tar'), count=6 if how == 'index_count' else 4))
    assert recs[-1]['lost'] == lost and recs[-1]['error'] == f'truncated_shard: {detail} index.json lists'
    # streaming (training and validation): one warning for the shard, each lost utterance counted, the epoch goes on
    ld, sampler = make_shard_loader(d, TOK, _cfg(num_workers=0), train=True, seed=5)
    for epoch in (0, 1):
        caplog.clear(); sampler.set_epoch(epoch)
        with caplog.at_level('WARNING', logger='asr_nb.shards'): keys = [k for b in ld for k in b.keys]
        assert sorted(k for k in keys if 'u0004' <= k <= 'u0007') == kept and len(keys) == 44 + len(kept)
        warns = [r.getMessage() for r in caplog.records if 'truncated_shard' in r.getMessage()]
        assert len(warns) == 1 and str(d/'shard-000001.tar') in warns[0] and detail in warns[0], warns
    assert ld.num_bad == 2 * lost and ld.bad_reasons == {'truncated_shard': 2 * lost}
    # map-style (validate, decode): the lost utterances are listed, bad; validate exits 1
    utts = load_utterances(d)
    bad = [u for u in utts if not Path(u.audio).exists()]
    assert len(bad) == lost and all(f'shard-000001.tar:' in u.audio and 'truncated_shard' in u.audio for u in bad)
    capsys.readouterr()
    assert validate_main([str(d), '--no-read']) == 1
    out = capsys.readouterr().out
    assert out.startswith(f'{len(utts)} utterances: {len(utts) - lost} good, {lost} bad'), out


def test_a_transcript_that_is_not_utf8_is_named_and_skipped(corpus, tmp_path, caplog):
    "A .txt member with invalid UTF-8: skipped and counted, named shard:member (it was decoded with U+FFFD before)."
    from asr_nb.data import load_utterances
    from asr_nb.features import load_audio
    from asr_nb.core import UserError
    _write_shard(corpus, tmp_path/'enc', [('fine', 'ab'), ('latin', 'QXQXQ'), ('garbage', 'ab', b'RIFF....', 50)])
    p = tmp_path/'enc'/'shard-000000.tar'; p.write_bytes(p.read_bytes().replace(b'QXQXQ', b'caf\xe9!'))
    why = 'bad_transcript: shard-000000.tar:latin.txt: invalid UTF-8 (invalid continuation byte at byte 3)'
    ld, _ = make_shard_loader(tmp_path/'enc', TOK, _cfg(), train=False)
    with caplog.at_level('WARNING'): keys = [k for b in ld for k in b.keys]
    assert keys == ['fine'] and ld.bad_reasons == {'bad_transcript': 1, 'unreadable_audio': 1}
    assert any('latin' in r.getMessage() and why in r.getMessage() for r in caplog.records)
    utts = {u.key: u for u in load_utterances(tmp_path/'enc')}
    assert not Path(utts['latin'].audio).exists() and 'bad_transcript' in utts['latin'].audio
    assert Path(utts['garbage'].audio).name == 'shard-000000.tar:garbage.wav'   # read errors name shard and member
    with pytest.raises(UserError, match='shard-000000.tar:garbage.wav'): load_audio(utts['garbage'].audio)

def test_shard_cli_errors(corpus, tmp_path, capsys):
    _, data, _ = corpus
    assert shard_main([str(tmp_path/'none'), str(tmp_path/'o')]) == 2
    assert shard_main([str(data), str(tmp_path/'o'), '--shard-size', '0']) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 2 and all(l.startswith('asr_nb_shard: error:') for l in err), err


def test_train_from_a_shard_dir(corpus, tmp_path, capsys):
    "asr_nb_train --train SHARD_DIR --valid SHARD_LIST: trains a few steps, saves, and a rerun resumes."
    from asr_nb.cli import train_main
    root, _, shards = corpus
    lst = root/'valid.list'; lst.write_text('shards/shard-000000.tar\nshards/shard-000001.tar\n')
    tiny = ['model.encoder.d_model=32', 'model.encoder.attention_heads=2', 'model.encoder.linear_units=64',
            'model.encoder.num_blocks=1', 'model.decoder.num_blocks=1', 'model.decoder.linear_units=64',
            'model.encoder.cnn_kernel=3', 'train.max_epochs=1', 'train.log_interval=1', 'train.tensorboard=false',
            'data.max_frames_in_batch=600', 'data.min_frames=1', 'data.num_workers=2', 'data.shard_cmvn_utts=20',
            'optim.warmup_steps=2', 'train.num_threads=1', 'train.seed=1']
    exp = tmp_path/'exp'
    rc = train_main(['--config', str(ROOT/'conf'/'tiny.yaml'), '--train', str(shards), '--valid', str(lst), '--exp', str(exp), *tiny])
    out, err = capsys.readouterr()
    assert rc == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary['epoch'] == 1 and summary['step'] > 3, summary
    ck = sorted((exp/'checkpoints').glob('ckpt-*.pt'))
    assert ck and (exp/'cmvn.npz').is_file() and (exp/'units.txt').is_file() and not (exp/'.cmvn_audio').exists()
    st = torch.load(ck[-1], map_location='cpu', weights_only=True)
    assert st['ranks'][0]['sampler']['kind'] == 'shards'
    log = (exp/'train.log').read_text()
    assert '48 training utterances' in log, log[-2000:]
    # one more epoch: resumes from the checkpoint and streams epoch 2
    rc = train_main(['--config', str(ROOT/'conf'/'tiny.yaml'), '--train', str(shards), '--valid', str(lst), '--exp', str(exp),
                     *tiny, 'train.max_epochs=2'])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert json.loads(out.strip().splitlines()[-1])['epoch'] == 2
    from asr_nb.cli import decode_main
    rc = decode_main(['--exp', str(exp), '--data', str(lst), '--method', 'ctc_greedy', '--out', str(tmp_path/'dec')])
    out, err = capsys.readouterr()
    assert rc == 0, err
    hyp = next((tmp_path/'dec').rglob('text')).read_text().splitlines()
    assert sorted(l.split()[0] for l in hyp) == [f'u{i:04d}' for i in range(8)]   # the two listed shards


def test_decode_reads_a_shard_list(corpus, tmp_path, capsys):
    "Map-style commands take a shard source too: `data.load_utterances` unpacks it (decode needs an exp: made here)."
    from asr_nb.data import check_data, decode_utterances, load_utterances
    root, data, shards = corpus
    lst = root/'test.list'; lst.write_text('shards/shard-000002.tar\n')
    us = decode_utterances(lst)
    assert [u.key for u in us] == [f'u{i:04d}' for i in range(8, 12)] and all(Path(u.audio).is_file() for u in us)
    assert len(check_data(shards, '--data')) == 48
    assert load_utterances(shards)[5].text == load_utterances(data)[5].text
    from asr_nb.cli import validate_main
    assert validate_main([str(shards)]) == 0 and validate_main([str(lst)]) == 0     # asr_nb_validate takes them too


def test_memory_budget_and_padding_on_aishell_like_lengths():
    "batch_type memory: the MiB budget holds per batch; sorting within the stream's buffer keeps padding under 10 %."
    from asr_nb.core import load_config
    from asr_nb.dataset import batch_budget, make_batches, padding_stats
    from asr_nb.shards import simulate_lengths
    lens = simulate_lengths(20000, seed=1); toks = [max(1, f // 30) for f in lens]
    d = np.array(lens) / 100
    assert d.min() >= 1.2 and d.max() <= 14.5 and 4.3 < d.mean() < 4.7
    cfg = load_config(str(ROOT/'conf'/'aishell_conformer.yaml'), ['data.batch_type=memory', 'data.max_batch_mb=4000'])
    dc = cfg.data
    assert dc.bytes_per_frame > 1e5 and batch_budget(dc) == int(4000 * 2**20 / dc.bytes_per_frame)
    wide = load_config(str(ROOT/'conf'/'aishell_conformer.yaml'), ['data.batch_type=memory', 'data.max_batch_mb=4000',
                                                                  'model.encoder.d_model=512', 'model.encoder.attention_heads=8'])
    assert batch_budget(wide.data) < batch_budget(dc)                  # a wider model gets fewer frames per batch
    B, batches = dc.shard_sort_buffer, []
    for i in range(0, len(lens), B):                                    # the stream: sort buffer by sort buffer
        bb, _ = make_batches(lens[i:i + B], toks[i:i + B], dc); batches += [[i + j for j in b] for b in bb]
    assert sorted(i for b in batches for i in b) == list(range(len(lens)))
    assert padding_stats(batches, lens, toks)['frame_efficiency'] >= 0.9
    for b in batches:                                                   # padded frames x bytes/frame within budget
        assert len(b) * max(lens[i] for i in b) * dc.bytes_per_frame <= 4000 * 2**20 or len(b) == 1
    long_b = max(batches, key=lambda b: max(lens[i] for i in b)); short_b = min(batches, key=lambda b: max(lens[i] for i in b))
    assert len(long_b) < len(short_b)                                   # long utterances: smaller batches, same memory


def test_ddp_two_ranks_from_uneven_shards(corpus, tmp_path):
    "torchrun, gloo, 2 ranks on 9 shards (5 + 4): the epoch ends on both ranks when the shorter stream ends; saves."
    import os, socket, subprocess, sys
    root, data, _ = corpus
    shards = tmp_path/'sh'; write_shards(data, shards, shard_size=5)          # 48 = 9 x 5 + 3: 10 shards
    lst = tmp_path/'train.list'; lst.write_text(''.join(f'sh/shard-{i:06d}.tar\n' for i in range(9)))
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]
    train = str(Path(sys.executable).parent/'asr_nb_train')
    cmd = [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_addr', '127.0.0.1',
           '--master_port', str(port), train, '--config', str(ROOT/'conf'/'tiny.yaml'), '--train', str(lst),
           '--valid', str(shards), '--exp', str(tmp_path/'exp'),
           'model.encoder.d_model=32', 'model.encoder.attention_heads=2', 'model.encoder.linear_units=64',
           'model.encoder.num_blocks=1', 'model.decoder.num_blocks=1', 'model.decoder.linear_units=64',
           'model.encoder.cnn_kernel=3', 'train.max_epochs=1', 'train.tensorboard=false', 'data.max_frames_in_batch=500',
           'data.min_frames=1', 'data.num_workers=1', 'data.shard_cmvn_utts=10', 'optim.warmup_steps=2', 'train.num_threads=1']
    env = dict(os.environ, OMP_NUM_THREADS='1')
    r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    st = torch.load(sorted((tmp_path/'exp'/'checkpoints').glob('ckpt-*.pt'))[-1], map_location='cpu', weights_only=True)
    assert st['epoch'] == 1 and st['world_size'] == 2
    assert [rk['sampler']['rank'] for rk in st['ranks']] == [0, 1]
    assert "2 rank(s)" in (tmp_path/'exp'/'train.log').read_text()
