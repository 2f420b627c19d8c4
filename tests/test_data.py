"Bad input, round-trips, corpus preparers and the synthetic corpus of `asr_nb.data` (fast: ~20 synthesised utterances)."
import json, os, shutil
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from asr_nb.data import (DataError, Utterance, read_data_dir, write_data_dir, read_jsonl, write_jsonl, load_utterances,
                         scp2jsonl, jsonl2scp, fill_num_frames, validate_utterances, validate_data_dir,
                         prepare_aishell, prepare_librispeech, normalize_zh, synth_corpus, synth_voices,
                         speaker_of_voice, SYNTH_TEST_VARIANTS)

SR = 16000
LETTERS = set("abcdefghijklmnopqrstuvwxyz' ")


def length_rule():
    "The default experiment's rule (16 kHz fbank, 4x conv2d subsampling): 10 ms units -> encoder frames."
    from asr_nb.core import ExpConfig
    from asr_nb.features import utterance_length_rule
    from asr_nb.model import model_length_rule
    cfg = ExpConfig()
    return utterance_length_rule(cfg.features, model_length_rule(cfg))


def tone(path, seconds=1.0, sr=SR, channels=1, fmt=None, seed=0):
    n = int(seconds * sr)
    x = 0.1 * np.sin(np.arange(n) * 2 * np.pi * 300 / sr) + np.random.default_rng(seed).normal(0, 0.01, n)
    x = np.stack([x] * channels, 1) if channels > 1 else x
    sf.write(path, x.astype('float32'), sr, format=fmt)
    return str(path)


@pytest.fixture
def ddir(tmp_path):
    "A valid data dir with 3 utterances: (dir, wav paths)."
    wavs = [tone(tmp_path / f'w{i}.wav', 1.0 + i * 0.5, seed=i) for i in range(3)]
    d = tmp_path / 'data'; d.mkdir()
    (d / 'wav.scp').write_text(''.join(f'u{i} {w}\n' for i, w in enumerate(wavs)))
    (d / 'text').write_text('u0 hello\nu1 two words\nu2 three more words\n')
    (d / 'utt2spk').write_text('u0 s0\nu1 s0\nu2 s1\n')
    return d, wavs


# ---------------------------------------------------------------- readers: bad input in every file type
def test_valid_dir_reads(ddir):
    d, wavs = ddir
    utts = read_data_dir(d)
    assert [(u.key, u.audio, u.text, u.speaker) for u in utts] == [
        ('u0', wavs[0], 'hello', 's0'), ('u1', wavs[1], 'two words', 's0'), ('u2', wavs[2], 'three more words', 's1')]


@pytest.mark.parametrize('fname,content,msg', [
    ('wav.scp', 'u0 {w0}\nu1\nu2 {w2}\n', 'wav.scp:2: missing field'),
    ('wav.scp', 'u0 {w0}\nu1 sox x.flac -t wav - |\nu2 {w2}\n', 'wav.scp:2: piped command'),
    ('wav.scp', 'u0 {w0}\nu1 feats.ark:1234\nu2 {w2}\n', 'wav.scp:2: Kaldi archive'),
    ('wav.scp', 'u0 {w0}\nu1 {w0}\nu0 {w2}\n', "wav.scp:3: duplicate id 'u0' (first on line 1)"),
    ('text', 'u0 hello\nu1 two\nu1 three\n', "text:3: duplicate id 'u1'"),
    ('utt2spk', 'u0 s0\nu1\nu2 s1\n', 'utt2spk:2: missing field'),
    ('segments', 'u0 rec 0 1\nu1 rec 1.5 0.5\n', 'segments:2: bad segment times: end 0.5 <= start 1.5'),
    ('segments', 'u0 rec 0 1\nu1 rec abc 2\n', 'segments:2: bad segment times'),
    ('segments', 'u0 rec 0\n', 'segments:1: segments needs'),
    ('segments', 'u0 rec -1 2\n', 'segments:1: bad segment times: start -1.0 < 0'),
    ('utt2num_frames', 'u0 100\nu1 1.5\n', "utt2num_frames:2: frame count '1.5'"),
])
def test_malformed_lines_name_file_and_line(ddir, fname, content, msg):
    d, wavs = ddir
    (d / fname).write_text(content.format(w0=wavs[0], w2=wavs[2]))
    with pytest.raises(DataError, match='.*' + msg.replace('|', r'\|').replace('(', r'\(').replace(')', r'\)').replace('.', r'\.')):
        read_data_dir(d)
    # the validator reports the same line instead of raising
    rep = validate_data_dir(d)
    assert any(msg in r for rs in rep.bad.values() for r in rs), rep.summary()


