"""Farthest point sampling (FPS) on padded batches.

Semantics (the same for every backend, so results do not depend on what is installed):
- the first sample is index 0 (``start="first"``, Point-MAE / pointnet2_ops) or a random valid index
  (``start="random"``);
- each next sample is the point farthest from those already chosen; ties go to the lowest index;
- ``skip_near_origin=True`` reproduces pointnet2_ops' CUDA kernel, which never picks (after the first) a point with
  ``|p|² <= 1e-3``; off by default, as in pytorch3d.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import numpy as np
import torch

from ._backend import use_numba, use_pytorch3d
from ._checks import check_count, check_lengths, check_points
from ._fps_bucket import fps_bucket
from ._fps_numba import fps_blocks

__all__ = ["SampledPoints", "farthest_point_sample", "farthest_point_sample_naive", "gather_points"]

#: pointnet2_ops skips points whose squared norm is at most this (within ~0.032 of the origin).
NEAR_ORIGIN_SQ = 1e-3

#: On the CPU, clouds of at least this many points use the bucketed exact FPS (:mod:`._fps_bucket`); below it the
#: plain loop is as fast or faster (measured: the bucket bookkeeping costs about what it saves at 8-16 k points,
#: and 2-5x less time from 100 k points on).
BUCKET_MIN_POINTS = 32768

#: On the CPU, batches whose longest cloud has at least this many points run one cloud at a time in numpy: the
#: batched torch loop wins on many small clouds (its per-step overhead is shared), numpy on fewer large ones.
PER_CLOUD_MIN_POINTS = 4096


class SampledPoints(NamedTuple):
    points: torch.Tensor  #: (B, S, 3) sampled coordinates
    idx: torch.Tensor  #: (B, S) int64 indices into the input


def gather_points(points: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Gather rows: ``points (B, N, C)``, ``idx (B, S)`` -> ``(B, S, C)``."""
    return torch.gather(points, 1, idx.unsqueeze(-1).expand(-1, -1, points.shape[-1]))


def _start_indices(lengths: torch.Tensor, start: str, generator: Optional[torch.Generator]) -> torch.Tensor:
    if start == "first":
        return torch.zeros_like(lengths)
    if start == "random":
        u = torch.rand(lengths.shape, generator=generator, device="cpu").to(lengths.device)
        return (u * lengths.clamp_min(1)).long().clamp_max(lengths - 1)
    raise ValueError(f"start must be 'first' or 'random', got {start!r}")


def farthest_point_sample(
    points: torch.Tensor,
    num_samples: int,
    lengths: Optional[torch.Tensor] = None,
    start: str = "first",
    skip_near_origin: bool = False,
    generator: Optional[torch.Generator] = None,
) -> SampledPoints:
    """Farthest point sampling.

    Args:
        points: ``(B, N, 3)`` float32/float16/float64 coordinates (padded batch).
        num_samples: S, the number of points to pick per cloud (``1 <= S <= lengths``).
        lengths: optional ``(B,)`` number of valid points per cloud; padding is never picked.
        start: ``"first"`` (index 0) or ``"random"`` (uniform over valid points, from ``generator``).
        skip_near_origin: reproduce pointnet2_ops' skipping of points with ``|p|² <= 1e-3``.

    Returns:
        ``SampledPoints(points (B, S, 3), idx (B, S) int64)``.
    """
    check_points("points", points)
    lengths = check_lengths(lengths, points)
    check_count("num_samples", num_samples, lengths)
    starts = _start_indices(lengths, start, generator)
    if use_pytorch3d() and not skip_near_origin and start == "first":  # pragma: no cover - no wheel on CI
        from pytorch3d.ops import sample_farthest_points

        # pytorch3d starts at index 0 and breaks ties to the lowest index, like ours; its random start draws from
        # its own RNG, so only the deterministic start is delegated.
        _, idx = sample_farthest_points(points.float(), lengths=lengths, K=num_samples)
        return SampledPoints(gather_points(points, idx), idx)
    if points.device.type == "cpu" and (points.shape[0] == 1 or int(lengths.max()) >= PER_CLOUD_MIN_POINTS):
        # One cloud at a time in numpy: a cloud's own length, no padding work, and the bucketed FPS for large ones.
        idx = torch.stack(
            [
                _fps_numpy_single(
                    points[b : b + 1], num_samples, lengths[b : b + 1], starts[b : b + 1], skip_near_origin
                )[0]
                for b in range(points.shape[0])
            ]
        )
    else:
        idx = _fps_torch(points, num_samples, lengths, starts, skip_near_origin)
    return SampledPoints(gather_points(points, idx), idx)


