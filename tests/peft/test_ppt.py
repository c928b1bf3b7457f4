"""PPT (--peft ppt): inject, forward, closed-form counts, recorded outputs, the second tokenization, the shared MLPs,
the GELU head, save/load."""

import pytest
import torch
from peer_helpers import assert_adapter_round_trip, cloud, head_params, seeded_tiny

from pointclora.models import create_model
from pointclora.peft import (
    PeftConfigError,
    adapter_state_names,
    inject_adapters,
    make_peft_config,
    trainable_parameter_summary,
)


def _ppt_params(c, h1, h2):
    mlps = 3 * (c * 256 + 256 + 256 * c + c)  # prompt_mlp, prompt_pos_mlp, prompt_all_mlp (shared by all blocks)
    first_conv = (3 * h1 + h1) + 2 * h1 + (h1 * h2 + h2)  # Conv1d, BN, Conv1d
    pos_embed = (3 * 128 + 128) + (128 * c + c)
    return mlps + first_conv + pos_embed


def test_point_mae_s_counts_equal_the_official_model():
    model = create_model("point_mae_s", num_classes=15, num_groups=128)
    inject_adapters(model, make_peft_config("ppt"))
    s = trainable_parameter_summary(model)
    # PEERS.md measured 1.042 M on the official model (bench/peers_parity.py: 1,042,191 both)
    assert s["trainable_params"] == _ppt_params(384, 128, 256) + head_params(1152, 256, 15) + 768 == 1_042_191
    assert isinstance(model.cls_head_finetune[2], torch.nn.GELU)


def test_tiny_count_recorded_logits_and_trained_bn():
    model = seeded_tiny("ppt")
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == (
        _ppt_params(32, 16, 32) + head_params(96, 32, 5) + 64) == 59_813
    with torch.no_grad():
        out = model(cloud())
    expected = torch.tensor([[-0.22816494, -1.02373409, 0.45288673, -0.26431224, -0.10618530],
                             [-0.15775165, -0.98406845, 0.41268429, -0.30028838, -0.07514776]])  # fmt: skip
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)
    # the official filter trains first_conv, so its BatchNorm statistics follow training; second_conv's stay frozen
    model.train()
    assert model.encoder.first_conv[1].training and not model.encoder.second_conv[1].training
    assert "encoder.first_conv.1.running_mean" in adapter_state_names(model)


def test_sequence_layout_and_shared_mlp():
    model = seeded_tiny("ppt")
    seen = []
    model.blocks[0].register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    pts = cloud()
    with torch.no_grad():
        model(pts)
        tokens, pos, _ = model.tokenize(pts)
        x = tokens + pos
        ext = model.extensions.ppt
        G = 16
        want = torch.cat([x[:, :1], x[:, 1:1 + G] + ext.prompt_mlp(x[:, 1:1 + G]),
                          x[:, -8:] + ext.prompt_pos_mlp(x[:, -8:])], dim=1)  # fmt: skip
    assert tokens.shape[1] == 1 + 16 + 8
    torch.testing.assert_close(seen[0], want, rtol=0, atol=0)
    # one prompt_all_mlp for every block, saved once
    assert all(b.extensions.ppt._shared[0] is ext.prompt_all_mlp for b in model.blocks)
    assert not any(k.startswith("blocks.") and "prompt_all_mlp" in k for k in model.state_dict())


def test_save_load_round_trip(tmp_path):
    model = seeded_tiny("ppt")
    assert_adapter_round_trip(model, tmp_path / "a")


def test_bad_options_are_clear_errors():
    with pytest.raises(PeftConfigError, match="prompt_num_group must be an integer >= 1"):
        make_peft_config("ppt", prompt_num_group=0)
    with pytest.raises(PeftConfigError, match="unknown option 'prompt_num_groups'"):
        make_peft_config("ppt", prompt_num_groups=64)
