"""Robustness of decoding and scoring (issue #10, decode side) and the search registry (issue #11, seams 4 and 6).

Every bad input a user can give `asr_nb_decode` / `asr_nb_score` ends in one line naming the file (and line or
utterance) with exit status 2, or is decoded and counted instead of silently mis-scored. The experiments here are
built in a second from a random tiny model (no training): the point is the plumbing, not accuracy.

Run: .venv/bin/python -m pytest -q tests/test_robustness_decode.py
"""
import json, math
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch

from asr_nb.cli import decode_main, score_main, decode_parser
from asr_nb.core import ConfigError, DecodeConfig, ExpConfig, ModelConfig, config_from_dict, save_config
from asr_nb.data import Utterance
from asr_nb.decode import SEARCHES, check_method, decode_data, methods_for, score_hyps
from asr_nb.lm import ArpaError, read_arpa
from asr_nb.metrics import read_text, score_texts, write_text
from asr_nb.model import build_model, ctc_greedy_search
from asr_nb.tokenizer import CharTokenizer

torch.set_num_threads(1)
SR = 16000


def run(main, argv, capsys):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_one_line_error(rc, err, *needles):
    lines = [l for l in err.splitlines() if l.strip()]
    assert rc == 2 and len(lines) == 1 and 'error:' in lines[0] and 'Traceback' not in err, err
    for n in needles: assert n in lines[0], (n, lines[0])


def make_exp(d: Path, ctc_weight: float = 0.3, decoder_blocks: int = 1) -> Path:
    "An experiment dir holding a random tiny model: config.yaml, units.txt, cmvn.npz, model_avg.pt."
    torch.manual_seed(0)
    d.mkdir(parents=True, exist_ok=True)
    tok = CharTokenizer.build(["hello world", "the quick brown fox"])
    cfg = ExpConfig(model=config_from_dict(dict(encoder=dict(d_model=32, attention_heads=2, linear_units=64, num_blocks=1,
                                                             cnn_kernel=3),
                                                decoder=dict(num_blocks=decoder_blocks, linear_units=64),
                                                loss=dict(ctc_weight=ctc_weight)), ModelConfig))
    cmvn = (torch.zeros(80) + 10, torch.ones(80))
    model = build_model(cfg, tok.vocab_size, cmvn)
    save_config(cfg, d/'config.yaml'); tok.save(d)
    np.savez(d/'cmvn.npz', mean=cmvn[0].numpy(), istd=cmvn[1].numpy())
    torch.save(dict(model=model.state_dict()), d/'model_avg.pt')
    return d


def write_wav(path: Path, seconds: float, seed: int = 0) -> str:
    g = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    sf.write(path, (0.2 * np.sin(2 * np.pi * 300 * t) + 0.01 * g.standard_normal(t.size)).astype('float32'), SR)
    return str(path)


def make_data(d: Path, durations: dict, text: dict | None) -> Path:
    "A Kaldi data dir: wav.scp for `durations` (key -> seconds) and, when given, `text`."
    d.mkdir(parents=True, exist_ok=True)
    wavs = {k: write_wav(d/f'{k}.wav', s, i) for i, (k, s) in enumerate(durations.items())}
    (d/'wav.scp').write_text(''.join(f"{k} {v}\n" for k, v in wavs.items()))
    if text is not None: (d/'text').write_text(''.join(f"{k} {v}\n".replace(' \n', '\n') for k, v in text.items()))
    return d


@pytest.fixture(scope='module')
def exp(tmp_path_factory):
    return make_exp(tmp_path_factory.mktemp('exp')/'tiny')


@pytest.fixture(scope='module')
def exp_no_ctc(tmp_path_factory):
    "Trained with ctc_weight=0: the CTC head exists but was never trained."
    return make_exp(tmp_path_factory.mktemp('exp')/'att_only', ctc_weight=0.0)


@pytest.fixture(scope='module')
def exp_ctc_only(tmp_path_factory):
    return make_exp(tmp_path_factory.mktemp('exp')/'ctc_only', ctc_weight=1.0, decoder_blocks=0)


