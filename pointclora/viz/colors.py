"""Per-point colours: by height, per patch, per part label, correct/wrong. All return float ``(N, 3)`` RGB in [0, 1]."""

from __future__ import annotations

import colorsys
import difflib
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

__all__ = [
    "AXES",
    "GREY",
    "ERROR_RED",
    "get_colormap",
    "color_by_height",
    "distinct_colors",
    "label_colors",
    "patch_assignment",
]

AXES = {"x": 0, "y": 1, "z": 2}
GREY = (0.78, 0.78, 0.78)
ERROR_RED = (0.86, 0.08, 0.08)
# Hand-picked first colours (tab10 without grey/red, which mean "unassigned" and "error" in our pictures); more
# labels or patches continue with golden-ratio hues so neighbouring ids still get far-apart colours.
_BASE = [
    (0.122, 0.467, 0.706),  # blue
    (1.000, 0.498, 0.055),  # orange
    (0.173, 0.627, 0.173),  # green
    (0.580, 0.404, 0.741),  # purple
    (0.549, 0.337, 0.294),  # brown
    (0.890, 0.467, 0.761),  # pink
    (0.737, 0.741, 0.133),  # olive
    (0.090, 0.745, 0.812),  # cyan
]


def axis_index(up: str) -> int:
    if up not in AXES:
        raise ValueError(f"up axis must be one of x, y, z; got {up!r}")
    return AXES[up]


def get_colormap(name: str):
    """A matplotlib colormap by name, with a suggestion when the name is wrong."""
    import matplotlib

    try:
        return matplotlib.colormaps[name]
    except KeyError:
        close = difflib.get_close_matches(name, list(matplotlib.colormaps), n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown colormap {name!r}.{hint}") from None


def color_by_height(points: np.ndarray, up: str = "y", colormap: str = "viridis") -> np.ndarray:
    """Colour each point by its coordinate along ``up``, min..max mapped over the colormap.

    A plain cloud rendered in one colour is a flat silhouette; a height ramp shows its shape from any view.
    """
    h = np.asarray(points, dtype=np.float64)[:, axis_index(up)]
    lo, hi = (float(h.min()), float(h.max())) if len(h) else (0.0, 0.0)
    t = (h - lo) / (hi - lo) if hi > lo else np.full_like(h, 0.5)
    return np.asarray(get_colormap(colormap)(t))[:, :3]


def distinct_colors(n: int, seed_offset: int = 0) -> np.ndarray:
    """``n`` colours, the first 8 from a qualitative palette, then golden-ratio hues with varied lightness."""
    out = []
    for i in range(n):
        j = i + seed_offset
        if j < len(_BASE):
            out.append(_BASE[j])
            continue
        k = j - len(_BASE)
        hue = (0.1 + k * 0.618033988749895) % 1.0
        # Skip the red band: red marks errors.
        if hue < 0.04 or hue > 0.96:
            hue = (hue + 0.08) % 1.0
        sat = (0.85, 0.6, 0.95)[k % 3]
        val = (0.85, 0.65, 0.95)[(k // 3) % 3]
        out.append(colorsys.hsv_to_rgb(hue, sat, val))
    return np.asarray(out, dtype=np.float64).reshape(n, 3)


def label_colors(
    *label_arrays: Optional[np.ndarray], ids: Optional[Sequence[int]] = None
) -> Tuple[Dict[int, Tuple[float, float, float]], list]:
    """One colour per label id over all given arrays, so ground truth and prediction share a legend.

    Returns ``(id -> rgb, [per-array (N, 3) colours])``. Ids are sorted, so the same label set always gets the
    same colours whatever order points come in (part ids such as 50..53 map to the first palette entries).
    """
    if ids is None:
        present = [np.unique(np.asarray(a)) for a in label_arrays if a is not None]
        ids = sorted(set(np.concatenate(present).tolist())) if present else []
    palette = distinct_colors(len(ids))
    mapping = {int(i): tuple(float(c) for c in palette[k]) for k, i in enumerate(ids)}
    lut_ids = np.asarray(list(mapping), dtype=np.int64)
    colors = []
    for a in label_arrays:
        if a is None:
            colors.append(None)
            continue
        a = np.asarray(a, dtype=np.int64)
        pos = np.searchsorted(lut_ids, a)
        pos = np.clip(pos, 0, max(len(lut_ids) - 1, 0))
        known = (lut_ids[pos] == a) if len(lut_ids) else np.zeros(len(a), bool)
        c = np.tile(np.asarray(GREY), (len(a), 1))
        if len(lut_ids):
            c[known] = palette[pos[known]]
        colors.append(c)
    return mapping, colors


def patch_assignment(points: np.ndarray, centers: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """Patch id of each point (``-1``: in no patch), from kNN groups ``idx (G, K)`` around ``centers (G, 3)``.

    kNN groups overlap; a point in several groups is given to the nearest of those centres, so each patch is
    drawn as the compact blob the tokenizer sees around its centre.
    """
    g, k = idx.shape
    flat_idx = idx.reshape(-1)
    flat_grp = np.repeat(np.arange(g), k)
    d = np.linalg.norm(points[flat_idx] - centers[flat_grp], axis=1)
    # Sort by point, then distance: the first entry of each point is its nearest centre (no reliance on the
    # order in which numpy resolves duplicate fancy-index writes).
    order = np.lexsort((d, flat_idx))
    first = np.unique(flat_idx[order], return_index=True)[1]
    assign = np.full(len(points), -1, dtype=np.int64)
    assign[flat_idx[order][first]] = flat_grp[order][first]
    return assign
