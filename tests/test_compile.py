"""`train.compile: true` (asr_nb.train.compile_layers): the compiled model's loss and gradients equal eager's.

Compiling fwd + bwd takes minutes on a 2-core CPU (over 15 on a loaded one), so it runs only with
ASR_NB_TEST_COMPILE=1 (`ASR_NB_TEST_COMPILE=1 pytest -q tests/test_compile.py`); 10_train tests the cheap parts
(plain state_dict keys, the missing-compiler error) everywhere."""
import copy, os, shutil
import pytest, torch
from asr_nb.core import Batch, ModelConfig, EncoderConfig, DecoderConfig
from asr_nb.model import ASRModel
from asr_nb.train import compile_layers

pytestmark = [pytest.mark.skipif(os.environ.get("ASR_NB_TEST_COMPILE") != "1", reason="slow: set ASR_NB_TEST_COMPILE=1"),
              pytest.mark.skipif(not any(shutil.which(c) for c in (os.environ.get("CXX", ""), "g++", "clang++") if c),
                                 reason="no C++ compiler for inductor")]

def _batch(B, T, L, V, seed):
    g = torch.Generator().manual_seed(seed)
    lens = torch.randint(T // 2, T + 1, (B,), generator=g); lens[0] = T
    tl = torch.randint(1, L + 1, (B,), generator=g); tl[0] = L
    toks = torch.randint(1, V - 1, (B, L), generator=g).masked_fill(torch.arange(L) >= tl[:, None], -1)
    return Batch(torch.randn(B, T, 80, generator=g), lens, toks, tl, [str(i) for i in range(B)])

def test_compiled_equals_eager():
    torch.manual_seed(0)
    enc = EncoderConfig(d_model=32, attention_heads=4, linear_units=64, num_blocks=2, dropout=0.0, positional_dropout=0.0)
    model = ASRModel(ModelConfig(encoder=enc, decoder=DecoderConfig(num_blocks=1, linear_units=64, dropout=0.0)), 20).train()
    eager = copy.deepcopy(model)
    assert compile_layers(model) == 3
    for T in (64, 48):  # a second batch shape: the dynamic graph is reused (no wrong results after a shape change)
        b = _batch(3, T, 5, 20, T)
        out, ref = model(b), eager(b)
        torch.testing.assert_close(out["loss"], ref["loss"], rtol=1e-5, atol=1e-5)
        g = torch.autograd.grad(out["loss"], list(model.parameters()))
        r = torch.autograd.grad(ref["loss"], list(eager.parameters()))
        scale = max(e.abs().max().item() for e in r)  # absolute tolerance on the model's gradient scale: some grads are
        for (n, _), a, e in zip(model.named_parameters(), g, r):  # ~0 by construction (a conv bias before BatchNorm)
            torch.testing.assert_close(a, e, rtol=1e-4, atol=1e-5 * scale, msg=n)
    assert list(model.state_dict()) == list(eager.state_dict())
