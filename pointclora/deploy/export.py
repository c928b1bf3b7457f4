"""Export a (merged) model end to end from raw points ``(B, N, 3)`` to ONNX or TorchScript.

The graph holds the whole tokenizer (FPS, kNN, grouping) and, for part segmentation, the 3-NN interpolation, with a
dynamic batch size. The eager ops cannot be traced as they are: their argument checks turn tensors into Python
numbers (``int(lengths.min())``, which ``torch.export`` refuses as data-dependent), CPU FPS of one cloud runs in
numpy/numba, and the batched FPS writes into ``out=`` buffers. So :func:`prepare_for_export` swaps in
trace-friendly twins *on a copy of the model* (the eager model and its results are never touched):

- :class:`ExportGrouper` for ``group_divider``: FPS as a loop of exactly ``num_groups`` steps (unrolled in the graph),
  the same float32 arithmetic and first-index tie-break as the eager FPS, then kNN by ``topk`` on the same distances;
- :class:`ExportPropagation` for a segmentation model's ``propagation_0``: the same 3-NN inverse-distance weights.

Adapters are merged first (a merged model is a plain backbone); a method whose update cannot merge exports unmerged
through the plain two-GEMM adapter forward. Exported graphs run in eval mode (BatchNorm statistics, no dropout).
"""

from __future__ import annotations

import copy
import os
import warnings
from pathlib import Path
from typing import Dict, Optional, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.interpolate import INTERPOLATION_EPS
from ..ops.sampling import NEAR_ORIGIN_SQ

__all__ = [
    "ExportGrouper",
    "ExportPropagation",
    "ExportableModel",
    "prepare_for_export",
    "export_model",
    "FORMATS",
]

FORMATS = ("onnx", "torchscript")
PathLike = Union[str, os.PathLike]


def fps_fixed(xyz: torch.Tensor, num_samples: int, skip_near_origin: bool = False) -> torch.Tensor:
    """FPS as exactly ``num_samples`` traced steps: ``xyz (B, N, 3) float32 -> idx (B, S) int64``.

    Same picks as :func:`pointclora.ops.farthest_point_sample` (start at index 0, squared distances summed x, y, z in
    float32, ``argmax`` keeps the first maximum; ``skip_near_origin`` keeps points with ``|p|² <= 1e-3`` at -1).
    """
    x, y, z = xyz[..., 0], xyz[..., 1], xyz[..., 2]  # (B, N)
    min_dist = torch.full_like(x, float("inf"))
    if skip_near_origin:
        min_dist = torch.where(x * x + y * y + z * z > NEAR_ORIGIN_SQ, min_dist, torch.full_like(x, -1.0))
    current = torch.zeros_like(x[:, 0], dtype=torch.int64)  # (B,)
    picks = []
    for s in range(num_samples):
        picks.append(current)
        if s == num_samples - 1:
            break
        last = torch.gather(xyz, 1, current.view(-1, 1, 1).expand(-1, 1, 3))  # (B, 1, 3)
        dx, dy, dz = x - last[..., 0], y - last[..., 1], z - last[..., 2]
        min_dist = torch.minimum(min_dist, dx * dx + dy * dy + dz * dz)
        current = min_dist.argmax(dim=1)
    return torch.stack(picks, dim=1)


def _distances(query: torch.Tensor, points: torch.Tensor) -> torch.Tensor:
    """Euclidean distances ``(B, S, 3) x (B, N, 3) -> (B, S, N)`` from coordinate differences (as the eager kNN's
    ``cdist`` without the matrix-multiply shortcut: a point finds itself at exactly 0)."""
    d2 = (query[..., 0:1] - points[..., 0].unsqueeze(1)) ** 2
    d2 = d2 + (query[..., 1:2] - points[..., 1].unsqueeze(1)) ** 2
    d2 = d2 + (query[..., 2:3] - points[..., 2].unsqueeze(1)) ** 2
    return torch.sqrt(d2)


