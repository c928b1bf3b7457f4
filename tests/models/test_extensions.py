"""The backbone's extension points: identity hooks change nothing, each hook sees and changes what it documents."""

import pytest
import torch

from pointclora.models import create_model
from pointclora.models.extensions import BackboneExtension, BlockExtension


def _model():
    torch.manual_seed(0)
    return create_model("point_mae_tiny", num_classes=5).eval()


def _cloud(n=256, seed=1):
    return torch.rand(2, n, 3, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def test_identity_extensions_are_bit_identical():
    model = _model()
    pts = _cloud()
    with torch.no_grad():
        before = model(pts)
        keys = list(model.state_dict())
        model.add_extension("noop", BackboneExtension())
        for block in model.blocks:
            block.add_extension("noop", BlockExtension())
        after = model(pts)
    assert torch.equal(before, after)
    assert list(model.state_dict()) == keys  # parameter-free extensions add no keys


class _ExtraToken(BackboneExtension):
    """Appends one learned token after block 0, pools [cls, extra], drops the extra token for patch readers."""

    def __init__(self, dim):
        super().__init__()
        self.token = torch.nn.Parameter(torch.full((1, 1, dim), 0.5))
        self.calls = []

    def before_block(self, backbone, index, x, pos):
        self.calls.append(("before", index, x.shape[1]))
        return x, pos

    def after_block(self, backbone, index, x, pos):
        if index == 0:
            x = torch.cat([x, self.token.expand(x.shape[0], -1, -1)], dim=1)
            pos = torch.cat([pos, torch.zeros_like(self.token).expand(x.shape[0], -1, -1)], dim=1)
        return x, pos

    def pool(self, backbone, x):
        return torch.cat([x[:, 0], x[:, -1]], dim=-1)

    def pooled_dim(self, backbone):
        return 2 * backbone.trans_dim

    def patch_tokens(self, backbone, x):
        return x[:, :-1]


def test_backbone_hooks_order_tokens_pool_and_patch_tokens():
    model = _model()
    ext = _ExtraToken(model.trans_dim)
    model.add_extension("extra", ext)
    assert "extensions.extra.token" in model.state_dict()
    G = model.num_groups
    out = model.forward_blocks(*model.tokenize(_cloud())[:2], return_layers=[0, 1])
    assert [c[:2] for c in ext.calls] == [("before", i) for i in range(model.depth)]
    assert ext.calls[0][2] == G + 1 and ext.calls[1][2] == G + 2  # the token is in from block 1 on
    assert all(o.shape[1] == G + 1 for o in out)  # patch readers see the plain sequence
    logits = model(_cloud())
    assert logits.shape == (2, 5)
    with pytest.raises(ValueError, match="already has an extension named 'extra'"):
        model.add_extension("extra", BackboneExtension())


class _ParallelAdapter(BlockExtension):
    def __init__(self):
        super().__init__()
        self.seen = {}

    def mlp_branch(self, x, h, y):
        self.seen["h_is_norm2_x"] = h
        self.seen["x"] = x
        return y + 1.0

    def block_output(self, x, out):
        return out * 2.0


def test_block_hooks_compose_like_the_written_formula():
    model = _model()
    block = model.blocks[0]
    x = torch.randn(2, 7, model.trans_dim)
    with torch.no_grad():
        after_attn = x + block.attn(block.norm1(x))
        expected = (after_attn + block.mlp(block.norm2(after_attn)) + 1.0) * 2.0
        ext = _ParallelAdapter()
        block.add_extension("par", ext)
        got = block(x)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    torch.testing.assert_close(ext.seen["h_is_norm2_x"], block.norm2(after_attn))


class _InputSide(BackboneExtension):
    """Doubles the points, appends one zero token with zero position, adds 1 to every block input, GELU head."""

    def on_points(self, backbone, points):
        return points * 2

    def on_tokens(self, backbone, x, pos, centers, points):
        self.centers, self.points = centers, points
        z = torch.zeros_like(x[:, :1])
        return torch.cat([x, z], dim=1), torch.cat([pos, z], dim=1)

    def block_input(self, backbone, index, x):
        return x + 1.0

    def make_head(self, backbone, in_dim, num_classes):
        return torch.nn.Linear(in_dim, num_classes)


def test_points_tokens_block_input_and_head_hooks():
    model = _model()
    pts = _cloud()
    ext = _InputSide()
    seen = []
    model.blocks[0].register_forward_pre_hook(lambda m, a: seen.append(a[0]))
    with torch.no_grad():
        plain_tokens, plain_pos, _ = model.tokenize(pts * 2)
        model.add_extension("side", ext)
        model.reset_classifier(5)
        assert isinstance(model.cls_head_finetune, torch.nn.Linear)
        tokens, pos, centers = model.tokenize(pts)
        torch.testing.assert_close(tokens[:, :-1], plain_tokens, rtol=0, atol=0)  # grouped the doubled points
        torch.testing.assert_close(ext.points, pts * 2, rtol=0, atol=0)
        assert tokens.shape[1] == plain_tokens.shape[1] + 1
        model.forward_blocks(tokens, pos)
    torch.testing.assert_close(seen[0], tokens + pos + 1.0, rtol=0, atol=0)  # after the positions
