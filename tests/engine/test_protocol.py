"""--protocol point-mae: the keys it sets, and the pieces those keys map to."""

import math

import pytest
import torch

from pointclora.engine.protocol import official_no_decay, official_param_groups, official_seg_step
from pointclora.models import create_model
from pointclora.models.checkpoint import to_point_mae_layout
from pointclora.models.official import is_official_checkpoint, model_overrides_for_checkpoint, pytorch_default_init_
from pointclora.tasks.protocol import CHOICES, apply_protocol, protocol_label, protocol_overrides


def test_overrides_per_task():
    cls = protocol_overrides("point-mae")
    assert cls["protocol"] == "point-mae" and cls["data.val_split"] == "test"
    assert cls["schedule.stepping"] == "official" and cls["train.vote"] == 10
    assert cls["train.vote_mode"] == "max_over_repeats" and cls["train.vote_repeats"] == 299
    assert cls["model.skip_near_origin"] is True and cls["data.fps_skip_near_origin"] is True
    assert cls["optim.no_decay"] == "point-mae" and cls["model.init"] == "pytorch" and cls["optim.grad_clip"] == 10.0
    pre = protocol_overrides("point_mae", task="pretrain")
    assert pre["optim.grad_clip"] == 0.0 and "data.val_split" not in pre and "train.vote" not in pre
    seg = protocol_overrides("point-mae", task="segmentation")
    assert seg["optim.seg_double_step"] is True and seg["schedule.stepping"] == "official"
    assert protocol_overrides("ours") == {"protocol": "ours"}
    with pytest.raises(ValueError, match="unknown protocol 'paper'"):
        protocol_overrides("paper")
    assert all(c.official for c in CHOICES)  # every choice names the file it follows


def test_apply_protocol_sets_nested_keys_on_a_copy():
    cfg = {"data": {"val_split": "auto", "batch_size": 32}, "model": {"name": "point_mae_s"}}
    out = apply_protocol(cfg, "point-mae")
    assert out["data"] == {"val_split": "test", "batch_size": 32, "fps_skip_near_origin": True}
    assert out["model"]["skip_near_origin"] is True and out["schedule"]["stepping"] == "official"
    assert cfg["data"]["val_split"] == "auto" and protocol_label(out) == "point-mae" and protocol_label(cfg) == "ours"


def test_weight_decay_on_cls_pos_as_official():
    model = create_model("point_mae_tiny", num_classes=3)
    named = dict(model.named_parameters())
    assert official_no_decay("cls_token", named["cls_token"]) and not official_no_decay("cls_pos", named["cls_pos"])
    no_decay, decay = official_param_groups(model, 0.05)
    assert no_decay["weight_decay"] == 0.0 and decay["weight_decay"] == 0.05
    ids = {id(p) for p in decay["params"]}
    assert id(named["cls_pos"]) in ids and id(named["cls_token"]) not in ids
    assert id(named["blocks.0.attn.qkv.weight"]) in ids and id(named["norm.weight"]) not in ids


def test_pytorch_default_init():
    torch.manual_seed(0)
    model = pytorch_default_init_(create_model("point_mae_tiny", num_classes=3))
    w = model.blocks[0].mlp.fc1.weight  # Linear(32, 128): default = kaiming_uniform(a=sqrt 5) = U(-1/sqrt(32), ..)
    bound = 1 / math.sqrt(w.shape[1])
    assert w.abs().max() <= bound and w.abs().max() > 0.8 * bound  # not trunc_normal(.02)
    assert model.blocks[0].mlp.fc1.bias.abs().max() > 0  # default biases are not zero
    assert model.cls_pos.abs().max() < 0.1 and model.cls_token.std() < 0.05  # these two stay trunc_normal .02
    assert torch.isfinite(model(torch.randn(2, 64, 3))).all()


def test_official_checkpoints_get_skip_near_origin(tmp_path):
    enc = create_model("point_mae_tiny", num_classes=3).state_dict()
    official = to_point_mae_layout(enc)  # {'base_model': {'module.MAE_encoder.blocks.blocks.0...'}}
    assert is_official_checkpoint(official) and is_official_checkpoint(official["base_model"])
    assert not is_official_checkpoint({"model": enc, "config": {}, "version": "1"}) and not is_official_checkpoint(enc)
    torch.save(official, tmp_path / "pretrain.pth")
    assert model_overrides_for_checkpoint(tmp_path / "pretrain.pth") == {"skip_near_origin": True}
    assert model_overrides_for_checkpoint({"model": enc, "version": "1"}) == {}
    m = create_model("point_mae_tiny", num_classes=3, **model_overrides_for_checkpoint(official))
    assert m.group_divider.skip_near_origin is True


def test_official_seg_step_steps_twice_on_raw_then_clipped_gradient():
    w = torch.nn.Parameter(torch.zeros(3))
    opt = torch.optim.SGD([w], lr=1.0)
    (w * torch.tensor([30.0, 40.0, 0.0])).sum().backward()  # gradient (30, 40, 0), norm 50
    official_seg_step(opt, [w], max_norm=10.0)
    # first step on the raw gradient, second on the clipped one (norm 10 -> (6, 8, 0))
    assert torch.allclose(w, -torch.tensor([36.0, 48.0, 0.0]), atol=1e-4) and w.grad is None
    adam = torch.optim.AdamW([w], lr=1e-3)
    w.sum().backward()
    official_seg_step(adam, [w])
    assert adam.state[w]["step"] == 2  # AdamW's state advances twice per batch, as officially