def _gather_rows(x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``x (B, N, C)``, ``idx (B, S, K)`` -> ``(B, S, K, C)``."""
    B, S, K = idx.shape
    flat = idx.reshape(B, S * K, 1).expand(-1, -1, x.shape[-1])
    return torch.gather(x, 1, flat).reshape(B, S, K, x.shape[-1])


class ExportGrouper(nn.Module):
    """Trace-friendly ``PointGrouper``: ``points (B, N, 3+)`` -> a ``Grouping`` (neighborhood ``(B, G, K, 3)``,
    centers ``(B, G, 3)``, center_idx ``(B, G)``, idx ``(B, G, K)``), no data-dependent Python."""

    def __init__(self, num_groups: int, group_size: int, skip_near_origin: bool = False) -> None:
        super().__init__()
        self.num_groups = num_groups
        self.group_size = group_size
        self.skip_near_origin = skip_near_origin

    def forward(self, points: torch.Tensor, lengths: Optional[torch.Tensor] = None):
        from ..ops import Grouping

        if lengths is not None:
            raise ValueError("the exported model takes full clouds (B, N, 3); pad-free batches only")
        xyz = points[..., :3].float()
        center_idx = fps_fixed(xyz, self.num_groups, self.skip_near_origin)
        centers = torch.gather(xyz, 1, center_idx.unsqueeze(-1).expand(-1, -1, 3))
        idx = _distances(centers, xyz).topk(self.group_size, dim=-1, largest=False, sorted=True).indices
        neighborhood = _gather_rows(xyz, idx) - centers.unsqueeze(2)
        return Grouping(neighborhood.to(points.dtype), centers.to(points.dtype), center_idx, idx)


class ExportPropagation(nn.Module):
    """Trace-friendly ``PointNetFeaturePropagation`` sharing the original's layers:
    ``(xyz (B, N, 3), centers (B, G, 3), features (B, C, G)) -> (B, mlp[-1], N)``."""

    def __init__(self, original: nn.Module) -> None:
        super().__init__()
        self.mlp_convs = original.mlp_convs
        self.mlp_bns = original.mlp_bns

    def forward(self, xyz: torch.Tensor, centers: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        source = features.transpose(1, 2)  # (B, G, C)
        k = min(3, centers.shape[1])
        d, idx = _distances(xyz, centers).topk(k, dim=-1, largest=False, sorted=True)
        weight = 1.0 / (d * d + INTERPOLATION_EPS)  # squared distances, as the eager op
        weight = weight / weight.sum(dim=2, keepdim=True)
        interpolated = (_gather_rows(source, idx) * weight.unsqueeze(-1).to(source.dtype)).sum(dim=2)
        x = torch.cat([xyz, interpolated], dim=-1).transpose(1, 2)
        for conv, bn in zip(self.mlp_convs, self.mlp_bns):
            x = F.relu(bn(conv(x)))
        return x


class ExportableModel(nn.Module):
    """The graph's entry point. Classification: ``points (B, N, 3) -> logits (B, num_classes)``. Part segmentation:
    ``(points (B, N, 3), category (B,) int64) -> logits (B, N, num_parts)`` (the category one-hot built inside)."""

    def __init__(self, model: nn.Module, unmerged_adapters: bool = False) -> None:
        super().__init__()
        self.model = model
        self.segmentation = hasattr(model, "num_categories")
        #: adapters that could not merge: traced through their plain two-GEMM forward (no custom autograd op)
        self.unmerged_adapters = unmerged_adapters

    def forward(self, points: torch.Tensor, category: Optional[torch.Tensor] = None) -> torch.Tensor:
        if not self.segmentation:
            return self.model(points)
        onehot = F.one_hot(category.reshape(-1).long(), self.model.num_categories).to(points.dtype)
        return self.model(points, onehot)


def prepare_for_export(model: nn.Module) -> ExportableModel:
    """A merged, eval-mode copy of ``model`` with the trace-friendly tokenizer (module docstring)."""
    from ..peft import can_merge, merge_and_unload
    from ..peft.base import AdapterLinear

    model = copy.deepcopy(model).eval()
    model.__dict__.pop("_pointclora_adapters", None)  # other named adapters of the copy: not part of this graph
    unmerged = False
    if getattr(model, "peft_config", None) is not None:
        if can_merge(model) or not any(isinstance(m, AdapterLinear) for m in model.modules()):
            merge_and_unload(model)
        else:  # cannot merge: export the two-GEMM adapter forward, which traces as plain ops
            unmerged = True
    grouper = getattr(model, "group_divider", None)
    if grouper is None or not hasattr(grouper, "num_groups"):
        raise ValueError(f"{type(model).__name__} has no point grouper (group_divider): only point models export")
    model.group_divider = ExportGrouper(grouper.num_groups, grouper.group_size, grouper.skip_near_origin)
    if hasattr(model, "propagation_0"):
        model.propagation_0 = ExportPropagation(model.propagation_0)
    return ExportableModel(model, unmerged_adapters=unmerged).eval()


def _example(wrapper: ExportableModel, num_points: int, batch: int = 2) -> Tuple[torch.Tensor, ...]:
    gen = torch.Generator().manual_seed(0)
    dtype = next(wrapper.parameters()).dtype
    points = torch.rand(batch, num_points, 3, generator=gen, dtype=dtype) * 2 - 1
    if wrapper.segmentation:
        return points, torch.zeros(batch, dtype=torch.int64)
    return (points,)


def export_model(model: nn.Module, out: PathLike, fmt: str = "onnx", num_points: int = 1024,
                 opset: int = 17) -> Path:  # fmt: skip
    """Export ``model`` (classification or part segmentation, adapters merged) to ``out``; written atomically.

    ONNX inputs ``points`` (batch, N, 3) float32 [and ``category`` (batch,) int64], output ``logits``; the batch axis
    is dynamic (the point count is fixed at ``num_points``: FPS unrolls one step per group). TorchScript: a traced
    module with the same call signature.
    """
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {FORMATS}, got {fmt!r}")
    wrapper = prepare_for_export(model)
    groups = wrapper.model.group_divider
    if num_points < max(groups.num_groups, groups.group_size):
        raise ValueError(f"num_points={num_points} is below the model's {groups.num_groups} groups / "
                         f"{groups.group_size} points per group")  # fmt: skip
    example = _example(wrapper, num_points)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    from ..peft.base import use_fused_forward

    try:
        with torch.no_grad(), use_fused_forward(not wrapper.unmerged_adapters):
            if fmt == "onnx":
                _export_onnx(wrapper, example, tmp, opset)
            else:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # the tracer's notes on shapes read as numbers (see below)
                    traced = torch.jit.trace(wrapper, example, check_trace=False)
                traced.save(str(tmp))
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return out


def _export_onnx(wrapper: ExportableModel, example: Tuple[torch.Tensor, ...], path: Path, opset: int) -> None:
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise ImportError("ONNX export needs the onnx package: pip install 'pointclora[deploy]'") from None
    names = ["points", "category"][: len(example)]
    axes: Dict[str, Dict[int, str]] = {n: {0: "batch"} for n in names}
    axes["logits"] = {0: "batch"}
    with warnings.catch_warnings():
        # The tracer warns about every shape it reads as a Python number; the batch axis stays symbolic regardless.
        warnings.simplefilter("ignore")
        torch.onnx.export(wrapper, example, str(path), input_names=names, output_names=["logits"],
                          dynamic_axes=axes, opset_version=opset, dynamo=False)  # fmt: skip
