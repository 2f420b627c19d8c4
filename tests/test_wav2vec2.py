"""wav2vec 2.0 (issue 14): checkpoints people have, read without fairseq and without unsafe unpickling, give the outputs of
an outside oracle (Hugging Face `transformers`), and a planted pickle is refused before it runs.

The fairseq files are emulated: fairseq is not installed. `checkpoint_utils` writes a dict with `model` (state dict),
`args` (an argparse.Namespace: fairseq before Hydra, e.g. wav2vec_small.pt) or `cfg` (Hydra config turned into plain dicts
by OmegaConf.to_container), `optimizer_history`, `extra_state`, `last_optimizer_state`; a fine-tuned `wav2vec_ctc` model
keeps the pre-training config under `cfg.model.w2v_args` and its parameters under `w2v_encoder.w2v_model.*` plus the CTC
projection `w2v_encoder.proj`. The fairseq names below are written from fairseq's module layout and cross-checked against
torchaudio's own fairseq importer (a second, independent reader of those names).
"""
import argparse, os, re
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from asr_nb.core import Wav2Vec2Config
from asr_nb.checkpoint import CheckpointError
from asr_nb.wav2vec2 import Wav2Vec2CTC, load_pretrained, read_fairseq

SIZES = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, conv_dim=[32] * 7,
             conv_kernel=[10, 3, 3, 3, 3, 2, 2], conv_stride=[5, 2, 2, 2, 2, 2, 2], num_conv_pos_embeddings=16,
             num_conv_pos_embedding_groups=4, vocab_size=9)
NO_DROPOUT = dict(hidden_dropout=0.0, attention_dropout=0.0, activation_dropout=0.0, feat_proj_dropout=0.0,
                  layerdrop=0.0, final_dropout=0.0)


def hf_model(large: bool, ctc: bool, seed: int = 0):
    "A tiny random transformers wav2vec 2.0: base-like (GroupNorm, post-LN) or large-like (LayerNorm, conv bias, pre-LN)."
    torch.manual_seed(seed)
    conf = transformers.Wav2Vec2Config(**SIZES, **NO_DROPOUT, feat_extract_norm="layer" if large else "group",
                                       do_stable_layer_norm=large, conv_bias=large)
    m = (transformers.Wav2Vec2ForCTC if ctc else transformers.Wav2Vec2Model)(conf).eval()
    with torch.no_grad():   # transformers initialises some tensors to constants (masked_spec_embed, norms): make every one distinct
        for p in m.parameters(): p.add_(torch.randn_like(p) * 0.05)
    return m


_HF_TO_FAIRSEQ = [  # transformers name -> fairseq name (fairseq's Wav2Vec2Model module layout)
    (r"feature_extractor\.conv_layers\.(\d+)\.conv\.", r"feature_extractor.conv_layers.\1.0."),
    (r"feature_projection\.layer_norm\.", "layer_norm."), (r"feature_projection\.projection\.", "post_extract_proj."),
    (r"encoder\.pos_conv_embed\.conv\.parametrizations\.weight\.original0", "encoder.pos_conv.0.weight_g"),
    (r"encoder\.pos_conv_embed\.conv\.parametrizations\.weight\.original1", "encoder.pos_conv.0.weight_v"),
    (r"encoder\.pos_conv_embed\.conv\.", "encoder.pos_conv.0."),
    (r"encoder\.layers\.(\d+)\.attention\.", r"encoder.layers.\1.self_attn."),
    (r"encoder\.layers\.(\d+)\.layer_norm\.", r"encoder.layers.\1.self_attn_layer_norm."),
    (r"encoder\.layers\.(\d+)\.feed_forward\.intermediate_dense\.", r"encoder.layers.\1.fc1."),
    (r"encoder\.layers\.(\d+)\.feed_forward\.output_dense\.", r"encoder.layers.\1.fc2."),
    (r"masked_spec_embed$", "mask_emb"),
]


