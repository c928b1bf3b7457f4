import pytest
import torch

from pointclora.ops import chamfer_distance, chamfer_distance_naive, chamfer_terms


@pytest.fixture(autouse=True)
def _torch_backend(monkeypatch):
    # Exercise our implementation even where pytorch3d happens to be installed.
    monkeypatch.setenv("POINTCLORA_OPS_BACKEND", "torch")


def test_hand_computed():
    x = torch.tensor([[[0.0, 0, 0], [2, 0, 0]]])
    y = torch.tensor([[[0.0, 1, 0]]])
    # x->y: 1 and 4+1=5, mean 3; y->x: nearest is (0,0,0) at 1; total 4.
    assert chamfer_distance(x, y).item() == pytest.approx(4.0)
    terms = chamfer_terms(x, y)
    assert terms.dist_xy.tolist() == [[1.0, 5.0]] and terms.dist_yx.tolist() == [[1.0]]


def test_zero_for_permuted_copy_and_symmetric():
    x = torch.randn(3, 17, 3)
    assert chamfer_distance(x, x[:, torch.randperm(17)]).item() == 0.0
    y = torch.randn(3, 9, 3)
    torch.testing.assert_close(chamfer_distance(x, y), chamfer_distance(y, x))


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_matches_naive(reduction):
    x, y = torch.randn(4, 12, 3), torch.randn(4, 20, 3)
    torch.testing.assert_close(
        chamfer_distance(x.double(), y.double(), reduction), chamfer_distance_naive(x, y, reduction).double()
    )
    assert chamfer_distance(x, y, "none").shape == (4,)


def test_chunking_gives_same_result(monkeypatch):
    import pointclora.ops.chamfer as mod

    x, y = torch.randn(5, 10, 3), torch.randn(5, 11, 3)
    full = chamfer_distance(x, y, "none")
    monkeypatch.setattr(mod, "_MAX_BLOCK_ELEMENTS", 1)  # one cloud per block
    torch.testing.assert_close(chamfer_distance(x, y, "none"), full)


def test_gradient_finite_and_pulls_points_together():
    x = torch.randn(2, 8, 3, requires_grad=True)
    y = torch.randn(2, 8, 3)
    loss = chamfer_distance(x, y)
    loss.backward()
    assert torch.isfinite(x.grad).all()
    with torch.no_grad():
        x2 = x - 0.1 * x.grad
    assert chamfer_distance(x2, y) < loss
    # Identical points: distance 0, gradient 0 (no sqrt, so no NaN at the optimum).
    z = y.clone().requires_grad_(True)
    chamfer_distance(z, y).backward()
    assert torch.equal(z.grad, torch.zeros_like(z))


def test_bad_shapes_are_named():
    with pytest.raises(ValueError, match="batch size"):
        chamfer_distance(torch.zeros(2, 4, 3), torch.zeros(3, 4, 3))
    with pytest.raises(ValueError, match=r"y must have shape \(B, N, 3\)"):
        chamfer_distance(torch.zeros(2, 4, 3), torch.zeros(2, 4))
    with pytest.raises(ValueError, match="reduction"):
        chamfer_distance(torch.zeros(1, 4, 3), torch.zeros(1, 4, 3), reduction="max")


def test_errors_name_the_cloud_and_the_shapes():
    with pytest.raises(ValueError, match=r"^x must have shape \(B, N, 3\), got \(4, 3\)$"):
        chamfer_terms(torch.zeros(4, 3), torch.zeros(1, 4, 3))
    with pytest.raises(ValueError, match=r"^x and y must share the batch size, got x \(2, 4, 3\) and y \(3, 4, 3\)$"):
        chamfer_terms(torch.zeros(2, 4, 3), torch.zeros(3, 4, 3))
    for x, y in ((torch.zeros(1, 0, 3), torch.zeros(1, 4, 3)), (torch.zeros(1, 4, 3), torch.zeros(1, 0, 3))):
        with pytest.raises(ValueError, match=r"needs non-empty clouds, got x \(1, \d, 3\) and y \(1, \d, 3\)"):
            chamfer_distance(x, y)


def test_uneven_chunks_and_per_cloud_terms(monkeypatch):
    import pointclora.ops.chamfer as mod

    g = torch.Generator().manual_seed(8)
    x, y = torch.randn(5, 6, 3, generator=g), torch.randn(5, 7, 3, generator=g)
    want = chamfer_terms(x, y)
    monkeypatch.setattr(mod, "_MAX_BLOCK_ELEMENTS", 2 * 6 * 7)  # blocks of 2 clouds: 2 + 2 + 1
    got = chamfer_terms(x, y)
    assert torch.equal(got.dist_xy, want.dist_xy) and torch.equal(got.dist_yx, want.dist_yx)
    d = torch.cdist(x.double(), y.double()) ** 2
    torch.testing.assert_close(got.dist_xy.double(), d.min(2).values)
    torch.testing.assert_close(got.dist_yx.double(), d.min(1).values)
    per_cloud = chamfer_distance(x, y, "none")
    torch.testing.assert_close(chamfer_distance(x, y, "sum"), per_cloud.sum())
    torch.testing.assert_close(chamfer_distance(x, y), per_cloud.mean())


def test_more_clouds_than_points():
    # B > N: a loop bound taken from the wrong axis would drop clouds
    x, y = torch.randn(6, 2, 3), torch.randn(6, 3, 3)
    terms = chamfer_terms(x, y)
    assert terms.dist_xy.shape == (6, 2) and terms.dist_yx.shape == (6, 3)
    torch.testing.assert_close(chamfer_distance(x, y, "none").double(), chamfer_distance_naive(x, y, "none").double())
