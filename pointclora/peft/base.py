"""The adapter-wrapper contract shared by CLoRA and LoRA.

An :class:`AdapterLinear` keeps the frozen ``nn.Linear`` as ``base_layer`` (its tensors stay where they were, under
``<name>.base_layer.*``), adds a low-rank update and can fold it into ``base_layer.weight`` (``merge``) and take it back
out (``unmerge``). A fused layer can carry ``n_splits`` independent low-rank modules (LRMs) stacked along the output:
``attn.qkv`` with ``split_qkv`` is three LRMs q, k, v of shape ``in × in``.
"""

from __future__ import annotations

import math
from typing import Iterator

import torch
from torch import nn

__all__ = ["AdapterLinear", "PeftMergeError"]


class PeftMergeError(RuntimeError):
    """Merging would write non-finite values into the base weights."""


class AdapterLinear(nn.Module):
    """``y = base_layer(x) + s · Δ(dropout(x))``, ``x (..., in) -> y (..., n_splits · out)``.

    Subclasses implement :meth:`adapter_delta` (the efficient forward, never building ΔW), :meth:`delta_weight`
    (``(n_splits · out, in)``, the scaled ΔW, only for merging and tests), :meth:`adapter_parameters` and
    :meth:`adapter_flops_per_token`.
    """

    def __init__(self, base_layer: nn.Linear, n_splits: int, scaling: float, dropout: float) -> None:
        super().__init__()
        if not isinstance(base_layer, nn.Linear):
            raise TypeError(f"adapters wrap nn.Linear layers, got {type(base_layer).__name__}")
        if base_layer.out_features % n_splits != 0:
            raise ValueError(
                f"cannot split a Linear with out_features={base_layer.out_features} into {n_splits} equal LRMs"
            )
        self.base_layer = base_layer
        self.n_splits = n_splits
        self.in_features = base_layer.in_features
        self.out_features = base_layer.out_features // n_splits  # per LRM
        self.scaling = float(scaling)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False

    # --- to implement -----------------------------------------------------------------------------------------------
    def adapter_delta(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def delta_weight(self) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def adapter_parameters(self) -> Iterator[nn.Parameter]:  # pragma: no cover - abstract
        raise NotImplementedError

    def adapter_flops_per_token(self) -> int:  # pragma: no cover - abstract
        raise NotImplementedError

    # --- shared behaviour -------------------------------------------------------------------------------------------
    @property
    def weight(self) -> torch.Tensor:
        """The base weight (merged or not), so code that reads ``layer.weight`` keeps working."""
        return self.base_layer.weight

    @property
    def bias(self):
        return self.base_layer.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.base_layer(x)
        if self.merged:
            return y
        return y + self.adapter_delta(self.dropout(x)).to(y.dtype)

    @torch.no_grad()
    def merge(self, check_finite: bool = True) -> None:
        """Fold ``s · ΔW`` into ``base_layer.weight`` (no-op when already merged)."""
        if self.merged:
            return
        weight = self.base_layer.weight
        # Accumulate in at least float32 so a half-precision base does not lose the small update entirely.
        work = torch.promote_types(weight.dtype, torch.float32)
        delta = self.delta_weight().to(work)
        if check_finite and not torch.isfinite(delta).all():
            raise PeftMergeError(
                f"refusing to merge: the adapter update of a {type(self).__name__} "
                f"({self.in_features}->{self.n_splits}x{self.out_features}) contains NaN/Inf; base weights untouched"
            )
        weight.copy_((weight.to(work) + delta).to(weight.dtype))
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """Subtract ``s · ΔW`` again (restores the base weight to float rounding; no-op when not merged)."""
        if not self.merged:
            return
        weight = self.base_layer.weight
        work = torch.promote_types(weight.dtype, torch.float32)
        weight.copy_((weight.to(work) - self.delta_weight().to(work)).to(weight.dtype))
        self.merged = False

    def num_lrms(self) -> int:
        return self.n_splits

    def extra_repr(self) -> str:
        return (
            f"in={self.in_features}, out={self.out_features}, n_splits={self.n_splits}, "
            f"scaling={self.scaling:g}, merged={self.merged}"
        )


def kaiming_uniform_like_lora_(tensor: torch.Tensor, fan_in: int) -> None:
    """LoRA's ``kaiming_uniform_(A, a=sqrt(5))``: U(-1/sqrt(fan_in), 1/sqrt(fan_in)), written with the fan-in explicit
    so stacked factors (``(n·r, in)`` or ``(p·r, in)``) get the bound of a single ``(r, in)`` factor."""
    bound = 1.0 / math.sqrt(fan_in)
    with torch.no_grad():
        tensor.uniform_(-bound, bound)
