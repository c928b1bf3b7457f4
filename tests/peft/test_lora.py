import pytest
import torch
from peft_helpers import randomize_adapters, tiny

from pointclora.peft import (
    LoRAConfig,
    adapter_parameter_groups,
    inject_adapters,
    merge_adapters,
    trainable_parameter_summary,
    unmerge_adapters,
)


def test_lora_step0_merge_unmerge_and_closed_form(points):
    frozen = tiny().eval()
    model = inject_adapters(tiny(), LoRAConfig(r=4)).eval()
    with torch.no_grad():
        assert torch.equal(model(points), frozen(points))
        randomize_adapters(model)
        unmerged = model(points)
        merge_adapters(model)
        assert torch.allclose(model(points), unmerged, atol=1e-5)
        unmerge_adapters(model)
        assert torch.allclose(model(points), unmerged, atol=1e-6)
    groups = adapter_parameter_groups(model)
    # r (in + out) per LRM; q, k, v are three LRMs of the split qkv
    assert {k: (g["lrms"], g["params"]) for k, g in groups.items()} == {
        "32x32": (8, 8 * 4 * 64), "32x128": (2, 2 * 4 * 160), "128x32": (2, 2 * 4 * 160)
    }
    assert trainable_parameter_summary(model)["adapter_params"] == 8 * 4 * 64 + 4 * 4 * 160


def test_lora_point_mae_s_baseline_count():
    from pointclora.models import create_model

    model = inject_adapters(create_model("point_mae_s", num_classes=15, num_groups=128), "lora")
    assert trainable_parameter_summary(model)["adapter_params"] == 663_552


def _naive_lora(layer, x, dropped=None):
    """``W x + b + s · [B_j A_j x']_j`` written out split by split (x' = the dropped-out x, or x)."""
    xa = x if dropped is None else dropped
    parts = [xa @ layer.lora_A[j].T @ layer.lora_B[j].T for j in range(layer.n_splits)]
    return x @ layer.base_layer.weight.T + layer.base_layer.bias + layer.scaling * torch.cat(parts, -1)


@pytest.mark.parametrize("n_splits", [1, 2, 3])
def test_lora_layer_forward_delta_and_merge_against_the_written_out_formula(n_splits):
    from pointclora.peft.lora import LoRALinear

    torch.manual_seed(0)
    base = torch.nn.Linear(10, 6 * n_splits)
    layer = LoRALinear(base, r=2, n_splits=n_splits, scaling=0.5)  # alpha / r = 0.5, not 1
    bound = 1 / 10**0.5
    assert layer.lora_A.shape == (n_splits, 2, 10) and layer.lora_A.abs().max() <= bound
    assert layer.lora_A.abs().max() > bound / 2 and torch.equal(layer.lora_B, torch.zeros(n_splits, 6, 2))
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(4, 5, 10)
    with torch.no_grad():
        want = _naive_lora(layer, x)
        torch.testing.assert_close(layer(x), want)
        delta = torch.cat([layer.lora_B[j] @ layer.lora_A[j] for j in range(n_splits)]) * 0.5
        torch.testing.assert_close(layer.delta_weight(), delta)
        assert layer.adapter_flops_per_token() == n_splits * 2 * (10 + 6)
        layer.merge()
        torch.testing.assert_close(layer(x), want, rtol=1e-5, atol=1e-5)
        assert layer.adapter_flops_per_token() == 0 and "r=2" in repr(layer) and "scaling=0.5" in repr(layer)
        layer.unmerge()
        torch.testing.assert_close(layer(x), want, rtol=1e-5, atol=1e-5)


def test_lora_dropout_applies_to_the_adapter_input_only():
    from pointclora.peft.lora import LoRALinear

    torch.manual_seed(0)
    layer = LoRALinear(torch.nn.Linear(8, 4), r=2, scaling=2.0, dropout=0.5).train()
    with torch.no_grad():
        layer.lora_B.normal_()
    x = torch.randn(3, 8)
    torch.manual_seed(7)
    got = layer(x)
    torch.manual_seed(7)
    dropped = torch.nn.functional.dropout(x, 0.5, training=True)  # the same draw the layer made
    torch.testing.assert_close(got, _naive_lora(layer, x, dropped))
    layer.eval()
    torch.testing.assert_close(layer(x), _naive_lora(layer, x))


def test_lora_config_alpha_and_dropout_reach_every_layer(points):
    model = inject_adapters(tiny(), LoRAConfig(r=4, alpha=10.0, dropout=0.2))
    layers = [m for m in model.modules() if hasattr(m, "lora_A")]
    assert {m.scaling for m in layers} == {2.5} and {m.r for m in layers} == {4}
    assert {m.dropout.p for m in layers} == {0.2}


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16])
def test_lora_factors_take_the_base_dtype_and_defaults(dtype):
    from pointclora.peft.lora import LoRALinear

    layer = LoRALinear(torch.nn.Linear(6, 9).to(dtype), r=2, n_splits=3)
    assert layer.lora_A.dtype == dtype and layer.lora_B.dtype == dtype
    assert layer.scaling == 1.0 and isinstance(layer.dropout, torch.nn.Identity)
    assert LoRALinear(torch.nn.Linear(6, 9), r=2).lora_A.shape == (1, 2, 6)  # one split by default
    if dtype == torch.float64:  # a 2-D input (tokens x features) with three splits
        with torch.no_grad():
            layer.lora_B.normal_()
        x = torch.randn(4, 6, dtype=dtype)
        torch.testing.assert_close(layer(x), _naive_lora(layer, x))
