"""BatchNorm over the global batch under torchrun, on any device (CPU/gloo included).

Why: with ``data.batch_size`` the *global* batch, a BatchNorm that still trains (Point-MAE's classification head; every
BatchNorm under ``full``) normalised each process's own ``batch_size / world_size`` samples: different statistics,
so a 2-process run trained a different model than one process (issue 19: the demo's training loss was higher at
every epoch). ``torch.nn.SyncBatchNorm`` fixes that on CUDA only; this does the same with two all-reduces that
autograd sees, so it runs on gloo too, and its numbers equal one process's BatchNorm on the whole batch (to float
rounding).

BatchNorm layers in eval mode (frozen statistics, :mod:`pointclora.peft.inject`) are untouched.
"""

from __future__ import annotations

from typing import List

import torch
import torch.distributed as dist
from torch import nn

__all__ = ["GlobalBatchNorm1d", "GlobalBatchNorm2d", "GlobalBatchNorm3d", "use_global_batchnorm"]


class _AllReduceSum(torch.autograd.Function):
    """``y = sum over processes of x``; its backward sums the gradients of every process's loss with respect to ``y``
    (each rank's statistics feed every rank's normalisation). Ours: torch's differentiable all_reduce is deprecated
    in 2.13 and prints a FutureWarning at every run."""

    @staticmethod
    def forward(ctx, t: torch.Tensor) -> torch.Tensor:  # noqa: D102
        out = t.clone()
        dist.all_reduce(out)
        return out

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # noqa: D102
        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def _all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    return _AllReduceSum.apply(t)


class _GlobalBN:
    """Mixin over ``nn.BatchNorm*d``: in training under an initialised process group, mean and variance are those of
    the samples of every process. Put first in the MRO."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # B C [L...]
        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        self._check_input_dim(x)
        dims = [0] + list(range(2, x.dim()))
        # float64 sums: sum / sum-of-squares in float32 lose digits the one-process two-pass variance keeps
        xd = x.double()
        count = torch.tensor([x.numel() / x.shape[1]], dtype=torch.float64, device=x.device)
        stats = torch.cat([xd.sum(dims), (xd * xd).sum(dims), count])
        stats = _all_reduce_sum(stats)
        c = x.shape[1]
        n = stats[-1]
        mean = stats[:c] / n
        var = (stats[c : 2 * c] / n - mean * mean).clamp_min(0)  # biased: what BatchNorm normalises with
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                m = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var * (n / (n - 1).clamp_min(1))
                self.running_mean.mul_(1 - m).add_(mean.to(self.running_mean.dtype), alpha=m)
                self.running_var.mul_(1 - m).add_(unbiased.to(self.running_var.dtype), alpha=m)
        shape = [1, c] + [1] * (x.dim() - 2)
        y = (xd - mean.view(shape)) / torch.sqrt(var.view(shape) + self.eps)
        y = y.to(x.dtype)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        return y


class GlobalBatchNorm1d(_GlobalBN, nn.BatchNorm1d):
    pass


class GlobalBatchNorm2d(_GlobalBN, nn.BatchNorm2d):
    pass


class GlobalBatchNorm3d(_GlobalBN, nn.BatchNorm3d):
    pass


_GLOBAL = {nn.BatchNorm1d: GlobalBatchNorm1d, nn.BatchNorm2d: GlobalBatchNorm2d, nn.BatchNorm3d: GlobalBatchNorm3d}


def use_global_batchnorm(model: nn.Module) -> List[str]:
    """Switch every plain ``BatchNorm{1,2,3}d`` of ``model`` in place to its global-batch twin (same parameters,
    buffers and state-dict keys); returns their names. Eval-locked twins (frozen statistics) are left alone."""
    names = []
    for name, module in model.named_modules():
        twin = _GLOBAL.get(type(module))
        if twin is not None:
            module.__class__ = twin
            names.append(name)
    return names

