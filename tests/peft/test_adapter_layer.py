"""The adapter base layer: what it accepts, the init bound, and when the fused forward stands aside."""

import pytest
import torch
from torch import nn

from pointclora.peft.base import FusedLowRankLinear, kaiming_uniform_like_lora_
from pointclora.peft.lora import LoRALinear


def test_adapters_wrap_only_linears_with_an_even_split():
    with pytest.raises(TypeError, match="adapters wrap nn.Linear layers, got Conv1d"):
        LoRALinear(nn.Conv1d(4, 4, 1), r=2)
    with pytest.raises(ValueError, match="cannot split a Linear with out_features=10 into 3 equal LRMs"):
        LoRALinear(nn.Linear(4, 10), r=2, n_splits=3)
    layer = LoRALinear(nn.Linear(4, 9), r=2, n_splits=3, scaling=0.25)
    assert (layer.in_features, layer.out_features, layer.num_lrms()) == (4, 3, 3)
    assert layer.weight is layer.base_layer.weight and layer.bias is layer.base_layer.bias
    assert "in=4, out=3, n_splits=3, scaling=0.25, merged=False" in repr(layer)


def test_init_bound_uses_the_given_fan_in_not_the_stacked_shape():
    t = torch.empty(6, 16)  # stacked (n·r, in): its own fan-in is 16, the factor's is given as 4
    torch.manual_seed(0)
    kaiming_uniform_like_lora_(t, 4)
    assert t.abs().max() <= 0.5 and t.abs().max() > 0.45 and t.min() < -0.45  # U(-1/2, 1/2), both signs


def test_a_hooked_base_layer_takes_the_two_gemm_path_with_the_same_values(monkeypatch):
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(5, 6), r=2, scaling=1.5)
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(3, 5)
    want = x @ layer.base_layer.weight.T + layer.base_layer.bias + 1.5 * (x @ layer.lora_A[0].T @ layer.lora_B[0].T)
    calls = []
    real = FusedLowRankLinear.apply
    monkeypatch.setattr(FusedLowRankLinear, "apply", lambda *a: calls.append(1) or real(*a))
    seen = []
    layer.base_layer.register_forward_hook(lambda m, i, o: seen.append(o.shape))
    torch.testing.assert_close(layer(x), want)
    assert seen == [torch.Size([3, 6])] and not calls  # the hook ran on the base layer's own call


class _ShiftedLinear(nn.Linear):
    """A Linear subclass with its own forward (``W x + b + 1``): the fused forward would skip it."""

    def forward(self, x):
        return super().forward(x) + 1.0


def test_a_linear_subclass_keeps_its_own_forward():
    from pointclora.peft.clora import CLoRABank, CLoRALinear

    torch.manual_seed(0)
    bank = CLoRABank(5, 6, r=2, num_bases=2)
    nn.init.normal_(bank.B)
    layer = CLoRALinear(_ShiftedLinear(5, 6), bank, "k", scaling=0.5)
    x = torch.randn(4, 5)
    want = x @ layer.base_layer.weight.T + layer.base_layer.bias + 1.0 + x @ layer.delta_weight().T  # s in ΔW
    torch.testing.assert_close(layer(x), want)


def test_dropout_scaling_and_state_at_construction():
    layer = LoRALinear(nn.Linear(4, 6), r=2, n_splits=2, scaling=2, dropout=0.25)
    assert type(layer.scaling) is float and layer.scaling == 2.0 and layer.merged is False
    assert type(layer.dropout) is nn.Dropout and layer.dropout.p == 0.25
    assert type(LoRALinear(nn.Linear(4, 6), r=2, dropout=0.0).dropout) is nn.Identity
    assert layer.low_rank_factors() is None  # LoRA keeps the two-GEMM path


def test_fused_function_without_bias_and_with_a_frozen_weight():
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(3, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    W = torch.randn(5, 4, dtype=torch.float64, generator=gen)  # frozen: no gradient asked
    A = torch.randn(2, 4, dtype=torch.float64, generator=gen, requires_grad=True)
    Bp = torch.randn(5, 2, dtype=torch.float64, generator=gen, requires_grad=True)
    y = FusedLowRankLinear.apply(x, W, None, A, Bp, 1.5)
    torch.testing.assert_close(y, x @ (W + 1.5 * Bp @ A).T)
    gx, ga, gb = torch.autograd.grad(y.square().sum(), (x, A, Bp))
    x2, A2, B2 = (t.detach().clone().requires_grad_(True) for t in (x, A, Bp))
    (x2 @ W.T + 1.5 * (x2 @ A2.T) @ B2.T).square().sum().backward()
    for got, want in zip((gx, ga, gb), (x2.grad, A2.grad, B2.grad)):
        torch.testing.assert_close(got, want)
    assert W.grad is None


@pytest.mark.parametrize("hook", ["forward", "forward_pre"])
def test_a_hooked_base_layer_of_a_fusable_adapter_takes_the_two_gemm_path(hook, monkeypatch):
    """CLoRA has factors (LoRA has none, so the test above cannot tell): either kind of hook alone must make the
    base layer run its own call, so the hook sees it."""
    from pointclora.peft.clora import CLoRABank, CLoRALinear

    torch.manual_seed(0)
    bank = CLoRABank(5, 6, r=2, num_bases=2)
    nn.init.normal_(bank.B)
    layer = CLoRALinear(nn.Linear(5, 6), bank, "k", scaling=0.5)
    x = torch.randn(3, 5)
    want = x @ layer.base_layer.weight.T + layer.base_layer.bias + x @ layer.delta_weight().T
    calls, seen = [], []
    real = FusedLowRankLinear.apply
    monkeypatch.setattr(FusedLowRankLinear, "apply", lambda *a: calls.append(1) or real(*a))
    torch.testing.assert_close(layer(x), want)
    assert calls == [1]  # unhooked: fused
    register = getattr(layer.base_layer, f"register_{hook}_hook")
    register(lambda *a: seen.append(1) and None)
    torch.testing.assert_close(layer(x), want)
    assert seen == [1] and calls == [1]


class _WideDelta(LoRALinear):
    """An adapter computing its update in float64 (a subclass may): the layer still answers in the base dtype."""

    def adapter_delta(self, x):
        return super().adapter_delta(x).double()


def test_the_update_is_cast_to_the_base_output_dtype():
    torch.manual_seed(0)
    layer = _WideDelta(nn.Linear(4, 6), r=2, scaling=0.5)
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(3, 4)
    y = layer(x)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, layer.base_layer(x) + 0.5 * x @ layer.lora_A[0].T @ layer.lora_B[0].T)