@pytest.mark.parametrize('fname', ['wav.scp', 'text', 'utt2spk', 'segments', 'utt2num_frames'])
def test_bad_utf8_every_file(ddir, fname):
    d, wavs = ddir
    if fname == 'segments': (d / 'wav.scp').write_text(f'rec {wavs[0]}\n')
    good = {'wav.scp': f'u0 {wavs[0]}\n', 'text': 'u0 hi\n', 'utt2spk': 'u0 s\n', 'segments': 'u0 rec 0 0.5\n',
            'utt2num_frames': 'u0 100\n'}[fname]
    (d / fname).write_bytes(good.encode() + b'u1 caf\xe9\n')
    with pytest.raises(DataError, match=f'{fname}:2: invalid UTF-8'):
        read_data_dir(d)


def test_not_a_data_dir(tmp_path):
    with pytest.raises(DataError, match='no such data dir'): read_data_dir(tmp_path / 'nope')
    (tmp_path / 'd').mkdir(); (tmp_path / 'd' / 'text').write_text('a b\n')
    with pytest.raises(DataError, match='no wav.scp'): read_data_dir(tmp_path / 'd')
    with pytest.raises(DataError, match='neither a data dir nor a jsonl'): load_utterances(tmp_path / 'missing.jsonl')


def test_id_mismatch_default_skips_and_warns_strict_raises(ddir, caplog):
    d, wavs = ddir
    (d / 'text').write_text('u0 hello\nu1 two words\nu9 no audio\n')   # u2 has no text, u9 no audio
    with caplog.at_level('WARNING', logger='asr_nb.data'):
        assert [u.key for u in read_data_dir(d)] == ['u0', 'u1']
    assert '2 ids are not in both' in caplog.text
    with pytest.raises(DataError, match='2 ids are not in both'): read_data_dir(d, strict=True)
    rep = validate_data_dir(d)
    assert rep.bad == {'u2': ['missing_text: in wav.scp but not in text'], 'u9': ['missing_audio: in text but not in wav.scp']}


@pytest.mark.parametrize('line,msg', [
    ('{"key": "b", "source": "b.wav"}', "missing field 'target'"),
    ('{"key": "b", "target": "x"}', "missing field 'source'"),
    ('{"key": "b", "source": "b.wav", "target": 3}', "field 'target' must be a string"),
    ('{"key": "a", "source": "b.wav", "target": "x"}', "duplicate id 'a' (first on line 1)"),
    ('{"key": "b c", "source": "b.wav", "target": "x"}', 'bad key'),
    ('[1, 2]', 'expected a JSON object'),
    ('{"key": "b", "source": "b.wav", "target": "x"', 'invalid JSON'),
    ('{"key": "b", "source": "b.wav", "target": "x", "source_len": "12"}', 'source_len must be'),
    ('{"key": "b", "source": "b.wav", "target": "x", "start": -1}', 'bad segment time start=-1'),
    ('{"key": "b", "source": "b.wav", "target": "x", "start": 3, "end": 2}', 'bad segment times: end 2 <= start 3'),
    ('{"key": "b", "source": "sox b.flac -t wav - |", "target": "x"}', 'piped command'),
])
def test_jsonl_bad_lines(tmp_path, line, msg):
    p = tmp_path / 'm.jsonl'
    p.write_text('{"key": "a", "source": "a.wav", "target": "x"}\n\n' + line + '\n')
    with pytest.raises(DataError) as e: read_jsonl(p)
    assert f'm.jsonl:3: {msg}' in str(e.value)


def test_jsonl_bad_utf8(tmp_path):
    p = tmp_path / 'm.jsonl'
    p.write_bytes(b'{"key": "a", "source": "a.wav", "target": "caf\xe9"}\n')
    with pytest.raises(DataError, match='m.jsonl:1: invalid UTF-8'): load_utterances(p)


