"""Heavier checks of the encoder, decoder and hybrid model (07_conformer, 08_decoder, 09_model).

Run: .venv/bin/python -m pytest -q tests/test_model.py
"""
import math
from pathlib import Path
import pytest
import torch
import torch.nn.functional as F
from asr_nb.core import Batch, ModelConfig, SpecAugConfig, config_from_dict, load_config, make_pad_mask
from asr_nb.conformer import (ConformerEncoder, MultiHeadedAttention, RelPositionalEncoding, build_encoder,
                              set_impl, subsampled_lengths)
from asr_nb.decoder import TransformerDecoder
from asr_nb.model import ASRModel, count_parameters

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(d_model=32, attention_heads=4, linear_units=64, num_blocks=2, cnn_kernel=5, decoder_blocks=2,
            decoder_linear_units=64)


def tiny_cfg(**over) -> ModelConfig:
    "A tiny model config; keys may be asr_nb 0.1's flat names (config_from_dict nests them)."
    return config_from_dict({**TINY, **over}, ModelConfig)


def rel_attention_bruteforce(mha: MultiHeadedAttention, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """ESPnet's rel-pos attention written element by element from Transformer-XL's formula:
    s_ij = ((q_i + u) . k_j + (q_i + v) . W_p p(i - j)) / sqrt(d_k), with p(r) the sinusoid of offset r."""
    B, T, d = x.shape
    H, dk = mha.h, mha.d_k
    q = mha.linear_q(x).view(B, T, H, dk)
    k = mha.linear_k(x).view(B, T, H, dk)
    v = mha.linear_v(x).view(B, T, H, dk)
    _, pos = RelPositionalEncoding(d, 0.0)(x)  # (1, 2T-1, d): offsets T-1 ... -(T-1)
    p = mha.linear_pos(pos[0]).view(2 * T - 1, H, dk)
    s = torch.empty(B, H, T, T)
    for i in range(T):
        for j in range(T):
            r = (T - 1) - (i - j)  # row of offset i - j
            s[:, :, i, j] = (((q[:, i] + mha.pos_bias_u) * k[:, j]).sum(-1) + ((q[:, i] + mha.pos_bias_v) * p[r]).sum(-1))
    s = (s / math.sqrt(dk)).masked_fill(~keep, float("-inf")).softmax(-1)
    out = torch.einsum("bhij,bjhd->bihd", s, v).reshape(B, T, d)
    return mha.linear_out(out)


@pytest.mark.parametrize("impl", ["plain", "sdpa"])
def test_rel_pos_attention_matches_formula(impl):
    torch.manual_seed(0)
    mha = set_impl(MultiHeadedAttention(2, 8, 0.0, "rel_pos"), impl).eval()
    x = torch.randn(2, 6, 8)
    keep = ~make_pad_mask(torch.tensor([6, 4]))[:, None, None, :]
    _, pos = RelPositionalEncoding(8, 0.0)(x)
    with torch.no_grad():
        torch.testing.assert_close(mha(x, x, x, keep, pos), rel_attention_bruteforce(mha, x, keep), atol=1e-5, rtol=1e-4)


@pytest.mark.parametrize("factor", [4, 6, 8])
@pytest.mark.parametrize("over", [{}, {"pos_enc": "abs_pos"}, {"pos_enc": "rope"}, {"encoder": "transformer"}])
def test_encoder_padding_invariance_and_sdpa(factor, over):
    torch.manual_seed(1)
    enc = build_encoder(tiny_cfg(subsampling=factor, **over).encoder).eval()
    lens = torch.tensor([150, 97, 40, 123])
    x = torch.randn(4, 150, 80)
    with torch.no_grad():
        y, ylens = enc(x, lens)
        assert ylens.tolist() == subsampled_lengths(lens, factor).tolist()
        for b in range(4):
            yb, _ = enc(x[b:b + 1, :lens[b]], lens[b:b + 1])
            torch.testing.assert_close(y[b, :ylens[b]], yb[0], atol=1e-5, rtol=1e-5)
        y_plain, _ = set_impl(enc, "plain")(x, lens)
    valid = ~make_pad_mask(ylens)
    torch.testing.assert_close(y[valid], y_plain[valid], atol=1e-5, rtol=1e-5)


def test_decoder_incremental_equals_full_with_padded_memory():
    torch.manual_seed(2)
    dec = TransformerDecoder(20, tiny_cfg(decoder_blocks=3).decoder, 32, 4).eval()
    mem, mlens = torch.randn(3, 11, 32), torch.tensor([11, 6, 3])
    ys = torch.randint(1, 19, (3, 8)); ys[:, 0] = 19
    with torch.no_grad():
        full = dec(mem, mlens, ys, torch.full((3,), 8)).log_softmax(-1)
        cache = None
        for l in range(1, 9):
            logp, cache = dec.forward_one_step(ys[:, :l], mem, mlens, cache)
            torch.testing.assert_close(logp, full[:, l - 1], atol=1e-5, rtol=1e-5)


def make_batch(B=3, V=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    lens = torch.tensor([80, 63, 41][:B])
    toks = torch.randint(1, V - 1, (B, 6), generator=g)
    tlens = torch.tensor([6, 4, 2][:B])
    toks = toks.masked_fill(make_pad_mask(tlens, 6), -1)
    return Batch(torch.randn(B, 80, 80, generator=g), lens, toks, tlens, [str(i) for i in range(B)])


def test_grad_checkpoint_same_gradients():
    torch.manual_seed(3)
    batch = make_batch()
    grads = []
    for ckpt in (False, True):
        torch.manual_seed(3)
        m = ASRModel(tiny_cfg(grad_checkpoint=ckpt), 12, SpecAugConfig())
        torch.manual_seed(4)
        m(batch)["loss"].backward()
        grads.append({n: p.grad for n, p in m.named_parameters()})
    for n in grads[0]:
        torch.testing.assert_close(grads[0][n], grads[1][n], atol=1e-5, rtol=1e-4)


def test_bf16_autocast_close_to_fp32():
    torch.manual_seed(5)
    m = ASRModel(tiny_cfg(), 12).eval()
    batch = make_batch()
    with torch.no_grad():
        ref = m(batch)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = m(batch)
    for k in ("loss", "loss_ctc", "loss_att"):
        assert torch.isfinite(low[k])
        assert abs(low[k].item() - ref[k].item()) < 0.05 * abs(ref[k].item()) + 0.05, k
    m.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = m(batch)
    out["loss"].backward()
    assert all(torch.isfinite(p.grad).all() for p in m.parameters() if p.grad is not None)


def test_espnet_parameter_names():
    m = ASRModel(tiny_cfg(), 12)
    names = set(dict(m.named_parameters()))
    for n in ["encoder.embed.conv.0.weight", "encoder.embed.conv.2.weight", "encoder.embed.out.weight",
              "encoder.encoders.0.self_attn.pos_bias_u", "encoder.encoders.0.self_attn.linear_pos.weight",
              "encoder.encoders.0.feed_forward_macaron.w_1.weight", "encoder.encoders.0.conv_module.depthwise_conv.weight",
              "encoder.encoders.0.conv_module.norm.weight", "encoder.encoders.0.norm_final.weight", "encoder.after_norm.weight",
              "decoder.embed.0.weight", "decoder.decoders.0.src_attn.linear_q.weight", "decoder.output_layer.weight",
              "ctc.ctc_lo.weight"]:
        assert n in names, n


def test_conf_parameter_counts():
    with torch.device("meta"):
        aishell = load_config(ROOT / "conf" / "aishell_conformer.yaml").model
        small = load_config(ROOT / "conf" / "espnet_4p6m.yaml").model
        n_aishell = count_parameters(ASRModel(aishell, 4233))["total"]
        n_small = count_parameters(ASRModel(small, 300))["total"]
    assert abs(n_aishell / 1e6 - 46.25) < 0.1          # ESPnet: 46.25 M (with 83-dim fbank+pitch input)
    assert 4.5 < n_small / 1e6 < 4.9
    e = aishell.encoder
    assert (e.d_model, e.num_blocks, aishell.decoder.num_blocks, e.cnn_kernel) == (256, 12, 6, 15)
    assert (small.encoder.d_model, small.encoder.num_blocks, small.encoder.linear_units, small.decoder.num_blocks) == (144, 6, 576, 3)


def test_too_short_input_is_a_clear_error():
    m = ASRModel(tiny_cfg(), 12)
    with pytest.raises(ValueError, match="too short"):
        m.encode(torch.randn(2, 20, 80), torch.tensor([20, 5]))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_sdpa_equals_plain_and_bf16_runs():
    torch.manual_seed(6)
    m = ASRModel(tiny_cfg(), 12).cuda().eval()
    b = make_batch().to("cuda")
    with torch.no_grad():
        enc_fast, lens = m.encode(b.feats, b.feat_lens)
        enc_plain, _ = set_impl(m, "plain").encode(b.feats, b.feat_lens)
    valid = ~make_pad_mask(lens)
    torch.testing.assert_close(enc_fast[valid], enc_plain[valid], atol=1e-4, rtol=1e-4)
    set_impl(m, "sdpa").train()
    with torch.autocast("cuda", dtype=torch.bfloat16):
        out = m(b)
    out["loss"].backward()
    assert torch.isfinite(out["loss"])


def test_bf16_fast_path_close_to_plain_path():
    torch.manual_seed(7)
    enc = build_encoder(tiny_cfg().encoder).eval()
    x, lens = torch.randn(3, 90, 80), torch.tensor([90, 70, 33])
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        fast, ylens = enc(x, lens)
        plain, _ = set_impl(enc, "plain")(x, lens)
    valid = ~make_pad_mask(ylens)
    assert (fast[valid].float() - plain[valid].float()).abs().max() < 0.1


def test_encoder_onnx_export_dynamic_shapes(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    torch.manual_seed(8)
    enc = ConformerEncoder(tiny_cfg().encoder).eval()
    x, l = torch.randn(2, 100, 80), torch.tensor([100, 70])
    f = tmp_path / "enc.onnx"
    torch.onnx.export(enc, (x, l), str(f), input_names=["x", "l"], output_names=["y", "yl"], opset_version=17,
                      dynamic_axes={"x": {0: "B", 1: "T"}, "l": {0: "B"}, "y": {0: "B", 1: "T2"}, "yl": {0: "B"}},
                      dynamo=False)
    sess = ort.InferenceSession(str(f))
    for xx, ll in [(x, l), (torch.randn(3, 150, 80), torch.tensor([150, 120, 90]))]:
        y, yl = sess.run(None, {"x": xx.numpy(), "l": ll.numpy()})
        ref, ref_l = enc(xx, ll)
        assert yl.tolist() == ref_l.tolist()
        assert abs(y - ref.detach().numpy()).max() < 1e-4


HANG_SCRIPT = r'''
import torch
from asr_nb.conformer import ConvolutionModule
torch.set_num_threads(2); torch.manual_seed(0)
cm = ConvolutionModule(144, 15)
x = torch.randn(31, 46, 144, requires_grad=True)
for _ in range(10):
    with torch.autocast("cpu", torch.bfloat16):
        y = cm(x)
    y.float().square().mean().backward()
print("done")
'''

def test_bf16_depthwise_conv_does_not_hang():
    "torch 2.11's bf16 channels-last depthwise conv2d never returns with 2 threads; the conv module must not use it."
    import subprocess, sys
    r = subprocess.run([sys.executable, "-c", HANG_SCRIPT], capture_output=True, text=True, timeout=180)
    assert r.returncode == 0 and "done" in r.stdout, r.stderr


def test_bf16_depthwise_conv_runs_in_fp32():
    "The check that fails on the old code path: under bf16 autocast the depthwise convolution receives fp32 tensors."
    from torch.utils._python_dispatch import TorchDispatchMode
    from asr_nb.conformer import ConvolutionModule
    seen = []
    class Spy(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if "convolution" in str(func) and len(args) > 8 and args[8] > 1: seen.append((args[0].dtype, args[1].dtype))  # groups > 1
            return func(*args, **(kwargs or {}))
    cm = ConvolutionModule(16, 5)
    with torch.autocast("cpu", torch.bfloat16), Spy(): cm(torch.randn(2, 9, 16))
    assert seen and all(d == (torch.float32, torch.float32) for d in seen), seen