def to_fairseq_state(sd: dict, large: bool, fine_tuned: bool) -> dict:
    out = {}
    for k, v in sd.items():
        k = k.removeprefix("wav2vec2.")
        m = re.match(r"feature_extractor\.conv_layers\.(\d+)\.layer_norm\.(weight|bias)", k)
        if m: k = f"feature_extractor.conv_layers.{m[1]}.2.1.{m[2]}" if large else f"feature_extractor.conv_layers.{m[1]}.2.{m[2]}"
        elif k.startswith("lm_head."): out["w2v_encoder.proj." + k.split(".")[-1]] = v; continue
        else:
            for pat, rep in _HF_TO_FAIRSEQ:
                if re.match(pat, k): k = re.sub(pat, rep, k, count=1); break
        out[("w2v_encoder.w2v_model." if fine_tuned else "") + k] = v
    if not fine_tuned:   # pre-training-only parts, which a reader must skip
        out.update({"quantizer.vars": torch.zeros(1, 640, 128), "quantizer.weight_proj.weight": torch.zeros(640, 32),
                    "project_q.weight": torch.zeros(256, 256), "final_proj.weight": torch.zeros(256, 32)})
    return out


def fairseq_model_args(large: bool) -> dict:
    return dict(_name="wav2vec2", extractor_mode="layer_norm" if large else "default",
                conv_feature_layers="[(32, 10, 5)] + [(32, 3, 2)] * 4 + [(32,2,2)] * 2", conv_bias=large,
                encoder_embed_dim=32, encoder_layers=2, encoder_attention_heads=2, encoder_ffn_embed_dim=64, conv_pos=16,
                conv_pos_groups=4, layer_norm_first=large, dropout=0.1, final_dim=256, latent_vars=320, latent_groups=2)


def save_fairseq(path: Path, sd: dict, large: bool, fine_tuned: bool):
    "The checkpoint structure fairseq writes: old style (args Namespace) for pre-trained, Hydra style (cfg dicts) for fine-tuned."
    extra = dict(optimizer_history=[dict(criterion_name="Wav2vecCriterion", optimizer_name="FairseqAdam",
                                         lr_scheduler_state={"best": None}, num_updates=400000)],
                 extra_state={"train_iterator": {"epoch": 57}, "val_loss": 1.5}, last_optimizer_state=None)
    if fine_tuned:
        cfg = {"_name": None, "common": {"fp16": True, "log_interval": 200}, "task": {"_name": "audio_finetuning", "normalize": False,
               "labels": "ltr"}, "model": {"_name": "wav2vec_ctc", "w2v_path": "/x/wav2vec_small.pt", "apply_mask": True,
               "mask_prob": 0.65, "w2v_args": {"model": fairseq_model_args(large), "task": {"_name": "audio_pretraining"}}}}
        st = dict(args=None, cfg=cfg, model=sd, **extra)
    else:
        st = dict(args=argparse.Namespace(arch="wav2vec2", task="audio_pretraining", **fairseq_model_args(large)), model=sd, **extra)
    torch.save(st, path)


def asr_nb_model(pretrained: Path, large: bool) -> Wav2Vec2CTC:
    c = Wav2Vec2Config(pretrained=str(pretrained), **load_pretrained(pretrained)["arch"], dropout=0.0, attention_dropout=0.0,
                       activation_dropout=0.0, layerdrop=0.0)
    m = Wav2Vec2CTC(c, vocab_size=5)
    m.init_pretrained()
    return m.eval()


def wave(n=2 * 16000 + 123, seed=1):
    return torch.randn(1, n, generator=torch.Generator().manual_seed(seed)) * 0.3


@pytest.mark.parametrize("large", [False, True], ids=["base", "large"])
@pytest.mark.parametrize("layout", ["hf", "fairseq"])
def test_pretrained_outputs_equal_transformers(tmp_path, large, layout):
    hf = hf_model(large, ctc=False)
    x = wave()
    with torch.no_grad(): ref = hf(x).last_hidden_state                       # (1, T', 32)
    if layout == "hf":
        hf.save_pretrained(tmp_path/"hf"); path = tmp_path/"hf"
        assert (path/"model.safetensors").is_file() and (path/"config.json").is_file()
    else:
        path = tmp_path/"wav2vec_small.pt"; save_fairseq(path, to_fairseq_state(hf.state_dict(), large, False), large, False)
    m = asr_nb_model(path, large)
    with torch.no_grad(): enc, lens = m.encode(x[..., None], torch.tensor([x.shape[1]]))
    assert enc.shape == ref.shape and int(lens[0]) == ref.shape[1]
    assert (enc - ref).abs().max() < 1e-5, float((enc - ref).abs().max())
    torch.testing.assert_close(m.mask_emb.detach(), hf.masked_spec_embed.detach())