def test_write_rejects_unwritable(tmp_path):
    with pytest.raises(DataError, match='whitespace'): write_data_dir([Utterance('a b', 'x.wav', 't')], tmp_path / 'd')
    with pytest.raises(DataError, match='newline'): write_jsonl([Utterance('a', 'x.wav', 't\nu')], tmp_path / 'm.jsonl')
    with pytest.raises(DataError, match='duplicate ids'):
        write_data_dir([Utterance('a', 'x.wav', 't'), Utterance('a', 'y.wav', 'u')], tmp_path / 'd')


# ---------------------------------------------------------------- round-trips
def test_scp_jsonl_roundtrip_exact(tmp_path):
    long = tone(tmp_path / 'long.wav', 3.0)
    w = tone(tmp_path / 'w.wav', 1.0)
    utts = [Utterance('s1-a', long, 'first part', 's1', start=0.0, end=1.2),
            Utterance('s1-b', long, 'second part', 's1', start=1.2, end=None),
            Utterance('s2-a', w, '中文 and café', 's2')]
    d = write_data_dir(utts, tmp_path / 'd')
    scp2jsonl(d, tmp_path / 'a.jsonl')
    assert [json.loads(l)['source_len'] for l in (tmp_path / 'a.jsonl').read_text().splitlines()] == [120, 180, 100]
    jsonl2scp(tmp_path / 'a.jsonl', tmp_path / 'd2')
    scp2jsonl(tmp_path / 'd2', tmp_path / 'b.jsonl')
    assert (tmp_path / 'a.jsonl').read_bytes() == (tmp_path / 'b.jsonl').read_bytes()
    for n in ('wav.scp', 'text', 'utt2spk', 'spk2utt', 'segments'):
        assert (d / n).read_bytes() == (tmp_path / 'd2' / n).read_bytes(), n
    assert (tmp_path / 'd2' / 'utt2num_frames').read_text() == 's1-a 120\ns1-b 180\ns2-a 100\n'
    assert read_jsonl(tmp_path / 'b.jsonl') == load_utterances(tmp_path / 'd2')


def test_roundtrip_data_dir_from_disk_is_byte_identical(ddir, tmp_path):
    d, _ = ddir
    scp2jsonl(d, tmp_path / 'm.jsonl', fill_frames=False)
    jsonl2scp(tmp_path / 'm.jsonl', tmp_path / 'back')
    for n in ('wav.scp', 'text', 'utt2spk'):
        assert (d / n).read_bytes() == (tmp_path / 'back' / n).read_bytes()
    assert not (tmp_path / 'back' / 'utt2num_frames').exists()


def test_fill_num_frames_shares_recordings_and_leaves_unreadable(tmp_path):
    w = tone(tmp_path / 'a.wav', 2.0)
    utts = [Utterance('a', w, 'x'), Utterance('b', w, 'x', start=0.5, end=1.0), Utterance('c', w, 'x', start=1.5, end=9.0),
            Utterance('d', str(tmp_path / 'gone.wav'), 'x'), Utterance('e', w, 'x', num_frames=7)]
    fill_num_frames(utts)
    assert [u.num_frames for u in utts] == [200, 50, 50, None, 7]
    assert fill_num_frames(utts, overwrite=True)[4].num_frames == 200


