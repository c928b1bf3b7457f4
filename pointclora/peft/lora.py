"""LoRA baseline, like for like with CLoRA: same targets (q, k, v split from ``attn.qkv``, ``proj``, ``fc1``, ``fc2``),
``ΔW_j = s · B_j A_j`` with ``A_j (r × in)`` Kaiming-uniform and ``B_j (out × r)`` zero, ``s = alpha / r``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from .base import AdapterLinear, kaiming_uniform_like_lora_
from .config import LowRankConfig
from .registry import AdapterMethod, register_peft_method

__all__ = ["LoRAConfig", "LoRALinear", "LoRAMethod"]


@dataclass
class LoRAConfig(LowRankConfig):
    """LoRA baseline on the same targets as CLoRA (q/k/v split, proj, fc1, fc2): ``ΔW = s · B A``, B zero-initialised.

    Args: as :class:`CLoRAConfig` without ``num_bases``/``share``/``sade_weight``/``q_weight_decay``.
    """



class LoRALinear(AdapterLinear):
    """``x (..., in) -> (..., n_splits · out)``; ``lora_A (n, r, in)``, ``lora_B (n, out, r)``, one pair per LRM."""

    def __init__(
        self, base_layer: nn.Linear, r: int, n_splits: int = 1, scaling: float = 1.0, dropout: float = 0.0
    ) -> None:
        super().__init__(base_layer, n_splits, scaling, dropout)
        self.r = r
        w = base_layer.weight
        dtype = w.dtype if w.dtype.is_floating_point else torch.float32
        self.lora_A = nn.Parameter(torch.empty(n_splits, r, self.in_features, device=w.device, dtype=dtype))
        self.lora_B = nn.Parameter(torch.zeros(n_splits, self.out_features, r, device=w.device, dtype=dtype))
        kaiming_uniform_like_lora_(self.lora_A, self.in_features)

    def adapter_delta(self, x: torch.Tensor) -> torch.Tensor:
        n, r = self.n_splits, self.r
        z = F.linear(x, self.lora_A.reshape(n * r, self.in_features))  # (..., n·r): all A_j x in one GEMM
        if n == 1:
            delta = F.linear(z, self.lora_B[0])
        else:
            delta = torch.einsum("...nr,nor->...no", z.unflatten(-1, (n, r)), self.lora_B).flatten(-2)
        return delta * self.scaling

    def delta_weight(self) -> torch.Tensor:
        delta = torch.einsum("nor,nri->noi", self.lora_B, self.lora_A)
        return delta.reshape(self.n_splits * self.out_features, self.in_features) * self.scaling

    def adapter_parameters(self) -> Iterator[nn.Parameter]:
        yield self.lora_A
        yield self.lora_B

    def adapter_flops_per_token(self) -> int:
        return 0 if self.merged else self.n_splits * self.r * (self.in_features + self.out_features)

    def extra_repr(self) -> str:
        return f"r={self.r}, " + super().extra_repr()


@register_peft_method
class LoRAMethod(AdapterMethod):
    """LoRA: every target layer owns its ``lora_A``/``lora_B``; no auxiliary loss; merges exactly."""

    name = "lora"
    config_class = LoRAConfig
    description = "LoRA baseline on the same targets"

    def make_layer(self, model: nn.Module, name: str, base_layer: nn.Linear, n_splits: int) -> AdapterLinear:
        return LoRALinear(base_layer, self.config.r, n_splits, self.config.scaling, self.config.dropout)
