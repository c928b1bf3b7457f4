"""PointLoRA (--peft pointlora): inject, forward, closed-form counts, recorded outputs, the mask loss as an auxiliary
loss, both quirks, save/load."""

import pytest
import torch
from peer_helpers import TINY_OPTIONS, assert_adapter_round_trip, cloud, head_params, seeded_tiny

from pointclora.models import create_model
from pointclora.peft import (
    PeftConfigError,
    adapter_state_names,
    auxiliary_losses,
    inject_adapters,
    make_peft_config,
    trainable_parameter_summary,
)
from pointclora.peft.pointlora import PointLoRALinear


def _pointlora_params(c, depth, r, h1, h2):
    lora = depth * (r * c + 3 * c * r + r * c + c * r)  # qkv (A r x C, B 3C x r) + proj
    mlp = lambda out: c * 32 + 32 + 32 * out + out  # noqa: E731
    prompts = 3 * mlp(c) + mlp(3 * c)  # prompt_mlp, prompt_pos_mlp, prompt_proj_mlp, prompt_qkv_mlp
    mask = c * (c // 2) + c // 2 + c // 2 + 1
    first_conv = (3 * h1 + h1) + 2 * h1 + (h1 * h2 + h2)
    pos_embed = (3 * 128 + 128) + (128 * c + c)
    return lora + prompts + mask + first_conv + pos_embed


def test_point_mae_s_counts_equal_the_official_model():
    model = create_model("point_mae_s", num_classes=15, num_groups=128)
    inject_adapters(model, make_peft_config("pointlora"))
    s = trainable_parameter_summary(model)
    # PEERS.md measured 0.773 M on the official model (bench/peers_parity.py: 772,752 both)
    closed_form = _pointlora_params(384, 12, 8, 128, 256) + head_params(768, 256, 15) + 768
    assert s["trainable_params"] == closed_form == 772_752


def test_tiny_count_recorded_logits_and_mask_loss():
    model = seeded_tiny("pointlora")
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == (
        _pointlora_params(32, 2, 2, 16, 32) + head_params(64, 32, 5) + 64) == 20_646
    with torch.no_grad():
        out = model(cloud())
    expected = torch.tensor([[0.13623963, -0.12454082, 0.59387827, 0.66217268, -0.53142321],
                             [0.37281382, -0.41670090, 0.93465418, 0.77104890, -0.95790327]])  # fmt: skip
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
    aux = auxiliary_losses(model)
    assert set(aux) == {"mask"} and aux["mask"].weight == 0.004
    assert float(aux["mask"].value) == pytest.approx(-0.86266685, abs=1e-6)
    with torch.no_grad():
        off = seeded_tiny("pointlora", official_slices=True)(cloud())
    # the hard-coded x[:, 1:129] covers every token of a 16-group model: another (official) result
    torch.testing.assert_close(off[0], torch.tensor([0.15700373, -0.05205391, 0.53308916, 0.31538132, -0.08683251]),
                               rtol=0, atol=1e-5)  # fmt: skip


def test_mask_loss_is_the_negative_entropy_of_the_scores():
    model = seeded_tiny("pointlora")
    ext = model.extensions.pointlora
    pts = cloud()
    with torch.no_grad():
        model(pts)
        want = 0.0
        for divider, w in zip(ext.dividers, (1.0, 0.25)):
            p = ext.lora_mask_predictor(model.encoder(divider(pts).neighborhood))
            want += w * torch.mean(p * torch.log(p + 1e-6) + (1 - p) * torch.log(1 - p + 1e-6))
    torch.testing.assert_close(ext.mask_loss, want)


def test_lora_layer_and_prompt_weight_quirk():
    model = seeded_tiny("pointlora")
    layer = model.blocks[0].attn.qkv
    assert isinstance(layer, PointLoRALinear) and not layer.prompt_weight.requires_grad
    assert layer._shared[0] is model.extensions.pointlora.prompt_qkv_mlp
    x = torch.randn(2, 3, 32)
    with torch.no_grad():
        want = layer.base_layer(x) + x @ layer.lora_A.T @ layer.lora_B.T + layer.prompt_weight * layer._shared[0](x)
        torch.testing.assert_close(layer(x), want)
    assert seeded_tiny("pointlora", train_prompt_weight=True).blocks[0].attn.qkv.prompt_weight.requires_grad
    assert "blocks.0.attn.qkv.prompt_weight" in adapter_state_names(model)


def test_save_load_round_trip(tmp_path):
    model = seeded_tiny("pointlora")
    assert_adapter_round_trip(model, tmp_path / "a")


def test_bad_options_are_clear_errors():
    with pytest.raises(PeftConfigError, match="topk_scales \\[40, 8\\] must not exceed num_group_scales"):
        make_peft_config("pointlora", topk_scales=[40, 8], num_group_scales=[32, 64])
    with pytest.raises(PeftConfigError, match="num_group_scales must be two integers >= 1"):
        make_peft_config("pointlora", num_group_scales=[128])
    model = seeded_tiny("pointlora")
    with pytest.raises(PeftConfigError, match="already carries 'pointlora'; inject_adapters was called twice"):
        from pointclora.peft.pointlora import PointLoRAMethod

        PointLoRAMethod(make_peft_config("pointlora", **TINY_OPTIONS["pointlora"])).inject(model)
