import pytest
import torch
from torch import nn

from pointclora.models import create_model, list_models, model_defaults
from pointclora.models.backbone import PointTransformer
from pointclora.models.layers import Attention, Block


def _count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("num_classes,expected", [(15, 22_093_327), (40, 22_099_752)])
def test_point_mae_s_parameter_counts(num_classes, expected):
    model = create_model("point_mae_s", num_classes=num_classes)
    assert _count(model) == expected
    encoder = _count(model) - _count(model.cls_head_finetune) - model.cls_token.numel() - model.cls_pos.numel()
    assert encoder == 21_825_024
    assert _count(model.encoder) == 494_464
    assert _count(model.blocks) == 21_279_744


def test_point_mae_s_structure_follows_point_mae():
    model = create_model("point_mae_s", num_classes=15)
    block = model.blocks[0]
    assert block.attn.qkv.bias is None and block.attn.qkv.weight.shape == (1152, 384)
    assert block.norm1.eps == 1e-5 and model.norm.eps == 1e-5
    assert isinstance(block.mlp.act, nn.GELU) and block.mlp.act.approximate == "none"
    rates = [b.drop_path.drop_prob for b in model.blocks]
    assert rates[0] == 0.0 and rates[-1] == pytest.approx(0.1) and rates == sorted(rates)
    head_keys = [k for k in model.state_dict() if k.startswith("cls_head_finetune")]
    assert {k.split(".")[1] for k in head_keys} == {"0", "1", "4", "5", "8"}
    # Block parameters are listed in the official order.
    assert [k.split(".", 2)[2] for k in model.state_dict() if k.startswith("blocks.0.")] == [
        "norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias", "mlp.fc1.weight", "mlp.fc1.bias",
        "mlp.fc2.weight", "mlp.fc2.bias", "attn.qkv.weight", "attn.proj.weight", "attn.proj.bias",
    ]  # fmt: skip


def test_point_bert_variant():
    model = create_model("point_bert_s", num_classes=40)
    assert model.encoder.second_conv[3].out_channels == 256
    assert model.reduce_dim.weight.shape == (384, 256)
    assert round(_count(model) / 1e6, 2) == 22.07  # published total for 40 classes
    assert not any(isinstance(m, nn.BatchNorm1d) for m in model.cls_head_finetune)


def test_attention_matches_explicit_point_mae_formula():
    torch.manual_seed(0)
    attn = Attention(16, num_heads=4).eval()
    x = torch.randn(2, 5, 16)
    B, T, C = x.shape
    qkv = attn.qkv(x).reshape(B, T, 3, 4, 4).permute(2, 0, 3, 1, 4)
    q, k, v = qkv[0], qkv[1], qkv[2]
    weights = ((q @ k.transpose(-2, -1)) * attn.scale).softmax(dim=-1)
    expected = attn.proj((weights @ v).transpose(1, 2).reshape(B, T, C))
    torch.testing.assert_close(attn(x), expected, rtol=1e-5, atol=1e-6)


def test_position_embedding_added_before_every_block():
    torch.manual_seed(0)
    model = create_model("point_mae_tiny", num_classes=3).eval()
    points = torch.randn(2, 128, 3)
    tokens, pos, _ = model.tokenize(points)
    x = tokens
    for blk in model.blocks:
        x = blk(x + pos)
    torch.testing.assert_close(model.forward_features(points), model.norm(x))
    once = create_model("point_mae_tiny", num_classes=3, pos_every_block=False).eval()
    once.load_state_dict(model.state_dict())
    assert not torch.allclose(once.forward_features(points), model.forward_features(points))


def test_forward_backward_tiny_and_shapes():
    model = create_model("point_mae_tiny", num_classes=5)
    points = torch.randn(4, 256, 3)
    logits = model(points)
    assert logits.shape == (4, 5)
    logits.logsumexp(-1).mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())
    feats = model.forward_features(points)
    assert feats.shape == (4, 1 + model.num_groups, model.trans_dim)
    assert model.forward_head(feats, pre_logits=True).shape == (4, 2 * model.trans_dim)


