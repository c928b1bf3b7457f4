"""The reference recipe's optimizer and schedule: AdamW with two parameter groups, per-epoch cosine with warm-up."""

from __future__ import annotations

import math
from typing import Dict, Iterable, List, Optional, Sequence

import torch
from torch import nn

__all__ = ["param_groups", "build_optimizer", "cosine_lr", "CosineWarmupScheduler"]


def _no_decay_names(model: nn.Module) -> set:
    names = set()
    fn = getattr(model, "no_weight_decay", None)
    if callable(fn):
        names.update(fn())
    return names


def param_groups(model: nn.Module, weight_decay: float) -> List[Dict]:
    """Trainable parameters split into decay / no-decay groups.

    No decay for 1-D tensors (norm scales, biases), any ``*.bias``, the names ``model.no_weight_decay()`` lists
    (``cls_token``, ``cls_pos``; matched as a full name or as the last component so PEFT wrappers do not hide them)
    and the full names the PEFT method keeps out (``no_weight_decay_names``: CLoRA's ``Q``, initialised to the
    identity, which decay would pull toward 0; ``peft.q_weight_decay: true`` puts them back).
    """
    from ..peft import no_weight_decay_names

    skip = _no_decay_names(model)
    method_skip = no_weight_decay_names(model)
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        by_model = name in skip or name.split(".")[-1] in skip
        if p.ndim <= 1 or name.endswith(".bias") or by_model or name in method_skip:
            no_decay.append(p)
        else:
            decay.append(p)
    groups = []
    if decay:
        groups.append({"params": decay, "weight_decay": weight_decay})
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    if not groups:
        raise ValueError("the model has no trainable parameters (did the PEFT method freeze everything?)")
    return groups


def build_optimizer(
    model: nn.Module,
    lr: float,
    weight_decay: float = 0.05,
    betas: Sequence[float] = (0.9, 0.999),
    eps: float = 1e-8,
) -> torch.optim.AdamW:
    return torch.optim.AdamW(param_groups(model, weight_decay), lr=lr, betas=tuple(betas), eps=eps)


def cosine_lr(
    epoch: int, base_lr: float, epochs: int, warmup_epochs: int = 10, warmup_lr_init: float = 1e-6, lr_min: float = 1e-6
) -> float:
    """timm ``CosineLRScheduler(t_initial=epochs, warmup_t, warmup_lr_init, lr_min)`` at epoch ``epoch``.

    Linear warm-up from ``warmup_lr_init`` over the first ``warmup_epochs``; then cosine from ``base_lr`` to ``lr_min``
    measured from epoch 0 (timm's default ``warmup_prefix=False``); ``lr_min`` after ``epochs``.
    """
    if epoch < warmup_epochs:
        return warmup_lr_init + epoch * (base_lr - warmup_lr_init) / warmup_epochs
    if epoch >= epochs:
        return lr_min
    return lr_min + 0.5 * (base_lr - lr_min) * (1 + math.cos(math.pi * epoch / epochs))


class CosineWarmupScheduler:
    """Sets every param group's lr for an epoch: ``step(epoch)`` before the epoch trains (epoch e uses lr(e))."""

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        epochs: int,
        warmup_epochs: int = 10,
        warmup_lr_init: float = 1e-6,
        lr_min: float = 1e-6,
        base_lrs: Optional[Iterable[float]] = None,
    ) -> None:
        self.optimizer = optimizer
        self.epochs = int(epochs)
        self.warmup_epochs = int(warmup_epochs)
        self.warmup_lr_init = float(warmup_lr_init)
        self.lr_min = float(lr_min)
        self.base_lrs = list(base_lrs) if base_lrs is not None else [g["lr"] for g in optimizer.param_groups]
        self.last_epoch = -1

    def lr_at(self, epoch: int, base_lr: float) -> float:
        return cosine_lr(epoch, base_lr, self.epochs, self.warmup_epochs, self.warmup_lr_init, self.lr_min)

    def step(self, epoch: int) -> None:
        for group, base in zip(self.optimizer.param_groups, self.base_lrs):
            group["lr"] = self.lr_at(epoch, base)
        self.last_epoch = epoch

    def get_last_lr(self) -> List[float]:
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self) -> Dict:
        return {
            "epochs": self.epochs,
            "warmup_epochs": self.warmup_epochs,
            "warmup_lr_init": self.warmup_lr_init,
            "lr_min": self.lr_min,
            "base_lrs": list(self.base_lrs),
            "last_epoch": self.last_epoch,
        }

    def load_state_dict(self, state: Dict) -> None:
        self.epochs = int(state["epochs"])
        self.warmup_epochs = int(state["warmup_epochs"])
        self.warmup_lr_init = float(state["warmup_lr_init"])
        self.lr_min = float(state["lr_min"])
        self.base_lrs = [float(v) for v in state["base_lrs"]]
        self.last_epoch = int(state["last_epoch"])
