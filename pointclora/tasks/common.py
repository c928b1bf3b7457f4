"""Pieces every task's model and data building shares: the adapted model, the backbone fingerprint, optional splits.

Provisioning the backbone file (a shipped name, a path, or pre-training it first for the demo) is not a task's
business: :mod:`pointclora.api` does it and hands the file to the Trainer."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Mapping, Optional

import torch
from torch import nn
from torch.utils.data import Dataset

from ..config import get_key
from ..models import create_model, load_pretrained
from ..models.registry import resolve_checkpoint_path  # noqa: F401  (its old home; re-exported)

#: Keys of the ``model`` section that are not constructor arguments.
MODEL_META_KEYS = ("name", "checkpoint", "checkpoint_prefix", "init")

__all__ = [
    "MODEL_META_KEYS",
    "resolve_checkpoint_path",
    "build_adapted_model",
    "tensor_fingerprint",
    "try_split",
]

Log = Callable[[str], None]


def tensor_fingerprint(state: Mapping[str, torch.Tensor], keys: Iterable[str]) -> str:
    """sha256 over names, dtypes, shapes and bytes of ``keys`` (the tensors a backbone file provided)."""
    h = hashlib.sha256()
    for k in sorted(keys):
        t = state[k].detach().cpu().contiguous().reshape(-1)
        h.update(f"{k}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def build_adapted_model(cfg: Mapping[str, Any], variant: str, backbone: Optional[Path], log: Log,
                        **model_kwargs: Any) -> nn.Module:  # fmt: skip
    """``create_model`` + pre-trained backbone + adapters; records ``model.backbone_info``.

    ``backbone_info = {"path", "fingerprint", "keys"}`` names every tensor the backbone file provided; the saved
    weights of a run are exactly the other tensors (see :mod:`pointclora.engine.weights`), and the fingerprint lets a
    reload refuse a different backbone.
    """
    from ..peft import inject_adapters, make_peft_config
    from ..peft.config import DEFAULT_METHOD

    mcfg = dict(cfg["model"])
    init = mcfg.pop("init", None)
    for k in MODEL_META_KEYS:
        mcfg.pop(k, None)
    defaults: Dict[str, Any] = {}
    checkpoint = None
    if backbone is not None:  # official checkpoints default to pointnet2_ops' FPS (skip near-origin points)
        from ..models.checkpoint import safe_torch_load
        from ..models.official import model_overrides_for_checkpoint

        checkpoint = safe_torch_load(backbone)  # read once: for these defaults and for the weights below
        defaults = model_overrides_for_checkpoint(checkpoint)
        from .backbone_settings import check_backbone_variant

        check_backbone_variant(checkpoint, variant, {**mcfg, **model_kwargs}, str(backbone))
    model = create_model(variant, **{**defaults, **mcfg, **model_kwargs})
    if init == "pytorch":  # the official runner's from-scratch model: PyTorch's default initialisation
        from ..models.official import pytorch_default_init_

        pytorch_default_init_(model)
    elif init is not None:
        raise ValueError(f"model.init must be null or 'pytorch', got {init!r}")
    keys: list = []
    if backbone is not None:
        result = load_pretrained(model, checkpoint, prefix=get_key(cfg, "model.checkpoint_prefix"), log=False,
                                 source=str(backbone))  # fmt: skip
        keys = sorted(result.loaded_keys)
        log(f"loaded {len(keys)} tensors from {backbone}; not in the file: {len(result.missing_keys)} "
            f"({', '.join(result.missing_keys[:6])}{', ...' if len(result.missing_keys) > 6 else ''}); "
            f"unused from the file: {len(result.unexpected_keys)}")  # fmt: skip
    state = model.state_dict()
    model.backbone_info = {
        "path": None if backbone is None else str(backbone),
        "fingerprint": tensor_fingerprint(state, keys) if keys else None,
        "keys": keys,
    }
    peft = dict(cfg.get("peft") or {"method": DEFAULT_METHOD})
    return inject_adapters(model, make_peft_config(**peft))


def try_split(build: Callable[[], Dataset]) -> Optional[Dataset]:
    """``build()`` or None when the dataset has no such split (a missing folder/list, or a reader that says so)."""
    try:
        return build()
    except FileNotFoundError:
        return None
    except (ValueError, KeyError) as err:
        if "split" in str(err).lower():
            return None
        raise
