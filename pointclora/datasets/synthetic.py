"""Generated parametric shapes: the embedded default dataset (no files, no downloads).

Each sample is generated on the fly from ``numpy.random.default_rng([seed, split, index])``, so ``ds[i]`` is the
same in every process and worker, and nothing is held in memory. Difficulty comes from per-sample shape
parameters (aspect ratios overlap between classes: a squat cylinder looks like a disk, a tall cone like a pyramid),
anisotropic scaling, Gaussian noise, partial views (a random plane cuts part of the surface away) and random
poses (rotation about the up axis plus a tilt).
"""

from __future__ import annotations

import math
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

from .base import ClassificationDataset, PointCloudDataset, check_split, pc_normalize, to_sample

__all__ = ["Synthetic", "SyntheticParts", "SHAPES", "PART_CATEGORIES"]

_SPLIT_CODE = {"train": 0, "test": 1, "val": 2}
_DEFAULT_SIZE = {"train": 1024, "test": 256, "val": 256}


# -- surface samplers: rng, n -> (n, 3) -------------------------------------------------------------------------


def _sphere(rng, n, r=1.0):
    v = rng.normal(size=(n, 3))
    return r * v / np.linalg.norm(v, axis=1, keepdims=True).clip(1e-9)


def _disk(rng, n, r, y, r0=0.0):
    rad = np.sqrt(rng.uniform(r0**2 / r**2, 1.0, n)) * r
    t = rng.uniform(0, 2 * math.pi, n)
    return np.stack([rad * np.cos(t), np.full(n, y), rad * np.sin(t)], 1)


def _tube(rng, n, r, y0, y1):
    t = rng.uniform(0, 2 * math.pi, n)
    return np.stack([r * np.cos(t), rng.uniform(y0, y1, n), r * np.sin(t)], 1)


def _split_counts(rng, n, areas):
    p = np.asarray(areas, dtype=np.float64)
    return rng.multinomial(n, p / p.sum())


def _box(rng, n, a, b, c):
    """Box with half-extents (a, b, c)."""
    counts = _split_counts(rng, n, [b * c, b * c, a * c, a * c, a * b, a * b])
    out = []
    for face, k in enumerate(counts):
        u, v = rng.uniform(-1, 1, (2, k))
        axis, sign = face // 2, 1 - 2 * (face % 2)
        p = np.zeros((k, 3))
        others = [i for i in range(3) if i != axis]
        ext = (a, b, c)
        p[:, axis] = sign * ext[axis]
        p[:, others[0]], p[:, others[1]] = u * ext[others[0]], v * ext[others[1]]
        out.append(p)
    return np.concatenate(out)


def _cylinder(rng, n, r, h, caps=(True, True)):
    areas = [2 * math.pi * r * 2 * h, math.pi * r * r * caps[0], math.pi * r * r * caps[1]]
    k = _split_counts(rng, n, areas)
    return np.concatenate([_tube(rng, k[0], r, -h, h), _disk(rng, k[1], r, h), _disk(rng, k[2], r, -h)])


def _cone(rng, n, r, h, base=True):
    slant = math.sqrt(r * r + 4 * h * h)
    k = _split_counts(rng, n, [math.pi * r * slant, math.pi * r * r * base])
    t = np.sqrt(rng.uniform(0, 1, k[0]))  # distance fraction from the apex, uniform in area
    th = rng.uniform(0, 2 * math.pi, k[0])
    lat = np.stack([r * t * np.cos(th), h - 2 * h * t, r * t * np.sin(th)], 1)
    return np.concatenate([lat, _disk(rng, k[1], r, -h)])


def _torus(rng, n, big, small, arc=2 * math.pi):
    out = np.zeros((0, 3))
    while len(out) < n:  # rejection on the area element (R + r cos phi) makes the density uniform
        m = 2 * n
        th, ph = rng.uniform(0, arc, m), rng.uniform(0, 2 * math.pi, m)
        keep = rng.uniform(0, big + small, m) < big + small * np.cos(ph)
        th, ph = th[keep], ph[keep]
        rr = big + small * np.cos(ph)
        out = np.concatenate([out, np.stack([rr * np.cos(th), small * np.sin(ph), rr * np.sin(th)], 1)])
    return out[:n]


def _triangles(rng, n, verts, faces):
    v = np.asarray(verts, dtype=np.float64)
    f = np.asarray(faces)
    a, b, c = v[f[:, 0]], v[f[:, 1]], v[f[:, 2]]
    area = np.linalg.norm(np.cross(b - a, c - a), axis=1)
    idx = rng.choice(len(f), n, p=area / area.sum())
    u, w = rng.uniform(0, 1, (2, n))
    flip = u + w > 1
    u[flip], w[flip] = 1 - u[flip], 1 - w[flip]
    return a[idx] + u[:, None] * (b - a)[idx] + w[:, None] * (c - a)[idx]


