"""Point-cloud transforms acting on sample dicts, one job per class.

A sample is ``{"points": float32 tensor (N, C), ...}`` with xyz in columns 0-2 and, when ``C >= 6``, normals in
columns 3-5 (rotations and scalings transform them consistently; other columns are left alone). Transforms that
select points also index the per-point keys listed in :data:`PER_POINT_KEYS` (``seg``), so part labels stay aligned.

Random transforms draw from ``generator`` when given, else from torch's global RNG. DataLoader seeds torch's RNG in
each worker from its base seed (``torch.initial_seed()``), so a loader built with
``DataLoader(..., generator=torch.Generator().manual_seed(s), worker_init_fn=seed_worker)`` is reproducible.
"""

from __future__ import annotations

import math
import random
from typing import Callable, Dict, List, Optional, Sequence

import numpy as np
import torch

__all__ = [
    "PER_POINT_KEYS",
    "Compose",
    "NormalizeUnitSphere",
    "RandomSubset",
    "FarthestPointSubset",
    "ScaleAndTranslate",
    "RotateUp",
    "Jitter",
    "PointDropout",
    "train_transforms",
    "eval_transforms",
    "reference_point_all",
    "vote_eval_transforms",
    "seed_worker",
]

#: Keys (besides ``points``) whose first dimension is the point index.
PER_POINT_KEYS = ("seg", "mask")

Sample = Dict[str, object]


def _points(sample: Sample) -> torch.Tensor:
    pts = sample["points"]
    if not isinstance(pts, torch.Tensor):
        pts = torch.as_tensor(np.asarray(pts), dtype=torch.float32)
    if pts.ndim != 2 or pts.shape[1] < 3:
        raise ValueError(f"sample['points'] must be (N, C>=3), got shape {tuple(pts.shape)}")
    return pts


def _select(sample: Sample, idx: torch.Tensor) -> Sample:
    out = dict(sample)
    out["points"] = _points(sample)[idx]
    for k in PER_POINT_KEYS:
        if k in out and out[k] is not None:
            out[k] = torch.as_tensor(out[k])[idx]
    return out


def _fill_indices(n: int, num_points: int, generator: Optional[torch.Generator]) -> torch.Tensor:
    """Indices covering every point once, topped up with random repeats when ``n < num_points``.

    Repeating points (as PointNet++/Point-MAE's ``np.random.choice(replace=True)`` does) keeps the batch shape;
    the alternative, an error, would make every partial scan unusable.
    """
    extra = torch.randint(n, (num_points - n,), generator=generator)
    return torch.cat([torch.arange(n), extra])


class Compose:
    """Apply transforms in order."""

    def __init__(self, transforms: Sequence[Callable[[Sample], Sample]]):
        self.transforms = list(transforms)

    def __call__(self, sample: Sample) -> Sample:
        for t in self.transforms:
            sample = t(sample)
        return sample

    def __repr__(self) -> str:
        inner = "".join(f"\n    {t!r}," for t in self.transforms)
        return f"Compose([{inner}\n])" if self.transforms else "Compose([])"


class NormalizeUnitSphere:
    """Centre xyz on the centroid and scale so the farthest point is at distance 1 (Point-MAE ``pc_normalize``)."""

    def __call__(self, sample: Sample) -> Sample:
        pts = _points(sample).clone()
        xyz = pts[:, :3] - pts[:, :3].mean(0, keepdim=True)
        radius = xyz.norm(dim=1).max()
        # A cloud collapsed to one point has radius 0: leave it centred instead of dividing by zero.
        pts[:, :3] = xyz / radius if radius > 0 else xyz
        return {**sample, "points": pts}

    def __repr__(self) -> str:
        return "NormalizeUnitSphere()"


class RandomSubset:
    """Pick ``num_points`` distinct points uniformly at random (repeats only when the cloud is smaller)."""

    def __init__(self, num_points: int, generator: Optional[torch.Generator] = None):
        if num_points < 1:
            raise ValueError(f"num_points must be >= 1, got {num_points}")
        self.num_points = int(num_points)
        self.generator = generator

    def __call__(self, sample: Sample) -> Sample:
        n = _points(sample).shape[0]
        if n >= self.num_points:
            idx = torch.randperm(n, generator=self.generator)[: self.num_points]
        else:
            idx = _fill_indices(n, self.num_points, self.generator)
            idx = idx[torch.randperm(self.num_points, generator=self.generator)]
        return _select(sample, idx)

    def __repr__(self) -> str:
        return f"RandomSubset(num_points={self.num_points})"


