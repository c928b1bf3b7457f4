import pytest
import torch

from pointclora.ops import group_points, group_points_naive


def test_group_points_matches_naive():
    points = torch.randn(2, 256, 3)
    fast = group_points(points, 16, 8)
    ref = group_points_naive(points, 16, 8)
    assert fast.neighborhood.shape == (2, 16, 8, 3) and fast.centers.shape == (2, 16, 3)
    assert torch.equal(fast.center_idx, ref.center_idx)
    assert torch.equal(fast.idx, ref.idx)
    torch.testing.assert_close(fast.neighborhood, ref.neighborhood)


def test_group_points_relative_coordinates_and_centre_first():
    points = torch.randn(1, 128, 3)
    g = group_points(points, 8, 4)
    # The centre is its own nearest neighbour, at relative coordinate 0.
    assert torch.equal(g.idx[:, :, 0], g.center_idx)
    assert (g.neighborhood[:, :, 0] == 0).all()
    absolute = g.neighborhood + g.centers[:, :, None]
    torch.testing.assert_close(absolute, points[0][g.idx[0]][None])


def test_group_points_gradient_flows_to_points():
    points = torch.randn(1, 64, 3, requires_grad=True)
    g = group_points(points, 4, 8)
    g.neighborhood.pow(2).sum().backward()
    assert points.grad is not None and torch.isfinite(points.grad).all() and points.grad.abs().sum() > 0


def test_group_points_errors():
    with pytest.raises(ValueError, match="k=40 is larger"):
        group_points(torch.randn(1, 32, 3), 4, 40)
    with pytest.raises(ValueError, match="num_samples=64 is larger"):
        group_points(torch.randn(1, 32, 3), 64, 4)


def test_fallback_backend_is_forced_by_env(monkeypatch):
    from pointclora.ops import _backend

    monkeypatch.setenv("POINTCLORA_OPS_BACKEND", "torch")
    assert _backend.use_pytorch3d() is False
