import json
import os

import pytest
import torch

from pointclora.models import create_model, load_pretrained
from pointclora.models.mae import (
    PointMAEPretrain,
    build_pretrain_model,
    export_encoder_state,
    random_patch_mask,
)

REFERENCE_KEYS = os.path.join(os.path.dirname(__file__), "..", "models", "data", "point_mae_pretrain_keys.json")


def _shapes(n=8, points=128, seed=0):
    # Spheres and boxes: structured patches a tiny MAE can learn to reconstruct.
    g = torch.Generator().manual_seed(seed)
    clouds = []
    for i in range(n):
        p = torch.randn(points, 3, generator=g)
        p = p / p.norm(dim=1, keepdim=True) if i % 2 else torch.rand(points, 3, generator=g) * 2 - 1
        clouds.append(p)
    return torch.stack(clouds)


def test_random_patch_mask_counts():
    mask = random_patch_mask(5, 16, 0.6, generator=torch.Generator().manual_seed(0))
    assert mask.shape == (5, 16) and mask.dtype == torch.bool
    assert (mask.sum(1) == 9).all()  # int(0.6 * 16)
    assert not torch.equal(mask[0], mask[1])  # per-cloud masks
    with pytest.raises(ValueError, match="mask_ratio"):
        random_patch_mask(1, 4, 1.0)


def test_forward_shapes_and_only_masked_patches_are_targets():
    torch.manual_seed(0)
    model = build_pretrain_model("point_mae_tiny")  # 16 groups of 8
    pts = _shapes(3)
    out = model(pts)
    assert out.pred.shape == (3, 9, 8, 3) and out.target.shape == (3, 9, 8, 3)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    grouping = model.MAE_encoder.group_divider(pts)
    for b in range(3):
        masked = grouping.neighborhood[b][out.mask[b]]
        torch.testing.assert_close(out.target[b], masked)


def test_visible_tokens_only_reach_the_encoder():
    # With a fixed mask, changing the *tokens* of masked patches must not change the reconstruction (which sees only
    # visible tokens, mask tokens and centres), and the blocks must see G - M tokens.
    torch.manual_seed(0)
    model = build_pretrain_model("point_mae_tiny").eval()
    pts = _shapes(2, points=64)
    mask = random_patch_mask(2, 16, 0.6, generator=torch.Generator().manual_seed(3))
    seen = []
    model.MAE_encoder.blocks[0].register_forward_pre_hook(lambda mod, args: seen.append(args[0].shape))
    ref = model(pts, mask=mask)
    assert seen[-1] == (2, 16 - 9, 32)

    embed = model.MAE_encoder.encoder

    class Corrupt(torch.nn.Module):
        def forward(self, neighborhood):
            tokens = embed(neighborhood)
            return torch.where(mask.unsqueeze(-1), tokens + 100.0 * torch.randn_like(tokens), tokens)

    model.MAE_encoder.encoder = Corrupt()
    out = model(pts, mask=mask)
    torch.testing.assert_close(out.pred, ref.pred)

    # ...whereas corrupting the visible tokens does change it (the check above can fail).
    class CorruptVisible(torch.nn.Module):
        def forward(self, neighborhood):
            tokens = embed(neighborhood)
            return torch.where(mask.unsqueeze(-1), tokens, tokens + torch.randn_like(tokens))

    model.MAE_encoder.encoder = CorruptVisible()
    assert not torch.allclose(model(pts, mask=mask).pred, ref.pred)


def test_loss_decreases_on_tiny_set():
    torch.manual_seed(0)
    model = build_pretrain_model("point_mae_tiny")
    pts = _shapes(8)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    g = torch.Generator().manual_seed(1)
    fixed = random_patch_mask(8, 16, 0.6, generator=g)
    model.eval()
    with torch.no_grad():
        before = model(pts, mask=fixed).loss.item()
    model.train()
    for _ in range(30):
        loss = model(pts).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        after = model(pts, mask=fixed).loss.item()
    assert after < 0.7 * before, (before, after)


def test_official_key_layout_and_count():
    model = build_pretrain_model("point_mae_s")
    assert len(model.state_dict()) == 209
    assert "MAE_decoder.blocks.3.attn.qkv.weight" in model.state_dict()
    assert tuple(model.state_dict()["increase_dim.0.weight"].shape) == (96, 384, 1)


@pytest.mark.parametrize("layout", ["ours", "point_mae"])
def test_pretrain_to_finetune_handoff(tmp_path, layout):
    torch.manual_seed(0)
    mae = build_pretrain_model("point_mae_tiny")
    path = export_encoder_state(mae, str(tmp_path / "enc.pth"), layout=layout, variant="point_mae_tiny")
    clf = create_model("point_mae_tiny", num_classes=5)
    res = load_pretrained(clf, path, log=False)
    backbone_missing = [k for k in res.missing_keys if not k.startswith(("cls_head_finetune", "cls_token", "cls_pos"))]
    assert backbone_missing == []
    assert set(res.missing_keys) >= {"cls_token", "cls_pos"}
    if layout == "ours":
        assert res.unexpected_keys == []
    else:
        assert res.unexpected_keys and all(
            k.startswith(("mask_token", "decoder_pos_embed", "MAE_decoder", "increase_dim"))
            for k in res.unexpected_keys
        )
    torch.testing.assert_close(clf.blocks[1].mlp.fc1.weight, mae.MAE_encoder.blocks[1].mlp.fc1.weight)
    torch.testing.assert_close(clf.encoder.first_conv[1].running_var, mae.MAE_encoder.encoder.first_conv[1].running_var)
    # The segmentation model takes the same encoder.
    seg = create_model("point_mae_tiny_seg", num_classes=4, num_categories=1)
    assert not [
        k
        for k in load_pretrained(seg, path, log=False).missing_keys
        if k.startswith(("blocks", "encoder", "pos_embed", "norm"))
    ]


def test_official_export_matches_reference_key_list(tmp_path):
    if not os.path.exists(REFERENCE_KEYS):
        pytest.skip(f"reference key list not found at {REFERENCE_KEYS}")
    with open(REFERENCE_KEYS) as f:
        expected = json.load(f)
    path = export_encoder_state(build_pretrain_model("point_mae_s"), str(tmp_path / "p.pth"), layout="point_mae")
    got = torch.load(path, weights_only=True)["base_model"]
    expected_keys = (
        list(expected) if isinstance(expected, dict) else [e if isinstance(e, str) else e[0] for e in expected]
    )
    assert list(got) == expected_keys


def test_errors_are_clear(tmp_path):
    with pytest.raises(ValueError, match="cls token"):
        PointMAEPretrain(cls_token=True)
    with pytest.raises(ValueError, match="layout"):
        export_encoder_state(build_pretrain_model("point_mae_tiny"), str(tmp_path / "x.pth"), layout="timm")
    with pytest.raises(KeyError, match="point_mae_tinny"):
        build_pretrain_model("point_mae_tinny")