# ---------------------------------------------------------------- the search registry (seams)

def test_one_list_of_methods_everywhere(exp):
    from asr_nb import cli
    from asr_nb.export import Recognizer
    names = tuple(SEARCHES)
    assert names == ('ctc_greedy', 'ctc_prefix_beam', 'attention', 'joint', 'rescoring', 'ctc_beam_lm', 'ctc_beam_lm_fast', 'paraformer')
    assert cli.METHODS == names
    for m in names: DecodeConfig(method=m)                           # the config accepts exactly the table
    with pytest.raises(ConfigError, match="'greedy' is not one of"): DecodeConfig(method='greedy')
    help_text = decode_parser().format_help()
    assert all(f"  {m} " in help_text for m in names)                # --help lists every search with what it needs
    assert Recognizer.from_exp(exp).methods == names[:7]                # a hybrid model: all but Paraformer's
    assert methods_for({'ctc'}) == ('ctc_greedy', 'ctc_prefix_beam', 'ctc_beam_lm', 'ctc_beam_lm_fast') and methods_for({'decoder'}) == ('attention',)
    assert methods_for(set()) == ()


def test_refusals_name_what_is_missing():
    with pytest.raises(ConfigError) as e: check_method('joint', {'ctc'}, 'this model (exp/x)')
    assert str(e.value) == ("method 'joint' needs an attention decoder; this model (exp/x) has no attention decoder: "
                            "use one of ctc_greedy, ctc_prefix_beam, ctc_beam_lm, ctc_beam_lm_fast")
    with pytest.raises(ConfigError) as e: check_method('ctc_prefix_beam', {'decoder'}, 'this model (exp/y)')
    assert str(e.value) == ("method 'ctc_prefix_beam' needs a trained CTC head; this model (exp/y) was trained with "
                            "ctc_weight=0 (its CTC head is untrained): use one of attention")


def test_decode_refuses_before_any_work(exp_ctc_only, exp_no_ctc, tmp_path, capsys):
    data = make_data(tmp_path/'data', {'u1': 0.5}, {'u1': 'hello'})
    out = tmp_path/'out'
    rc, _, err = run(decode_main, ['--exp', exp_ctc_only, '--data', data, '--method', 'joint', '--out', out], capsys)
    assert_one_line_error(rc, err, f"method 'joint' needs an attention decoder; this model ({exp_ctc_only}) has no "
                                   "attention decoder: use one of ctc_greedy, ctc_prefix_beam, ctc_beam_lm, ctc_beam_lm_fast")
    rc, _, err = run(decode_main, ['--exp', exp_no_ctc, '--data', data, '--method', 'ctc_greedy,attention', '--out', out], capsys)
    assert_one_line_error(rc, err, "method 'ctc_greedy' needs a trained CTC head", "ctc_weight=0", "use one of attention")
    assert not out.exists()                                          # refused before anything was decoded or written
    # 'all' means every method this model can run
    rc, stdout, err = run(decode_main, ['--exp', exp_no_ctc, '--data', data, '--method', 'all', '--out', out,
                                        '--beam', 2], capsys)
    assert rc == 0, err
    assert sorted(p.name for p in out.iterdir()) == ['report.txt', 'result.json', 'text']  # one method: no sub dir
    assert json.loads((out/'result.json').read_text())['method'] == 'attention'


def test_numpy_greedy_equals_the_one_ctc_greedy():
    from asr_nb.export import ctc_greedy_ids
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        B, T, V = 4, int(torch.randint(1, 40, (1,), generator=g)), int(torch.randint(2, 8, (1,), generator=g))
        lp = (torch.randn(B, T, V, generator=g) * 4).log_softmax(-1)
        lens = torch.randint(0, T + 1, (B,), generator=g)
        for blank in (0, V - 1):
            assert [ctc_greedy_ids(lp[b, :int(n)].numpy(), blank) for b, n in enumerate(lens)] == \
                   ctc_greedy_search(lp, lens, blank)


# ---------------------------------------------------------------- kind 10: missing and empty references