@pytest.mark.parametrize("layout", ["hf", "fairseq"])
def test_finetuned_ctc_outputs_equal_transformers(tmp_path, layout):
    hf = hf_model(large=False, ctc=True, seed=3)
    x = wave(20000, seed=4)
    with torch.no_grad(): ref = hf(x).logits                                   # (1, T', 9)
    if layout == "hf": hf.save_pretrained(tmp_path/"hf"); path = tmp_path/"hf"
    else: path = tmp_path/"ft.pt"; save_fairseq(path, to_fairseq_state(hf.state_dict(), False, True), False, True)
    p = load_pretrained(path)
    assert p["head"] is not None and p["head"][0].shape == (9, 32)
    m = asr_nb_model(path, large=False)
    with torch.no_grad(): enc, _ = m.encode(x[..., None], torch.tensor([x.shape[1]]))
    logits = enc @ p["head"][0].T + p["head"][1]
    assert (logits - ref).abs().max() < 1e-5, float((logits - ref).abs().max())


def test_fairseq_names_agree_with_torchaudio_importer():
    "torchaudio's fairseq importer (its own reading of fairseq's names) maps our emulated fairseq state to the same names."
    from torchaudio.models.wav2vec2.utils.import_fairseq import _convert_state_dict
    from asr_nb.wav2vec2 import _weight_norm_names
    for large in (False, True):
        sd = to_fairseq_state(hf_model(large, ctc=True).state_dict(), large, fine_tuned=True)
        encoder_sd = {k.removeprefix("w2v_encoder."): v for k, v in sd.items()}   # the importer reads fairseq's Wav2VecEncoder
        theirs = {_weight_norm_names(k): v for k, v in _convert_state_dict(encoder_sd).items() if not k.startswith("aux.")}
        ours = read_fairseq_state(sd)
        assert sorted(theirs) == sorted(ours)


def read_fairseq_state(sd):
    from asr_nb.wav2vec2 import map_fairseq_state
    return map_fairseq_state(sd)["state"]


def test_planted_pickle_is_refused_and_never_runs(tmp_path):
    marker = tmp_path/"PWNED"

    class Evil:
        def __reduce__(self): return (os.system, (f"touch {marker}",))
    path = tmp_path/"wav2vec_small.pt"
    torch.save({"args": Evil(), "model": {}}, path)
    with pytest.raises(CheckpointError) as e: load_pretrained(path)
    msg = str(e.value)
    assert "\n" not in msg and "system" in msg and str(path) in msg and "weights_only" not in msg
    assert not marker.exists()


@pytest.mark.parametrize("content,needle", [(b"not a checkpoint", "not a readable PyTorch checkpoint"), (None, "does not exist")])
def test_other_files_are_refused_in_one_line(tmp_path, content, needle):
    path = tmp_path/"x.pt"
    if content is not None: path.write_bytes(content)
    with pytest.raises(CheckpointError) as e: load_pretrained(path)
    assert needle in str(e.value) and "\n" not in str(e.value)


def test_architecture_mismatch_names_the_overrides(tmp_path):
    hf = hf_model(False, ctc=False); hf.save_pretrained(tmp_path/"hf")
    m = Wav2Vec2CTC(Wav2Vec2Config(pretrained=str(tmp_path/"hf")), vocab_size=5)   # BASE sizes, the checkpoint is tiny
    with pytest.raises(CheckpointError) as e: m.init_pretrained()
    assert "model.wav2vec2.embed_dim=32" in str(e.value) and "model.wav2vec2.conv_layers=[[32,10,5]" in str(e.value)



