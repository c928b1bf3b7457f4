"""Exact farthest point sampling of one cloud, compiled with numba (used when numba is importable).

The plain loop updates all ``n`` distances after each of the ``S`` picks. Here the points are sorted along a Morton
(z-order) curve and cut into blocks of ``L`` consecutive points; each block keeps its bounding box and its largest
distance to the chosen set (``block_max``, with the lowest original index holding it). A pick ``c`` can only lower
the distances of a block whose box lies closer to ``c`` than ``block_max``; every other block is skipped after a
six-number test. The next pick is the block maximum that is largest, ties to the lowest original index. Work per pick
is ``n / L`` box tests plus the few blocks near ``c``, in compiled code (no per-pick interpreter overhead).

The picks are those of :func:`pointclora.ops.farthest_point_sample`'s plain loop, bit for bit: every squared
distance is ``((px - cx)² + (py - cy)²) + (pz - cz)²`` in the input precision (no fast-math: no reassociation or
fused multiply-add), and a box's lower bound is built from the same monotone operations on the box's faces, so it
never exceeds a distance computed inside the box and a skipped block could not have changed.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

__all__ = ["has_numba", "fps_blocks"]


def _block_size(n: int) -> int:
    """Points per block: every pick tests every block, so blocks grow with the cloud (``~n^0.4``; measured on
    sphere surfaces, 1,024 picks: the best sizes were 64 at 8 k, 128 at 100 k, 256-512 at 1 M points)."""
    return int(min(512, max(16, 2 ** round(0.4 * np.log2(max(n, 2))))))


def _morton_sort_kernel(x, y, z, bits):  # pragma: no cover - compiled
    """A stable counting sort of the points by their z-order cell (``2^bits`` cells per axis, one pass: the cells
    only need to be finer than the blocks). Returns ``(order, x, y, z sorted)``."""
    n = x.shape[0]
    lo_x, lo_y, lo_z = x[0], y[0], z[0]
    hi_x, hi_y, hi_z = x[0], y[0], z[0]
    for i in range(n):
        lo_x, hi_x = min(lo_x, x[i]), max(hi_x, x[i])
        lo_y, hi_y = min(lo_y, y[i]), max(hi_y, y[i])
        lo_z, hi_z = min(lo_z, z[i]), max(hi_z, z[i])
    extent = max(max(hi_x - lo_x, hi_y - lo_y), hi_z - lo_z)
    top = (1 << bits) - 1
    scale = top / extent if extent > 0 else 0.0
    key = np.empty(n, np.int64)
    for i in range(n):
        k = 0
        cells = (int((x[i] - lo_x) * scale), int((y[i] - lo_y) * scale), int((z[i] - lo_z) * scale))
        for axis in range(3):
            c = min(max(cells[axis], 0), top)
            for b in range(bits):
                k |= ((c >> b) & 1) << (3 * b + axis)
        key[i] = k
    start = np.zeros((1 << (3 * bits)) + 1, np.int64)
    for i in range(n):
        start[key[i] + 1] += 1
    for c in range(1, start.shape[0]):
        start[c] += start[c - 1]
    order = np.empty(n, np.int64)
    for i in range(n):
        order[start[key[i]]] = i
        start[key[i]] += 1
    xs, ys, zs = np.empty_like(x), np.empty_like(y), np.empty_like(z)
    for j in range(n):
        xs[j], ys[j], zs[j] = x[order[j]], y[order[j]], z[order[j]]
    return order, xs, ys, zs


def _fps_blocks_kernel(px, py, pz, orig, never, num_samples, start_pos, L):  # pragma: no cover - compiled
    """``px/py/pz (n,)`` in Morton order, ``orig (n,)`` their original indices, ``never (n,)`` bool -> picks."""
    n = px.shape[0]
    M = (n + L - 1) // L
    md = np.empty(n, px.dtype)
    for i in range(n):
        md[i] = -1.0 if never[i] else np.inf
    lox, loy, loz = np.empty(M, px.dtype), np.empty(M, px.dtype), np.empty(M, px.dtype)
    hix, hiy, hiz = np.empty(M, px.dtype), np.empty(M, px.dtype), np.empty(M, px.dtype)
    bmax = np.empty(M, px.dtype)
    barg = np.zeros(M, np.int64)
    for b in range(M):
        s, e = b * L, min(b * L + L, n)
        lox[b], loy[b], loz[b] = px[s], py[s], pz[s]
        hix[b], hiy[b], hiz[b] = px[s], py[s], pz[s]
        for i in range(s + 1, e):
            lox[b], hix[b] = min(lox[b], px[i]), max(hix[b], px[i])
            loy[b], hiy[b] = min(loy[b], py[i]), max(hiy[b], py[i])
            loz[b], hiz[b] = min(loz[b], pz[i]), max(hiz[b], pz[i])
        bmax[b] = np.inf  # untouched: the first pick updates every block
    zero = px.dtype.type(0.0)
    picks = np.empty(num_samples, np.int64)
    cur = start_pos
    for k in range(num_samples):
        picks[k] = orig[cur]
        if k + 1 == num_samples:
            break
        cx, cy, cz = px[cur], py[cur], pz[cur]
        for b in range(M):
            gx = max(max(lox[b] - cx, cx - hix[b]), zero)
            gy = max(max(loy[b] - cy, cy - hiy[b]), zero)
            gz = max(max(loz[b] - cz, cz - hiz[b]), zero)
            if (gx * gx + gy * gy) + gz * gz >= bmax[b]:
                continue  # every distance in the box is at least that bound: none can drop
            s, e = b * L, min(b * L + L, n)
            best = -np.inf
            for i in range(s, e):  # branch-free, so the compiler can vectorise it
                dx, dy, dz = px[i] - cx, py[i] - cy, pz[i] - cz
                d = (dx * dx + dy * dy) + dz * dz
                v = min(md[i], d)
                md[i] = v
                best = max(best, v)
            arg = -1
            for i in range(s, e):  # the lowest original index holding the block's maximum
                if md[i] == best and (arg < 0 or orig[i] < orig[arg]):
                    arg = i
            bmax[b], barg[b] = best, arg
        best, cur = -np.inf, barg[0]
        for b in range(M):  # the largest block maximum; ties to the lowest original index, as the plain loop
            v = bmax[b]
            if v > best or (v == best and orig[barg[b]] < orig[cur]):
                best, cur = v, barg[b]
    return picks


_KERNELS = None  # (morton sort, block FPS) compiled on first use; False where numba cannot be imported


def _kernels():
    """numba is imported here, not with the package: it adds ~0.25 s to every start (every CLI call) and only the
    single-cloud FPS needs it."""
    global _KERNELS
    if _KERNELS is None:
        try:
            import numba
        except Exception:  # ImportError, or a numba built for another numpy
            _KERNELS = False
        else:
            jit = numba.njit(cache=True, nogil=True, boundscheck=False)
            _KERNELS = (jit(_morton_sort_kernel), jit(_fps_blocks_kernel))
    return _KERNELS


def has_numba() -> bool:
    """True when numba can be imported (imports it on the first call)."""
    return bool(_kernels())


def fps_blocks(
    planar: np.ndarray, num_samples: int, start: int, never_pick: Optional[np.ndarray] = None,
    block_size: Optional[int] = None,
) -> np.ndarray:  # fmt: skip
    """Exact FPS of one cloud: ``planar (3, n)`` float32/float64 -> ``(num_samples,)`` int64 indices.

    ``never_pick (n,)`` bool marks points never picked after the start (the near-origin skip). ``block_size``
    changes the speed only, never the result. Needs numba (:func:`has_numba`).
    """
    if not has_numba():
        raise RuntimeError("fps_blocks needs numba (pip install numba); farthest_point_sample falls back without it")
    n = planar.shape[1]
    L = int(block_size or _block_size(n))
    # At least ~8 cells per block, at most 2^21 cells (the counting sort's table).
    bits = int(min(7, max(2, np.ceil(np.log2(max(-(-n // L), 2)) / 3) + 1)))
    planar = np.ascontiguousarray(planar)
    morton_sort, blocks = _kernels()
    order, xs, ys, zs = morton_sort(planar[0], planar[1], planar[2], bits)
    never = np.zeros(n, dtype=np.bool_) if never_pick is None else np.asarray(never_pick, dtype=np.bool_)[order]
    start_pos = int(np.flatnonzero(order == start)[0])
    return blocks(xs, ys, zs, order, never, int(num_samples), start_pos, L)
