"""What the official Point-MAE code does to a model: its initialisation, and how to recognise its checkpoints.

Used by ``--protocol point-mae`` (``model.init: pytorch``) and by the model builder (official checkpoints default to
``skip_near_origin``); see :mod:`pointclora.tasks.protocol` for the whole table.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping

import torch
from torch import nn

__all__ = ["pytorch_default_init_", "is_official_checkpoint", "model_overrides_for_checkpoint"]


@torch.no_grad()
def pytorch_default_init_(model: nn.Module, std: float = 0.02) -> nn.Module:
    """Re-initialise ``model`` as the official fine-tuning runner leaves it: every layer with PyTorch's default
    ``reset_parameters`` (Linear, Conv1d, LayerNorm, BatchNorm), ``cls_token``/``cls_pos`` truncated normal (std .02).

    Call it right after building the classifier and *before* loading a pre-trained checkpoint (the loaded encoder
    then overwrites its part; the head keeps PyTorch's default, as officially).
    """
    for module in model.modules():
        reset = getattr(module, "reset_parameters", None)
        if callable(reset) and module is not model:
            reset()
    for name in ("cls_token", "cls_pos"):
        p = getattr(model, name, None)
        if isinstance(p, nn.Parameter):
            nn.init.trunc_normal_(p, std=std)
    return model


def is_official_checkpoint(obj: Any) -> bool:
    """True for a checkpoint written by the official Point-MAE / Point-BERT code (or a file in its layout):
    a ``base_model`` dict, keys under ``MAE_encoder.`` / ``transformer_q.`` / ``module.``, or ``blocks.blocks.``."""
    if not isinstance(obj, Mapping):
        return False
    sd = obj.get("base_model") if isinstance(obj.get("base_model"), Mapping) else None
    if sd is None:
        if "model" in obj and "version" in obj:  # our own checkpoints: {'model', 'config', 'version', ...}
            return False
        sd = obj.get("state_dict") if isinstance(obj.get("state_dict"), Mapping) else obj
        if not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
            return False
    else:
        return True
    prefixes = ("module.", "MAE_encoder.", "transformer_q.", "ACT_encoder.")
    return any(k.startswith(prefixes) or ".blocks.blocks." in k or k.startswith("blocks.blocks.") for k in sd)


def model_overrides_for_checkpoint(obj_or_path: Any) -> Dict[str, Any]:
    """Model constructor kwargs to default to for a checkpoint: ``{"skip_near_origin": True}`` for official files
    (their encoders were trained on pointnet2_ops centres), ``{}`` otherwise. An explicit ``model.skip_near_origin``
    in the config should still win; pass a path or the already-loaded object."""
    obj = obj_or_path
    if isinstance(obj_or_path, (str, bytes)) or hasattr(obj_or_path, "__fspath__"):
        from .checkpoint import safe_torch_load

        obj = safe_torch_load(obj_or_path)
    return {"skip_near_origin": True} if is_official_checkpoint(obj) else {}
