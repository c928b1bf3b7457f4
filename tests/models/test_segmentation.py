import pytest
import torch
import torch.nn.functional as F

from pointclora.models import create_model, load_pretrained
from pointclora.models.segmentation import SEG_HEAD_MODULES, PointTransformerSeg, default_fetch_layers


def test_default_fetch_layers():
    assert default_fetch_layers(12) == (3, 7, 11)
    assert default_fetch_layers(4) == (0, 2, 3)
    assert default_fetch_layers(2) == (0, 1)
    assert default_fetch_layers(1) == (0,)


def test_official_key_layout_and_shapes():
    m = create_model("point_mae_s_seg", num_classes=50, num_categories=16)
    sd = m.state_dict()
    assert len(sd) == 192  # Appendix C
    assert tuple(sd["label_conv.0.weight"].shape) == (64, 16, 1) and "label_conv.0.bias" not in sd
    assert tuple(sd["propagation_0.mlp_convs.0.weight"].shape) == (1536, 1155, 1)
    assert tuple(sd["convs1.weight"].shape) == (512, 3392, 1)
    assert tuple(sd["convs3.weight"].shape) == (50, 256, 1)
    assert "cls_token" not in sd and "blocks.11.attn.qkv.weight" in sd
    assert m.fetch_layers == (3, 7, 11) and m.num_groups == 128 and m.group_size == 32


def test_forward_shapes_category_forms_and_training_step():
    torch.manual_seed(0)
    m = create_model("point_mae_tiny_seg", num_classes=6, num_categories=2)
    pts = torch.randn(3, 64, 3)
    cat = torch.tensor([0, 1, 1])
    out = m(pts, cat)
    assert out.shape == (3, 64, 6)
    m.eval()
    torch.testing.assert_close(m(pts, cat), m(pts, F.one_hot(cat, 2).float()))
    m.train()
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    target = torch.randint(0, 6, (3, 64))
    losses = []
    for _ in range(8):
        loss = F.cross_entropy(m(pts, cat).reshape(-1, 6), target.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]


def test_fetched_blocks_influence_output():
    # Only blocks up to the last fetched one matter: perturbing block 1 of a 2-block model changes the logits.
    torch.manual_seed(0)
    m = create_model("point_mae_tiny_seg", num_classes=4, num_categories=1).eval()
    pts, cat = torch.randn(2, 64, 3), torch.zeros(2, dtype=torch.long)
    before = m(pts, cat)
    with torch.no_grad():
        m.blocks[1].mlp.fc2.bias.add_(torch.randn(32))  # not a constant: LayerNorm would cancel it
    assert not torch.allclose(before, m(pts, cat))


def test_classifier_checkpoint_loads_into_seg_encoder():
    cls = create_model("point_mae_tiny", num_classes=5)
    seg = create_model("point_mae_tiny_seg", num_classes=4, num_categories=1)
    res = load_pretrained(seg, {"model": cls.state_dict()}, log=False)
    assert not [k for k in res.missing_keys if not k.startswith(SEG_HEAD_MODULES)]
    torch.testing.assert_close(seg.blocks[0].attn.qkv.weight, cls.blocks[0].attn.qkv.weight)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="fetch_layers"):
        create_model("point_mae_tiny_seg", num_classes=4, num_categories=1, fetch_layers=(0, 5))
    m = create_model("point_mae_tiny_seg", num_classes=4, num_categories=2)
    with pytest.raises(ValueError, match="category ids"):
        m(torch.randn(1, 32, 3), torch.tensor([2]))
    with pytest.raises(ValueError, match="no cls token"):
        PointTransformerSeg(cls_token=True)


def test_single_category_label_branch_same_in_train_and_eval():
    # One category: BatchNorm over a constant one-hot has zero variance; eval must not blow it up (it used to).
    torch.manual_seed(0)
    m = create_model("point_mae_tiny_seg", num_classes=54, num_categories=1)
    opt = torch.optim.AdamW(m.parameters(), lr=1e-2)
    pts, cat = torch.randn(4, 64, 3), torch.zeros(4, dtype=torch.long)
    target = torch.randint(50, 54, (4, 64))
    for _ in range(5):
        loss = F.cross_entropy(m(pts, cat).reshape(-1, 54), target.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
    onehot = torch.ones(4, 1)
    m.train()
    train_feat = m.label_feature(onehot)
    m.eval()
    torch.testing.assert_close(m.label_feature(onehot), train_feat)
    torch.testing.assert_close(train_feat[0], F.leaky_relu(m.label_conv[1].bias, 0.2))


def test_demo_seg_encoder_matches_demo_classifier():
    # The demo backbone pre-trained for classification must load into the demo segmentation model unchanged.
    cls = create_model("point_mae_demo", num_classes=3)
    seg = create_model("point_mae_demo_seg", num_classes=4, num_categories=1)
    res = load_pretrained(seg, {"model": cls.state_dict()}, log=False)
    assert not [k for k in res.missing_keys if not k.startswith(SEG_HEAD_MODULES)]
