"Dataset, dynamic batching and the bucketing sampler: DDP split, mid-epoch resume, bad audio, DataLoader workers."
import logging
import math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from asr_nb.core import IGNORE_ID, DataConfig, ExpConfig, FeatureConfig
from asr_nb.data import Utterance, load_utterances
from asr_nb.dataset import (BATCH_TYPES, ASRDataset, BucketBatchSampler, batch_budget, batch_cost, collate,
                            make_batches, make_dataloader)
from asr_nb.tokenizer import CharTokenizer

SR = 16000


def _lengths(n=157, seed=0):
    g = torch.Generator().manual_seed(seed)
    frames = (torch.randn(n, generator=g) * 0.45 + math.log(500)).exp().long().clamp(20, 2500).tolist()
    tokens = [max(1, f // 25 + int(t)) for f, t in zip(frames, torch.randint(0, 5, (n,), generator=g))]
    return frames, tokens


def _cfg(bt):
    return DataConfig(batch_type=bt, batch_size=7, max_frames_in_batch=4000, max_tokens_in_batch=150, bins=300000,
                      max_batch_mb=4000 * 1000 / 2**20, bytes_per_frame=1000.0)  # memory (#17): 4000 frames at 1000 B/frame


@pytest.mark.parametrize("bt", BATCH_TYPES)
@pytest.mark.parametrize("world_size", [2, 3])
def test_ddp_split_distinct_and_equal(bt, world_size):
    F, T = _lengths()
    cfg = _cfg(bt)
    n_batches = len(make_batches(F, T, cfg)[0])
    for epoch in (0, 1, 5):
        per_rank = []
        for r in range(world_size):
            s = BucketBatchSampler(F, T, cfg, rank=r, world_size=world_size, seed=3)
            s.set_epoch(epoch)
            per_rank.append([tuple(sorted(b)) for b in s])
        counts = {len(b) for b in per_rank}
        assert len(counts) == 1, f"ranks got different numbers of batches: {[len(b) for b in per_rank]}"
        # at each step the ranks hold different batches
        for step in zip(*per_rank): assert len(set(step)) == world_size
        # every utterance is covered; repeats only fill the last step (fewer than world_size batches)
        flat = [b for rb in per_rank for b in rb]
        assert set(i for b in flat for i in b) == set(range(len(F)))
        assert len(flat) - n_batches == (-n_batches) % world_size
        assert len(flat) - len(set(flat)) < world_size
        # nothing over budget except utterances that are over it alone
        for b in flat:
            if len(b) > 1:
                assert batch_cost(bt, len(b), max(F[i] for i in b), max(T[i] for i in b)) <= batch_budget(cfg)


def test_ddp_drop_last_equal_counts():
    F, T = _lengths()
    cfg = _cfg("length")
    n = len(make_batches(F, T, cfg)[0])
    samplers = [BucketBatchSampler(F, T, cfg, rank=r, world_size=4, drop_last=True) for r in range(4)]
    assert {len(list(s)) for s in samplers} == {n // 4}
    flat = [tuple(b) for s in samplers for b in s]
    assert len(set(flat)) == len(flat)  # no repeats at all


@pytest.mark.parametrize("bt", BATCH_TYPES)
@pytest.mark.parametrize("k", [0, 1, 4])
def test_resume_equals_uninterrupted(bt, k):
    F, T = _lengths()
    cfg = _cfg(bt)
    mk = lambda: BucketBatchSampler(F, T, cfg, rank=1, world_size=2, seed=11, length_jitter=0.1)
    ref = mk(); ref.set_epoch(3); full = list(ref)
    a = mk(); a.set_epoch(3)
    it = iter(a)
    for _ in range(k): next(it); a.advance(1)
    next(it); next(it)  # prefetched by a loader but never used by the training loop: not advanced
    state = a.state_dict()
    assert state["epoch"] == 3 and state["batches_consumed"] == k
    b = mk(); b.load_state_dict(state); b.set_epoch(3)
    assert list(b) == full[k:]
    b.set_epoch(4)
    ref.set_epoch(4)
    assert list(b) == list(ref)


def test_resume_rejects_other_setup():
    F, T = _lengths()
    s = BucketBatchSampler(F, T, _cfg("length"), rank=0, world_size=2, seed=1)
    with pytest.raises(ValueError, match="world_size"):
        BucketBatchSampler(F, T, _cfg("length"), rank=0, world_size=1, seed=1).load_state_dict(s.state_dict())
    with pytest.raises(ValueError, match="budget"):
        cfg = _cfg("length"); cfg.max_frames_in_batch = 5000
        BucketBatchSampler(F, T, cfg, rank=0, world_size=2, seed=1).load_state_dict(s.state_dict())


# ---------------------------------------------------------------- audio on disk

def _write_data_dir(root: Path, n: int, bad: set[int], seed=0) -> Path:
    "A Kaldi data dir of `n` tones of varied length; utterances in `bad` point at corrupt/empty files."
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    wav_scp, text = [], []
    for i in range(n):
        key, path = f"utt{i:03d}", root / f"utt{i:03d}.wav"
        if i in bad:
            path.write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt " + bytes(rng.integers(0, 255, 40, dtype=np.uint8)))
        else:
            secs = 0.3 + 0.05 * (i % 9)
            t = np.arange(int(secs * SR)) / SR
            sf.write(path, (0.2 * np.sin(2 * np.pi * (200 + 20 * i) * t) + 0.01 * rng.standard_normal(t.size)).astype("float32"), SR)
        wav_scp.append(f"{key} {path}")
        text.append(f"{key} " + " ".join(["ab", "cab", "ba"][: 1 + i % 3]))
    (root / "wav.scp").write_text("\n".join(wav_scp) + "\n")
    (root / "text").write_text("\n".join(text) + "\n")
    return root


@pytest.fixture
def tok():
    return CharTokenizer(["<blank>", "<unk>", "<space>", "a", "b", "c", "<sos/eos>"])


def _exp(**data):
    return ExpConfig(features=FeatureConfig(speed_perturb=[0.9, 1.0, 1.1]),
                     data=DataConfig(batch_type="length", max_frames_in_batch=200, min_frames=5, **data))


class _Capture(logging.Handler):
    def __init__(self): super().__init__(logging.WARNING); self.messages = []
    def emit(self, record): self.messages.append(record.getMessage())


def test_corrupt_wav_in_the_middle_is_skipped_with_warning(tmp_path, tok):
    d = _write_data_dir(tmp_path / "data", 9, bad={4})
    utts = load_utterances(d)
    assert [u.key for u in utts][4] == "utt004"
    for u in utts:  # lengths as a data dir with utt2num_frames would give them; the bad file has none
        u.num_frames = 100 if u.key == "utt004" else None
    cap = _Capture(); lg = logging.getLogger("asr_nb.dataset"); lg.addHandler(cap)
    try:
        loader, sampler = make_dataloader(utts, tok, _exp(), train=True, seed=0)
        batches = list(loader)
    finally:
        lg.removeHandler(cap)
    keys = [k for b in batches if b is not None for k in b.keys]
    assert sorted(keys) == [f"utt{i:03d}" for i in range(9) if i != 4]
    assert loader.dataset.num_skipped == 1
    bad_msgs = [m for m in cap.messages if "utt004" in m]
    assert bad_msgs and str(d / "utt004.wav") in bad_msgs[0], cap.messages
    for b in batches:
        if b is None: continue
        assert b.feats.shape[0] == len(b.keys) and b.feats.shape[2] == 80
        assert (b.feat_lens[:-1] >= b.feat_lens[1:]).all()  # longest first
        assert (b.tokens == IGNORE_ID).sum() == (b.tokens.shape[1] - b.token_lens).sum()


def test_strict_raises_on_corrupt_audio(tmp_path, tok):
    d = _write_data_dir(tmp_path / "data", 3, bad={1})
    utts = load_utterances(d)
    for u in utts: u.num_frames = 50
    ds = ASRDataset(utts, tok, FeatureConfig(), train=False, strict=True)
    ds[0]
    with pytest.raises(Exception, match="utt001.wav"):
        ds[1]


def _run(loader, sampler, epoch):
    sampler.set_epoch(epoch)
    return [(tuple(b.keys), b.feats.clone()) for b in loader if b is not None]


def test_dataloader_two_workers_matches_zero_workers(tmp_path, tok):
    d = _write_data_dir(tmp_path / "data", 14, bad={6})
    utts = load_utterances(d)
    for u in utts: u.num_frames = 100 if u.key == "utt006" else None
    l0, s0 = make_dataloader(utts, tok, _exp(num_workers=0), train=True, seed=7)
    l2, s2 = make_dataloader(utts, tok, _exp(num_workers=2), train=True, seed=7)
    assert l2.num_workers == 2 and l2.persistent_workers and not l0.persistent_workers
    for epoch in (0, 1):  # persistent workers see the new epoch's speed factors and dither
        r0, r2 = _run(l0, s0, epoch), _run(l2, s2, epoch)
        assert [k for k, _ in r0] == [k for k, _ in r2]
        for (_, f0), (_, f2) in zip(r0, r2): torch.testing.assert_close(f0, f2, atol=1e-3, rtol=1e-4)  # thread count differs
        assert sorted(k for ks, _ in r2 for k in ks) == [f"utt{i:03d}" for i in range(14) if i != 6]
    assert l2.dataset.num_skipped == 2  # once per epoch, counted across the workers
    e0, e1 = _run(l0, s0, 0), _run(l0, s0, 1)
    assert [k for k, _ in e0] != [k for k, _ in e1] or any(a.shape != b.shape or not torch.equal(a, b)
                                                          for (_, a), (_, b) in zip(e0, e1))


def test_resume_through_dataloader_with_workers(tmp_path, tok):
    d = _write_data_dir(tmp_path / "data", 14, bad=set())
    utts = load_utterances(d)
    ref_loader, ref_s = make_dataloader(utts, tok, _exp(num_workers=2), train=True, seed=3)
    full = _run(ref_loader, ref_s, 2)
    assert len(full) >= 4
    loader, s = make_dataloader(utts, tok, _exp(num_workers=2), train=True, seed=3)
    s.set_epoch(2)
    used = []
    for b in loader:  # workers prefetch ahead; only the training loop's count is saved
        used.append(b.keys); s.advance(1)
        if len(used) == 3: state = s.state_dict(); break
    loader2, s2 = make_dataloader(utts, tok, _exp(num_workers=2), train=True, seed=3)
    s2.load_state_dict(state)
    rest = _run(loader2, s2, 2)
    assert [k for k, _ in rest] == [k for k, _ in full[3:]]
    for (_, a), (_, b) in zip(rest, full[3:]): torch.testing.assert_close(a, b)


def test_unreadable_header_is_dropped_by_the_filter_and_reported(tmp_path, tok):
    d = _write_data_dir(tmp_path / "data", 6, bad={2})
    utts = load_utterances(d)  # no utt2num_frames: lengths come from the audio headers
    cap = _Capture(); lg = logging.getLogger("asr_nb.dataset"); lg.addHandler(cap)
    try:
        loader, _ = make_dataloader(utts, tok, _exp(), train=False)
    finally:
        lg.removeHandler(cap)
    rep = loader.dataset.filter_report
    assert rep.dropped["utt002"][0] == "no_frames" and rep.kept == 5
    assert any("utt002" in m and "no_frames" in m for m in cap.messages), cap.messages
    assert sorted(k for b in loader for k in b.keys) == [f"utt{i:03d}" for i in range(6) if i != 2]
