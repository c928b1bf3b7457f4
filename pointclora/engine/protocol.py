"""The official runner's training mechanics the Trainer can switch to (``--protocol point-mae``): its weight-decay
groups and segmentation's double optimizer step. Which config keys the protocol sets, per task, is
:mod:`pointclora.tasks.protocol`; what it does to a model is :mod:`pointclora.models.official` (re-exported here).
"""

from __future__ import annotations

from typing import Any, Dict, List, Sequence

import torch
from torch import nn

from ..models.official import is_official_checkpoint, model_overrides_for_checkpoint, pytorch_default_init_

__all__ = [
    "official_no_decay",
    "official_param_groups",
    "official_seg_step",
    "pytorch_default_init_",
    "is_official_checkpoint",
    "model_overrides_for_checkpoint",
]


def official_no_decay(name: str, param: torch.Tensor) -> bool:
    """The official ``add_weight_decay`` rule: no decay for 1-D tensors, ``*.bias`` and names containing ``token``.

    So ``cls_token``/``mask_token`` are exempt but ``cls_pos`` (shape ``(1, 1, C)``) is decayed."""
    return param.ndim == 1 or name.endswith(".bias") or "token" in name


def official_param_groups(model: nn.Module, weight_decay: float) -> List[Dict[str, Any]]:
    """Trainable parameters in the official two groups (``[no_decay, decay]``, as ``add_weight_decay`` returns)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (no_decay if official_no_decay(name, p) else decay).append(p)
    groups = [g for g in ({"params": no_decay, "weight_decay": 0.0}, {"params": decay, "weight_decay": weight_decay})
              if g["params"]]  # fmt: skip
    if not groups:
        raise ValueError("the model has no trainable parameters")
    return groups


def official_seg_step(
    optimizer: torch.optim.Optimizer, params: Sequence[torch.Tensor], max_norm: float = 10.0, scaler: Any = None
) -> None:
    """The official segmentation script's update, after ``loss.backward()``: ``optimizer.step()`` on the raw
    gradient, then ``clip_grad_norm_(params, 10)`` and a second ``optimizer.step()`` on the clipped one, then
    ``zero_grad``. AdamW's state therefore advances twice per batch. Mixed precision with a GradScaler is refused
    (the scaler allows one step per update)."""
    if scaler is not None and getattr(scaler, "is_enabled", lambda: False)():
        raise ValueError(
            "the official segmentation double step cannot run under a float16 GradScaler: set train.amp false"
        )
    optimizer.step()
    torch.nn.utils.clip_grad_norm_(list(params), max_norm, norm_type=2)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
