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


# --- the bucketed exact FPS for large CPU clouds (pointclora.ops._fps_bucket) -----------------------------------------


def _plain_loop(points: torch.Tensor, num_samples: int, start: int = 0, skip: bool = False) -> torch.Tensor:
    """The plain numpy loop (the same float operations as the bucketed FPS), forced by a huge bucket threshold and
    numba switched off."""
    from pointclora.ops import sampling

    lengths, starts = torch.tensor([points.shape[1]]), torch.tensor([start])
    old = sampling.BUCKET_MIN_POINTS, sampling.use_numba
    sampling.BUCKET_MIN_POINTS, sampling.use_numba = 10**12, lambda: False
    try:
        return sampling._fps_numpy_single(points, num_samples, lengths, starts, skip)[0]
    finally:
        sampling.BUCKET_MIN_POINTS, sampling.use_numba = old


def _clouds(seed: int):
    """Hard cases for the bucket bookkeeping: random, a coarse grid (duplicates and exact distance ties), repeated
    points, a flat sheet, clusters far apart, and many points near the origin."""
    g = torch.Generator().manual_seed(seed)
    rand = torch.rand(1, 1500, 3, generator=g) * 2 - 1
    grid = torch.stack(torch.meshgrid(*[torch.arange(10.0)] * 3, indexing="ij"), -1).reshape(1, -1, 3)
    grid = grid[:, torch.randperm(grid.shape[1], generator=g)]
    repeated = rand[:, :400].repeat(1, 4, 1)
    sheet = rand.clone()
    sheet[..., 2] = 0
    clusters = torch.cat([rand[:, :700] * 0.01, rand[:, 700:] * 0.01 + 5], 1)
    near_origin = rand.clone()
    near_origin[:, ::3] *= 0.01
    return {
        "random": rand,
        "grid": grid,
        "repeated": repeated,
        "sheet": sheet,
        "clusters": clusters,
        "near_origin": near_origin,
    }


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("skip", [False, True])
def test_bucket_fps_equals_plain_loop_on_hard_clouds(seed, skip):
    from pointclora.ops._fps_bucket import fps_bucket

    for name, points in _clouds(seed).items():
        n = points.shape[1]
        planar = points[0].numpy().T.copy()
        never = (planar**2).sum(0) <= 1e-3 if skip else None
        for start in (0, n // 2 + seed):
            want = _plain_loop(points, 300, start, skip)
            # Tiny buckets and candidate sets force many rounds, capped candidate sets and the full-scan fallback.
            for kw in ({}, dict(bucket_size=8, top_buckets=4, max_candidates=16), dict(bucket_size=64, top_buckets=1)):
                got = torch.from_numpy(fps_bucket(planar, 300, start, never, **kw))
                assert torch.equal(got, want), (name, start, kw)


def test_bucket_fps_equals_naive_reference_with_ties():
    from pointclora.ops._fps_bucket import fps_bucket

    # A 6x6x6 grid in scrambled order: every step has many points at exactly the same distance.
    g = torch.Generator().manual_seed(0)
    grid = torch.stack(torch.meshgrid(*[torch.arange(6.0)] * 3, indexing="ij"), -1).reshape(1, -1, 3)
    grid = grid[:, torch.randperm(216, generator=g)]
    got = fps_bucket(grid[0].numpy().T.copy(), 216, 0, bucket_size=8, top_buckets=4, max_candidates=16)
    assert torch.equal(torch.from_numpy(got), farthest_point_sample_naive(grid, 216).idx[0])
    assert sorted(got.tolist()) == list(range(216))  # every point once, then nothing is left


def test_large_clouds_take_the_bucketed_path_with_the_same_picks(monkeypatch):
    from pointclora.ops import _fps_bucket, sampling

    calls = []
    real = _fps_bucket.fps_bucket
    monkeypatch.setattr(sampling, "fps_bucket", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(sampling, "BUCKET_MIN_POINTS", 200)
    monkeypatch.setattr(sampling, "PER_CLOUD_MIN_POINTS", 200)
    monkeypatch.setattr(sampling, "use_numba", lambda: False)  # the numpy fallback (numba has its own tests below)
    points = torch.rand(3, 300, 3, dtype=torch.float64) * 2 - 1
    points[1, :40] *= 0.01
    lengths = torch.tensor([300, 260, 150])  # the last cloud stays on the plain loop
    gen = torch.Generator().manual_seed(5)
    for skip in (False, True):
        out = farthest_point_sample(points, 50, lengths=lengths, skip_near_origin=skip, start="random", generator=gen)
        for b in range(3):
            n = int(lengths[b])
            ref = farthest_point_sample_naive(
                points[b : b + 1, :n], 50, start_idx=out.idx[b : b + 1, 0], skip_near_origin=skip
            )
            assert torch.equal(out.idx[b], ref.idx[0])
    assert len(calls) == 4  # two large clouds, twice


# --- the compiled block FPS (pointclora.ops._fps_numba; numba is a dependency, the numpy paths its fallback) ----------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("skip", [False, True])
def test_block_fps_equals_plain_loop_on_hard_clouds(seed, skip, dtype):
    from pointclora.ops._fps_numba import fps_blocks

    for name, points in _clouds(seed).items():
        points = points.to(dtype)
        n = points.shape[1]
        planar = points[0].numpy().T.copy()
        never = (planar**2).sum(0) <= 1e-3 if skip else None
        for start in (0, n // 2 + seed):
            want = _plain_loop(points, 300, start, skip)
            # Blocks of 4 points: many blocks, most tests skip; 1,024: one block, no skipping at all.
            for block_size in (None, 4, 1024):
                got = torch.from_numpy(fps_blocks(planar, 300, start, never, block_size=block_size))
                assert torch.equal(got, want), (name, start, block_size)


def test_block_fps_equals_naive_reference_with_ties():
    from pointclora.ops._fps_numba import fps_blocks

    g = torch.Generator().manual_seed(0)
    grid = torch.stack(torch.meshgrid(*[torch.arange(6.0)] * 3, indexing="ij"), -1).reshape(1, -1, 3)
    grid = grid[:, torch.randperm(216, generator=g)]
    for block_size in (4, 8, 64):
        got = fps_blocks(grid[0].numpy().T.copy(), 216, 0, block_size=block_size)
        assert torch.equal(torch.from_numpy(got), farthest_point_sample_naive(grid, 216).idx[0])
    assert sorted(got.tolist()) == list(range(216))


def test_single_clouds_take_the_compiled_path_and_the_fallback_agrees(monkeypatch):
    from pointclora.ops import _fps_numba, sampling

    calls = []
    real = _fps_numba.fps_blocks
    monkeypatch.setattr(sampling, "fps_blocks", lambda *a, **k: calls.append(1) or real(*a, **k))
    points = torch.rand(1, 1500, 3) * 2 - 1
    points[0, :300] *= 0.01
    gen = torch.Generator().manual_seed(3)
    for skip in (False, True):
        fast = farthest_point_sample(points, 100, skip_near_origin=skip, start="random", generator=gen)
        monkeypatch.setenv("POINTCLORA_OPS_BACKEND", "torch")  # the numpy fallback
        slow = farthest_point_sample(points, 100, skip_near_origin=skip, start="first").idx
        monkeypatch.delenv("POINTCLORA_OPS_BACKEND")
        first = farthest_point_sample(points, 100, skip_near_origin=skip, start="first").idx
        assert torch.equal(first, slow)
        ref = farthest_point_sample_naive(points, 100, start_idx=fast.idx[:, 0], skip_near_origin=skip)
        assert torch.equal(fast.idx, ref.idx)
    assert len(calls) == 4


# --- exact ties on the batched path (B >= 2 takes the torch loop, B == 1 the per-cloud one) --------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_batched_fps_breaks_exact_ties_to_the_lowest_index_like_the_per_cloud_path(dtype):
    # Four points at distance 1 from the start, in two clouds: the batched loop must pick index 1, never the last tie.
    tie = torch.tensor([[0.0, 0, 0], [1, 0, 0], [0, 1, 0], [-1, 0, 0], [0, -1, 0]], dtype=dtype)
    batch = torch.stack([tie, tie.flip(0)])  # the second has its ties at 0..3 and starts on one of them
    got = farthest_point_sample(batch, 2).idx
    assert got[0].tolist() == [0, 1]
    # From (0,-1,0): (0,1,0) at index 1 is the farthest (distance 4), no tie: still the per-cloud answer.
    per_cloud = torch.cat([farthest_point_sample(batch[b : b + 1], 2).idx for b in range(2)])
    assert torch.equal(got, per_cloud)
    assert torch.equal(got, farthest_point_sample_naive(batch, 2).idx)
    # Twelve picks on a grid with ties at every step, with a shorter second cloud (lengths path): the same.
    grid = torch.stack(torch.meshgrid(*[torch.arange(3.0, dtype=dtype)] * 3, indexing="ij"), -1).reshape(-1, 3)
    clouds = torch.stack([grid, grid.flip(0)])
    lengths = torch.tensor([27, 20])
    got = farthest_point_sample(clouds, 12, lengths=lengths).idx
    for b in range(2):
        n = int(lengths[b])
        assert torch.equal(got[b], farthest_point_sample(clouds[b : b + 1, :n], 12).idx[0])
        assert torch.equal(got[b], farthest_point_sample_naive(clouds[b : b + 1, :n], 12).idx[0])
    assert got[0, :2].tolist() == [0, 26]  # the far corner of the grid, then the lowest index among the ties


# --- every path in the input's precision, the near-origin bound, the random start ------------------------------------


def _every_path(monkeypatch, points: torch.Tensor, num_samples: int, **kw) -> dict:
    """The picks of cloud 0 of ``points`` (B >= 2) on each CPU path: the batched torch loop, the compiled per-cloud
    FPS, its numpy fallback, and the bucketed numpy FPS (thresholds lowered so that a tiny cloud takes it)."""
    from pointclora.ops import sampling

    n = int(kw.get("lengths", torch.tensor([points.shape[1]]))[0])
    single = dict(kw, lengths=None) if "lengths" in kw else kw
    out = {"batched": farthest_point_sample(points, num_samples, **kw).idx[0]}
    out["compiled"] = farthest_point_sample(points[:1, :n], num_samples, **single).idx[0]
    with monkeypatch.context() as m:
        m.setattr(sampling, "use_numba", lambda: False)
        out["numpy"] = farthest_point_sample(points[:1, :n], num_samples, **single).idx[0]
        m.setattr(sampling, "BUCKET_MIN_POINTS", 2)
        out["bucket"] = farthest_point_sample(points[:1, :n], num_samples, **single).idx[0]
    return out


def test_every_path_measures_distances_in_the_input_precision(monkeypatch):
    # From the origin, A = (1, 0, 0) is at 1 and B = (1, 2^-12, 0) at 1 + 2^-24: farther in float64, an exact tie in
    # float32 (1 + 2^-24 rounds to 1), where the lowest index (A) wins. float32 clouds are measured in float32 like
    # the CUDA kernels, on every path alike, and float64 clouds in float64 (as the naive reference does).
    cloud = torch.tensor([[0.0, 0, 0], [1, 0, 0], [1, 2.0**-12, 0]], dtype=torch.float64)
    for dtype, want in ((torch.float32, [0, 1]), (torch.float64, [0, 2])):
        points = torch.stack([cloud, cloud.flip(0)]).to(dtype)
        for path, idx in _every_path(monkeypatch, points, 2).items():
            assert idx.tolist() == want, (dtype, path)
    assert farthest_point_sample_naive(cloud[None], 2).idx[0].tolist() == [0, 2]


def test_near_origin_points_are_skipped_on_every_path_up_to_the_bound_itself(monkeypatch):
    # A tight cluster around (1, 1, 2) and, last, the three points farthest from it: the origin, a point at exactly
    # |p|^2 = 1e-3 on x (the bound: pointnet2_ops skips it) and one just beyond it on z (kept; a little nearer to the
    # cluster than the point on the bound, so a bound moved by one ulp changes the second pick).
    g = torch.Generator().manual_seed(0)
    jitter = 1e-3 * torch.rand(20, 3, generator=g, dtype=torch.float64)
    cluster = torch.tensor([1.0, 1, 2], dtype=torch.float64) + jitter
    on_bound = torch.tensor([[0.03162277027712784, 2e-05, 0]], dtype=torch.float64)
    assert float((on_bound**2).sum()) == 1e-3
    beyond = torch.tensor([[0.0, 0, 0.0317]], dtype=torch.float64)
    cloud = torch.cat([cluster, torch.zeros(1, 3, dtype=torch.float64), on_bound, beyond])
    points = torch.stack([cloud, cloud])
    plain = _every_path(monkeypatch, points, 3)
    assert {int(v[1]) for v in plain.values()} == {20}  # the origin
    bound_allowed = farthest_point_sample_naive(torch.cat([cluster, on_bound, beyond])[None], 2).idx[0]
    assert bound_allowed[1] == 20  # the point on the bound (index 20 there) is farther than the one beyond it
    skipped = _every_path(monkeypatch, points, 3, skip_near_origin=True)
    want = farthest_point_sample_naive(cloud[None], 3, skip_near_origin=True).idx[0]
    assert want[1] == 22 and 20 not in want.tolist() and 21 not in want.tolist()
    for path, idx in skipped.items():
        assert torch.equal(idx, want), path


def test_random_start_is_uniform_over_each_clouds_own_points():
    # The first pick of each cloud is floor(u * length) for u ~ U[0, 1) drawn from the generator: every valid index,
    # the last included, and never padding. 400 clouds of lengths 1..5 (each length 80 times).
    lengths = torch.arange(400) % 5 + 1
    points = torch.rand(400, 5, 3, generator=torch.Generator().manual_seed(1))
    first = farthest_point_sample(points, 1, lengths=lengths, start="random",
                                  generator=torch.Generator().manual_seed(7)).idx[:, 0]  # fmt: skip
    u = torch.rand(400, generator=torch.Generator().manual_seed(7))
    assert torch.equal(first, (u * lengths).long())
    for length in range(1, 6):
        assert set(first[lengths == length].tolist()) == set(range(length))
