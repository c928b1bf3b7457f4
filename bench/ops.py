"""Benchmark: FPS and FPS+kNN grouping per batch, ours vs fpsample vs the naive reference, measured in one run.

    .venv/bin/python bench/ops.py [--batch 32] [--repeats 5] [--sizes 1024 2048 8192]

Groups per size follow Point-MAE (1024 -> 64x32, 2048 -> 128x32, 8192 -> 512x32). fpsample is a C++ FPS for one
cloud at a time, so its batch time is a loop over the clouds; its grouping uses our kNN so the comparison isolates
FPS. The naive reference is a Python loop: it is timed on a single cloud and multiplied by the batch size (marked).
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from pointclora.ops import farthest_point_sample, farthest_point_sample_naive, group_points, knn_gather, knn_points

GROUPS = {1024: (64, 32), 2048: (128, 32), 4096: (256, 32), 8192: (512, 32)}


def timeit(fn, repeats: int) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
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


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 8192])
    parser.add_argument("--naive-max-points", type=int, default=2048, help="skip the naive reference above this N")
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
            t0 = time.perf_counter()
            farthest_point_sample_naive(points[:1], num_groups)
            naive = (time.perf_counter() - t0) * args.batch  # one cloud, x batch (marked *)
        ms = lambda s: "—" if s != s else f"{s * 1e3:.1f}"  # noqa: E731
        ratio = lambda a, b: "—" if a != a or b != b else f"{a / b:.2f}x"  # noqa: E731
        print(
            f"| {n} | {num_groups} x {group_size} | {ms(ours_fps)} | {ms(fps_fp)} "
            f"| {ms(naive)}{'*' if naive == naive else ''} "
            f"| {ratio(fps_fp, ours_fps)} | {ratio(naive, ours_fps)} | {ms(ours_group)} | {ms(group_fp)} "
            f"| {ratio(group_fp, ours_group)} |"
        )
    print("\n* naive timed on one cloud and multiplied by the batch size. Ratios > 1x mean ours is faster.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