def _pyramid(rng, n, a, h):
    v = [(-a, -h, -a), (a, -h, -a), (a, -h, a), (-a, -h, a), (0, h, 0)]
    f = [(0, 1, 4), (1, 2, 4), (2, 3, 4), (3, 0, 4), (0, 1, 2), (0, 2, 3)]
    return _triangles(rng, n, v, f)


def _octahedron(rng, n, a, b, c):
    v = [(a, 0, 0), (-a, 0, 0), (0, b, 0), (0, -b, 0), (0, 0, c), (0, 0, -c)]
    f = [(0, 2, 4), (2, 1, 4), (1, 3, 4), (3, 0, 4), (0, 2, 5), (2, 1, 5), (1, 3, 5), (3, 0, 5)]
    return _triangles(rng, n, v, f)


def _capsule(rng, n, r, h):
    k = _split_counts(rng, n, [2 * math.pi * r * 2 * h, 4 * math.pi * r * r])
    s = _sphere(rng, k[1], r)
    s[:, 1] += np.where(s[:, 1] >= 0, h, -h)
    return np.concatenate([_tube(rng, k[0], r, -h, h), s])


def _bowl(rng, n, r, depth):
    s = _sphere(rng, n)
    s[:, 1] = -np.abs(s[:, 1]) * depth
    return s * np.array([r, 1.0, r])


def _ring(rng, n, r, r0, h):
    k = _split_counts(rng, n, [1, 1, 0.3, 0.3])
    return np.concatenate(
        [
            _disk(rng, k[0], r, h, r0),
            _disk(rng, k[1], r, -h, r0),
            _tube(rng, k[2], r, -h, h),
            _tube(rng, k[3], r0, -h, h),
        ]
    )


#: name -> sampler(rng, n) with per-sample random parameters (ranges chosen so neighbouring classes overlap a bit)
SHAPES: Dict[str, Callable] = {
    "sphere": lambda g, n: _sphere(g, n),
    "box": lambda g, n: _box(g, n, *g.uniform(0.35, 1.0, 3)),
    "cylinder": lambda g, n: _cylinder(g, n, g.uniform(0.3, 0.8), g.uniform(0.3, 1.0)),
    "cone": lambda g, n: _cone(g, n, g.uniform(0.3, 0.9), g.uniform(0.4, 1.0)),
    "torus": lambda g, n: _torus(g, n, g.uniform(0.55, 0.8), g.uniform(0.12, 0.35)),
    "pyramid": lambda g, n: _pyramid(g, n, g.uniform(0.4, 0.9), g.uniform(0.4, 1.0)),
    "capsule": lambda g, n: _capsule(g, n, g.uniform(0.25, 0.5), g.uniform(0.3, 0.8)),
    "bowl": lambda g, n: _bowl(g, n, 1.0, g.uniform(0.3, 0.9)),
    "octahedron": lambda g, n: _octahedron(g, n, *g.uniform(0.5, 1.0, 3)),
    "ring": lambda g, n: _ring(g, n, 1.0, g.uniform(0.3, 0.7), g.uniform(0.05, 0.3)),
}


# -- part-labelled objects: rng, n -> (points (n, 3), local part ids (n,)) ---------------------------------------


def _assemble(rng, n, parts: List[Tuple[float, Callable]]):
    k = _split_counts(rng, n, [w for w, _ in parts])
    pts = [fn(rng, m) for (_, fn), m in zip(parts, k)]
    seg = np.concatenate([np.full(m, i) for i, m in enumerate(k)])
    return np.concatenate(pts), seg


def _table(g, n):
    w, d, top_h, leg_h, leg_r = g.uniform(0.6, 1.0), g.uniform(0.4, 0.8), 0.05, g.uniform(0.4, 0.8), 0.05
    corners = [(sx * (w - 0.1), sz * (d - 0.1)) for sx in (-1, 1) for sz in (-1, 1)]

    def legs(r, m):
        p = _cylinder(r, m, leg_r, leg_h / 2, caps=(False, False))
        which = r.integers(0, 4, m)
        p[:, 0] += np.array(corners)[which, 0]
        p[:, 2] += np.array(corners)[which, 1]
        p[:, 1] -= top_h + leg_h / 2
        return p

    return _assemble(g, n, [(w * d * 4, lambda r, m: _box(r, m, w, top_h, d)), (4 * leg_h * leg_r * 8, legs)])


