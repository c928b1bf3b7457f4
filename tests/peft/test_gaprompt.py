"""GAPrompt (--peft gaprompt): inject, forward, closed-form counts, recorded outputs (both propagation types), token
prompts in and out, the batch_flat_index quirk, point prompts, save/load."""

import pytest
import torch
from peer_helpers import assert_adapter_round_trip, cloud, head_params, seeded_tiny

from pointclora.models import create_model
from pointclora.peft import (
    PeftConfigError,
    inject_adapters,
    make_peft_config,
    trainable_parameter_summary,
)
from pointclora.peft.gaprompt import _interpolate


def _gaprompt_params(c, groups, depth, tokens, points):
    conv = lambda i, o: i * o + o + 2 * o  # noqa: E731  (conv + its BatchNorm)
    shift = (conv(27, 64) + conv(64, 32) + conv(32, 64) + conv(64, 64) + conv(64, 32) + conv(32, 8)
             + conv(72, 64) + conv(64, 32) + conv(59, 32) + conv(32, 32) + (32 * 64 + 64) + (64 * 3 + 3))  # fmt: skip
    shape_mlp = (groups // 2 * 8) * 16 + 16 + 16 * c + c
    block = tokens * c + 2 * c + (c + 1) + (c * 16 + 16) + (16 * c + c) + 2 * c  # prompts, adapter, out_transform BN
    return shift + shape_mlp + 3 * points + 3 * tokens + depth * block


def test_point_mae_s_counts_equal_the_official_model():
    model = create_model("point_mae_s", num_classes=15, num_groups=128)
    inject_adapters(model, make_peft_config("gaprompt"))
    s = trainable_parameter_summary(model)
    # measured on the official model by bench/peers_parity.py: 628,147 both (the paper: 0.6 M)
    closed_form = _gaprompt_params(384, 128, 12, 10, 5) + head_params(1152, 256, 15) + 768
    assert s["trainable_params"] == closed_form == 628_147
    assert model.cls_head_finetune[3].p == 0.6


def test_tiny_count_and_recorded_logits_of_both_propagation_types():
    model = seeded_tiny("gaprompt")
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == (
        _gaprompt_params(32, 16, 2, 2, 3) + head_params(96, 32, 5) + 64) == 34_081
    with torch.no_grad():
        after = model(cloud())
        before = seeded_tiny("gaprompt", propagation_type="permutation_before_attention")(cloud())
    torch.testing.assert_close(after, torch.tensor([
        [-0.13188538, 0.11853939, 1.03777516, 0.74378312, 0.24663572],
        [-0.11152217, 0.02397034, 1.00289452, 0.72357196, 0.25787863]]), rtol=0, atol=1e-5)  # fmt: skip
    torch.testing.assert_close(before[0], torch.tensor([0.04731473, 0.44463098, 1.33161819, 0.65416050, 0.34865838]),
                               rtol=0, atol=1e-5)  # fmt: skip


def test_prompt_tokens_enter_and_leave_the_first_blocks_and_points_are_prompted():
    model = seeded_tiny("gaprompt")
    seen = []
    for block in model.blocks:
        block.register_forward_hook(lambda m, a, out: seen.append((a[0].shape[1], out.shape[1])))
    with torch.no_grad():
        model(cloud(n=100))
    assert seen == [(1 + 2 + 16, 1 + 16), (1 + 16, 1 + 16)]  # prompt_depth 1, num_tokens 2
    pts = cloud(n=100)
    with torch.no_grad():
        prompted = model.extensions.gaprompt.on_points(model, pts)
    assert prompted.shape == (2, 103, 3)
    torch.testing.assert_close(prompted[:, 100:], model.extensions.gaprompt.point_prompt.points.expand(2, -1, -1) * 5)


def test_batch_flat_index_quirk_makes_a_cloud_depend_on_its_batch():
    pts = cloud(batch=3)
    official, fixed = seeded_tiny("gaprompt"), seeded_tiny("gaprompt", batch_flat_index=False)
    with torch.no_grad():
        assert not torch.allclose(official(pts[1:2]), official(pts)[1:2], atol=1e-6)
        torch.testing.assert_close(fixed(pts[1:2]), fixed(pts)[1:2], rtol=0, atol=1e-5)


def test_interpolation_matches_a_naive_loop():
    gen = torch.Generator().manual_seed(0)
    xyz1, xyz2, f = torch.rand(1, 5, 3, generator=gen), torch.rand(1, 4, 3, generator=gen), torch.randn(1, 4, 2)
    got = _interpolate(xyz1, xyz2, f, k=2, eps=1e-8)
    for i in range(5):
        d = ((xyz2[0] - xyz1[0, i]) ** 2).sum(-1)
        near = d.argsort()[:2]
        w = 1 / (d[near] + 1e-8)
        torch.testing.assert_close(got[0, i], (f[0, near] * (w / w.sum())[:, None]).sum(0))


def test_save_load_round_trip(tmp_path):
    model = seeded_tiny("gaprompt")
    assert_adapter_round_trip(model, tmp_path / "a")


def test_bad_options_are_clear_errors():
    with pytest.raises(PeftConfigError, match="propagation_type must be one of"):
        make_peft_config("gaprompt", propagation_type="replacement_after_attention")
    with pytest.raises(PeftConfigError, match="prompt_depth must be <= the model's 2 blocks, got 6"):
        inject_adapters(create_model("point_mae_tiny", num_classes=5), make_peft_config("gaprompt"))