# ---------------------------------------------------------------- validator
def test_validator_every_reason_never_stops_at_first(tmp_path):
    ok = tone(tmp_path / 'ok.wav', 1.0)
    st = tone(tmp_path / 'st.wav', 1.0, sr=8000, channels=2)
    (tmp_path / 'junk.wav').write_bytes(b'RIFF\x00\x00garbage')
    sf.write(tmp_path / 'empty.wav', np.zeros(0, 'float32'), SR)
    full = tone(tmp_path / 'x.flac', 2.0, fmt='FLAC')
    data = (tmp_path / 'x.flac').read_bytes()
    (tmp_path / 'trunc.flac').write_bytes(data[:len(data) // 2])           # header fine, frames missing
    utts = [Utterance('good', ok, 'hello'), Utterance('dup', ok, 'a'), Utterance('dup', ok, 'a'),
            Utterance('blank', ok, ' '), Utterance('missing', str(tmp_path / 'no.wav'), 'a'),
            Utterance('junk', str(tmp_path / 'junk.wav'), 'a'), Utterance('empty', str(tmp_path / 'empty.wav'), 'a'),
            Utterance('stereo8k', st, 'a'), Utterance('toolong', ok, 'abcdefghijklmnopqrstuvwxyz'),
            Utterance('oov', ok, 'naïve!'), Utterance('trunc', str(tmp_path / 'trunc.flac'), 'a'),
            Utterance('lateseg', full, 'a', start=5.0, end=6.0), Utterance('flac', full, 'fine')]
    rep = validate_utterances(utts, units=LETTERS, read_audio=True, length_rule=length_rule())
    assert [u.key for u in rep.good] == ['good', 'flac']
    codes = {k: sorted(r.split(':')[0] for r in rs) for k, rs in rep.bad.items()}
    assert codes == {'dup': ['duplicate_id'], 'blank': ['empty_text'], 'missing': ['missing_audio'],
                     'junk': ['unreadable_audio'], 'empty': ['zero_length'], 'stereo8k': ['bad_channels'],
                     'toolong': ['too_long_for_ctc'], 'oov': ['oov_chars'], 'trunc': ['corrupt_audio'],
                     'lateseg': ['segment_out_of_range', 'zero_length']}
    s = rep.summary()
    assert s.startswith('13 utterances: 2 good, 10 bad') and 'stereo8k: bad_channels: 2 channels, expected 1' in s
    with pytest.raises(DataError) as e: validate_utterances(utts, units=LETTERS, read_audio=True, strict=True)
    assert 'trunc: corrupt_audio' in str(e.value) and 'junk: unreadable_audio' in str(e.value)


def test_validator_ctc_length_uses_tokenizer(tmp_path):
    w = tone(tmp_path / 'a.wav', 1.0)     # 100 frames -> 98 fbank frames -> 23 after 4x
    text = ' '.join(['ab'] * 12)           # 35 characters, 12 words
    rule = length_rule()
    assert not validate_utterances([Utterance('u', w, text)], check_audio=True, length_rule=rule).ok
    assert validate_utterances([Utterance('u', w, text)], tokenize=str.split, length_rule=rule).ok
    assert validate_utterances([Utterance('u', w, text)], length_rule=lambda f: f).ok   # no subsampling
    # without audio checks, known num_frames still drive the length check
    assert not validate_utterances([Utterance('u', 'nowhere.wav', text, num_frames=100)], check_audio=False, length_rule=rule).ok


# ---------------------------------------------------------------- preparers on fabricated trees
def test_prepare_aishell(tmp_path):
    base = tmp_path / 'corpus' / 'data_aishell'
    layout = {'train': {'S0002': ['BAC009S0002W0122', 'BAC009S0002W0123'], 'S0003': ['BAC009S0003W0121']},
              'dev': {'S0724': ['BAC009S0724W0121']}, 'test': {'S0764': ['BAC009S0764W0121', 'BAC009S0764W0199']}}
    for split, spks in layout.items():
        for spk, ids in spks.items():
            (base / 'wav' / split / spk).mkdir(parents=True)
            for i, k in enumerate(ids): tone(base / 'wav' / split / spk / f'{k}.wav', 1.0, seed=i)
    (base / 'transcript').mkdir()
    (base / 'transcript' / 'aishell_transcript_v0.8.txt').write_text(
        'BAC009S0002W0122 而 对 楼市 成交 抑制 作用 最 大 的 限 购\n'
        'BAC009S0002W0123 也 成为 地方 政府 的 眼中 钉\n'
        'BAC009S0003W0121 买 ｉＰｈｏｎｅ　５ 的 人\n'
        'BAC009S0724W0121 苹果 iphone 新品\n'
        'BAC009S0764W0121 今天 天气 很 好\n'
        'BAC009S0999W0001 没有 音频 的 句子\n', encoding='utf-8')
    res = prepare_aishell(tmp_path / 'corpus', tmp_path / 'out')
    assert set(res) == {'train', 'dev', 'test'}
    train = read_data_dir(res['train'])
    assert [(u.key, u.text, u.speaker) for u in train] == [
        ('BAC009S0002W0122', '而对楼市成交抑制作用最大的限购', 'S0002'), ('BAC009S0002W0123', '也成为地方政府的眼中钉', 'S0002'),
        ('BAC009S0003W0121', '买IPHONE5的人', 'S0003')]
    assert read_data_dir(res['dev'])[0].text == '苹果IPHONE新品'
    assert res.no_transcript == {'test': ['BAC009S0764W0199']} and res.no_audio == ['BAC009S0999W0001']
    report = (tmp_path / 'out' / 'prepare_report.txt').read_text()
    assert 'test BAC009S0764W0199' in report and 'BAC009S0999W0001' in report
    assert (res['train'] / 'utt2spk').read_text().splitlines()[0] == 'BAC009S0002W0122 S0002'
    assert (res['train'] / 'spk2utt').read_text() == 'S0002 BAC009S0002W0122 BAC009S0002W0123\nS0003 BAC009S0003W0121\n'
    assert validate_data_dir(res['train']).ok
    with pytest.raises(DataError, match='aishell_transcript_v0.8.txt'): prepare_aishell(tmp_path / 'out', tmp_path / 'x')
    # the release ships wav/SPK.tar.gz: not yet extracted -> a clear hint
    packed = tmp_path / 'packed' / 'data_aishell'; (packed / 'wav').mkdir(parents=True); (packed / 'transcript').mkdir()
    shutil.copy(base / 'transcript' / 'aishell_transcript_v0.8.txt', packed / 'transcript')
    (packed / 'wav' / 'S0002.tar.gz').write_bytes(b'')
    with pytest.raises(DataError, match='extract them'): prepare_aishell(packed, tmp_path / 'y')


def test_prepare_librispeech(tmp_path):
    base = tmp_path / 'LibriSpeech'
    trees = {'dev-clean': {('1272', '128104'): 2, ('2277', '149896'): 1}, 'test-clean': {('1089', '134686'): 1}}
    for split, chaps in trees.items():
        for (spk, chap), n in chaps.items():
            d = base / split / spk / chap; d.mkdir(parents=True)
            for i in range(n): tone(d / f'{spk}-{chap}-{i:04d}.flac', 2.5, fmt='FLAC', seed=i)
            lines = [f'{spk}-{chap}-{i:04d} MISTER QUILTER IS THE APOSTLE NUMBER {i} ISN\'T HE' for i in range(n)]
            if spk == '2277': lines = []                          # audio without transcript
            if spk == '1089': lines.append(f'{spk}-{chap}-0007 NO SUCH FILE')  # transcript without audio
            (d / f'{spk}-{chap}.trans.txt').write_text('\n'.join(lines) + '\n')
    res = prepare_librispeech(tmp_path, tmp_path / 'out')
    assert {k: v.name for k, v in res.items()} == {'dev-clean': 'dev_clean', 'test-clean': 'test_clean'}
    dev = read_data_dir(res['dev-clean'])
    assert [(u.key, u.speaker) for u in dev] == [('1272-128104-0000', '1272'), ('1272-128104-0001', '1272')]
    assert dev[1].text == "mister quilter is the apostle number 1 isn't he"
    assert dev[0].audio.endswith('LibriSpeech/dev-clean/1272/128104/1272-128104-0000.flac')
    assert res.no_transcript == {'dev-clean': ['2277-149896-0000']} and res.no_audio == ['1089-134686-0007']
    only = prepare_librispeech(base, tmp_path / 'out2', splits=['test-clean'])
    assert list(only) == ['test-clean']
    rep = validate_data_dir(only['test-clean'], units=LETTERS | set('0123456789'))
    assert rep.ok, rep.summary()
    with pytest.raises(DataError, match='split not found'): prepare_librispeech(base, tmp_path / 'o3', splits=['train-clean-100'])


def test_normalize_zh():
    assert normalize_zh('ｈｅｌｌｏ　世界 ａ１ b') == 'HELLO世界A1B'


# ---------------------------------------------------------------- the synthetic corpus
def _files(root):
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob('*')) if p.is_file()}