def _lamp(g, n):
    base_r, pole_h, shade_r = g.uniform(0.3, 0.5), g.uniform(0.6, 1.2), g.uniform(0.3, 0.6)

    def base(r, m):
        p = _cylinder(r, m, base_r, 0.04)
        p[:, 1] -= pole_h / 2
        return p

    def pole(r, m):
        return _cylinder(r, m, 0.03, pole_h / 2, caps=(False, False))

    def shade(r, m):
        p = _cone(r, m, shade_r, 0.2, base=False)
        p[:, 1] += pole_h / 2
        return p

    return _assemble(g, n, [(base_r**2 * 4, base), (pole_h * 0.2, pole), (shade_r * 2, shade)])


def _mushroom(g, n):
    cap_r, stem_r, stem_h = g.uniform(0.5, 0.9), g.uniform(0.1, 0.25), g.uniform(0.3, 0.8)
    depth = g.uniform(0.4, 0.8)

    def cap(r, m):
        p = _bowl(r, m, cap_r, depth)
        p[:, 1] = -p[:, 1] + stem_h
        return p

    def stem(r, m):
        return _cylinder(r, m, stem_r, stem_h / 2, caps=(False, True)) + np.array([0, stem_h / 2, 0])

    return _assemble(g, n, [(cap_r**2 * 6, cap), (stem_r * stem_h * 6, stem)])


def _mug(g, n):
    r, h = g.uniform(0.4, 0.6), g.uniform(0.4, 0.8)

    def body(rr, m):
        return _cylinder(rr, m, r, h, caps=(False, True))

    def handle(rr, m):
        p = _torus(rr, m, h * 0.6, 0.06, arc=math.pi)  # half torus in the xz plane ...
        p = p[:, [2, 0, 1]]  # ... turned upright (axes permuted), opening towards the body
        p[:, 0] += r
        return p

    return _assemble(g, n, [(2 * math.pi * r * 2 * h, body), (h * 1.2, handle)])


def _rocket(g, n):
    r, h, nose = g.uniform(0.15, 0.3), g.uniform(0.6, 1.0), g.uniform(0.2, 0.4)

    def body(rr, m):
        return _cylinder(rr, m, r, h / 2, caps=(False, True))

    def tip(rr, m):
        p = _cone(rr, m, r, nose / 2, base=False)
        p[:, 1] += h / 2 + nose / 2
        return p

    def fins(rr, m):
        p = _box(rr, m, 0.25, 0.15, 0.01)
        which = rr.integers(0, 4, m)
        ang = which * math.pi / 2
        x = p[:, 0] + r + 0.2
        out = np.stack(
            [x * np.cos(ang) - p[:, 2] * np.sin(ang), p[:, 1] - h / 2 + 0.15, x * np.sin(ang) + p[:, 2] * np.cos(ang)],
            1,
        )
        return out

    return _assemble(g, n, [(r * h * 6, body), (r * nose * 3, tip), (0.4, fins)])


#: category -> (sampler, number of parts). Global part ids are assigned in this order.
PART_CATEGORIES: Dict[str, Tuple[Callable, int]] = {
    "Table": (_table, 2),
    "Lamp": (_lamp, 3),
    "Mushroom": (_mushroom, 2),
    "Mug": (_mug, 2),
    "Rocket": (_rocket, 3),
}


# -- pose, noise, partiality -------------------------------------------------------------------------------------


def _rotation(rng, full: bool) -> np.ndarray:
    """Random rotation about y, plus a tilt of up to 15 degrees (``full``: uniform over SO(3))."""
    if full:
        q = rng.normal(size=4)
        q /= np.linalg.norm(q)
        w, x, y, z = q
        return np.array(
            [
                [1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)],
            ]
        )
    a = rng.uniform(0, 2 * math.pi)
    ry = np.array([[math.cos(a), 0, math.sin(a)], [0, 1, 0], [-math.sin(a), 0, math.cos(a)]])
    t = rng.uniform(-math.pi / 12, math.pi / 12)
    rx = np.array([[1, 0, 0], [0, math.cos(t), -math.sin(t)], [0, math.sin(t), math.cos(t)]])
    return rx @ ry


def _finish(rng, gen, num_points, noise, partial_prob, full_rotation, aniso):
    """Sample extra points, cut a partial view, resample to exactly num_points, pose, noise, normalise."""
    partial = rng.uniform() < partial_prob
    keep_frac = rng.uniform(0.6, 0.9) if partial else 1.0
    m = int(math.ceil(num_points / keep_frac)) + 8
    pts, seg = gen(rng, m)
    if partial:
        d = _sphere(rng, 1)[0]
        proj = (pts - pts.mean(0)) @ d
        keep = proj <= np.quantile(proj, keep_frac)
        pts, seg = pts[keep], seg[keep]
    choice = rng.choice(len(pts), num_points, replace=len(pts) < num_points)
    pts, seg = pts[choice], seg[choice]
    pts = pts * rng.uniform(1 - aniso, 1 + aniso, 3)
    pts = pts @ _rotation(rng, full_rotation).T
    pts = pts + rng.normal(scale=noise, size=pts.shape)
    return pc_normalize(pts).astype(np.float32), seg


