"""The fused adapter forward (one GEMM with ``W + s·Bp A``, factor gradients from ``z = x Aᵀ``) against the two-GEMM
path it replaces: same outputs and gradients, and the fallbacks where it must not run."""

import pytest
import torch
from peft_helpers import randomize_adapters, tiny
from torch import nn

from pointclora.peft import CLoRAConfig, LoRAConfig, inject_adapters, sade_loss
from pointclora.peft.base import FusedLowRankLinear, use_fused_forward
from pointclora.peft.clora import CLoRABank, CLoRALinear


def _step_grads(model, points, labels, fused: bool):
    model.zero_grad(set_to_none=True)
    with use_fused_forward(fused):
        logits = model(points)
        loss = nn.functional.cross_entropy(logits, labels) + 0.1 * sade_loss(model)
        loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return logits.detach(), grads


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_training_step_outputs_and_grads_equal_two_gemm_path(points, dtype):
    model = randomize_adapters(inject_adapters(tiny(), CLoRAConfig(r=4, num_bases=3, alpha=6.0))).to(dtype)
    model.train()
    pts, labels = points.to(dtype), torch.tensor([0, 1, 2])
    # Dropout in the head draws random numbers: the same seed for both paths.
    torch.manual_seed(0)
    fused_out, fused = _step_grads(model, pts, labels, True)
    torch.manual_seed(0)
    plain_out, plain = _step_grads(model, pts, labels, False)
    assert torch.allclose(fused_out, plain_out, rtol=1e-5, atol=1e-5)
    assert fused.keys() == plain.keys() and any(n.startswith("clora_banks.") for n in fused)
    for name in plain:
        scale = plain[name].abs().max().clamp_min(1.0)
        assert torch.allclose(fused[name], plain[name], rtol=1e-5, atol=1e-5 * scale), name


def test_fused_function_gradcheck_float64():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(2, 5, 6, dtype=torch.float64, generator=gen, requires_grad=True)
    W = torch.randn(9, 6, dtype=torch.float64, generator=gen, requires_grad=True)
    b = torch.randn(9, dtype=torch.float64, generator=gen, requires_grad=True)
    A = torch.randn(4, 6, dtype=torch.float64, generator=gen, requires_grad=True)
    Bp = torch.randn(9, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    assert torch.autograd.gradcheck(lambda *t: FusedLowRankLinear.apply(*t, 0.7), (x, W, b, A, Bp))
    y = FusedLowRankLinear.apply(x, W, b, A, Bp, 0.7)
    assert torch.allclose(y, x @ (W + 0.7 * Bp @ A).T + b)


def test_layer_with_bias_and_trainable_base_matches_two_gemm_path():
    torch.manual_seed(0)
    base = nn.Linear(8, 12)
    bank = CLoRABank(8, 4, r=2, num_bases=3)
    nn.init.normal_(bank.B)
    layer = CLoRALinear(base, bank, "k", n_splits=3, scaling=1.5)
    with torch.no_grad():
        layer.Q.add_(torch.randn_like(layer.Q) * 0.3)
    x = torch.randn(3, 5, 8, requires_grad=True)
    results = []
    for fused in (True, False):
        for t in (x, base.weight, base.bias, bank.A, bank.B, layer.Q):
            t.grad = None
        with use_fused_forward(fused):
            y = layer(x)
            (y.square().sum()).backward()
        results.append([y.detach()] + [t.grad.clone() for t in (x, base.weight, base.bias, bank.A, bank.B, layer.Q)])
    for got, want in zip(*results):
        assert torch.allclose(got, want, rtol=1e-5, atol=1e-5)


def _count_fused_calls(monkeypatch):
    calls = []
    real = FusedLowRankLinear.apply
    monkeypatch.setattr(FusedLowRankLinear, "apply", lambda *a: calls.append(1) or real(*a))
    return calls


def test_fallbacks_adapter_dropout_autocast_and_lora(points, monkeypatch):
    calls = _count_fused_calls(monkeypatch)
    model = randomize_adapters(inject_adapters(tiny(), CLoRAConfig(r=4, num_bases=2)))
    model.train()
    model(points)
    n_layers = sum(isinstance(m, CLoRALinear) for m in model.modules())
    assert len(calls) == n_layers  # every CLoRA layer fused
    calls.clear()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(points)
    assert not calls and torch.isfinite(out).all()  # autocast: the two-GEMM path
    dropped = inject_adapters(tiny(), CLoRAConfig(r=4, num_bases=2, dropout=0.5)).train()
    dropped(points)
    assert not calls  # adapter dropout: the adapter sees another x than the base
    dropped.eval()(points)
    assert len(calls) == n_layers  # no dropout in eval: fused again
    calls.clear()
    inject_adapters(tiny(), LoRAConfig(r=4))(points)
    assert not calls  # LoRA has no low_rank_factors: its own path
