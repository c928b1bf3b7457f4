"""Exact farthest point sampling for one large cloud on the CPU, in numpy, touching only the points that can change.

Plain FPS updates every point's distance-to-the-chosen-set after every pick: ``S × N`` work and ``S`` Python-level
iterations of numpy calls. Here, with the same picks to the bit:

1. **Buckets.** Points are sorted along a Morton (z-order) curve and cut into buckets of ``L`` consecutive points,
   each with its bounding box and the largest distance it holds (``bucket_max``). A pick ``c`` can only lower the
   distances in a bucket whose box lies closer to ``c`` than ``sqrt(bucket_max)``; the others are skipped.
2. **Several picks per round.** The points with the largest distances are the only candidates for the next picks:
   take the ``K`` buckets with the largest ``bucket_max``; ``T`` is the largest ``bucket_max`` outside them, and
   every point outside the candidate set (the points of those buckets above ``T``) holds at most ``T``. Picking a
   candidate only lowers the others' distances, and those changes are exact from the candidates' pairwise
   distances, so picks continue among the candidates while the best of them stays above ``T``. Then all the
   round's picks update the buckets at once.

Semantics are those of :func:`pointclora.ops.farthest_point_sample`: given start index, ties to the lowest index
(candidates are kept in index order and ``argmax`` returns the first maximum; a maximum equal to ``T`` falls back
to a full scan), points that may never be picked hold ``-1``. Every squared distance is computed as
``((px - cx)² + (py - cy)²) + (pz - cz)²`` in the input precision, the order of the plain loop, so the minima and
hence the picks are bitwise those of the plain loop; a box's lower bound uses the same monotone operations, so it
never exceeds a distance computed inside the box.
"""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np

__all__ = ["fps_bucket"]

_SPREAD: Dict[int, np.ndarray] = {}


def _spread_table(bits: int) -> np.ndarray:
    """``v -> v`` with two zero bits after each bit (Morton interleaving by table lookup)."""
    table = _SPREAD.get(bits)
    if table is None:
        v = np.arange(1 << bits, dtype=np.uint32)
        table = np.zeros(1 << bits, dtype=np.uint32)
        for b in range(bits):
            table |= ((v >> b) & 1) << (3 * b)
        _SPREAD[bits] = table
    return table


def _morton_order(planar: np.ndarray, bits: int) -> np.ndarray:
    """Permutation sorting ``planar (3, n)`` along a z-order curve of ``2^bits`` cells per axis (stable)."""
    lo = planar.min(1)
    extent = float((planar.max(1) - lo).max())
    scale = planar.dtype.type(((1 << bits) - 1) / extent) if extent > 0 else planar.dtype.type(0)
    table = _spread_table(bits)
    key = None
    for c in range(3):
        q = planar[c] - lo[c]
        q *= scale
        cell = q.astype(np.int32)
        np.clip(cell, 0, (1 << bits) - 1, out=cell)
        k = table[cell]
        if key is None:
            key = k
        else:
            k <<= c
            key |= k
    # numpy's stable sort of 16-bit keys is a radix sort: two passes of 15 bits beat one comparison sort of 30.
    if 3 * bits <= 16:
        return np.argsort(key.astype(np.uint16), kind="stable")
    low = np.argsort((key & 0x7FFF).astype(np.uint16), kind="stable")
    return low[np.argsort((key[low] >> 15).astype(np.uint16), kind="stable")]


def _bucket_size(n: int) -> int:
    """Points per bucket: larger clouds pay per bucket in every round, so buckets grow with ``sqrt(n)``."""
    return int(min(256, max(16, 2 ** round(np.log2(max(np.sqrt(n) / 3.0, 1.0))))))