def test_synth_deterministic_heldout_and_valid(tmp_path):
    kw = dict(n_train=10, n_dev=3, n_test=6, seed=3)
    a = synth_corpus(tmp_path / 'a', jobs=2, **kw)
    b = synth_corpus(tmp_path / 'b', jobs=1, **kw)
    fa, fb = _files(tmp_path / 'a'), _files(tmp_path / 'b')
    assert fa.keys() == fb.keys()
    for k in fa:
        if k.endswith('.wav') or k.endswith('text') or k.endswith('utt2spk'): assert fa[k] == fb[k], k
    assert len([k for k in fa if k.endswith('.wav')]) == 19
    tr, dv, te = (read_data_dir(a[s]) for s in ('train', 'dev', 'test'))
    train_spk = {speaker_of_voice(v) for v in synth_voices('train')}
    assert {u.speaker for u in tr} <= train_spk and {u.speaker for u in dv} <= train_spk
    assert not {u.speaker for u in te} & train_spk
    assert all(u.speaker.split('_')[-1] in SYNTH_TEST_VARIANTS for u in te)
    for u in tr + dv + te:
        assert 3 <= len(u.text.split()) <= 8 and set(u.text) <= LETTERS
        assert 0.8 < u.duration < 6.0, (u.key, u.duration)
        i = sf.info(u.audio); assert (i.samplerate, i.channels, i.subtype) == (16000, 1, 'PCM_16')
    rep = validate_utterances(tr + dv + te, units=LETTERS)
    assert rep.ok, rep.summary()
    c = synth_corpus(tmp_path / 'c', n_train=10, n_dev=3, n_test=6, seed=4)
    assert [u.text for u in read_data_dir(c['train'])] != [u.text for u in tr]


