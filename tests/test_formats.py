"""The seeds' data formats (#16 part 3): ESPnet1 data.json and Kaldi feats.scp read through kaldiio, the dump stage,
URL sources behind --allow-url, and asr_nb_split. Each format is trained and decoded, or round-tripped, on fabricated data."""
import functools, http.server, json, socket, threading
from pathlib import Path

import kaldiio
import numpy as np
import pytest
import soundfile as sf

from asr_nb.cli import decode_main, dump_main, split_main, train_main
from asr_nb.core import FeatureConfig
from asr_nb.data import (DataError, UrlSources, Utterance, load_utterances, read_espnet_json, read_feats,
                         write_data_dir, write_espnet_json, write_jsonl)
from asr_nb.features import dump_features, load_precomputed
from cli_helpers import ROOT, one_line_error, run, synth

TINY = str(ROOT/'conf'/'tiny.yaml')
# a tiny model and one short epoch: the point is that each format reaches training and decoding
TINY_OVERRIDES = ['model.encoder.d_model=32', 'model.encoder.attention_heads=2', 'model.encoder.linear_units=64',
                  'model.encoder.num_blocks=1', 'model.decoder.num_blocks=1', 'model.decoder.linear_units=64',
                  'model.encoder.cnn_kernel=3', 'train.max_epochs=1', 'train.log_interval=1', 'train.tensorboard=false',
                  'data.max_frames_in_batch=3000', 'data.num_workers=0', 'optim.warmup_steps=2', 'train.num_threads=1']


@pytest.fixture(scope='module')
def corpus(tmp_path_factory):
    return synth(tmp_path_factory, 12, seed=5)


@pytest.fixture(scope='module')
def dumped(corpus, tmp_path_factory):
    "The corpus' train and dev sets dumped with asr_nb_dump (the CLI), with the tiny config's features."
    d = tmp_path_factory.mktemp('dump')
    for s in ('train', 'dev'):
        assert dump_main([str(corpus[s]), str(d/s), '--config', TINY]) == 0
    return d


def _train(train, valid, exp, capsys, *extra):
    return run(train_main, ['--config', TINY, '--train', train, '--valid', valid, '--exp', exp, *TINY_OVERRIDES, *extra], capsys)


def test_dump_is_the_front_end_and_kaldi_readable(corpus, dumped):
    utts = {u.key: u for u in load_utterances(corpus['train'])}
    back = load_utterances(dumped/'train')
    assert [u.key for u in back] == sorted(utts) and all(u.feats for u in back)
    scp = kaldiio.load_scp(str(dumped/'train'/'feats.scp'))          # what Kaldi/ESPnet tools read
    from asr_nb.features import load_audio, make_frontend
    fe = make_frontend(FeatureConfig(dither=0.0))
    u = back[0]
    np.testing.assert_allclose(scp[u.key], fe(load_audio(utts[u.key].audio)).numpy(), atol=1e-5)
    assert u.num_frames == scp[u.key].shape[0]                       # utt2num_frames: feature rows, as in Kaldi
    assert json.loads((dumped/'train'/'dump.json').read_text())['dim'] == 80
    assert not [p for p in (dumped/'train').iterdir() if p.name.startswith('.')]


def test_train_on_dump_and_decode(corpus, dumped, tmp_path, capsys):
    rc, out, err = _train(dumped/'train', dumped/'dev', tmp_path/'exp', capsys)
    assert rc == 0, err
    assert (tmp_path/'exp'/'cmvn.npz').is_file()                     # CMVN over the precomputed features
    dec = lambda data, out, *x: run(decode_main, ['--exp', tmp_path/'exp', '--data', data, '--method', 'ctc_greedy,rescoring',
                                                  '--out', tmp_path/out, *x], capsys)
    rc, out, err = dec(corpus['dev'], 'audio'); assert rc == 0, err                 # from the audio, through our fbank
    rc, out, err = dec(dumped/'dev', 'dump'); assert rc == 0, err                   # from the dump's features (fbank bypassed)
    dev = load_utterances(dumped/'dev')
    write_data_dir([Utterance(u.key, u.feats, u.text, feats=u.feats) for u in dev], tmp_path/'fo')   # features only, no wav.scp
    write_espnet_json(dev, tmp_path/'dev.json')
    rc, out, err = dec(tmp_path/'fo', 'fo', '--nbest', '2'); assert rc == 0, err
    rc, out, err = dec(tmp_path/'dev.json', 'json'); assert rc == 0, err
    for m in ('ctc_greedy', 'rescoring'):   # the dump is the front end's output without dither: the same hypotheses
        want = (tmp_path/'audio'/m/'text').read_text()
        assert len(want.splitlines()) == len(dev)
        for d in ('dump', 'fo', 'json'): assert (tmp_path/d/m/'text').read_text() == want, (d, m)
    assert (tmp_path/'fo'/'rescoring'/'text.2').is_file()                           # n-best from features too
    res = json.loads((tmp_path/'fo'/'ctc_greedy'/'result.json').read_text())
    assert res['n'] == len(dev) and 0 < res['audio_seconds'] and res['cer'] is not None