@torch.no_grad()
def _fps_torch(
    points: torch.Tensor, num_samples: int, lengths: torch.Tensor, starts: torch.Tensor, skip_near_origin: bool
) -> torch.Tensor:
    """Vectorised over the batch: S iterations, each a fused distance update over (B, N).

    Coordinates are laid out planar (3, B, N) and the update runs in preallocated buffers: a (B, N, 3) layout with
    ``.pow(2).sum(-1)`` allocates three temporaries per step and is ~4x slower on CPU.
    """
    B, N, _ = points.shape
    # Distances in float32 at least: float16 squared distances overflow and collapse ties on real scales.
    work_dtype = torch.float64 if points.dtype == torch.float64 else torch.float32
    planar = points.detach().to(work_dtype).permute(2, 0, 1).contiguous()  # (3, B, N)
    valid = torch.arange(N, device=points.device).unsqueeze(0) < lengths.unsqueeze(1)  # (B, N)
    if skip_near_origin:
        valid = valid & (planar.pow(2).sum(0) > NEAR_ORIGIN_SQ)
    # Points that may never be picked hold -1: below every real distance, and minimum() keeps it there.
    min_dist = torch.full((B, N), float("inf"), dtype=work_dtype, device=points.device)
    min_dist.masked_fill_(~valid, -1.0)
    dist = torch.empty_like(min_dist)
    diff = torch.empty_like(min_dist)
    idx = torch.empty((B, num_samples), dtype=torch.int64, device=points.device)
    batch = torch.arange(B, device=points.device)
    current = starts
    for s in range(num_samples):
        idx[:, s] = current
        last = planar[:, batch, current].unsqueeze(-1)  # (3, B, 1)
        torch.sub(planar[0], last[0], out=dist)
        dist.mul_(dist)
        for c in (1, 2):
            torch.sub(planar[c], last[c], out=diff)
            dist.addcmul_(diff, diff)
        torch.minimum(min_dist, dist, out=min_dist)
        # argmax returns the first maximal index: ties go to the lowest index, as in the CUDA kernels.
        current = min_dist.argmax(dim=1)
    return idx



def squared_distances_to(planar: np.ndarray, index: int, out: np.ndarray, scratch: np.ndarray) -> np.ndarray:
    """``out[j] = |p_j - p_index|²`` for a ``3 N`` planar (structure-of-arrays) cloud, summed x, then y, then z in
    the cloud's dtype: the float operation order every numpy FPS here shares, so their picks agree bit for bit."""
    np.subtract(planar[0], planar[0, index], out=out)
    np.multiply(out, out, out=out)
    for c in (1, 2):
        np.subtract(planar[c], planar[c, index], out=scratch)
        np.multiply(scratch, scratch, out=scratch)
        out += scratch
    return out

def _fps_numpy_single(
    points: torch.Tensor, num_samples: int, lengths: torch.Tensor, starts: torch.Tensor, skip_near_origin: bool
) -> torch.Tensor:
    """One cloud on the CPU (the per-sample transforms of data loaders), with the picks of :func:`_fps_torch`: the
    compiled block FPS when numba is there (:mod:`._fps_numba`); else the same loop in numpy, whose per-call
    overhead on an (N,) array is a fraction of torch's (~4x faster at 8192 -> 1200 points), and from
    :data:`BUCKET_MIN_POINTS` points on the bucketed numpy FPS.

    ``points (1, N, 3)`` -> ``(1, S)`` int64.
    """
    n = int(lengths[0])
    dtype = np.float64 if points.dtype == torch.float64 else np.float32
    planar = np.ascontiguousarray(points[0, :n].detach().cpu().numpy().astype(dtype).T)  # (3, n)
    never = (planar**2).sum(0) <= NEAR_ORIGIN_SQ if skip_near_origin else None
    if use_numba():
        return torch.from_numpy(fps_blocks(planar, num_samples, int(starts[0]), never))[None]
    if n >= BUCKET_MIN_POINTS:
        return torch.from_numpy(fps_bucket(planar, num_samples, int(starts[0]), never))[None]
    min_dist = np.full(n, np.inf, dtype=dtype)
    if never is not None:
        min_dist[never] = -1.0  # never picked: minimum() keeps -1 below any distance
    dist, diff = np.empty_like(min_dist), np.empty_like(min_dist)
    idx = np.empty(num_samples, dtype=np.int64)
    current = int(starts[0])
    for s in range(num_samples):
        idx[s] = current
        squared_distances_to(planar, current, dist, diff)
        np.minimum(min_dist, dist, out=min_dist)
        current = int(min_dist.argmax())  # first maximal index: ties to the lowest index
    return torch.from_numpy(idx)[None]


def farthest_point_sample_naive(
    points: torch.Tensor,
    num_samples: int,
    lengths: Optional[torch.Tensor] = None,
    start_idx: Optional[torch.Tensor] = None,
    skip_near_origin: bool = False,
) -> SampledPoints:
    """Reference FPS written as plainly as possible (Python loops, float64). For tests only.

    ``start_idx`` ``(B,)`` gives the first index per cloud (default 0).
    """
    check_points("points", points)
    lengths = check_lengths(lengths, points)
    check_count("num_samples", num_samples, lengths)
    B = points.shape[0]
    out = torch.zeros((B, num_samples), dtype=torch.int64)
    for b in range(B):
        n = int(lengths[b])
        p = points[b, :n].detach().double().cpu()
        first = 0 if start_idx is None else int(start_idx[b])
        chosen = [first]
        best = [float("inf")] * n
        for _ in range(1, num_samples):
            last = p[chosen[-1]]
            far_i, far_d = 0, -1.0
            for i in range(n):
                d = float(((p[i] - last) ** 2).sum())
                best[i] = min(best[i], d)
                allowed = not skip_near_origin or float((p[i] ** 2).sum()) > NEAR_ORIGIN_SQ
                if allowed and best[i] > far_d:  # strict: the lowest index wins a tie
                    far_i, far_d = i, best[i]
            chosen.append(far_i)
        out[b] = torch.tensor(chosen)
    out = out.to(points.device)
    return SampledPoints(gather_points(points, out), out)