class Synthetic(ClassificationDataset):
    """Generated shape classification. Sample: ``{"points": float32 (num_points, 3), "label": int}``.

    ``label = index % num_classes`` (balanced); the shape parameters, pose, noise and cut come from
    ``default_rng([seed, split, index])``. ``root`` is ignored (accepted for the common constructor contract).

    Args:
        num_samples: dataset size (default 1024 train, 256 test/val).
        num_classes: the first ``num_classes`` of :data:`SHAPES` (at most 10).
        noise: Gaussian sigma relative to the shape size before normalisation.
        partial_prob: probability that a random plane cuts away 10-40% of the surface.
        full_rotation: uniform SO(3) rotations instead of up-axis rotation plus tilt.
    """

    def __init__(
        self,
        root=None,
        split: str = "train",
        num_samples: Optional[int] = None,
        num_points: int = 1024,
        num_classes: int = 8,
        seed: int = 0,
        transform: Optional[Callable] = None,
        noise: float = 0.02,
        partial_prob: float = 0.5,
        full_rotation: bool = False,
        anisotropy: float = 0.2,
    ):
        super().__init__(root, check_split(split, tuple(_SPLIT_CODE), "Synthetic"), transform)
        if not 2 <= num_classes <= len(SHAPES):
            raise ValueError(f"Synthetic: num_classes must be in 2..{len(SHAPES)}, got {num_classes}")
        if num_points < 1:
            raise ValueError(f"Synthetic: num_points must be >= 1, got {num_points}")
        self.classes = list(SHAPES)[:num_classes]
        self.num_samples = _DEFAULT_SIZE[split] if num_samples is None else int(num_samples)
        self.num_points, self.seed, self.noise = num_points, seed, noise
        self.partial_prob, self.full_rotation, self.anisotropy = partial_prob, full_rotation, anisotropy
        self.labels = np.arange(self.num_samples, dtype=np.int64) % num_classes

    def get(self, index: int):
        rng = np.random.default_rng([self.seed, _SPLIT_CODE[self.split], index])
        label = int(self.labels[index])
        fn = SHAPES[self.classes[label]]

        def gen(r, m):
            return fn(r, m), np.zeros(m, dtype=np.int64)

        pts, _ = _finish(rng, gen, self.num_points, self.noise, self.partial_prob, self.full_rotation, self.anisotropy)
        return to_sample(pts, label=label)

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, num_points={self.num_points}, seed={self.seed}"


class SyntheticParts(PointCloudDataset):
    """Generated part segmentation. Sample: ``{"points": float32 (num_points, 3), "cls": int, "seg": int64 (N,)}``.

    Categories (Table, Lamp, Mushroom, Mug, Rocket) are built from primitives, each primitive one part; part ids are
    global (``category_parts``), like ShapeNetPart. ``cls = index % num_categories``.
    """

    def __init__(
        self,
        root=None,
        split: str = "train",
        num_samples: Optional[int] = None,
        num_points: int = 1024,
        num_categories: int = 5,
        seed: int = 0,
        transform: Optional[Callable] = None,
        noise: float = 0.01,
        partial_prob: float = 0.3,
        anisotropy: float = 0.15,
    ):
        super().__init__(root, check_split(split, tuple(_SPLIT_CODE), "SyntheticParts"), transform)
        if not 1 <= num_categories <= len(PART_CATEGORIES):
            raise ValueError(
                f"SyntheticParts: num_categories must be in 1..{len(PART_CATEGORIES)}, got {num_categories}"
            )
        self.categories = list(PART_CATEGORIES)[:num_categories]
        self.category_parts: Dict[str, List[int]] = {}
        nxt = 0
        for c in self.categories:
            k = PART_CATEGORIES[c][1]
            self.category_parts[c] = list(range(nxt, nxt + k))
            nxt += k
        self.num_parts = nxt
        self.num_samples = _DEFAULT_SIZE[split] if num_samples is None else int(num_samples)
        self.num_points, self.seed, self.noise = num_points, seed, noise
        self.partial_prob, self.anisotropy = partial_prob, anisotropy

    @property
    def num_categories(self) -> int:
        return len(self.categories)

    def __len__(self) -> int:
        return self.num_samples

    def get(self, index: int):
        rng = np.random.default_rng([self.seed, _SPLIT_CODE[self.split], index])
        cls = index % self.num_categories
        cat = self.categories[cls]
        pts, seg = _finish(
            rng, PART_CATEGORIES[cat][0], self.num_points, self.noise, self.partial_prob, False, self.anisotropy
        )
        seg = np.asarray(self.category_parts[cat])[seg]
        return to_sample(pts, cls=cls, seg=seg)

    def extra_repr(self) -> str:
        return f"categories={self.categories}, num_points={self.num_points}"
