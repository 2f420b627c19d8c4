"""The built-in corpus' styles: 'basic' stays byte-identical to the corpus before styles existed (hashes pinned before
the change), 'varied' adds sentence styles, prosody and voices while keeping test voices held out."""
import hashlib, json, re
from pathlib import Path
import pytest
from asr_nb.data import _synth_specs, synth_wave, synth_corpus, _run

ESPEAK = _run(['espeak-ng', '--version']).decode(errors='replace').split('Data at')[0].strip()
PINNED_ESPEAK = "eSpeak NG text-to-speech: 1.51"
# computed on the code before the `style` option existed (commit ea16114)
BASIC_SPECS = [('en-gb_m1-train00000', 'west grow today talk', 'en-gb+m1', 155, 30, -3.1760887178380925, 27.258585682307725, (0, 0, 0)),
               ('en-gb-scotland_m4-test00000', 'run little ask close fast drink house', 'en-gb-scotland+m4', 142, 63, -1.070141889179518, 39.57578858464552, (0, 2, 0))]
BASIC_WAVE_SHA = {'en-gb_m1-train00000': '61d230b6963d1b7bf5608f5dec5c49d94f9890e31a0d60a3c069015bbabf3ca5',
                  'en-gb-scotland_m4-test00000': '3d6236d0f3f13c57d81c7c7781fa7d1b3fe5842c836f1b901d990790954544ee'}
BASIC_FILES_SHA = {  # a 2/1/1 corpus, seed 0, the corpus root replaced by ROOT
    'train/text': '6fd9ceb6722001633fa924dacd42b4c292b51260fd0be7ea64ce4a9a3accd9a7',
    'test/text': 'c7c23cb2e40587770a79cb0119a66f1cf6d3991209c04fa6e321001478bf481f',
    'train/wav.scp': '958dadd099d44af3498e7ae651a7890a093fe9638fb10a89e32b627a34792ed9',
    'test/utt2num_frames': 'a8fead4304b9e3a9fcdd63941533985e67ac296c927eb170298bc5b742c42cd2',
    'wav/train/en-gb_m1-train00000.wav': '695ec38722da007adb26fa91c4549da2c66d736c07a6649596e7a841d63317fb',
    'wav/test/en-gb-scotland_m4-test00000.wav': '34d9aceff3ecf234000bacfd0662d1c6454cf406d2346cbfb4a425d019042719',
    'wav/dev/en-029_m3-dev00000.wav': '5674e8bf6acc23b6633b2c6fe0717abc09a256e5f1294ffe98716dd31d801ad3'}
BASIC_DONE_KEYS = ['version', 'espeak', 'n_train', 'n_dev', 'n_test', 'seed', 'sample_rate', 'lang', 'words', 'train_voices', 'test_voices']
needs_pinned_espeak = pytest.mark.skipif(ESPEAK != PINNED_ESPEAK, reason=f"hashes pinned with {PINNED_ESPEAK}, found {ESPEAK}")


def _sha(b: bytes) -> str: return hashlib.sha256(b).hexdigest()


def test_basic_specs_unchanged():
    sp = _synth_specs('train', 1, 0) + _synth_specs('test', 1, 0)
    got = [(s.key, s.say, s.voice, s.speed, s.pitch, s.gain_db, s.snr_db, s.noise_seed) for s in sp]
    assert got == BASIC_SPECS and all(s.text == s.say for s in sp)


@needs_pinned_espeak
def test_basic_audio_unchanged():
    sp = _synth_specs('train', 1, 0) + _synth_specs('test', 1, 0)
    assert {s.key: _sha(synth_wave(s).tobytes()) for s in sp} == BASIC_WAVE_SHA


@needs_pinned_espeak
def test_basic_corpus_and_fingerprint_unchanged(tmp_path):
    out = tmp_path/'c'
    synth_corpus(out, n_train=2, n_dev=1, n_test=1, seed=0)
    got = {k: _sha((out/k).read_bytes().replace(str(tmp_path).encode(), b'ROOT')) for k in BASIC_FILES_SHA}
    assert got == BASIC_FILES_SHA
    done = json.loads((out/'.done').read_text())
    assert list(done) == BASIC_DONE_KEYS and done['version'] == 1 and done['words'] == 461   # existing corpora are reused