def fps_bucket(
    planar: np.ndarray,
    num_samples: int,
    start: int,
    never_pick: Optional[np.ndarray] = None,
    bucket_size: Optional[int] = None,
    top_buckets: int = 32,
    max_candidates: int = 256,
) -> np.ndarray:
    """Exact FPS of one cloud. ``planar (3, n)`` float32/float64 -> ``(num_samples,)`` int64 indices.

    ``never_pick (n,)`` bool marks points that are never picked after the start (padding, the near-origin skip).
    ``bucket_size``, ``top_buckets`` and ``max_candidates`` change the speed only, never the result.
    """
    n = planar.shape[1]
    dtype = planar.dtype
    L = bucket_size or _bucket_size(n)
    M = -(-n // L)
    bits = int(min(10, max(2, np.ceil(np.log2(max(M, 2)) / 3) + 1)))
    order = _morton_order(planar, bits)
    if M * L > n:  # pad the last bucket with copies of its last point (the box does not grow); never picked
        order = np.concatenate([order, np.full(M * L - n, order[-1])])
    orig = order.reshape(M, L)
    PX, PY, PZ = (planar[c][order].reshape(M, L) for c in range(3))
    lo = [a.min(1)[:, None] for a in (PX, PY, PZ)]
    hi = [a.max(1)[:, None] for a in (PX, PY, PZ)]
    MD = np.full((M, L), np.inf, dtype=dtype)
    flat = MD.reshape(-1)
    flat[n:] = -1.0
    if never_pick is not None:
        flat[:n][never_pick[order[:n]]] = -1.0
    BM = MD.max(1)
    X, Y, Z = planar

    def update(cx: np.ndarray, cy: np.ndarray, cz: np.ndarray) -> None:
        """Lower every distance by the ``m`` picks ``(cx, cy, cz)``, visiting only buckets that can change."""
        lb = None
        for c, cc in enumerate((cx, cy, cz)):
            gap = np.maximum(lo[c] - cc, cc - hi[c])  # (M, m)
            np.maximum(gap, 0, out=gap)
            gap *= gap
            if lb is None:
                lb = gap
            else:
                lb += gap
        bi, pi = np.nonzero(lb < BM[:, None])  # (bucket, pick) pairs, bucket-major
        if bi.size == 0:
            return
        d = PX[bi] - cx[pi, None]
        d *= d
        t = PY[bi] - cy[pi, None]
        t *= t
        d += t
        t = PZ[bi] - cz[pi, None]
        t *= t
        d += t  # (pairs, L)
        first = np.empty(bi.size, dtype=bool)
        first[0] = True
        np.not_equal(bi[1:], bi[:-1], out=first[1:])
        if not first.all():  # buckets hit by several picks: min over them, one rank of pairs at a time
            starts = np.flatnonzero(first)
            group = np.cumsum(first) - 1
            rest = np.flatnonzero(~first)
            rank = rest - starts[group[rest]]
            rest = rest[np.argsort(rank, kind="stable")]
            cuts = np.flatnonzero(np.diff(np.sort(rank))) + 1
            reduced = d[starts]
            for seg in np.split(rest, cuts):
                g = group[seg]
                reduced[g] = np.minimum(reduced[g], d[seg])
            bi, d = bi[starts], reduced
        new = np.minimum(MD[bi], d)
        MD[bi] = new
        BM[bi] = new.max(1)

    def full_scan_pick() -> int:
        """The lowest index holding the largest distance (used when the maximum ties with ``T``)."""
        best = flat.max()
        return int(order[np.flatnonzero(flat == best)].min())

    picks = np.empty(num_samples, dtype=np.int64)
    picks[0] = start
    count = 1
    update(X[start : start + 1], Y[start : start + 1], Z[start : start + 1])
    K = min(top_buckets, M - 1)
    while count < num_samples:
        if K > 0:
            part = np.argpartition(BM, M - K - 1)
            top, T = part[M - K :], BM[part[M - K - 1]]
        else:
            top, T = np.arange(M), -np.inf
        sub = MD[top]
        pos = np.flatnonzero(sub > T)
        rows, cols = top[pos // L], pos % L
        values = sub.reshape(-1)[pos]
        if pos.size > max_candidates:  # keep the largest; raise T to the largest left out
            part = np.argpartition(values, pos.size - max_candidates - 1)
            T = values[part[pos.size - max_candidates - 1]]
            keep = part[pos.size - max_candidates :]
            keep = keep[values[keep] > T]
            rows, cols, values = rows[keep], cols[keep], values[keep]
        if values.size == 0:
            j = full_scan_pick()
            picks[count] = j
            count += 1
            update(X[j : j + 1], Y[j : j + 1], Z[j : j + 1])
            continue
        cand = orig[rows, cols]
        by_index = np.argsort(cand)  # argmax then returns the lowest index among equal maxima
        cand, values = cand[by_index], values[by_index]
        cx, cy, cz = X[cand], Y[cand], Z[cand]
        # D[j, i] = squared distance of candidate i from candidate j, in the plain loop's operation order.
        D = cx - cx[:, None]
        D *= D
        t = cy - cy[:, None]
        t *= t
        D += t
        t = cz - cz[:, None]
        t *= t
        D += t
        chosen = []
        need = num_samples - count
        while len(chosen) < need:
            j = int(values.argmax())
            if not values[j] > T:
                break
            chosen.append(j)
            np.minimum(values, D[j], out=values)
        if not chosen:
            j = full_scan_pick()
            picks[count] = j
            count += 1
            update(X[j : j + 1], Y[j : j + 1], Z[j : j + 1])
            continue
        chosen = np.asarray(chosen)
        picks[count : count + chosen.size] = cand[chosen]
        count += chosen.size
        update(cx[chosen], cy[chosen], cz[chosen])
    return picks