class FarthestPointSubset:
    """Deterministic farthest point sampling to ``num_points`` (first point = index 0, as the reference ``misc.fps``).

    Uses :func:`pointclora.ops.farthest_point_sample` on xyz. A cloud with fewer points keeps all of them in FPS
    order, then repeats from the start cyclically (deterministic, so evaluation stays reproducible).

    A cloud that already has ``num_points`` points is returned as it is: FPS from ``n`` to ``n`` only reorders
    distinct points, and the model sees the same set (its own FPS picks the same centres in the same order, kNN groups
    and max-pooling do not depend on the input order; ``tests/datasets/test_fps_skip.py``). The one difference is a
    cloud with repeated points: FPS ``n -> n`` would have replaced the repeats by copies of point 0 (every remaining
    distance is 0 and ties go to the lowest index); the skip keeps the cloud as it is.
    """

    def __init__(self, num_points: int, skip_near_origin: bool = False):
        if num_points < 1:
            raise ValueError(f"num_points must be >= 1, got {num_points}")
        self.num_points = int(num_points)
        self.skip_near_origin = bool(skip_near_origin)  # pointnet2_ops' rule, as the reference's GPU FPS

    def __call__(self, sample: Sample) -> Sample:
        from ..ops import farthest_point_sample

        pts = _points(sample)
        n = pts.shape[0]
        if n == self.num_points:
            return sample
        k = min(n, self.num_points)
        _, idx = farthest_point_sample(pts[None, :, :3].contiguous(), k, skip_near_origin=self.skip_near_origin)
        idx = idx[0]
        if k < self.num_points:
            idx = idx[torch.arange(self.num_points) % k]
        return _select(sample, idx)

    def __repr__(self) -> str:
        return f"FarthestPointSubset(num_points={self.num_points})"


class ScaleAndTranslate:
    """Point-MAE ``PointcloudScaleAndTranslate``: per-axis scale ~ U(low, high), then shift ~ U(-t, t) per axis.

    Normals (columns 3-5) are multiplied by the inverse scale and renormalised, which is how normals transform
    under an anisotropic scaling.
    """

    def __init__(
        self,
        scale_low: float = 2.0 / 3.0,
        scale_high: float = 3.0 / 2.0,
        translate: float = 0.2,
        generator: Optional[torch.Generator] = None,
    ):
        if not 0 < scale_low <= scale_high:
            raise ValueError(f"need 0 < scale_low <= scale_high, got {scale_low}, {scale_high}")
        self.scale_low, self.scale_high, self.translate = float(scale_low), float(scale_high), float(translate)
        self.generator = generator

    def __call__(self, sample: Sample) -> Sample:
        pts = _points(sample).clone()
        u = torch.rand(6, generator=self.generator)
        scale = self.scale_low + (self.scale_high - self.scale_low) * u[:3]
        shift = (2 * u[3:] - 1) * self.translate
        pts[:, :3] = pts[:, :3] * scale + shift
        if pts.shape[1] >= 6:
            nrm = pts[:, 3:6] / scale
            pts[:, 3:6] = nrm / nrm.norm(dim=1, keepdim=True).clamp_min(1e-12)
        return {**sample, "points": pts}

    def __repr__(self) -> str:
        return (
            f"ScaleAndTranslate(scale_low={self.scale_low:.4g}, scale_high={self.scale_high:.4g}, "
            f"translate={self.translate:.4g})"
        )


class RotateUp:
    """Rotate by an angle ~ U[0, 2π) about the up axis (``y`` by default, Point-MAE ``PointcloudRotate``)."""

    _AXES = {"x": 0, "y": 1, "z": 2}

    def __init__(self, axis: str = "y", generator: Optional[torch.Generator] = None):
        if axis not in self._AXES:
            raise ValueError(f"axis must be one of 'x', 'y', 'z', got {axis!r}")
        self.axis = axis
        self.generator = generator

    def matrix(self, angle: float) -> torch.Tensor:
        """``(3, 3)`` rotation applied as ``points @ R.T``."""
        c, s = math.cos(angle), math.sin(angle)
        a = self._AXES[self.axis]
        i, j = [k for k in range(3) if k != a]
        if a == 1:  # keep the reference's sign convention for y: [[c,0,s],[0,1,0],[-s,0,c]]
            i, j = j, i
        r = torch.eye(3)
        r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
        return r

    def __call__(self, sample: Sample) -> Sample:
        pts = _points(sample).clone()
        angle = float(torch.rand(1, generator=self.generator)) * 2 * math.pi
        r = self.matrix(angle)
        pts[:, :3] = pts[:, :3] @ r.T
        if pts.shape[1] >= 6:
            pts[:, 3:6] = pts[:, 3:6] @ r.T
        return {**sample, "points": pts}

    def __repr__(self) -> str:
        return f"RotateUp(axis={self.axis!r})"


