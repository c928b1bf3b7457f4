"""The reference recipe's optimizer and schedule: AdamW with two parameter groups, per-epoch cosine with warm-up."""

from __future__ import annotations

import math
from typing import Dict, Iterable, List, Optional, Sequence

import torch
from torch import nn

__all__ = [
    "param_groups",
    "build_optimizer",
    "cosine_lr",
    "CosineWarmupScheduler",
    "timm_cosine_lr",
    "official_epoch_lrs",
    "OfficialEpochScheduler",
]


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
    epoch: float,
    base_lr: float,
    epochs: int,
    warmup_epochs: int = 10,
    warmup_lr_init: float = 1e-6,
    lr_min: float = 1e-6,
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

    def lr_at(self, epoch: float, base_lr: float) -> float:
        return cosine_lr(epoch, base_lr, self.epochs, self.warmup_epochs, self.warmup_lr_init, self.lr_min)

    def step(self, epoch: float) -> None:
        """``epoch`` may be fractional (``schedule.stepping: per_step``: epoch + step / steps_per_epoch)."""
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
        self.last_epoch = float(state["last_epoch"])


# ---------------------------------------------------------------------------------------------------------------
# The official loop's schedule (``--protocol point-mae``)
# ---------------------------------------------------------------------------------------------------------------


def timm_cosine_lr(
    t: int,
    base_lr: float,
    t_initial: int,
    warmup_t: int = 10,
    warmup_lr_init: float = 1e-6,
    lr_min: float = 1e-6,
    cycle_limit: int = 1,
    decay_rate: float = 1.0,
) -> float:
    """timm's ``CosineLRScheduler._get_lr(t)`` as the Point-MAE builder configures it (``t_mul=1``,
    ``warmup_prefix=False``, ``cycle_limit=1``; its ``decay_rate=0.1`` only acts from the second cycle, which
    ``cycle_limit=1`` replaces by ``lr_min``)."""
    if t < warmup_t:
        return warmup_lr_init + t * (base_lr - warmup_lr_init) / warmup_t
    i = t // t_initial
    t_curr = t - t_initial * i
    if cycle_limit == 0 or i < cycle_limit:
        gamma = decay_rate**i
        lo, hi = lr_min * gamma, base_lr * gamma
        return lo + 0.5 * (hi - lo) * (1 + math.cos(math.pi * t_curr / t_initial))
    return lr_min


def official_epoch_lrs(
    base_lr: float,
    epochs: int = 300,
    warmup_epochs: int = 10,
    warmup_lr_init: float = 1e-6,
    lr_min: float = 1e-6,
    final_epoch: bool = True,
) -> List[float]:
    """The lr each epoch trains at in the official loops, which step the scheduler *after* each epoch.

    timm sets ``warmup_lr_init`` when the scheduler is built (the optimizer's lr when ``warmup_epochs`` is 0), so
    epoch 0 trains at it; ``scheduler.step(e)`` at the end of epoch ``e`` sets :func:`timm_cosine_lr` ``(e)`` for
    epoch ``e + 1``. Hence epochs 0 and 1 both run at ``warmup_lr_init`` and every later lr comes one epoch late
    compared with :func:`cosine_lr` stepped before each epoch.

    ``final_epoch=True``: the classification and pre-training runners loop ``range(max_epoch + 1)``, i.e.
    ``epochs + 1`` epochs (301 for 300); ``False``: the segmentation script's ``range(epoch)``.
    Returns one lr per trained epoch.
    """
    n = int(epochs) + (1 if final_epoch else 0)
    first = warmup_lr_init if warmup_epochs > 0 else base_lr
    return [first] + [
        timm_cosine_lr(e - 1, base_lr, epochs, warmup_epochs, warmup_lr_init, lr_min) for e in range(1, n)
    ]


class OfficialEpochScheduler(CosineWarmupScheduler):
    """Drop-in for :class:`CosineWarmupScheduler` with the official per-epoch values (:func:`official_epoch_lrs`).

    Same use: ``step(epoch)`` before epoch ``epoch`` trains. ``num_epochs`` is the number of epochs to run
    (``epochs + 1`` with ``final_epoch``); stepping past it keeps the last value.
    """

    def __init__(
        self,
        optimizer: torch.optim.Optimizer,
        epochs: int,
        warmup_epochs: int = 10,
        warmup_lr_init: float = 1e-6,
        lr_min: float = 1e-6,
        base_lrs: Optional[Iterable[float]] = None,
        final_epoch: bool = True,
    ) -> None:
        super().__init__(optimizer, epochs, warmup_epochs, warmup_lr_init, lr_min, base_lrs)
        self.final_epoch = bool(final_epoch)

    @property
    def num_epochs(self) -> int:
        return self.epochs + (1 if self.final_epoch else 0)

    def lr_at(self, epoch: int, base_lr: float) -> float:
        if epoch <= 0:
            return self.warmup_lr_init if self.warmup_epochs > 0 else base_lr
        e = min(epoch, self.num_epochs - 1)
        return timm_cosine_lr(e - 1, base_lr, self.epochs, self.warmup_epochs, self.warmup_lr_init, self.lr_min)

    def state_dict(self) -> Dict:
        return {**super().state_dict(), "final_epoch": self.final_epoch, "official": True}

    def load_state_dict(self, state: Dict) -> None:
        super().load_state_dict(state)
        self.final_epoch = bool(state.get("final_epoch", True))