def test_data_dir_without_text_is_decoded_not_scored(exp, tmp_path, capsys):
    data = make_data(tmp_path/'notext', {'u1': 0.6, 'u2': 0.4}, None)
    rc, out, err = run(decode_main, ['--exp', exp, '--data', data, '--out', tmp_path/'o'], capsys)
    assert rc == 0, err
    hyp_keys = [l.split()[0] for l in (tmp_path/'o'/'text').read_text().splitlines()]
    assert hyp_keys == ['u1', 'u2']
    res = json.loads((tmp_path/'o'/'result.json').read_text())
    assert (res['cer'], res['wer'], res['scored'], res['unscored'], res['n']) == (None, None, 0, 2, 2)
    assert 'CER    n/a %  WER    n/a %' in out and 'unscored=2' in out
    assert 'without a reference' in err


def test_empty_references_are_left_out_with_exact_values():
    refs = {'a': 'abc', 'b': '', 'c': 'ab d'}
    hyps = {'a': 'abd', 'b': 'some long hallucination', 'c': 'ab d'}
    r = score_hyps(refs, hyps)
    # a: 1 sub of 3 chars; c: 0 of 4 chars ("ab d", English: the space counts); b not scored (was: 23 insertions)
    assert r['cer'] == pytest.approx(100 * 1 / 7) and r['wer'] == pytest.approx(100 * 1 / 3)
    assert (r['scored'], r['unscored'], r['cer_counts']) == (2, 1, dict(n=7, sub=1, dele=0, ins=0))
    nothing = score_hyps({'b': ''}, {'b': 'xyz'})
    assert (nothing['cer'], nothing['wer'], nothing['scored']) == (None, None, 0)
    assert nothing['report'].startswith('%CER n/a [ 0 / 0, 0 ins, 0 del, 0 sub ]')


def test_score_cli_empty_references(tmp_path, capsys):
    write_text({'a': 'abc', 'b': ''}, tmp_path/'ref'); write_text({'a': 'abc', 'b': 'xyz'}, tmp_path/'hyp')
    rc, out, err = run(score_main, ['--ref', tmp_path/'ref', '--hyp', tmp_path/'hyp'], capsys)
    assert rc == 0 and out.strip() == 'CER 0.00 %  WER 0.00 %  (1 utterances scored, 1 with an empty reference left out)', out
    write_text({'b': ''}, tmp_path/'ref2'); write_text({'b': 'xyz'}, tmp_path/'hyp2')
    rc, out, err = run(score_main, ['--ref', tmp_path/'ref2', '--hyp', tmp_path/'hyp2', '--json'], capsys)
    assert rc == 0 and json.loads(out)['cer'] is None and json.loads(out)['wer'] is None


def test_space_rule_is_decided_once_per_corpus():
    # a Chinese reference with an English-looking hypothesis: both split without spaces (4 subs), not 4 subs + 1 ins
    assert score_hyps({'a': '今天 天气'}, {'a': 'ab cd'})['cer'] == pytest.approx(100.0)
    # mixed corpus: the English utterance of a Chinese test set is scored without spaces too -> 1 error / 14 chars
    refs, hyps = {'a': '今天 天气', 'b': 'hello world'}, {'a': '今天天汽', 'b': 'hello world'}
    assert score_hyps(refs, hyps)['cer'] == pytest.approx(100 / 14)
    assert score_hyps(refs, hyps, lang='zh')['cer'] == pytest.approx(100 / 14)
    assert score_hyps(refs, hyps, lang='en')['cer'] == pytest.approx(100 * 2 / 16)  # spaces kept: 5 + 11 chars, 1 sub + 1 del
    assert score_texts({'b': 'hello world'}, {'b': 'hello world'}, 'char').total.ref_len == 11  # English alone keeps spaces


# ---------------------------------------------------------------- kind 9: the one text reader

