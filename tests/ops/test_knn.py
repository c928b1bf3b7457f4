import pytest
import torch

from pointclora.ops import knn_gather, knn_points, knn_points_naive


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_knn_matches_naive(dtype):
    query, points = torch.randn(3, 20, 3, dtype=dtype), torch.randn(3, 200, 3, dtype=dtype)
    fast = knn_points(query, points, 16)
    ref = knn_points_naive(query, points, 16)
    assert fast.idx.shape == (3, 20, 16) and fast.idx.dtype == torch.int64
    assert torch.equal(fast.idx, ref.idx)
    tol = 1e-5 if dtype == torch.float32 else 1e-12
    torch.testing.assert_close(fast.dists, ref.dists, rtol=tol, atol=tol)


def test_knn_sorted_and_includes_query_itself():
    points = torch.randn(2, 300, 3) * 50  # a large scale, where the |q|²-2qp+|p|² expansion loses the self match
    query = points[:, ::7]
    out = knn_points(query, points, 8)
    assert (out.dists[..., 1:] >= out.dists[..., :-1]).all()
    self_idx = torch.arange(0, 300, 7)
    assert torch.equal(out.idx[:, :, 0], self_idx.expand(2, -1))
    assert (out.dists[:, :, 0] == 0).all()


def test_knn_hand_made():
    points = torch.tensor([[[0.0, 0, 0], [3, 0, 0], [1, 0, 0], [0, 2, 0]]])
    out = knn_points(torch.tensor([[[0.0, 0, 0]]]), points, 3)
    assert out.idx[0, 0].tolist() == [0, 2, 3]
    assert out.dists[0, 0].tolist() == [0.0, 1.0, 4.0]


def test_knn_duplicates_give_equal_distances():
    points = torch.tensor([[[0.0, 0, 0], [1, 1, 1], [1, 1, 1], [5, 5, 5]]])
    out = knn_points(torch.tensor([[[1.0, 1, 1]]]), points, 2)
    assert sorted(out.idx[0, 0].tolist()) == [1, 2]
    assert out.dists[0, 0].tolist() == [0.0, 0.0]


def test_knn_lengths_exclude_padding():
    points = torch.randn(2, 30, 3)
    points[1, 10:] = 0.0  # padding right on top of the query
    lengths = torch.tensor([30, 10])
    query = torch.zeros(2, 1, 3)
    out = knn_points(query, points, 5, lengths=lengths)
    assert (out.idx[1] < 10).all()
    assert torch.equal(out.idx[1], knn_points_naive(query[1:], points[1:, :10], 5).idx[0])


def test_knn_errors():
    with pytest.raises(ValueError, match=r"k=6 is larger than the number of points available \(5\)"):
        knn_points(torch.randn(1, 2, 3), torch.randn(1, 5, 3), 6)
    with pytest.raises(ValueError, match="batch size"):
        knn_points(torch.randn(2, 2, 3), torch.randn(1, 5, 3), 2)


def test_knn_gather_and_gradients():
    x = torch.randn(2, 10, 4, requires_grad=True)
    idx = torch.randint(0, 10, (2, 3, 5))
    g = knn_gather(x, idx)
    assert g.shape == (2, 3, 5, 4)
    assert torch.equal(g[1, 2, 4], x[1, idx[1, 2, 4]])
    g.sum().backward()
    counts = torch.zeros(2, 10).scatter_add_(1, idx.reshape(2, -1), torch.ones(2, 15))
    torch.testing.assert_close(x.grad, counts[..., None].expand(-1, -1, 4))


def test_knn_distance_gradients():
    query = torch.randn(1, 4, 3, dtype=torch.float64, requires_grad=True)
    points = torch.randn(1, 20, 3, dtype=torch.float64, requires_grad=True)
    torch.autograd.gradcheck(lambda q, p: knn_points(q, p, 3).dists, (query, points))


@pytest.mark.parametrize("block", [1 << 26, 180, 1])
def test_knn_in_query_chunks_with_lengths_equals_naive(monkeypatch, block):
    # B·N = 60: a block of 180 elements gives chunks of 3 queries (3 + 3 + 1), of 1 element chunks of 1 (clamped);
    # the second cloud is padded, its padding right beside the queries.
    from pointclora.ops import knn as knn_mod

    monkeypatch.setattr(knn_mod, "_MAX_BLOCK_ELEMENTS", block)
    g = torch.Generator().manual_seed(5)
    points = torch.randn(2, 30, 3, generator=g)
    query = torch.randn(2, 7, 3, generator=g)
    points[1, 18:25] = query[1] + 1e-3  # padding right beside each query
    lengths = torch.tensor([30, 18])
    out = knn_points(query, points, 4, lengths=lengths)
    ref = knn_points_naive(query, points, 4, lengths=lengths)
    assert torch.equal(out.idx, ref.idx) and (out.idx[1] < 18).all()
    torch.testing.assert_close(out.dists, ref.dists)
    # the naive reference honours lengths too: cloud 1 alone, cut to its 18 points, gives the same
    assert torch.equal(ref.idx[1], knn_points_naive(query[1:], points[1:, :18], 4).idx[0])
    assert out.dists.dtype == torch.float32


def test_knn_float16_keeps_the_dtype_and_the_naive_order():
    g = torch.Generator().manual_seed(6)
    query, points = torch.rand(2, 5, 3, generator=g).half(), torch.rand(2, 40, 3, generator=g).half()
    out = knn_points(query, points, 6)
    ref = knn_points_naive(query.float(), points.float(), 6)
    assert out.dists.dtype == torch.float16 and torch.equal(out.idx, ref.idx)
    torch.testing.assert_close(out.dists.float(), ref.dists, rtol=2e-3, atol=1e-3)


def test_knn_gather_refuses_each_bad_shape_on_its_own():
    x, idx = torch.randn(2, 10, 4), torch.zeros(2, 3, 5, dtype=torch.int64)
    for bad_x, bad_idx in ((x[0], idx), (x, idx[:, 0]), (x[:1], idx)):  # x 2-D; idx 2-D; batch sizes differ
        with pytest.raises(ValueError, match=r"knn_gather expects x \(B, N, C\) and idx \(B, S, K\)"):
            knn_gather(bad_x, bad_idx)


def test_knn_errors_name_the_argument_and_the_sizes():
    with pytest.raises(ValueError, match=r"^query must have shape \(B, N, 3\), got \(2, 3\)$"):
        knn_points(torch.randn(2, 3), torch.randn(1, 5, 3), 2)
    with pytest.raises(ValueError, match=r"^points must have shape \(B, N, 3\), got \(5, 3\)$"):
        knn_points(torch.randn(1, 2, 3), torch.randn(5, 3), 2)
    with pytest.raises(TypeError, match=r"^query must be a floating-point tensor"):
        knn_points(torch.ones(1, 2, 3, dtype=torch.int64), torch.randn(1, 5, 3), 2)
    with pytest.raises(ValueError, match=r"^query and points must share the batch size, got 2 and 1$"):
        knn_points(torch.randn(2, 4, 3), torch.randn(1, 7, 3), 2)


def test_knn_with_more_clouds_than_points():
    query, points = torch.randn(6, 2, 3), torch.randn(6, 4, 3)  # B > N
    out = knn_points(query, points, 3)
    assert torch.equal(out.idx, knn_points_naive(query, points, 3).idx)
