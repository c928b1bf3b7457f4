import pytest
import torch

from pointclora.ops import farthest_point_sample, farthest_point_sample_naive


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("B,N,S", [(1, 10, 10), (3, 100, 17), (2, 257, 64)])
def test_fps_matches_naive_random(B, N, S, dtype):
    points = torch.rand(B, N, 3, dtype=dtype) * 4 - 2
    fast = farthest_point_sample(points, S)
    ref = farthest_point_sample_naive(points, S)
    assert fast.idx.dtype == torch.int64 and fast.idx.shape == (B, S)
    assert torch.equal(fast.idx, ref.idx)
    assert torch.equal(fast.points, points.gather(1, ref.idx[..., None].expand(-1, -1, 3)))


def test_fps_starts_at_zero_and_is_farthest():
    points = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [5, 0, 0], [2, 0, 0], [-3, 0, 0]]])
    idx = farthest_point_sample(points, 3).idx[0].tolist()
    # 0 first; the farthest from the origin is x=5 (index 2); then x=-3 (index 4) is farthest from both.
    assert idx == [0, 2, 4]


def test_fps_ties_go_to_lowest_index():
    # Four points at equal distance 1 from the start: the lowest index must win every tie.
    points = torch.tensor([[[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [-1, 0, 0], [0, -1, 0]]])
    assert farthest_point_sample(points, 2).idx[0].tolist() == [0, 1]
    assert farthest_point_sample_naive(points, 2).idx[0].tolist() == [0, 1]


def test_fps_duplicates_and_collinear():
    line = torch.linspace(0, 1, 9)
    collinear = torch.stack([line, 2 * line, -line], -1)[None]
    assert farthest_point_sample(collinear, 3).idx[0].tolist() == [0, 8, 4]
    dup = torch.tensor([[[0.0, 0, 0], [0, 0, 0], [1, 1, 1], [1, 1, 1]]])
    fast = farthest_point_sample(dup, 4).idx
    assert torch.equal(fast, farthest_point_sample_naive(dup, 4).idx)
    # After the two distinct locations are taken, every distance is 0: ties go to the lowest index (0).
    assert fast[0].tolist() == [0, 2, 0, 0]


def test_fps_all_points_when_num_samples_equals_n():
    points = torch.randn(2, 32, 3)
    idx = farthest_point_sample(points, 32).idx
    assert all(sorted(row.tolist()) == list(range(32)) for row in idx)


def test_fps_too_many_samples_is_a_clear_error():
    with pytest.raises(ValueError, match=r"num_samples=11 is larger than the number of points available \(10\)"):
        farthest_point_sample(torch.randn(1, 10, 3), 11)
    with pytest.raises(ValueError, match="num_samples must be >= 1"):
        farthest_point_sample(torch.randn(1, 10, 3), 0)
    with pytest.raises(ValueError, match=r"points must have shape \(B, N, 3\)"):
        farthest_point_sample(torch.randn(10, 3), 2)
    with pytest.raises(TypeError, match="floating-point"):
        farthest_point_sample(torch.ones(1, 10, 3, dtype=torch.int64), 2)


def test_fps_respects_lengths():
    points = torch.randn(2, 20, 3)
    points[1, 12:] = 100.0  # padding far away: would be picked if not masked
    lengths = torch.tensor([20, 12])
    out = farthest_point_sample(points, 8, lengths=lengths)
    assert (out.idx[1] < 12).all()
    assert torch.equal(out.idx[1], farthest_point_sample_naive(points[1:, :12], 8).idx[0])
    with pytest.raises(ValueError, match="larger than the number of points available"):
        farthest_point_sample(points, 13, lengths=lengths)


def test_fps_skip_near_origin_option():
    points = torch.tensor([[[1.0, 0, 0], [0.01, 0, 0], [0.5, 0, 0], [0, 0, 0.02]]])
    # Without skipping the near-origin points are eligible (index 1 at distance .99 is farther than .5 -> 2nd).
    assert farthest_point_sample(points, 3).idx[0].tolist() == [0, 3, 2]
    skipped = farthest_point_sample(points, 3, skip_near_origin=True).idx[0].tolist()
    assert skipped == farthest_point_sample_naive(points, 3, skip_near_origin=True).idx[0].tolist()
    assert 1 not in skipped[1:] and 3 not in skipped[1:]


def test_fps_random_start_is_seeded():
    points = torch.randn(4, 50, 3)
    g1, g2 = torch.Generator().manual_seed(3), torch.Generator().manual_seed(3)
    a = farthest_point_sample(points, 5, start="random", generator=g1).idx
    b = farthest_point_sample(points, 5, start="random", generator=g2).idx
    assert torch.equal(a, b)
    assert torch.equal(a, farthest_point_sample_naive(points, 5, start_idx=a[:, 0]).idx)
    with pytest.raises(ValueError, match="start must be"):
        farthest_point_sample(points, 5, start="middle")


def test_fps_float16_input():
    points = torch.rand(2, 64, 3)
    half = farthest_point_sample(points.half(), 16)
    assert half.points.dtype == torch.float16
    assert torch.equal(half.idx, farthest_point_sample_naive(points.half().float(), 16).idx)


@pytest.mark.parametrize("skip", [False, True])
def test_single_cloud_cpu_path_equals_batched_path(skip):
    # B == 1 on the CPU runs a numpy loop (data-loader transforms); B > 1 the batched torch loop. Same picks.
    points = torch.rand(2, 300, 3) * 2 - 1
    lengths = torch.tensor([300, 250])
    batched = farthest_point_sample(points, 40, lengths=lengths, skip_near_origin=skip).idx
    for b in range(2):
        single = farthest_point_sample(points[b : b + 1], 40, lengths=lengths[b : b + 1], skip_near_origin=skip).idx
        assert torch.equal(single[0], batched[b])
    naive = farthest_point_sample_naive(points[1:, :250], 40, skip_near_origin=skip).idx
    assert torch.equal(batched[1], naive[0])
