"""A part label for every point of a user's scan, in the file's order (issue 19 item 4).

The model sees ``num_points`` of the scan (farthest points). Its per-point class probabilities are carried back to
every input point with the 3-NN inverse-distance interpolation the segmentation head itself uses to go from patch
centres to points (:func:`pointclora.ops.three_nn_interpolate`), averaged over ``views`` sub-samples (view 0: FPS from
the first point, the others: FPS from seeded random starts), restricted to the category's parts, then argmax.
A point the model saw keeps (view 0) its own prediction: its nearest neighbour is itself at distance 0.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch import nn

__all__ = ["labels_for_every_point", "write_point_labels"]


@torch.no_grad()
def labels_for_every_point(model: nn.Module, xyz: torch.Tensor, category_index: int, parts: Sequence[int],
                           num_points: int, views: int = 1, seed: int = 0) -> Dict[str, Any]:  # fmt: skip
    """``xyz (M, 3)`` the whole scan (normalised as in training) -> ``{"labels": (M,) int64 global part ids,
    "probs": (M, P) averaged probabilities, "sampled": (views, num_points) indices the model saw}``."""
    from ..ops import three_nn_interpolate
    from ..ops.sampling import farthest_point_sample

    if views < 1:
        raise ValueError(f"views must be >= 1, got {views}")
    m = xyz.shape[0]
    n = min(int(num_points), m)
    cloud = xyz[None].float()  # 1 M 3
    cls = torch.tensor([int(category_index)], device=xyz.device)
    total: Optional[torch.Tensor] = None
    sampled: List[torch.Tensor] = []
    gen = torch.Generator().manual_seed(int(seed))
    for v in range(views):
        pick = farthest_point_sample(cloud.cpu(), n, start="first" if v == 0 else "random", generator=gen).idx
        pick = pick.to(xyz.device)
        sub = cloud[:, pick[0]]  # 1 n 3
        probs = torch.softmax(model(sub, cls).float(), dim=-1)  # 1 n P
        full = three_nn_interpolate(cloud, sub, probs)  # 1 M P
        total = full if total is None else total + full
        sampled.append(pick[0].cpu())
    probs = (total / views)[0]
    part_ids = torch.as_tensor(list(parts), dtype=torch.long, device=probs.device)
    labels = part_ids[probs[:, part_ids].argmax(-1)]
    return {"labels": labels.cpu(), "probs": probs.cpu(), "sampled": torch.stack(sampled)}


def write_point_labels(path: os.PathLike | str, xyz: np.ndarray, labels: np.ndarray) -> Path:
    """One row per input point, in input order: ``x y z label`` (``.txt``, the cattle files' own layout) or an ASCII
    ``.ply`` with an int ``label`` vertex property. Written atomically."""
    from ..utils.atomic import atomic_write_text

    path = Path(path)
    xyz = np.asarray(xyz, dtype=np.float64)[:, :3]
    labels = np.asarray(labels, dtype=np.int64).reshape(-1)
    if len(xyz) != len(labels):
        raise ValueError(f"{path}: {len(xyz)} points but {len(labels)} labels")
    rows = "".join(f"{x:.6f} {y:.6f} {z:.6f} {int(lab)}\n" for (x, y, z), lab in zip(xyz, labels))
    suffix = path.suffix.lower()
    if suffix == ".ply":
        header = ("ply\nformat ascii 1.0\ncomment pointclora part labels, one per input point, input order\n"
                  f"element vertex {len(xyz)}\nproperty float x\nproperty float y\nproperty float z\n"
                  "property int label\nend_header\n")  # fmt: skip
        atomic_write_text(header + rows, path)
    elif suffix == ".txt":
        atomic_write_text(rows, path)
    else:
        raise ValueError(f"{path}: per-point labels are written as .txt or .ply, got {suffix or 'no suffix'!r}")
    return path
