"""DAPT (--peft dapt): inject, forward, closed-form counts, recorded outputs, prompts, positions once, hooks that
survive deep copies, head options, save/load."""

import copy

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


def _dapt_params(c, mlp_hidden, rank, depth):
    ssf = 2 * (c + 3 * c + c + mlp_hidden + c + c + c)  # norm1, qkv, proj, fc1, fc2, norm2, prompt
    adapter = 2 * c + (c + 1) + (c * rank + rank) + (rank * c + c)  # LN, scale, down, up
    return depth * (ssf + adapter) + 2 * 2 * c  # + encoder and final-norm scale-shifts


def test_point_mae_s_counts_equal_the_official_model():
    model = create_model("point_mae_s", num_classes=15, num_groups=128)
    inject_adapters(model, make_peft_config("dapt"))
    s = trainable_parameter_summary(model)
    # PEERS.md measured 1.088 M of 22.91 M on the official model (bench/peers_parity.py: 1,087,771 both)
    assert s["trainable_params"] == _dapt_params(384, 1536, 64, 12) + head_params(1152, 256, 15) + 768 == 1_087_771
    assert s["total_params"] == 22_912_795
    mn = create_model("point_mae_s", num_classes=40, num_groups=64)
    inject_adapters(mn, make_peft_config("dapt", rank=72, drop_adapter_rate=0.0, prompt_token="None"))
    assert mn.cls_head_finetune[0].in_features == 2 * 384  # ModelNet config: [cls, max]


def test_tiny_count_and_recorded_logits():
    model = seeded_tiny("dapt")
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == (
        _dapt_params(32, 128, 4, 2) + head_params(96, 32, 5) + 64) == 6_959
    with torch.no_grad():
        out = model(cloud())
    expected = torch.tensor([[0.57682419, -0.60880345, 0.03454752, 0.24497068, -0.83193183],
                             [0.61462152, -0.55956781, 0.02743882, 0.40073615, -0.85951895]])  # fmt: skip
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)


def test_one_prompt_per_block_and_positions_once():
    model = seeded_tiny("dapt")
    seen = []
    for block in model.blocks:
        block.register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    pts = cloud()
    with torch.no_grad():
        model(pts)
        tokens, pos, _ = model.tokenize(pts)
    assert [x.shape[1] for x in seen] == [1 + 16, 1 + 1 + 16]
    # block 0 receives tokens + pos exactly once (tokenize's extension already added them), block 1 no pos again
    assert pos is None
    torch.testing.assert_close(seen[0], tokens, rtol=0, atol=0)


def test_scale_shift_hooks_follow_deep_copies():
    model = seeded_tiny("dapt")
    twin = copy.deepcopy(model)
    with torch.no_grad():
        a = model(cloud())
        torch.testing.assert_close(twin(cloud()), a, rtol=0, atol=0)
        twin.blocks[0].extensions.dapt.ssf.qkv_gamma.mul_(3.0)  # only the copy changes
        assert torch.equal(model(cloud()), a) and not torch.allclose(twin(cloud()), a)


def test_zero_initialised_adapter_output_and_dropout_only_in_training():
    torch.manual_seed(0)
    model = create_model("point_mae_tiny", num_classes=5)
    inject_adapters(model, make_peft_config("dapt", rank=4, drop_adapter_rate=0.5))
    adapter = model.blocks[0].extensions.dapt.adapter
    h = torch.randn(2, 5, 32)
    assert torch.count_nonzero(adapter(h)) == 0  # up_proj starts at zero, as the official Adapter
    torch.nn.init.normal_(adapter.up_proj.weight)
    adapter.eval()
    ref = adapter(h)
    adapter.train()
    assert not torch.allclose(adapter(h), ref)
    assert adapter.dropout == 0.5


def test_save_load_round_trip(tmp_path):
    model = seeded_tiny("dapt")
    names = adapter_state_names(model)
    assert "blocks.1.extensions.dapt.adapter.up_proj.weight" in names and "extensions.dapt.ssf.norm_beta" in names
    assert_adapter_round_trip(model, tmp_path / "a")


def test_bad_options_are_clear_errors():
    with pytest.raises(PeftConfigError, match="patch_token must be one of max, None, got 'mean'"):
        make_peft_config("dapt", patch_token="mean")
    with pytest.raises(PeftConfigError, match="the head reads nothing"):
        make_peft_config("dapt", class_token="None", prompt_token="None", patch_token="None")
    with pytest.raises(PeftConfigError, match="rank must be an integer >= 1"):
        make_peft_config("dapt", rank=0)
