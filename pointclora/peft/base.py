"""The adapter-wrapper contract shared by CLoRA and LoRA.

An :class:`AdapterLinear` keeps the frozen ``nn.Linear`` as ``base_layer`` (its tensors stay where they were, under
``<name>.base_layer.*``), adds a low-rank update and can fold it into ``base_layer.weight`` (``merge``) and take it back
out (``unmerge``). A fused layer can carry ``n_splits`` independent low-rank modules (LRMs) stacked along the output:
``attn.qkv`` with ``split_qkv`` is three LRMs q, k, v of shape ``in × in``.

**Fused forward.** An adapter whose update factors as ``ΔW = s · Bp A`` (``A (k, in)``, ``Bp (n·out, k)``, see
:meth:`AdapterLinear.low_rank_factors`) runs as one GEMM with ``W + s · Bp A`` built per step (``out·in·k`` work, not
per token), and a backward that gets the factor gradients from ``z = x Aᵀ`` (:class:`FusedLowRankLinear`). Per token
that drops the adapter's output GEMM, its add and scale passes and the adapter's share of ``∂L/∂x`` (folded into the
one ``∂L/∂x`` GEMM), and only ``x`` is kept for the backward (as LoRA keeps it for ``∂A``). The two-GEMM path
(:meth:`adapter_delta`) stays for adapter dropout, autocast and mixed dtypes, and for tests
(``use_fused_forward(False)``).
"""

from __future__ import annotations

import contextlib
import math
from typing import Iterator, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn
from torch.autograd.function import once_differentiable

__all__ = ["AdapterLinear", "FusedLowRankLinear", "PeftMergeError", "use_fused_forward"]

_FUSED = True


@contextlib.contextmanager
def use_fused_forward(enabled: bool):
    """Switch the fused adapter forward on or off inside the block (tests and benchmarks compare the two paths)."""
    global _FUSED
    old, _FUSED = _FUSED, bool(enabled)
    try:
        yield
    finally:
        _FUSED = old


def _autocast_on(device_type: str) -> bool:
    try:
        return torch.is_autocast_enabled(device_type)
    except TypeError:  # torch < 2.4: no device argument
        if device_type == "cpu":
            return torch.is_autocast_cpu_enabled()
        return torch.is_autocast_enabled()


class FusedLowRankLinear(torch.autograd.Function):
    """``y = x (W + s · Bp A)ᵀ + b``: ``x (..., in)``, ``W (m, in)``, ``b (m,)`` or None, ``A (k, in)``, ``Bp (m, k)``.

    Backward, with ``g = ∂L/∂y`` flattened to ``(T, m)`` and ``z = x Aᵀ (T, k)`` recomputed (cheaper than keeping it):
    ``∂x = g (W + s Bp A)`` (merged again), ``∂Bp = s gᵀ z``, ``∂A = s (g Bp)ᵀ x``; ``∂W``/``∂b`` only when they
    require grad.
    """

    @staticmethod
    def forward(ctx, x, weight, bias, A, Bp, scaling: float):
        # The merged weight is rebuilt in the backward rather than kept: a copy of every wrapped weight would stay
        # alive until the backward (a model's worth of weights), for out·in·k work, small beside the per-token GEMMs.
        ctx.save_for_backward(x, weight, A, Bp)
        ctx.scaling = scaling
        return F.linear(x, torch.addmm(weight, Bp, A, alpha=scaling), bias)

    @staticmethod
    @once_differentiable
    def backward(ctx, grad):
        x, weight, A, Bp = ctx.saved_tensors
        need_x, need_w, need_b, need_a, need_bp = ctx.needs_input_grad[:5]
        s = ctx.scaling
        x2 = x.reshape(-1, x.shape[-1])
        g2 = grad.reshape(-1, grad.shape[-1])
        grad_x = grad_w = grad_b = grad_a = grad_bp = None
        if need_x:
            grad_x = (g2 @ torch.addmm(weight, Bp, A, alpha=s)).view(x.shape)
        if need_a:
            grad_a = (g2 @ Bp).T @ x2  # (k, in)
            grad_a.mul_(s)
        if need_bp:
            grad_bp = g2.T @ (x2 @ A.T)  # (m, k)
            grad_bp.mul_(s)
        if need_w:
            grad_w = g2.T @ x2
        if need_b:
            grad_b = g2.sum(0)
        return grad_x, grad_w, grad_b, grad_a, grad_bp, None


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

    def low_rank_factors(self) -> Optional[Tuple[torch.Tensor, torch.Tensor]]:
        """``(A (k, in), Bp (n·out, k))`` with ``delta_weight() == scaling · Bp @ A``, built from the trainable
        tensors with autograd; ``None`` (the default) keeps the two-GEMM :meth:`adapter_delta` path."""
        return None

    # --- shared behaviour -------------------------------------------------------------------------------------------
    @property
    def weight(self) -> torch.Tensor:
        """The base weight (merged or not), so code that reads ``layer.weight`` keeps working."""
        return self.base_layer.weight

    @property
    def bias(self):
        return self.base_layer.bias

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.merged:
            return self.base_layer(x)
        if self._fusable(x):
            factors = self.low_rank_factors()
            if factors is not None:
                base = self.base_layer
                return FusedLowRankLinear.apply(x, base.weight, base.bias, factors[0], factors[1], self.scaling)
        y = self.base_layer(x)
        return y + self.adapter_delta(self.dropout(x)).to(y.dtype)

    def _fusable(self, x: torch.Tensor) -> bool:
        """The fused forward applies when the base and the adapter see the same ``x`` (no active adapter dropout), in
        one dtype, outside autocast (whose casts the custom backward does not replay), through a plain Linear."""
        if not _FUSED or (self.training and isinstance(self.dropout, nn.Dropout) and self.dropout.p > 0):
            return False
        if _autocast_on(x.device.type):
            return False
        base = self.base_layer
        hooked = base._forward_hooks or base._forward_pre_hooks
        return type(base) is nn.Linear and x.dtype == base.weight.dtype and not hooked

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
