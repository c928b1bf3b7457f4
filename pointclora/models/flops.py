"""GFLOPs as the PEFT peers count them (CLORA.md, "How we count").

Batch 1, one multiply-add = one FLOP, summed over ``nn.Linear`` and ``nn.Conv1d/2d/3d`` modules (forward hooks), the
peers' module-level convention. Adapter wrappers (CLoRA/LoRA) add their analytic multiply-adds per token
(``adapter_flops_per_token()``, 0 once merged) on top of their frozen ``base_layer``, which the Linear hook counts.
Linear / Conv layers of a method's extension modules (``extensions.*``: IDPT's DGCNN, DAPT's adapters) count as
adapters too; the tokens such a method adds to the sequence are counted where they run (the base layers, attention).
``include_attention=True`` adds the two attention matmuls (``q kᵀ`` and ``attn · v``: ``2 · T² · C`` per block) that
module-level counters leave out. Norms, activations, softmax, FPS and kNN are not counted (as the peers).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

__all__ = ["FlopCount", "count_flops", "count_gflops"]


@dataclass
class FlopCount:
    """Multiply-adds of one forward at batch 1, by kind."""

    linear_conv: int = 0  # frozen/base Linear + Conv layers (merged adapters live here)
    adapters: int = 0  # unmerged adapters (analytic) + Linear/Conv layers of extension modules
    attention: int = 0  # q kᵀ and attn · v

    def total(self, include_attention: bool = False) -> int:
        return self.linear_conv + self.adapters + (self.attention if include_attention else 0)


def _conv_macs(module: nn.modules.conv._ConvNd, output: torch.Tensor) -> int:
    kernel = 1
    for k in module.kernel_size:
        kernel *= k
    return output.numel() * (module.in_channels // module.groups) * kernel


@torch.no_grad()
def count_flops(
    model: nn.Module, num_points: int = 2048, points: Optional[torch.Tensor] = None, seed: int = 0
) -> FlopCount:
    """Run one forward on ``points (1, N, 3)`` (default: a random cloud of ``num_points``) and count multiply-adds.

    The model is run in eval mode and restored to its previous mode afterwards.
    """
    from .layers import Attention

    count = FlopCount()
    handles = []

    def linear_hook(module: nn.Linear, inputs, output) -> None:
        count.linear_conv += output.numel() * module.in_features

    def conv_hook(module, inputs, output) -> None:
        count.linear_conv += _conv_macs(module, output)

    def extension_linear_hook(module: nn.Linear, inputs, output) -> None:
        count.adapters += output.numel() * module.in_features

    def extension_conv_hook(module, inputs, output) -> None:
        count.adapters += _conv_macs(module, output)

    def adapter_hook(module: nn.Module, inputs, output) -> None:
        tokens = inputs[0].numel() // module.in_features
        count.adapters += tokens * module.adapter_flops_per_token()

    def attention_hook(module, inputs, output) -> None:
        B, T, C = inputs[0].shape
        count.attention += 2 * B * T * T * C

    for name, module in model.named_modules():
        extension = "extensions" in name.split(".")
        if isinstance(module, nn.Linear):
            handles.append(module.register_forward_hook(extension_linear_hook if extension else linear_hook))
        elif isinstance(module, nn.modules.conv._ConvNd):
            handles.append(module.register_forward_hook(extension_conv_hook if extension else conv_hook))
        elif hasattr(module, "adapter_flops_per_token"):  # an adapter wrapper (duck-typed: models know no peft)
            handles.append(module.register_forward_hook(adapter_hook))
        elif isinstance(module, Attention):
            handles.append(module.register_forward_hook(attention_hook))
    was_training = model.training
    try:
        if points is None:
            ref = next(iter(model.parameters()))
            gen = torch.Generator().manual_seed(seed)
            points = torch.rand(1, num_points, 3, generator=gen).mul_(2).sub_(1).to(ref.device)
        model.eval()
        model(points)
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return count


def count_gflops(model: nn.Module, num_points: int = 2048, include_attention: bool = False) -> float:
    """GFLOPs (1e9 multiply-adds) of one forward at batch 1 over Linear and Conv layers (+ unmerged adapters;
    + attention matmuls with ``include_attention``). Frozen ``point_mae_s`` at 2048 points / 128 groups: 4.76."""
    return count_flops(model, num_points).total(include_attention) / 1e9
