"""Paraformer (issue 13) end to end: configs, an overfit check of the whole model, training through `asr_nb_train`,
decoding with the one-pass search through `asr_nb_decode` and `Recognizer`, bad targets in one line, ONNX."""
import json
from pathlib import Path

import pytest
import torch

from asr_nb.cli import decode_main, export_main, train_main, transcribe_main
from asr_nb.core import Batch, UserError, load_config
from asr_nb.model import build_model, check_model_config
from asr_nb.paraformer import Paraformer, ParaformerTargetError

from cli_helpers import ROOT, one_line_error, run, synth
SMALL = ['model.encoder.d_model=32', 'model.encoder.attention_heads=2', 'model.encoder.linear_units=64',
         'model.encoder.num_blocks=1', 'model.encoder.cnn_kernel=3', 'model.decoder.num_blocks=1', 'model.decoder.linear_units=64',
         'train.max_steps=3', 'train.log_interval=1', 'train.tensorboard=false', 'train.num_threads=1',
         'data.max_frames_in_batch=3000', 'optim.warmup_steps=2', 'data.num_workers=0']


@pytest.mark.parametrize('name', ['paraformer_tiny', 'paraformer'])
def test_configs_build(name):
    cfg = load_config(ROOT/'conf'/f'{name}.yaml')
    assert cfg.model.family == 'paraformer' and cfg.decode.method == 'paraformer'
    check_model_config(cfg)                                      # builds on the meta device: every ConfigError surfaces


def tiny_model(vocab=8, **over):
    cfg = load_config(ROOT/'conf'/'paraformer_tiny.yaml')
    from asr_nb.core import apply_overrides
    cfg = apply_overrides(cfg, [s for s in SMALL if s.startswith('model.')] + ['specaug.enable=false',
                                'model.encoder.dropout=0', 'model.decoder.dropout=0'] + [f'{k}={v}' for k, v in over.items()])
    return build_model(cfg, vocab)


@pytest.mark.parametrize('over', [{'model.paraformer.decoder_input': 'scaled_pos'},
                                  {'model.paraformer.decoder_input': 'raw', 'model.paraformer.decoder_fsmn_kernel': 3}])
def test_overfit_one_batch_decodes_its_targets(over):
    "A hundred updates on one batch: the predictor counts the tokens and the one-pass search reads them back."
    torch.manual_seed(0); threads = torch.get_num_threads(); torch.set_num_threads(1)   # tiny ops: one thread is fastest
    model = tiny_model(**over)
    feats, flens = torch.randn(2, 60, 80), torch.tensor([60, 48])
    toks, tlens = torch.tensor([[1, 2, 3, 4, 5, 6], [6, 5, 4, 3, -1, -1]]), torch.tensor([6, 4])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(100):
        out = model(Batch(feats, flens, toks, tlens, ['a', 'b'])); opt.zero_grad(); out['loss'].backward(); opt.step()
    model.eval(); torch.set_num_threads(threads)
    with torch.no_grad(): ids = model.greedy_search(*model.encode(feats, flens))
    assert ids == [[1, 2, 3, 4, 5, 6], [6, 5, 4, 3]], (ids, {k: float(v) for k, v in out.items()})
    assert float(out['loss_pre']) < 0.5


def test_bad_targets_are_user_errors():
    model = tiny_model().eval()
    feats, flens = torch.randn(2, 40, 80), torch.tensor([40, 40])   # 9 encoder frames each
    with pytest.raises(ParaformerTargetError, match='utterance long_one: 12 tokens but only 9 encoder frames'):
        model(Batch(feats, flens, torch.ones(2, 12, dtype=torch.long), torch.tensor([3, 12]), ['ok', 'long_one']))
    with pytest.raises(UserError, match='utterance empty_one: empty target'):
        model(Batch(feats, flens, torch.ones(2, 3, dtype=torch.long), torch.tensor([0, 3]), ['empty_one', 'ok']))


@pytest.fixture(scope='module')
def corpus(tmp_path_factory): return synth(tmp_path_factory, n_train=20, seed=5)