def test_synth_cli_style(tmp_path, capsys):
    from asr_nb.cli import synth_main
    argv = ['--out', str(tmp_path/'v'), '--n-train', '3', '--n-dev', '1', '--n-test', '2', '--style', 'varied']
    assert synth_main(argv) == 0
    done = json.loads((tmp_path/'v'/'.done').read_text())
    assert done['style'] == 'varied' and 'en-us+Andy' in done['train_voices'] and 'en-us+Alicia' in done['test_voices']
    assert synth_main(['--out', str(tmp_path/'b'), '--n-train', '1', '--n-dev', '1', '--n-test', '1']) == 0
    assert 'style' not in json.loads((tmp_path/'b'/'.done').read_text())     # basic: the old fingerprint
    capsys.readouterr()
    assert synth_main(['--out', str(tmp_path/'z'), '--style', 'fancy']) == 2
    err = capsys.readouterr().err
    assert 'asr_nb_synth: error:' in err and 'fancy' in err and 'Traceback' not in err


def test_demo_passes_style(tmp_path, monkeypatch):
    import asr_nb.recipes
    from asr_nb.cli import demo_main
    seen = {}
    monkeypatch.setattr(asr_nb.recipes, 'run_tiny_recipe', lambda *a, **k: seen.update(k))
    assert demo_main(['--workdir', str(tmp_path/'d'), '--style', 'varied']) == 0 and seen['style'] == 'varied'
    assert demo_main(['--workdir', str(tmp_path/'d')]) == 0 and seen['style'] == 'basic'


def test_varied_voices_keep_the_accent():
    "A variant changes the timbre, never the language rules: the number words of the accent stay right."
    from asr_nb.data import _phonemes, SYNTH_VARIED_TRAIN_VARIANTS, SYNTH_VARIED_TEST_VARIANTS
    variants = [v for v in SYNTH_VARIED_TRAIN_VARIANTS + SYNTH_VARIED_TEST_VARIANTS if v]
    ref = _phonemes(['105 tomato'], 'en-gb')
    assert all(_phonemes(['105 tomato'], f'en-gb+{v}') == ref for v in variants)
    ref = _phonemes(['105 tomato'], 'en-us')
    assert all(_phonemes(['105 tomato'], f'en-us+{v}') == ref for v in variants)


def test_varied_transcripts_match_speech_and_hold_out_voices():
    from collections import defaultdict
    from asr_nb.data import _phonemes, synth_voices
    specs = {s: _synth_specs(s, 150, 7, style='varied') for s in ('train', 'dev', 'test')}
    test_voices = set(synth_voices('test', style='varied'))
    assert all(s.voice not in test_voices for s in specs['train'] + specs['dev'])
    assert all(s.voice in test_voices for s in specs['test'])
    by_accent = defaultdict(list)
    for s in specs['train'][:100]: by_accent[s.voice.split('+')[0]].append(s)
    for accent, ss in by_accent.items():   # what espeak says for `say` (digits, capitals) == what it says for the transcript
        assert _phonemes([s.say.replace(',', '').rstrip('?') for s in ss], accent) == _phonemes([s.text for s in ss], accent)
    assert {c for s in specs['train'] for c in s.text} <= set("abcdefghijklmnopqrstuvwxyz' ")


def test_varied_corpus_is_deterministic(tmp_path):
    import hashlib as h
    digest = lambda root: {str(f.relative_to(root)): h.sha256(f.read_bytes()).hexdigest() for f in sorted(root.rglob('*')) if f.is_file()}
    synth_corpus(tmp_path/'a', n_train=8, n_dev=2, n_test=2, seed=5, style='varied', jobs=2)
    synth_corpus(tmp_path/'b', n_train=8, n_dev=2, n_test=2, seed=5, style='varied', jobs=1)
    a, b = digest(tmp_path/'a'), digest(tmp_path/'b')
    strip = lambda d: {k: v for k, v in d.items() if not k.endswith('wav.scp')}   # wav.scp holds the corpus path
    assert strip(a) == strip(b) and len([k for k in a if k.endswith('.wav')]) == 12