def test_bom_prefixed_text_scores_correctly(tmp_path, capsys):
    (tmp_path/'ref').write_bytes('\ufeffu1 hello world\r\nu2 the fox\r\n'.encode('utf-8'))  # Windows editor: BOM + CRLF
    (tmp_path/'hyp').write_text('u1 hello world\nu2 the box\n')
    assert list(read_text(tmp_path/'ref')) == ['u1', 'u2'] and read_text(tmp_path/'ref')['u1'] == 'hello world'
    rc, out, err = run(score_main, ['--ref', tmp_path/'ref', '--hyp', tmp_path/'hyp', '--json'], capsys)
    assert rc == 0, err
    r = json.loads(out)
    assert r['wer'] == pytest.approx(100 * 1 / 4) and r['cer'] == pytest.approx(100 * 1 / 18) and r['scored'] == 2


def test_bad_text_files_are_one_line_errors(tmp_path, capsys):
    (tmp_path/'ref').write_bytes(b'u1 hello\nu2 caf\xe9\n')        # latin-1, not UTF-8
    (tmp_path/'hyp').write_text('u1 hello\n')
    rc, _, err = run(score_main, ['--ref', tmp_path/'ref', '--hyp', tmp_path/'hyp'], capsys)
    assert_one_line_error(rc, err, f"{tmp_path/'ref'}:2", 'invalid UTF-8')
    (tmp_path/'dup').write_text('u1 a\nu1 b\n')
    rc, _, err = run(score_main, ['--ref', tmp_path/'dup', '--hyp', tmp_path/'hyp'], capsys)
    assert_one_line_error(rc, err, f"{tmp_path/'dup'}:2", "duplicate id 'u1'")


# ---------------------------------------------------------------- kind 1: a bad ARPA file

ARPA = "\\data\\\nngram 1=3\n\n\\1-grams:\n-0.5 </s>\n-99 <s>\n-0.6 h\n\n\\end\\\n"


def test_arpa_reader_names_file_and_line(tmp_path):
    (tmp_path/'ok.arpa').write_text(ARPA)
    assert read_arpa(tmp_path/'ok.arpa')[0] == 1
    (tmp_path/'latin.arpa').write_bytes(ARPA.replace('-0.6 h', '-0.6 \xe9').encode('latin-1'))
    with pytest.raises(ArpaError, match=r"latin\.arpa:7: invalid UTF-8"): read_arpa(tmp_path/'latin.arpa')
    (tmp_path/'count.arpa').write_text(ARPA.replace('ngram 1=3', 'ngram 1=x'))
    with pytest.raises(ArpaError, match=r"count\.arpa:2: expected 'ngram N=count'"): read_arpa(tmp_path/'count.arpa')
    (tmp_path/'num.arpa').write_text(ARPA.replace('-0.6 h', 'oops h'))
    with pytest.raises(ArpaError, match=r"num\.arpa:7: bad number"): read_arpa(tmp_path/'num.arpa')
    (tmp_path/'bom.arpa').write_text('\ufeff' + ARPA, encoding='utf-8')
    assert read_arpa(tmp_path/'bom.arpa')[0] == 1


@pytest.mark.parametrize('content, needle', [
    (ARPA.replace('-0.6 h', '-0.6 \xe9').encode('latin-1'), 'bad.arpa:7: invalid UTF-8'),
    (ARPA.replace('\\data\\\n', '').encode(), "bad.arpa:1: text outside a section: 'ngram 1=3'"),
    (b'not an lm at all\n', 'bad.arpa:1: text outside a section'),
])
def test_decode_with_a_bad_arpa_is_one_line_exit_2(exp, tmp_path, capsys, content, needle):
    data = make_data(tmp_path/'data', {'u1': 0.5}, {'u1': 'hello'})
    (tmp_path/'bad.arpa').write_bytes(content)
    rc, _, err = run(decode_main, ['--exp', exp, '--data', data, '--method', 'ctc_prefix_beam', '--out', tmp_path/'o',
                                   '--lm-path', tmp_path/'bad.arpa', '--lm-weight', 0.5], capsys)
    assert_one_line_error(rc, err, needle)
    assert 'weights_only' not in err