# ---- fairseq Hydra checkpoints whose `cfg` is a pickled omegaconf DictConfig, read with omegaconf blocked ----------------
def save_fairseq_hydra(path: Path, sd: dict, large: bool, fine_tuned: bool):
    "As fairseq's Hydra trainer saves: `cfg` is the DictConfig object itself (struct flag set), the pre-training config nested."
    from omegaconf import OmegaConf
    pretrain = {"_name": None, "common": {"fp16": True, "log_interval": 200, "seed": 1},
                "task": {"_name": "audio_pretraining", "data": "/data/manifest", "normalize": large, "sample_rate": 16000},
                "optimization": {"max_update": 400000, "lr": [0.0005], "update_freq": [1]}, "model": fairseq_model_args(large)}
    cfg = pretrain if not fine_tuned else {
        "_name": None, "common": {"fp16": True}, "optimization": {"max_update": 20000, "lr": [5e-05]},
        "task": {"_name": "audio_finetuning", "labels": "ltr", "normalize": large},
        "model": {"_name": "wav2vec_ctc", "w2v_path": "/x/wav2vec_small.pt", "apply_mask": True, "mask_prob": 0.65,
                  "freeze_finetune_updates": 0, "w2v_args": pretrain}}
    cfg = OmegaConf.create(cfg)
    OmegaConf.set_struct(cfg, True)
    torch.save(dict(args=None, cfg=cfg, model=sd, optimizer_history=[dict(optimizer_name="FairseqAdam", num_updates=20000)],
                    extra_state={"train_iterator": {"epoch": 57}}, last_optimizer_state=None), path)
    import zipfile
    with zipfile.ZipFile(path) as z:   # the config really is pickled omegaconf objects
        pkl = z.read(next(n for n in z.namelist() if n.endswith("data.pkl")))
    assert b"omegaconf.dictconfig" in pkl and b"omegaconf.listconfig" in pkl and b"omegaconf.nodes" in pkl


NO_OMEGACONF = r"""
import sys
sys.modules["omegaconf"] = None                      # `import omegaconf` fails from here on
try: import omegaconf; raise SystemExit("omegaconf was importable")
except ImportError: pass
import torch
from asr_nb.core import Wav2Vec2Config
from asr_nb.wav2vec2 import Wav2Vec2CTC, load_pretrained
x = torch.load(sys.argv[1])
out = {}
for path in sys.argv[3:]:
    p = load_pretrained(path)
    m = Wav2Vec2CTC(Wav2Vec2Config(pretrained=path, **p["arch"], dropout=0.0, attention_dropout=0.0, activation_dropout=0.0,
                                   layerdrop=0.0), vocab_size=5)
    m.init_pretrained(); m.eval()
    with torch.no_grad(): enc, _ = m.encode(x[..., None], torch.tensor([x.shape[1]]))
    out[path] = dict(enc=enc, mask_emb=m.mask_emb.detach(), head=p["head"], arch=p["arch"])
assert sys.modules["omegaconf"] is None
torch.save(out, sys.argv[2])
"""


