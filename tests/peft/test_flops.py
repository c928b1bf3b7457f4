import copy

import torch
from peft_helpers import randomize_adapters, tiny

from pointclora.models import create_model
from pointclora.models.flops import count_flops, count_gflops
from pointclora.peft import AdapterLinear, CLoRAConfig, LoRAConfig, inject_adapters, merge_and_unload


def _deployed(model):
    """The merged model as it ships: a plain model with no adapter wrapper left, so the count cannot hold merely
    because a merged wrapper reports 0 adapter FLOPs."""
    plain = merge_and_unload(copy.deepcopy(model))
    assert not any(isinstance(m, AdapterLinear) for m in plain.modules())
    return plain


def _tiny_closed_form(num_groups=16, K=8, C=32, H=128, depth=2, classes=5):
    """Multiply-adds of point_mae_tiny by hand: mini-PointNet convs, pos MLP, blocks, head."""
    pts = num_groups * K
    encoder = pts * (3 * 16 + 16 * 32 + 64 * 64 + 64 * 32)
    pos = num_groups * (3 * 128 + 128 * C)
    T = num_groups + 1
    blocks = depth * T * (C * 3 * C + C * C + C * H + H * C)
    head = 2 * C * 32 + 32 * 32 + 32 * classes
    attention = depth * 2 * T * T * C
    return encoder + pos + blocks + head, attention


def test_tiny_counts_match_closed_form_and_merge_is_exact():
    base, attention = _tiny_closed_form()
    frozen = count_flops(tiny(), num_points=128)
    assert (frozen.linear_conv, frozen.attention, frozen.adapters) == (base, attention, 0)
    model = randomize_adapters(inject_adapters(tiny(), CLoRAConfig(r=4, num_bases=2)))
    T, p, r, C, H = 17, 2, 4, 32, 128
    per_token = (p * r * C + 3 * (p * r * r + p * r * C)) + (p * r * C + p * r * r + p * r * C) \
        + (p * r * C + p * r * r + p * r * H) + (p * r * H + p * r * r + p * r * C)  # qkv (x·Aᵀ shared), proj, fc1, fc2
    unmerged = count_flops(model, num_points=128)
    assert unmerged.linear_conv == base and unmerged.adapters == 2 * T * per_token
    merged = count_flops(_deployed(model), num_points=128)
    assert (merged.linear_conv, merged.adapters, merged.total()) == (base, 0, base)
    lora = count_flops(inject_adapters(tiny(), LoRAConfig(r=4)), num_points=128)
    assert lora.adapters == 2 * T * 4 * (4 * 2 * C + 2 * (C + H))


def test_point_mae_s_gflops_match_clora_md():
    torch.manual_seed(0)
    model = create_model("point_mae_s", num_classes=15, num_groups=128)
    frozen = count_gflops(model, 2048)
    assert abs(frozen - 4.76) / 4.76 < 0.01
    assert abs(count_gflops(model, 2048, include_attention=True) - 4.91) < 0.01
    inject_adapters(model, CLoRAConfig())
    assert abs(count_gflops(model, 2048) - 5.07) < 0.01  # q, k, v share x·Aᵀ
    assert count_gflops(_deployed(model), 2048) == frozen