def test_synth_crash_recovery_and_safety(tmp_path):
    out = tmp_path / 'corpus'
    synth_corpus(out, n_train=2, n_dev=1, n_test=1)
    before = _files(out)
    # a crash left a partial dir from a dead process, and the corpus lost its .done marker
    stale = tmp_path / '.corpus.partial-999999999'; (stale / 'wav').mkdir(parents=True)
    (out / '.done').unlink(); (out / 'train' / 'text').write_text('half written')
    synth_corpus(out, n_train=2, n_dev=1, n_test=1)
    assert not stale.exists() and _files(out) == before
    # different parameters regenerate; same parameters reuse
    synth_corpus(out, n_train=3, n_dev=1, n_test=1)
    assert len(read_data_dir(out / 'train')) == 3
    mtime = (out / 'train' / 'wav.scp').stat().st_mtime_ns
    synth_corpus(out, n_train=3, n_dev=1, n_test=1)
    assert (out / 'train' / 'wav.scp').stat().st_mtime_ns == mtime
    mine = tmp_path / 'mine'; mine.mkdir(); (mine / 'x').write_text('keep')
    with pytest.raises(DataError, match='refusing to overwrite'): synth_corpus(mine, n_train=1, n_dev=1, n_test=1)
    assert (mine / 'x').read_text() == 'keep'


def test_synth_mandarin_variant(tmp_path):
    import re
    zh = synth_corpus(tmp_path / 'zh', n_train=3, n_dev=1, n_test=2, seed=0, lang='zh')
    tr, te = read_data_dir(zh['train']), read_data_dir(zh['test'])
    assert all(re.fullmatch(r'[\u4e00-\u9fff]+', u.text) for u in tr + te)
    assert not {u.speaker for u in te} & {speaker_of_voice(v) for v in synth_voices('train', 'zh')}
    assert validate_utterances(tr + te).ok
    assert json.loads((tmp_path / 'zh' / 'synth.json').read_text())['lang'] == 'zh'
    with pytest.raises(DataError, match="lang must be"): synth_corpus(tmp_path / 'x', lang='fr')


def test_validate_data_dir_segments_and_utt2spk(tmp_path):
    rec = tone(tmp_path / 'rec.wav', 2.0)
    d = tmp_path / 'd'; d.mkdir()
    (d / 'wav.scp').write_text(f'recA {rec}\n')
    (d / 'segments').write_text('a1 recA 0 1.0\na2 recA 1.0 -1\nb1 recB 0 1\na3 recA 5 6\n')
    (d / 'text').write_text('a1 one\na2 two\nb1 three\na3 four\nc1 five\n')
    (d / 'utt2spk').write_text('a1 A\na2 A\nb1 B\na3 A\nc1 C\nzz Z\n')
    rep = validate_data_dir(d)
    assert [(u.key, u.start, u.end, u.speaker) for u in rep.good] == [('a1', 0.0, 1.0, 'A'), ('a2', 1.0, None, 'A')]
    assert rep.bad == {'b1': ["missing_audio: segment's recording 'recB' not in wav.scp"],
                       'c1': ['missing_audio: in text but not in segments'],
                       'zz': ['unknown_id: in utt2spk but not in text or wav.scp'],
                       'a3': ['segment_out_of_range: starts at 5.0s but ' + rec + ' lasts 2.000s',
                              'zero_length: segment shorter than 10 ms']}
    assert 'a3: segment_out_of_range' in rep.summary()