def test_hydra_omegaconf_checkpoints_equal_transformers_without_omegaconf(tmp_path):
    import subprocess, sys
    pytest.importorskip("omegaconf")
    x = wave(20000, seed=6)
    pre, ft = hf_model(large=True, ctc=False, seed=5), hf_model(large=False, ctc=True, seed=7)
    with torch.no_grad(): ref_pre, ref_ft = pre(x).last_hidden_state, ft(x).logits
    save_fairseq_hydra(tmp_path/"pre.pt", to_fairseq_state(pre.state_dict(), True, False), large=True, fine_tuned=False)
    save_fairseq_hydra(tmp_path/"ft.pt", to_fairseq_state(ft.state_dict(), False, True), large=False, fine_tuned=True)
    torch.save(x, tmp_path/"x.pt")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    r = subprocess.run([sys.executable, "-c", NO_OMEGACONF, str(tmp_path/"x.pt"), str(tmp_path/"out.pt"), str(tmp_path/"pre.pt"),
                        str(tmp_path/"ft.pt")], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    out = torch.load(tmp_path/"out.pt", weights_only=True)
    o = out[str(tmp_path/"pre.pt")]
    assert o["arch"]["layer_norm_first"] and o["arch"]["extractor_mode"] == "layer_norm" and o["arch"]["embed_dim"] == 32
    assert o["enc"].shape == ref_pre.shape and (o["enc"] - ref_pre).abs().max() < 1e-5, float((o["enc"] - ref_pre).abs().max())
    torch.testing.assert_close(o["mask_emb"], pre.masked_spec_embed.detach())
    o = out[str(tmp_path/"ft.pt")]
    assert not o["arch"]["layer_norm_first"] and o["head"][0].shape == (9, 32)
    logits = o["enc"] @ o["head"][0].T + o["head"][1]
    assert logits.shape == ref_ft.shape and (logits - ref_ft).abs().max() < 1e-5, float((logits - ref_ft).abs().max())


def test_malicious_global_inside_a_dictconfig_is_refused(tmp_path):
    from omegaconf import OmegaConf
    marker = tmp_path/"PWNED"

    class Evil:
        def __reduce__(self): return (os.system, (f"touch {marker}",))
    cfg = OmegaConf.create({"model": {"_name": "wav2vec_ctc", "w2v_args": {"model": {"_name": "wav2vec2", "conv_bias": Evil()}}}},
                           flags={"allow_objects": True})
    path = tmp_path/"ft.pt"
    torch.save(dict(args=None, cfg=cfg, model={}), path)
    with pytest.raises(CheckpointError) as e: load_pretrained(path)
    msg = str(e.value)
    assert "\n" not in msg and "posix.system" in msg and str(path) in msg and "weights_only" not in msg
    assert not marker.exists()

# ---- the CLI end to end: fairseq .tsv/.ltr data, pre-train, fine-tune from it, decode, export, transcribe ----------------
import json
from asr_nb.cli import decode_main, export_main, synth_main, train_main, transcribe_main
from asr_nb.data import load_utterances, write_fairseq_manifest
from asr_nb.wav2vec2 import pretrain_main

ROOT = Path(__file__).resolve().parents[1]
FAST = ["train.max_steps=3", "optim.total_steps=3", "train.log_interval=1", "train.valid_interval=0", "train.save_interval=0"]


@pytest.fixture(scope="module")
def fairseq_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("w2v")
    assert synth_main(["--out", str(d/"synth"), "--n-train", "12", "--n-dev", "3", "--n-test", "3", "--seed", "5"]) == 0
    for split in ("train", "dev"):
        write_fairseq_manifest(load_utterances(d/"synth"/split), d/"manifest", split)
        (d/"manifest"/f"{split}.wrd").unlink()                     # letters only, as fairseq's fine-tuning reads them
    return d


from cli_helpers import one_line_error as _one_line_error
def one_line_error(rc, err, *needles): return _one_line_error(rc, err, *needles, skip_info=True)   # a started run logs INFO lines


def test_pretrain_finetune_decode_export_transcribe(fairseq_data, tmp_path, capsys):
    d, m = fairseq_data, fairseq_data/"manifest"
    assert (m/"train.tsv").read_text().splitlines()[1].count("\t") == 1 and "|" in (m/"train.ltr").read_text()
    rc = pretrain_main(["--config", str(ROOT/"conf"/"wav2vec2_pretrain_tiny.yaml"), "--data", str(m/"train.tsv"),
                        "--exp", str(tmp_path/"pt"), "train.max_steps=2", "optim.total_steps=2", "train.log_interval=1"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    summary = json.loads(out.strip().splitlines()[-1])
    assert summary["step"] == 2 and 0 < summary["prob_perplexity"] <= 128 and "loss_contrastive=" in (tmp_path/"pt"/"pretrain.log").read_text()
    exp = tmp_path/"ft"
    rc = train_main(["--config", str(ROOT/"conf"/"wav2vec2_tiny.yaml"), "--train", str(m/"train.tsv"), "--valid", str(m/"dev.tsv"),
                     "--exp", str(exp), *FAST, "model.wav2vec2.freeze_finetune_updates=2",
                     f"model.wav2vec2.pretrained={tmp_path/'pt'/'pretrained.pt'}"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    log = (exp/"train.log").read_text()
    assert "initialised the wav2vec 2.0 network from asr_nb_pretrain output" in log and "loss_ctc=" in log
    rc = decode_main(["--exp", str(exp), "--data", str(d/"synth"/"test"), "--method", "ctc_greedy,ctc_prefix_beam", "--out", str(tmp_path/"dec")])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert json.loads((tmp_path/"dec"/"ctc_greedy"/"result.json").read_text())["n"] == 3
    one_line_error(decode_main(["--exp", str(exp), "--data", str(d/"synth"/"test"), "--method", "attention", "--out", str(tmp_path/"x")]),
                   capsys.readouterr()[1], "attention")
    rc = export_main(["--exp", str(exp), "--out", str(tmp_path/"onnx")])
    out, err = capsys.readouterr()
    assert rc == 0, err
    meta = json.loads((tmp_path/"onnx"/"meta.json").read_text())
    assert meta["capabilities"] == ["ctc"] and meta["model"]["family"] == "wav2vec2_ctc"
    wav = (d/"synth"/"test"/"wav.scp").read_text().split()[1]
    assert transcribe_main(["--onnx", str(tmp_path/"onnx"), wav]) == 0
    onnx_text = capsys.readouterr()[0]
    assert transcribe_main(["--exp", str(exp), wav]) == 0
    assert capsys.readouterr()[0] == onnx_text                     # onnxruntime transcribes as PyTorch does


def test_planted_pickle_through_the_training_cli(fairseq_data, tmp_path, capsys):
    marker = tmp_path/"PWNED"

    class Evil:
        def __reduce__(self): return (os.system, (f"touch {marker}",))
    torch.save({"args": Evil(), "model": {}}, tmp_path/"wav2vec_small.pt")
    m = fairseq_data/"manifest"
    rc = train_main(["--config", str(ROOT/"conf"/"wav2vec2_tiny.yaml"), "--train", str(m/"train.tsv"), "--valid", str(m/"dev.tsv"),
                     "--exp", str(tmp_path/"exp"), *FAST, f"model.wav2vec2.pretrained={tmp_path/'wav2vec_small.pt'}"])
    one_line_error(rc, capsys.readouterr()[1], "wav2vec_small.pt", "posix.system")
    assert not marker.exists()


def test_pretrain_checks_its_audio_before_writing(tmp_path, capsys):
    "A .tsv naming missing audio stops asr_nb_pretrain with an error naming the file, before the exp dir exists."
    tsv = tmp_path/"t.tsv"; tsv.write_text(f"{tmp_path/'nowhere'}\nx.wav\t100000\n")
    rc = pretrain_main(["--config", str(ROOT/"conf"/"wav2vec2_pretrain_tiny.yaml"), "--data", str(tsv), "--exp", str(tmp_path/"e")])
    err = capsys.readouterr().err
    assert rc == 2 and "t.tsv: none of its 1 utterances is usable" in err and "missing_audio" in err and "Traceback" not in err
    assert not (tmp_path/"e").exists()


# ---- asr_nb_pretrain resumes exactly: a run killed with SIGKILL and rerun equals an uninterrupted one, bit for bit --------
# The runner records every update's losses (full precision) and, when asked, kills itself with SIGKILL as update KILL_AT + 1
# starts: after the checkpoint of update SAVE but before the next one, so the resumed run must redo updates.
PRETRAIN_RUNNER = r"""
import json, os, signal, sys
import asr_nb.wav2vec2 as W
kill_at, record = int(sys.argv[1]), open(sys.argv[2], "a")
forward = W.Wav2Vec2Pretrain.forward
def recorded(self, *a, **k):
    if int(self.num_updates) == kill_at: os.kill(os.getpid(), signal.SIGKILL)
    out = forward(self, *a, **k)
    record.write(json.dumps([int(self.num_updates) + 1, out["loss"].item(), out["loss_contrastive"].item(), out["temp"].item()]) + "\n")
    record.flush()
    return out
W.Wav2Vec2Pretrain.forward = recorded
sys.exit(W.pretrain_main(sys.argv[3:]))
"""
PT_FAST = ["train.max_steps=8", "optim.total_steps=8", "train.save_interval=3", "train.log_interval=1",
           "data.max_frames_in_batch=500", "model.wav2vec2.latent_temp=[2.0,0.5,0.9]"]


def run_pretrain(data, exp, record, kill_at=-1, extra=()):
    import subprocess, sys
    from cli_helpers import train_env
    argv = ["--config", str(ROOT/"conf"/"wav2vec2_pretrain_tiny.yaml"), "--data", str(data), "--exp", str(exp), *PT_FAST, *extra]
    return subprocess.run(["nice", "-n", "5", sys.executable, "-c", PRETRAIN_RUNNER, str(kill_at), str(record), *argv],
                          capture_output=True, text=True, env=train_env(), timeout=300)


def records(path):
    rows = [json.loads(l) for l in path.read_text().splitlines()]
    return rows, {r[0]: r[1:] for r in rows}


def test_pretrain_killed_and_resumed_equals_uninterrupted(fairseq_data, tmp_path, capsys):
    data = fairseq_data/"manifest"/"train.tsv"
    r = run_pretrain(data, tmp_path/"a", tmp_path/"a.jsonl")
    assert r.returncode == 0, r.stderr
    r = run_pretrain(data, tmp_path/"b", tmp_path/"b.jsonl", kill_at=5)            # killed as update 6 starts
    assert r.returncode == -9, (r.returncode, r.stderr)
    assert sorted(p.name for p in (tmp_path/"b"/"checkpoints").glob("ckpt-*")) == ["ckpt-3.pt"]
    assert not (tmp_path/"b"/"pretrained.pt").exists()                           # written when the run finishes
    r = run_pretrain(data, tmp_path/"b", tmp_path/"b.jsonl")                        # the same command again
    assert r.returncode == 0, r.stderr
    log = (tmp_path/"b"/"pretrain.log").read_text()
    assert "resumed from" in log and "ckpt-3.pt (pass" in log
    ref, ref_by_step = records(tmp_path/"a.jsonl")
    got, got_by_step = records(tmp_path/"b.jsonl")
    assert [s for s, *_ in ref] == list(range(1, 9)) and [s for s, *_ in got] == [1, 2, 3, 4, 5, 4, 5, 6, 7, 8]
    n_batches = torch.load(tmp_path/"a"/"checkpoints"/"ckpt-8.pt", weights_only=True)["n_batches"]
    assert 1 < n_batches < 8                                                     # the run crosses passes over the data
    for s, *vals in got: assert vals == ref_by_step[s], (s, vals, ref_by_step[s])  # losses and temperature, bit for bit
    assert len({v[2] for v in ref_by_step.values()}) == 8                        # the Gumbel temperature anneals every update
    a = torch.load(tmp_path/"a"/"checkpoints"/"ckpt-8.pt", weights_only=True)
    b = torch.load(tmp_path/"b"/"checkpoints"/"ckpt-8.pt", weights_only=True)
    assert a["model"].keys() == b["model"].keys() and all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert all(torch.equal(x, y) for k in a["optimizer"]["state"] for x, y in
               zip(a["optimizer"]["state"][k].values(), b["optimizer"]["state"][k].values()))
    pa, pb = (torch.load(tmp_path/e/"pretrained.pt", weights_only=True)["model"] for e in "ab")
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    assert sorted(p.name for p in (tmp_path/"b"/"checkpoints").glob("ckpt-*")) == ["ckpt-8.pt"]   # train.keep_last_n=1
    # a changed config is refused in one line naming the key (and logged); max_steps may grow
    argv = ["--config", str(ROOT/"conf"/"wav2vec2_pretrain_tiny.yaml"), "--data", str(data), "--exp", str(tmp_path/"b"), *PT_FAST]
    rc = pretrain_main(argv + ["model.wav2vec2.num_negatives=10"])
    line = one_line_error(rc, capsys.readouterr()[1], "model.wav2vec2.num_negatives (20 -> 10)", "ckpt-8.pt")
    assert "model.wav2vec2.num_negatives (20 -> 10)" in (tmp_path/"b"/"pretrain.log").read_text().splitlines()[-1]
    assert pretrain_main(argv + ["train.max_steps=9", "train.log_interval=100"]) == 0
    assert json.loads(capsys.readouterr()[0].strip().splitlines()[-1])["step"] == 9