def test_train_decode_transcribe(corpus, tmp_path, capsys):
    exp = tmp_path/'exp'
    rc, out, err = run(train_main, ['--config', ROOT/'conf'/'paraformer_tiny.yaml', '--train', corpus['train'],
                                    '--valid', corpus['dev'], '--exp', exp, *SMALL, '++train.max_epochs=1', '+train.avg_nbest_model=2'],
                         capsys)                                  # FunASR's override spellings
    assert rc == 0, err
    assert (exp/'model_avg.pt').is_file()                         # avg_nbest_model: averaged when training ended
    from asr_nb.train import parse_log_line
    kind, rec = [r for r in map(parse_log_line, (exp/'train.log').read_text().splitlines()) if r and r[0] == 'train'][-1]
    for k in ('rank', 'epoch', 'step', 'total_steps', 'loss', 'loss_epoch', 'acc_epoch', 'ppl_epoch', 'lr', 'loss_att', 'loss_pre',
              'loss_ctc', 'glance', 'acc', 'bs', 't_data', 't_fwd', 't_bwd', 't_optim', 't_total', 'mem_mb', 'eta'):
        assert k in rec, (k, rec)                                 # the fields FunASR users read
    assert rec['rank'] == 0 and rec['total_steps'] == 3 and isinstance(rec['eta'], str)
    rc, out, err = run(decode_main, ['--exp', exp, '--data', corpus['test'], '--method', 'paraformer,ctc_greedy',
                                     '--out', tmp_path/'dec'], capsys)
    assert rc == 0, err
    res = json.loads((tmp_path/'dec'/'paraformer'/'result.json').read_text())
    assert res['n'] == 4 and res['cer'] is not None
    one_line_error(*run(decode_main, ['--exp', exp, '--data', corpus['test'], '--method', 'joint', '--out', tmp_path/'x'],
                        capsys)[::2], "'joint'", 'attention decoder')
    wav = (corpus['test']/'wav.scp').read_text().split()[1]
    rc, out, err = run(transcribe_main, ['--exp', exp, wav], capsys)
    assert rc == 0, err
    from asr_nb.export import Recognizer
    import soundfile as sf
    r = Recognizer.from_exp(exp).transcribe(wav, method='paraformer', timestamps=True)     # times from the fire positions
    assert r['tokens'] and len(r['timestamps']) == len(r['tokens'])
    assert all(0 <= a < b <= sf.info(wav).duration + 0.05 for _, a, b in r['timestamps'])
    assert [a for _, a, _ in r['timestamps']] == sorted(a for _, a, _ in r['timestamps'])
    rc, out, err = run(export_main, ['--exp', exp, '--out', tmp_path/'onnx'], capsys)   # encoder+CTC, and the one-pass graph
    assert rc == 0, err
    files = sorted(p.name for p in (tmp_path/'onnx').iterdir())
    assert {'encoder.onnx', 'model.onnx', 'tokens.txt', 'meta.json'} <= set(files) and 'decoder_step.onnx' not in files, files


def test_sherpa_onnx_decodes_the_export(tmp_path):
    "sherpa-onnx (its own fbank, its greedy search) reads the export and finds the tokens our one-pass graph finds."
    sherpa_onnx = pytest.importorskip('sherpa_onnx')
    import numpy as np
    from asr_nb.core import FeatureConfig
    from asr_nb.features import make_frontend
    from asr_nb.paraformer import ParaformerOnePass, export_sherpa_onnx
    torch.manual_seed(0)
    model = tiny_model(vocab=7).eval()
    with torch.no_grad():                                            # an untrained model made to fire and to avoid </s>
        model.predictor.proj.bias.fill_(2.0); model.decoder.output_layer.bias[[0, 6]] = -50.0
    units = ['<blank>', 'a', 'b', 'c', 'd', 'e', '<sos/eos>']
    paths = export_sherpa_onnx(model, FeatureConfig(), units, tmp_path)
    rec = sherpa_onnx.OfflineRecognizer.from_paraformer(paraformer=str(paths['model']), tokens=str(paths['tokens']),
                                                        num_threads=1, sample_rate=16000, feature_dim=80)
    w = (np.random.RandomState(0).randn(24000) * 0.1).astype(np.float32)
    s = rec.create_stream(); s.accept_waveform(16000, w); rec.decode_stream(s)
    f = make_frontend(FeatureConfig())(torch.from_numpy(w))
    with torch.no_grad(): logits, num = ParaformerOnePass(model)(f[None], torch.tensor([f.size(0)]))
    ours = [units[i] for i in logits[0, :int(num[0])].argmax(-1).tolist()]
    assert len(ours) > 5 and abs(len(s.result.tokens) - len(ours)) <= 1, (s.result.tokens, ours)
    same = sum(a == b for a, b in zip(s.result.tokens, ours)) / len(ours)
    assert same >= 0.8, (s.result.tokens, ours)                   # the fbanks differ at the edges (snip_edges)


def test_lfr_front_end_feeds_the_model():
    "features.lfr_m/lfr_n (FunASR's 7/6): the model's input is 560 wide and the length rule counts stacked frames."
    from asr_nb.core import apply_overrides
    from asr_nb.features import make_frontend
    from asr_nb.model import ctc_length_rule, frontend_dim
    cfg = apply_overrides(load_config(ROOT/'conf'/'paraformer_tiny.yaml'), ['features.lfr_m=7', '++features.lfr_n=6'] + SMALL[:6])
    fe = make_frontend(cfg.features)
    assert (fe.dim, frontend_dim(cfg), fe.num_frames(16000)) == (560, 560, 17)     # 98 frames of 10 ms -> ceil(98 / 6)
    assert ctc_length_rule(cfg)(600) == ((fe.num_frames(96000) - 1) // 2 - 1) // 2   # 6 s -> 100 stacks -> 24 encoder frames
    model = build_model(cfg, 8).eval()
    x, lens = fe.batch([torch.randn(32000) * 0.1])
    with torch.no_grad(): enc, enc_lens = model.encode(x, lens)
    assert x.shape[-1] == 560 and int(enc_lens[0]) == int(model.output_lengths(lens)[0])