def test_forward_backward_full_model_on_cpu():
    model = create_model("point_mae_s", num_classes=15, num_groups=128)
    points = torch.randn(2, 2048, 3)
    logits = model(points)
    assert logits.shape == (2, 15) and torch.isfinite(logits).all()
    logits.sum().backward()
    assert model.blocks[11].attn.qkv.weight.grad.abs().sum() > 0


def test_return_layers_for_segmentation_features():
    model = create_model("point_mae_tiny", num_classes=3).eval()
    tokens, pos, _ = model.tokenize(torch.randn(1, 128, 3))
    outs = model.forward_blocks(tokens, pos, return_layers=(0, 1))
    assert len(outs) == 2 and torch.equal(outs[1], model.forward_blocks(tokens, pos)[0])


def test_reset_classifier_and_no_weight_decay():
    model = create_model("point_mae_tiny", num_classes=5)
    model.reset_classifier(7)
    assert model(torch.randn(2, 128, 3)).shape == (2, 7)
    assert {"cls_token", "cls_pos"} <= model.no_weight_decay()


def test_registry_errors_and_overrides():
    assert {"point_mae_s", "point_bert_s", "point_mae_tiny"} <= set(list_models())
    with pytest.raises(KeyError, match="did you mean 'point_mae_s'"):
        create_model("point_mae_ss")
    model = create_model("point_mae_tiny", num_classes=3, num_groups=8)
    assert model.group_divider.num_groups == 8 and model.variant == "point_mae_tiny"
    assert model_defaults("point_mae_s")["trans_dim"] == 384
    assert isinstance(model, PointTransformer) and isinstance(model.blocks[0], Block)


def test_drop_path_only_in_training():
    from pointclora.models.layers import DropPath

    torch.manual_seed(0)
    x = torch.randn(256, 4, 8)
    drop = DropPath(0.75).train()
    y = drop(x)
    dropped = (y == 0).flatten(1).all(dim=1)  # whole samples are dropped, never single entries
    kept = ~dropped
    assert 0.6 < dropped.float().mean() < 0.9  # about drop_prob of the samples
    torch.testing.assert_close(y[kept], x[kept] / 0.25)  # survivors rescaled by 1 / keep
    assert torch.equal(drop.eval()(x), x)

    model = create_model("point_mae_tiny", num_classes=3, drop_path_rate=0.9, head_dropout=0.0)
    points = torch.randn(4, 128, 3)
    model.eval()
    torch.testing.assert_close(model(points), model(points))
    model.train()  # same input, same BatchNorm batch statistics: only drop-path can make two forwards differ
    torch.manual_seed(1)
    first = model(points)
    torch.manual_seed(2)
    assert not torch.allclose(first, model(points))


def _mini_pointnet_conv_reference(enc, neighborhood: torch.Tensor) -> torch.Tensor:
    """Point-MAE's Encoder.forward written with real Conv1d calls on the (B·G, C, K) layout."""
    import torch.nn.functional as F

    def seq(block, x):
        conv0, bn, _, conv3 = block
        x = F.conv1d(x, conv0.weight, conv0.bias)
        x = F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, training=False, eps=bn.eps)
        return F.conv1d(F.relu(x), conv3.weight, conv3.bias)

    B, G, K, _ = neighborhood.shape
    x = neighborhood.reshape(B * G, K, 3).transpose(2, 1)
    feature = seq(enc.first_conv, x)
    global_feature = torch.max(feature, dim=2, keepdim=True)[0]
    feature = torch.cat([global_feature.expand(-1, -1, K), feature], dim=1)
    feature = seq(enc.second_conv, feature)
    return torch.max(feature, dim=2, keepdim=False)[0].reshape(B, G, -1)


def test_mini_pointnet_equals_point_mae_conv_layout():
    model = create_model("point_mae_s", num_classes=15).eval()
    for bn in (model.encoder.first_conv[1], model.encoder.second_conv[1]):
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.5, 2.0)
    neighborhood = torch.randn(2, 8, 32, 3)
    with torch.no_grad():
        torch.testing.assert_close(
            model.encoder(neighborhood),
            _mini_pointnet_conv_reference(model.encoder, neighborhood),
            rtol=1e-4,
            atol=1e-4,
        )
    assert model.encoder.first_conv[0].weight.shape == (128, 3, 1)  # official Conv1d shapes and keys
