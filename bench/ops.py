"""Benchmark: FPS and FPS+kNN grouping per batch, ours vs fpsample vs the naive reference, measured in one run; FPS
at real-scan sizes (8 k, 100 k, 1 M points) against every exact fpsample method; the evaluation FPS n -> n skip.

    .venv/bin/python bench/ops.py [--batch 32] [--repeats 5] [--sizes 1024 2048 8192]
                                  [--scan-sizes 8192 100000 1000000] [--scan-samples 1024] [--scan-batch 8]
    pip install -e .[bench]        # fpsample

Groups per size follow Point-MAE (1024 -> 64x32, 2048 -> 128x32, 8192 -> 512x32). fpsample is a C++ FPS for one
cloud at a time, so its batch time is a loop over the clouds; its grouping uses our kNN so the comparison isolates
FPS. The naive reference is a Python loop: it is timed on a single cloud and multiplied by the batch size (marked).

Real-scan table: single clouds and a batch (a loop over clouds for every method), timed in process CPU time (a shared
CPU's waiting is not counted; run with OMP_NUM_THREADS=1), round-robin, the min of ``--repeats``. fpsample's exact
methods are ``fps_sampling`` (plain FPS) and ``bucket_fps_kdline_sampling`` (QuickFPS, its fastest); the bucket
methods of fpsample 1.0 ignore ``start_idx`` (they start from a point of their own: "Array of start indices not
implemented yet" for a list), so they cannot give our semantics (start 0 or a seeded start) and are timed from their
own start. Exactness is checked at every size: ours started from the bucket method's own first pick must return its
picks index for index, and ``fps_sampling`` (start 0) ours.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import torch

from pointclora.ops import farthest_point_sample, farthest_point_sample_naive, group_points, knn_gather, knn_points
from pointclora.ops._backend import use_numba
from pointclora.ops._fps_bucket import fps_bucket
from pointclora.ops._fps_numba import fps_blocks

GROUPS = {1024: (64, 32), 2048: (128, 32), 4096: (256, 32), 8192: (512, 32)}


def timeit(fn, repeats: int) -> float:
    """Median process CPU time after a warm-up (a shared CPU's waiting is not counted; OMP_NUM_THREADS=1)."""
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return statistics.median(times)


def fpsample_fps(points_np: np.ndarray, num_samples: int) -> torch.Tensor:
    import fpsample

    # kdline bucket FPS is fpsample's fastest exact method; start_idx=0 matches our deterministic start.
    return torch.from_numpy(
        np.stack([fpsample.bucket_fps_kdline_sampling(p, num_samples, h=7, start_idx=0) for p in points_np]).astype(
            np.int64
        )
    )


def fpsample_grouping(points: torch.Tensor, num_groups: int, group_size: int):
    idx = fpsample_fps(points.numpy(), num_groups)
    centers = torch.gather(points, 1, idx[..., None].expand(-1, -1, 3))
    _, nn_idx = knn_points(centers, points, group_size)
    return knn_gather(points, nn_idx) - centers[:, :, None]


def _kdline_height(n: int) -> int:
    """fpsample's advice: h=3 small, 5-7 medium, 9 large workloads (2**h <= n)."""
    return 7 if n < 50_000 else 9


def _cpu_min(fns: dict, repeats: int) -> dict:
    """Min process CPU time of each function, round-robin after one warm-up round."""
    times = {k: [] for k in fns}
    for i in range(repeats + 1):
        for k, fn in fns.items():
            t0 = time.process_time()
            fn()
            if i:
                times[k].append(time.process_time() - t0)
    return {k: min(v) for k, v in times.items()}


def _numpy_fallback(pts: torch.Tensor, num_samples: int):
    """``farthest_point_sample`` as it runs without numba (``POINTCLORA_OPS_BACKEND=torch``)."""
    old = os.environ.get("POINTCLORA_OPS_BACKEND")
    os.environ["POINTCLORA_OPS_BACKEND"] = "torch"
    try:
        return farthest_point_sample(pts, num_samples)
    finally:
        if old is None:
            del os.environ["POINTCLORA_OPS_BACKEND"]
        else:
            os.environ["POINTCLORA_OPS_BACKEND"] = old


def scan_table(sizes, num_samples: int, batch: int, repeats: int, have_fpsample: bool) -> None:
    """FPS at real-scan sizes: ours vs fpsample's exact methods, single clouds and a batch of ``batch`` clouds."""
    print(
        f"\nFPS at real-scan sizes -> {num_samples} samples (process CPU ms, min of {repeats}; ratio > 1: ours faster)"
    )
    print(
        "| clouds x N | ours | ours, numpy fallback | fpsample fps_sampling | fpsample bucket kdline "
        "| fps_sampling/ours | bucket/ours | exact vs both |"
    )
    print("|---|---|---|---|---|---|---|---|")
    g = torch.Generator().manual_seed(0)
    for n in sizes:
        for b in (1, batch):
            if b > 1 and n >= 1_000_000:
                continue  # minutes per round; the single-cloud row says the same
            pts = torch.rand(b, n, 3, generator=g) * 2 - 1
            np_pts = [np.ascontiguousarray(p) for p in pts.numpy()]
            fns = {
                "ours": lambda: farthest_point_sample(pts, num_samples),
                "numpy": lambda: _numpy_fallback(pts, num_samples),
            }
            exact = "—"
            if have_fpsample:
                import fpsample

                h = _kdline_height(n)
                fns["bucket"] = lambda: [
                    fpsample.bucket_fps_kdline_sampling(p, num_samples, h=h, start_idx=0) for p in np_pts
                ]
                if n <= 100_000:  # the plain C++ loop takes seconds per million-point cloud
                    fns["plain"] = lambda: [fpsample.fps_sampling(p, num_samples, start_idx=0) for p in np_pts]
                kd = fpsample.bucket_fps_kdline_sampling(np_pts[0], num_samples, h=h, start_idx=0).astype(np.int64)
                ours_from = fps_blocks if use_numba() else fps_bucket  # the path farthest_point_sample takes
                same_kd = np.array_equal(ours_from(np_pts[0].T.copy(), num_samples, int(kd[0])), kd)
                ours0 = farthest_point_sample(pts[:1], num_samples).idx[0].numpy()
                same_plain = (
                    np.array_equal(fpsample.fps_sampling(np_pts[0], num_samples, start_idx=0), ours0)
                    if n <= 100_000
                    else None
                )
                exact = "equal" if same_kd and same_plain is not False else "DIFFERENT"
                exact += "" if same_plain is not None else " (bucket only)"
            t = _cpu_min(fns, repeats if n < 1_000_000 else max(1, repeats // 2))
            ms = lambda k: f"{t[k] * 1e3:.1f}" if k in t else "—"  # noqa: E731
            ratio = lambda k: f"{t[k] / t['ours']:.2f}x" if k in t else "—"  # noqa: E731
            print(
                f"| {b} x {n:,} | {ms('ours')} | {ms('numpy')} | {ms('plain')} | {ms('bucket')} | {ratio('plain')} "
                f"| {ratio('bucket')} | {exact} |"
            )


def skip_table(num_points: int, shapes: int, repeats: int) -> None:
    """Evaluation transforms on clouds that already have ``num_points``: FPS n -> n (before) vs the skip (now)."""
    from pointclora.datasets import eval_transforms

    g = torch.Generator().manual_seed(0)
    clouds = [{"points": torch.rand(num_points, 3, generator=g) * 2 - 1} for _ in range(shapes)]
    transform = eval_transforms(num_points)
    t = _cpu_min(
        {
            "fps": lambda: [farthest_point_sample(c["points"][None], num_points) for c in clouds],
            "skip": lambda: [transform(c) for c in clouds],
        },
        repeats,
    )
    per_fps, per_skip = t["fps"] / shapes * 1e3, t["skip"] / shapes * 1e3
    print(
        f"\nEvaluation transform on {num_points}-point shapes ({shapes} shapes, process CPU): FPS {num_points} -> "
        f"{num_points} {per_fps:.2f} ms/shape before, {per_skip:.4f} ms/shape with the skip: {per_fps - per_skip:.2f} "
        f"ms saved per shape ({per_fps / max(per_skip, 1e-9):.0f}x), {(per_fps - per_skip) * 2468 / 1e3:.1f} s per "
        f"ModelNet40 test pass (2,468 shapes)"
    )


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 8192])
    parser.add_argument("--naive-max-points", type=int, default=1024, help="skip the naive reference above this N")
    parser.add_argument("--scan-sizes", type=int, nargs="*", default=[8192, 100_000, 1_000_000])
    parser.add_argument("--scan-samples", type=int, default=1024)
    parser.add_argument("--scan-batch", type=int, default=8, help="clouds in the batch rows of the real-scan table")
    args = parser.parse_args(argv)
    try:
        import fpsample  # noqa: F401

        have_fpsample = True
    except ImportError:
        have_fpsample = False
        print("fpsample not installed (pip install fpsample): its columns are left empty")
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch}\n")
    header = (
        "| N | G x K | FPS ours (ms) | FPS fpsample (ms) | FPS naive (ms) | fpsample/ours | naive/ours "
        "| grouping ours (ms) | grouping fpsample+kNN (ms) | fpsample/ours |"
    )
    print(header)
    print("|---|---|---|---|---|---|---|---|---|---|")
    g = torch.Generator().manual_seed(0)
    for n in args.sizes:
        num_groups, group_size = GROUPS.get(n, (n // 16, 32))
        points = torch.rand(args.batch, n, 3, generator=g) * 2 - 1
        ours_fps = timeit(lambda: farthest_point_sample(points, num_groups), args.repeats)
        ours_group = timeit(lambda: group_points(points, num_groups, group_size), args.repeats)
        fps_fp = group_fp = float("nan")
        if have_fpsample:
            fps_fp = timeit(lambda: fpsample_fps(points.numpy(), num_groups), args.repeats)
            group_fp = timeit(lambda: fpsample_grouping(points, num_groups, group_size), args.repeats)
            import fpsample

            # fpsample's plain (vanilla) FPS is exact like ours: the picks must be identical.
            vanilla = np.stack([fpsample.fps_sampling(p, num_groups, start_idx=0) for p in points[:4].numpy()])
            if not torch.equal(
                torch.from_numpy(vanilla.astype(np.int64)), farthest_point_sample(points[:4], num_groups).idx
            ):
                print(f"warning: ours and fpsample.fps_sampling picked different indices at N={n}")
        naive = float("nan")
        if n <= args.naive_max_points:
            t0 = time.process_time()
            farthest_point_sample_naive(points[:1], num_groups)
            naive = (time.process_time() - t0) * args.batch  # one cloud, x batch (marked *)
        ms = lambda s: "—" if s != s else f"{s * 1e3:.1f}"  # noqa: E731
        ratio = lambda a, b: "—" if a != a or b != b else f"{a / b:.2f}x"  # noqa: E731
        print(
            f"| {n} | {num_groups} x {group_size} | {ms(ours_fps)} | {ms(fps_fp)} "
            f"| {ms(naive)}{'*' if naive == naive else ''} "
            f"| {ratio(fps_fp, ours_fps)} | {ratio(naive, ours_fps)} | {ms(ours_group)} | {ms(group_fp)} "
            f"| {ratio(group_fp, ours_group)} |"
        )
    print("\n* naive timed on one cloud and multiplied by the batch size. Ratios > 1x mean ours is faster.")
    if args.scan_sizes:
        scan_table(args.scan_sizes, args.scan_samples, args.scan_batch, args.repeats, have_fpsample)
    skip_table(1024, 50, args.repeats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
