"""IDPT (--peft idpt): inject, forward, closed-form counts, recorded outputs, the prompt_pos quirk, save/load."""

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
from pointclora.peft.idpt import _edge_features


def _dgcnn_params(c):  # three Conv2d(2C->C) + BN2d, Conv1d(3C->C) + BN1d, no conv bias
    return 3 * (2 * c * c + 2 * c) + 3 * c * c + 2 * c


def test_point_mae_s_counts_equal_the_official_model():
    model = create_model("point_mae_s", num_classes=15, num_groups=128)
    inject_adapters(model, make_peft_config("idpt"))
    s = trainable_parameter_summary(model)
    # PEERS.md measured 1,697 k of 23.52 M on the official model (bench/peers_parity.py: 1,696,783 both)
    assert s["trainable_params"] == _dgcnn_params(384) + head_params(3 * 384, 256, 15) + 2 * 384 == 1_696_783
    assert s["total_params"] == 23_522_191
    assert model.cls_head_finetune[0].in_features == 3 * 384


def test_tiny_counts_prompt_pos_quirk_and_option():
    model = seeded_tiny("idpt")
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "extensions.idpt.prompt_pos" not in trainable  # the official filter misses it
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == (
        _dgcnn_params(32) + head_params(96, 32, 5) + 2 * 32) == 13_989
    on = seeded_tiny("idpt", train_prompt_pos=True)
    assert on.extensions.idpt.prompt_pos.requires_grad
    # frozen or not, prompt_pos is saved: it comes from no pre-trained checkpoint
    from pointclora.peft import adapter_state_names

    assert "extensions.idpt.prompt_pos" in adapter_state_names(model)
    assert "extensions.idpt.prompt_module.conv1.1.running_var" in adapter_state_names(model)


def test_recorded_logits_of_a_seeded_tiny_model():
    with torch.no_grad():
        out = seeded_tiny("idpt")(cloud())
    expected = torch.tensor([[-0.72201228, -0.63621521, 0.37960815, -0.42549008, 0.20106049],
                             [-0.72742140, -0.52135307, 0.43503678, -0.53989100, 0.11500731]])  # fmt: skip
    torch.testing.assert_close(out, expected, rtol=0, atol=1e-5)


def test_prompt_token_is_inserted_before_the_prompt_layer_only():
    model = seeded_tiny("idpt")
    seen = []
    model.blocks[0].register_forward_pre_hook(lambda m, a: seen.append(a[0].shape[1]))
    model.blocks[1].register_forward_pre_hook(lambda m, a: seen.append(a[0].shape[1]))
    with torch.no_grad():
        model(cloud())
    assert seen == [1 + 16, 1 + 1 + 16]
    # the prompt depends on the instance: two clouds give two prompts
    tokens, pos, _ = model.tokenize(cloud())
    x = model.blocks[0](tokens + pos)
    prompt = model.extensions.idpt.prompt_module(x[:, 1:])
    assert prompt.shape == (2, 1, 32) and not torch.allclose(prompt[0], prompt[1])


def test_edge_features_match_a_naive_loop():
    x = torch.randn(2, 5, 9, generator=torch.Generator().manual_seed(0))  # (B, C, T)
    got = _edge_features(x, 3)
    assert got.shape == (2, 10, 9, 3)
    for b in range(2):
        pts = x[b].T  # (T, C)
        d = ((pts[:, None] - pts[None]) ** 2).sum(-1)
        for i in range(9):
            nn_idx = d[i].argsort()[:3]
            want = torch.cat([pts[nn_idx] - pts[i], pts[i].expand(3, -1)], dim=1).T  # (2C, k)
            # neighbour order within the k follows distance: compare as sets of columns
            cols = {tuple(c.round(decimals=5).tolist()) for c in got[b, :, i].T}
            assert cols == {tuple(c.round(decimals=5).tolist()) for c in want.T}


@pytest.mark.parametrize("cls_type, width", [("all", 96), ("promptcls", 64), ("pointcls", 64), ("promptonly", 32)])
def test_cls_types_size_the_head(cls_type, width):
    model = seeded_tiny("idpt", cls_type=cls_type)
    assert model.cls_head_finetune[0].in_features == width
    with torch.no_grad():
        assert model(cloud()).shape == (2, 5)


def test_save_load_round_trip(tmp_path):
    model = seeded_tiny("idpt")
    assert_adapter_round_trip(model, tmp_path / "a")


def test_bad_options_are_clear_errors():
    with pytest.raises(PeftConfigError, match="prompt_module must be 'dgcnn'"):
        make_peft_config("idpt", prompt_module="transformer")
    with pytest.raises(PeftConfigError, match="cls_type must be one of"):
        make_peft_config("idpt", cls_type="max")
    with pytest.raises(PeftConfigError, match="prompt_layer must be < the model's 2 blocks, got 11"):
        inject_adapters(create_model("point_mae_tiny", num_classes=5), make_peft_config("idpt"))