def test_unreadable_neural_lm_is_one_line(exp, tmp_path, capsys):
    data = make_data(tmp_path/'data', {'u1': 0.5}, {'u1': 'hello'})
    (tmp_path/'lm.pt').write_bytes(b'garbage, not a checkpoint')
    rc, _, err = run(decode_main, ['--exp', exp, '--data', data, '--method', 'ctc_prefix_beam', '--out', tmp_path/'o',
                                   '--lm-path', tmp_path/'lm.pt', '--lm-weight', 0.5], capsys)
    assert_one_line_error(rc, err, 'lm.pt: not a readable LM checkpoint')
    assert 'weights_only' not in err


# ---------------------------------------------------------------- kind 7: too short for the model

def test_too_short_utterances_are_counted_and_named(exp, tmp_path, capsys):
    # 50 ms = 3 fbank frames: the conv2d subsampling (x4) leaves no encoder frame
    data = make_data(tmp_path/'data', {'long': 0.8, 'blip': 0.05}, {'long': 'hello', 'blip': 'the'})
    rc, out, err = run(decode_main, ['--exp', exp, '--data', data, '--method', 'ctc_greedy,joint', '--beam', 2,
                                     '--out', tmp_path/'o'], capsys)
    assert rc == 0, err
    for m in ('ctc_greedy', 'joint'):
        res = json.loads((tmp_path/'o'/m/'result.json').read_text())
        assert (res['n'], res['too_short'], res['scored']) == (2, 1, 2)
        hyps = dict(l.split(maxsplit=1) if ' ' in l else (l, '') for l in (tmp_path/'o'/m/'text').read_text().splitlines())
        assert hyps['blip'] == ''
        assert f"{m}: 1 utterance(s) too short for the model" in err and 'blip' in err
    assert 'too short=1' in out


def test_decode_data_with_a_bare_model_counts_the_same(exp):
    from asr_nb.checkpoint import load_model
    model, tok, cfg = load_model(exp)
    d = exp.parent/'bare'; d.mkdir(exist_ok=True)
    utts = [Utterance('long', write_wav(d/'l.wav', 0.8), 'hello'), Utterance('blip', write_wav(d/'b.wav', 0.05), 'the'),
            Utterance('noref', write_wav(d/'n.wav', 0.5), None)]
    r = decode_data(model, utts, 'ctc_greedy', tokenizer=tok, feat_cfg=cfg.features)['ctc_greedy']
    assert (r['n'], r['too_short'], r['scored'], r['unscored']) == (3, 1, 2, 1)
    assert r['hyps']['blip'] == '' and math.isclose(r['audio_seconds'], 1.35, rel_tol=1e-6)


def test_encoder_length_rule_of_an_exported_model():
    "An onnxruntime recognizer has no PyTorch model: the too-short count uses `model_length_rule` with its subsampling."
    from asr_nb.core import FeatureConfig
    from asr_nb.decode import _encoder_frames
    from asr_nb.export import Recognizer
    from asr_nb.features import num_frames
    onnx_like = Recognizer.__new__(Recognizer)     # what from_onnx sets: no PyTorch model, the recorded subsampling
    onnx_like.model, onnx_like.subsampling, onnx_like.feat_cfg = None, 4, FeatureConfig()
    assert [num_frames(n) for n in (800, 1360, 16000)] == [3, 7, 98]
    assert _encoder_frames(onnx_like, [800, 1360, 16000]) == [0, 1, 23]   # ((T - 1) // 2 - 1) // 2


def test_ids_missing_from_text_are_decoded_not_scored(exp, tmp_path, capsys):
    "A `text` that lacks some ids (or has an empty line for one): those are decoded, written and counted, not dropped."
    data = make_data(tmp_path/'partial', {'u1': 0.6, 'u2': 0.5, 'u3': 0.4}, {'u1': 'hello', 'u3': ''})
    rc, out, err = run(decode_main, ['--exp', exp, '--data', data, '--out', tmp_path/'o'], capsys)
    assert rc == 0, err
    assert [l.split()[0] for l in (tmp_path/'o'/'text').read_text().splitlines()] == ['u1', 'u2', 'u3']
    res = json.loads((tmp_path/'o'/'result.json').read_text())
    assert (res['n'], res['scored'], res['unscored']) == (3, 1, 2) and res['cer'] is not None