class Jitter:
    """Add clipped Gaussian noise to xyz: ``clip(sigma * N(0, 1), -clip, clip)``."""

    def __init__(self, sigma: float = 0.01, clip: float = 0.05, generator: Optional[torch.Generator] = None):
        if sigma < 0 or clip < 0:
            raise ValueError(f"sigma and clip must be >= 0, got {sigma}, {clip}")
        self.sigma, self.clip, self.generator = float(sigma), float(clip), generator

    def __call__(self, sample: Sample) -> Sample:
        pts = _points(sample).clone()
        noise = torch.randn(pts.shape[0], 3, generator=self.generator) * self.sigma
        pts[:, :3] += noise.clamp(-self.clip, self.clip)
        return {**sample, "points": pts}

    def __repr__(self) -> str:
        return f"Jitter(sigma={self.sigma:.4g}, clip={self.clip:.4g})"


class PointDropout:
    """PointNet++ random input dropout: drop a ratio ~ U(0, max_ratio) of points, replacing them by the first point
    (so N, and the batch shape, stay fixed)."""

    def __init__(self, max_ratio: float = 0.875, generator: Optional[torch.Generator] = None):
        if not 0 <= max_ratio < 1:
            raise ValueError(f"max_ratio must be in [0, 1), got {max_ratio}")
        self.max_ratio, self.generator = float(max_ratio), generator

    def __call__(self, sample: Sample) -> Sample:
        n = _points(sample).shape[0]
        ratio = float(torch.rand(1, generator=self.generator)) * self.max_ratio
        drop = torch.rand(n, generator=self.generator) <= ratio
        idx = torch.arange(n)
        idx[drop] = 0
        return _select(sample, idx)

    def __repr__(self) -> str:
        return f"PointDropout(max_ratio={self.max_ratio:.4g})"


def reference_point_all(num_points: int) -> int:
    """Points kept by the training FPS before the random subset (Point-MAE fine-tuning: 1024 -> 1200, ...)."""
    table = {1024: 1200, 2048: 2400, 4096: 4800, 8192: 8192}
    if num_points not in table:
        return int(round(num_points * 1.2))
    return table[num_points]


class _FPSIfLarger(FarthestPointSubset):
    """FPS to ``num_points`` only when the cloud is larger (the reference caps point_all at the available count)."""

    def __call__(self, sample: Sample) -> Sample:
        if _points(sample).shape[0] <= self.num_points:
            return sample
        return super().__call__(sample)

    def __repr__(self) -> str:
        return f"FarthestPointSubset(num_points={self.num_points}, only_if_larger=True)"


def train_transforms(
    num_points: int,
    augmentation: str = "scale_translate",
    fps_first: bool = True,
    generator: Optional[torch.Generator] = None,
    skip_near_origin: bool = False,
) -> Compose:
    """Reference fine-tuning pipeline: FPS to ``point_all`` (if larger) -> random ``num_points`` -> augmentation.

    ``augmentation``: ``"scale_translate"`` (Point-MAE), ``"rotate"`` (random rotation about y, as IDPT/PPT/ReCon
    use for ScanObjectNN) or ``"none"``. ``fps_first=False`` skips the FPS step (cheaper on CPU; the reference runs
    it on the GPU). ``skip_near_origin``: that FPS follows pointnet2_ops (``--protocol point-mae``).
    """
    steps: List[Callable] = []
    if fps_first:
        steps.append(_FPSIfLarger(reference_point_all(num_points), skip_near_origin=skip_near_origin))
    steps.append(RandomSubset(num_points, generator=generator))
    if augmentation == "scale_translate":
        steps.append(ScaleAndTranslate(generator=generator))
    elif augmentation == "rotate":
        steps.append(RotateUp("y", generator=generator))
    elif augmentation != "none":
        raise ValueError(f"augmentation must be 'scale_translate', 'rotate' or 'none', got {augmentation!r}")
    return Compose(steps)


def eval_transforms(num_points: int, skip_near_origin: bool = False) -> Compose:
    """Reference evaluation: deterministic FPS to ``num_points``, no augmentation."""
    return Compose([FarthestPointSubset(num_points, skip_near_origin=skip_near_origin)])


def vote_eval_transforms(num_points: int, skip_near_origin: bool = False) -> Compose:
    """Evaluation clouds for voting: deterministic FPS to ``reference_point_all(num_points)`` (1200 for 1024).

    The clouds come out in FPS order, so their first ``num_points`` are exactly :func:`eval_transforms`'s cloud
    (FPS is greedy: a longer run starts with the shorter one); pass ``num_points`` to
    :func:`pointclora.engine.evaluation.evaluate` and the plain pass uses those while each voting view re-draws
    ``num_points`` of the ``point_all``, as the reference's ``validate_vote``.
    """
    return Compose([FarthestPointSubset(reference_point_all(num_points), skip_near_origin=skip_near_origin)])


def seed_worker(worker_id: int) -> None:
    """``DataLoader(worker_init_fn=seed_worker)``: derive numpy/random seeds from the worker's torch seed, so any
    numpy randomness in user transforms is as reproducible as ours (torch's RNG is already seeded per worker)."""
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