def test_decode_precomputed_of_the_wrong_width_is_one_line(corpus, dumped, tmp_path, capsys):
    assert dump_main([str(corpus['dev']), str(tmp_path/'d40'), '--config', TINY, 'features.n_mels=40']) == 0
    capsys.readouterr()
    rc, out, err = _train(dumped/'train', dumped/'dev', tmp_path/'exp', capsys, 'train.max_steps=1')
    assert rc == 0, err
    rc, out, err = run(decode_main, ['--exp', tmp_path/'exp', '--data', tmp_path/'d40', '--out', tmp_path/'dec'], capsys)
    one_line_error(rc, err, 'have dimension 40')


def test_espnet_json_train_and_decode(corpus, dumped, tmp_path, capsys):
    for s in ('train', 'dev'):   # ESPnet1 data.json files pointing at the Kaldi archives
        write_espnet_json(load_utterances(dumped/s), tmp_path/f'{s}.json', units={'<unk>': 1})
    obj = json.loads((tmp_path/'train.json').read_text())['utts']
    k, e = next(iter(obj.items()))
    assert e['input'][0]['feat'].split(':')[-1].isdigit() and len(e['input'][0]['shape']) == 2 and e['output'][0]['text']
    back = read_espnet_json(tmp_path/'train.json')
    assert [(u.key, u.text, u.speaker, u.num_frames) for u in back] == \
           [(u.key, u.text, u.speaker, u.num_frames) for u in load_utterances(dumped/'train')]
    rc, out, err = _train(tmp_path/'train.json', tmp_path/'dev.json', tmp_path/'exp', capsys)
    assert rc == 0, err
    rc, out, err = run(decode_main, ['--exp', tmp_path/'exp', '--data', corpus['test'], '--method', 'ctc_greedy',
                                     '--out', tmp_path/'dec'], capsys)
    assert rc == 0, err


def test_precomputed_dimension_mismatch_is_one_line(corpus, tmp_path, capsys):
    assert dump_main([str(corpus['dev']), str(tmp_path/'d40'), '--config', TINY, 'features.n_mels=40']) == 0
    capsys.readouterr()
    rc, out, err = _train(tmp_path/'d40', tmp_path/'d40', tmp_path/'exp', capsys)
    one_line_error(rc, err, 'utterance', 'have dimension 40', 'take 80', skip_info=True)


def test_kaldi_feats_scp_written_by_kaldiio_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    mats = {f'u{i}': rng.standard_normal((20 + i, 13)).astype(np.float32) for i in range(3)}
    with kaldiio.WriteHelper(f'ark,scp:{tmp_path}/feats.ark,{tmp_path}/feats.scp') as w:   # as Kaldi's copy-feats would
        for k, m in mats.items(): w(k, m)
    (tmp_path/'text').write_text(''.join(f'{k} word {k}\n' for k in mats))
    (tmp_path/'utt2spk').write_text(''.join(f'{k} spk\n' for k in mats))
    utts = load_utterances(tmp_path)
    assert [(u.key, u.num_frames, u.speaker) for u in utts] == [('u0', 20, 'spk'), ('u1', 21, 'spk'), ('u2', 22, 'spk')]
    for u in utts: np.testing.assert_array_equal(read_feats(u.feats), mats[u.key])
    out = write_data_dir(utts, tmp_path/'copy')
    assert load_utterances(out) == utts
    with pytest.raises(DataError, match='utterance u0: precomputed features'): load_precomputed(utts[0], 80)


def test_dump_killed_midway_leaves_no_index(corpus, tmp_path, monkeypatch):
    out = dump_features(corpus['dev'], tmp_path/'d', FeatureConfig())
    calls = []
    def dying(f, d, *a, **k):
        calls.append(1)
        if len(calls) > 1: raise KeyboardInterrupt   # killed while writing the archive
        return real(f, d, *a, **k)
    real = kaldiio.save_ark
    monkeypatch.setattr(kaldiio, 'save_ark', dying)
    with pytest.raises(KeyboardInterrupt): dump_features(corpus['dev'], out, FeatureConfig())
    assert not (out/'feats.scp').exists()                            # no index to trust: the old one is gone too
    assert not [p for p in out.iterdir() if p.name.startswith('.')]
    monkeypatch.undo()
    assert len(load_utterances(dump_features(corpus['dev'], out, FeatureConfig()))) == len(load_utterances(corpus['dev']))


@pytest.fixture
def server(tmp_path):
    "A local http.server on 127.0.0.1 serving tmp_path/www (no internet in tests)."
    www = tmp_path/'www'; www.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(www))
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    srv.RequestHandlerClass.log_message = lambda *a: None
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield www, f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown(); srv.server_close()


