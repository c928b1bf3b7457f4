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


def test_group_points_passes_lengths_start_and_skip_to_fps_and_knn():
    from pointclora.ops import farthest_point_sample_naive, knn_points_naive

    g = torch.Generator().manual_seed(4)
    points = torch.rand(2, 60, 3, generator=g) * 0.5 + 0.5  # a cube away from the origin...
    points[:, 5:15] *= 0.01  # ...and points near the origin, the farthest from it: FPS takes them unless skipped
    # The padding of the shorter cloud: far away (FPS would take it) and next to real points (kNN would take it).
    points[1, 40:50] = 50.0
    points[1, 50:] = points[1, 20:30] + 1e-4
    lengths = torch.tensor([60, 40])
    for skip in (False, True):
        out = group_points(points, 6, 5, lengths=lengths, start="random", skip_near_origin=skip,
                           generator=torch.Generator().manual_seed(2))  # fmt: skip
        for b in range(2):
            n = int(lengths[b])
            cloud = points[b : b + 1, :n]
            fps = farthest_point_sample_naive(cloud, 6, start_idx=out.center_idx[b : b + 1, 0], skip_near_origin=skip)
            assert torch.equal(out.center_idx[b], fps.idx[0])
            assert torch.equal(out.centers[b], cloud[0, fps.idx[0]])
            _, idx = knn_points_naive(fps.points, cloud, 5)
            assert torch.equal(out.idx[b], idx[0])
            torch.testing.assert_close(out.neighborhood[b], cloud[0][idx[0]] - fps.points[0][:, None])
        near = (out.center_idx[:, 1:, None] == torch.arange(5, 15)).any(-1)  # (2, 5): a later centre near 0
        assert near.any(-1).tolist() == [not skip, not skip]
    # By default nothing is skipped (pytorch3d's semantics): the defaults equal the naive grouping, near-origin
    # centres included.
    default, ref = group_points(points[:1], 6, 5), group_points_naive(points[:1], 6, 5)
    assert torch.equal(default.center_idx, ref.center_idx)
    assert (default.center_idx[0, 1:, None] == torch.arange(5, 15)).any()
    # The random start comes from the generator: another seed, another first centre.
    def first(seed):
        gen = torch.Generator().manual_seed(seed)
        return int(group_points(points, 6, 5, lengths=lengths, start="random", generator=gen).center_idx[0, 0])

    assert len({first(s) for s in range(6)}) > 1 and first(3) == first(3)


def test_group_points_naive_returns_the_naive_centres():
    points = torch.randn(1, 40, 3)
    ref = group_points_naive(points, 4, 3)
    assert torch.equal(ref.centers, points[0, ref.center_idx[0]][None])
    assert torch.equal(ref.idx[:, :, 0], ref.center_idx)
