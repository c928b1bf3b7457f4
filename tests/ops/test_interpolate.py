import pytest
import torch

from pointclora.ops import three_nn_interpolate, three_nn_interpolate_naive


def test_hand_computed_weights():
    source = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [0, 2, 0], [10, 10, 10]]])
    feats = torch.tensor([[[1.0], [2.0], [4.0], [100.0]]])
    target = torch.tensor([[[0.0, 1, 0]]])
    # squared distances to the 3 nearest: 1 (src0), 2 (src1), 1 (src2); weights 1, 1/2, 1 -> normalised 0.4, 0.2, 0.4
    out = three_nn_interpolate(target, source, feats)
    assert out.shape == (1, 1, 1)
    assert out.item() == pytest.approx(0.4 * 1 + 0.2 * 2 + 0.4 * 4, rel=1e-6)


def test_coincident_point_takes_source_features():
    source = torch.randn(2, 6, 3)
    feats = torch.randn(2, 6, 5)
    out = three_nn_interpolate(source, source, feats)
    torch.testing.assert_close(out, feats, rtol=1e-4, atol=1e-4)


def test_matches_naive_and_weights_sum_to_one():
    target, source, feats = torch.randn(2, 30, 3), torch.randn(2, 7, 3), torch.randn(2, 7, 4)
    torch.testing.assert_close(
        three_nn_interpolate(target, source, feats), three_nn_interpolate_naive(target, source, feats)
    )
    ones = three_nn_interpolate(target, source, torch.ones(2, 7, 1))
    torch.testing.assert_close(ones, torch.ones(2, 30, 1))


def test_few_sources():
    target = torch.randn(1, 5, 3)
    one = three_nn_interpolate(target, torch.zeros(1, 1, 3), torch.tensor([[[3.0, 4.0]]]))
    assert one.shape == (1, 5, 2) and (one == torch.tensor([3.0, 4.0])).all()
    two = three_nn_interpolate(target, torch.randn(1, 2, 3), torch.randn(1, 2, 3))
    assert two.shape == (1, 5, 3)


def test_gradient_flows_to_features():
    feats = torch.randn(1, 4, 3, requires_grad=True)
    three_nn_interpolate(torch.randn(1, 10, 3), torch.randn(1, 4, 3), feats).sum().backward()
    assert feats.grad is not None and torch.isfinite(feats.grad).all()


def test_shape_errors():
    with pytest.raises(ValueError, match="source_features"):
        three_nn_interpolate(torch.randn(1, 5, 3), torch.randn(1, 4, 3), torch.randn(1, 3, 2))


@pytest.mark.parametrize("k,S", [(1, 7), (2, 7), (4, 7), (3, 2)])
def test_k_and_few_sources_match_naive_values_and_gradients(k, S):
    # k other than the default 3, and S = 2 < k (k clamps to S): values and feature gradients equal the reference.
    g = torch.Generator().manual_seed(k * 10 + S)
    target = torch.randn(2, 9, 3, generator=g, dtype=torch.float64)
    source = torch.randn(2, S, 3, generator=g, dtype=torch.float64)
    feats = torch.randn(2, S, 4, generator=g, dtype=torch.float64, requires_grad=True)
    out = three_nn_interpolate(target, source, feats, k=k)
    ref = three_nn_interpolate_naive(target, source, feats, k=k)
    torch.testing.assert_close(out, ref)
    upstream = torch.randn(2, 9, 4, generator=g, dtype=torch.float64)
    (grad,) = torch.autograd.grad((out * upstream).sum(), feats)
    (want,) = torch.autograd.grad((ref * upstream).sum(), feats)
    torch.testing.assert_close(grad, want)
    if k == 1:  # one neighbour: the nearest source's features exactly
        nearest = torch.cdist(target, source).argmin(-1)
        torch.testing.assert_close(out, feats.gather(1, nearest[..., None].expand(-1, -1, 4)))


def test_errors_name_the_argument_and_the_shapes():
    t, s, f = torch.randn(2, 5, 3), torch.randn(2, 4, 3), torch.randn(2, 4, 6)
    with pytest.raises(ValueError, match=r"^target_xyz must have shape \(B, N, 3\), got \(5, 3\)$"):
        three_nn_interpolate(t[0], s, f)
    with pytest.raises(ValueError, match=r"^source_xyz must have shape \(B, N, 3\), got \(2, 4, 2\)$"):
        three_nn_interpolate(t, s[..., :2], f)
    with pytest.raises(ValueError, match=r"shape \(B, S, C\) matching source_xyz \(2, 4, 3\), got \(2, 3, 6\)"):
        three_nn_interpolate(t, s, f[:, :3])
    with pytest.raises(ValueError, match=r"^batch sizes differ: target 1 vs source 2$"):
        three_nn_interpolate(t[:1], s, f)


def test_half_features_keep_their_dtype_with_float32_coordinates():
    g = torch.Generator().manual_seed(9)
    target, source = torch.randn(1, 6, 3, generator=g), torch.randn(1, 5, 3, generator=g)
    feats = torch.randn(1, 5, 4, generator=g)
    out = three_nn_interpolate(target, source, feats.half())
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.float(), three_nn_interpolate_naive(target, source, feats), rtol=2e-3, atol=2e-3)