def test_url_sources_need_the_flag_then_are_cached(corpus, server, tmp_path, capsys, monkeypatch):
    www, base = server
    monkeypatch.setenv('XDG_CACHE_HOME', str(tmp_path/'xdg'))
    utts = load_utterances(corpus['dev'])
    for u in utts: (www/f'{u.key}.wav').write_bytes(Path(u.audio).read_bytes())
    m = write_jsonl([Utterance(u.key, f'{base}/{u.key}.wav', u.text, speaker=u.speaker) for u in utts], tmp_path/'m.jsonl')
    rc, out, err = run(split_main, [m, '--dev-percent', '25', '--out', tmp_path/'s0'], capsys)
    one_line_error(rc, err, 'm.jsonl:1', 'audio is a URL', '--allow-url')
    rc, out, err = run(dump_main, [m, tmp_path/'d0', '--config', TINY], capsys)
    one_line_error(rc, err, 'm.jsonl:1', '--allow-url')
    rc, out, err = run(dump_main, [m, tmp_path/'d1', '--config', TINY, 'data.allow_url=true'], capsys)
    assert rc == 0, err
    blobs = list((tmp_path/'xdg'/'asr_nb'/'audio'/'blobs').iterdir())
    assert len(blobs) == len(utts) and all(not b.name.startswith('.') for b in blobs)
    import hashlib
    assert {b.name.split('.')[0] for b in blobs} == {hashlib.sha256(Path(u.audio).read_bytes()).hexdigest() for u in utts}
    for u in utts: (www/f'{u.key}.wav').unlink()                     # the cache answers now: no download
    rc, out, err = run(split_main, [m, '--dev-percent', '25', '--out', tmp_path/'s1', '--allow-url'], capsys)
    assert rc == 0, err
    dev = load_utterances(tmp_path/'s1'/'dev')
    assert all(Path(u.audio).parent.name == 'blobs' for u in dev)


def test_url_timeout_is_one_line(tmp_path, capsys):
    s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(1)      # accepts, never answers
    try:
        m = write_jsonl([Utterance('a', f'http://127.0.0.1:{s.getsockname()[1]}/a.wav', 'x')], tmp_path/'slow.jsonl')
        rc, out, err = run(dump_main, [m, tmp_path/'d', 'data.allow_url=true', 'data.url_timeout=0.5',
                                       f'data.url_cache={tmp_path/"c"}'], capsys)
        one_line_error(rc, err, 'slow.jsonl:1', 'cannot download', 'timeout 0.5 s')
        assert not [p for p in (tmp_path/'c'/'blobs').iterdir()]    # no partial download left
    finally: s.close()


def test_split_deterministic_by_speaker_or_utterance(corpus, tmp_path, capsys):
    args = lambda out, *x: [corpus['train'], '--dev-percent', '20', '--out', tmp_path/out, *x]
    rc, out1, err = run(split_main, args('a', '--seed', '7'), capsys); assert rc == 0, err
    rc, out2, err = run(split_main, args('b', '--seed', '7'), capsys); assert rc == 0, err
    dev = lambda d: [u.key for u in load_utterances(tmp_path/d/'dev')]
    assert dev('a') == dev('b') and dev('a')
    assert 'by speaker' in out1                                      # the synthetic corpus has utt2spk
    tr = {u.speaker for u in load_utterances(tmp_path/'a'/'train')}
    assert not tr & {u.speaker for u in load_utterances(tmp_path/'a'/'dev')}
    assert sorted(dev('a') + [u.key for u in load_utterances(tmp_path/'a'/'train')]) == \
           sorted(u.key for u in load_utterances(corpus['train']))
    rc, out, err = run(split_main, args('c', '--seed', '7', '--by', 'utterance'), capsys)
    assert rc == 0 and 'by utterance' in out and len(dev('c')) == round(0.2 * len(load_utterances(corpus['train'])))
    rc, out, err = run(split_main, [corpus['train'], '--dev-percent', '150', '--out', tmp_path/'x'], capsys)
    one_line_error(rc, err, '--dev-percent')


def test_validate_feature_only_data(corpus, dumped, tmp_path, capsys):
    from asr_nb.cli import validate_main
    write_espnet_json(load_utterances(dumped/'dev'), tmp_path/'dev.json')
    for data in (dumped/'dev', tmp_path/'dev.json'):
        rc, out, err = run(validate_main, [data, '--no-read'], capsys)
        assert rc == 0 and '0 bad' in out, err
    (tmp_path/'dev.json').write_text((tmp_path/'dev.json').read_text().replace(str(dumped), str(tmp_path/'moved')))
    rc, out, err = run(validate_main, [tmp_path/'dev.json', '--no-read'], capsys)
    assert rc == 1 and 'missing_feats' in out
