"""Load a fine-tuned classifier for evaluation or prediction from whatever the user points at.

Accepted (``load_classifier(path)``):
- a run directory (``checkpoints/best.pth``, or ``last.pth`` with ``which="last"``);
- a ``best.pth`` / ``last.pth`` file from a run;
- a merged checkpoint: ``{"model": plain state dict, "config": YAML text, "classes": [...]}`` (adapters folded in,
  e.g. by ``tools/merge_adapter.py``);
- an adapter folder (``adapter.safetensors`` + ``adapter_config.json`` + the ``config.yaml`` / ``classes.json`` a run
  writes beside them).

The class names always come from the checkpoint, never from a dataset folder's order. A partial state (PEFT
``best.pth``, adapter folders) is applied on top of the backbone checkpoint the config names (``backbone=`` overrides).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, NamedTuple, Optional

import torch
from torch import nn

from ..config import config_from_string, load_yaml
from ..models import create_model, load_pretrained
from .checkpoint import load_checkpoint

__all__ = ["LoadedClassifier", "load_classifier"]


class LoadedClassifier(NamedTuple):
    model: nn.Module
    config: Dict[str, Any]
    classes: List[str]
    source: str


def _plain_model(cfg: Dict[str, Any], num_classes: int) -> nn.Module:
    mcfg = dict(cfg["model"])
    name = mcfg.pop("name")
    for key in ("checkpoint", "checkpoint_prefix"):
        mcfg.pop(key, None)
    return create_model(name, num_classes=num_classes, **mcfg)


def _with_backbone(cfg: Dict[str, Any], num_classes: int, backbone: Optional[str]) -> nn.Module:
    from .trainer import resolve_checkpoint_path

    model = _plain_model(cfg, num_classes)
    ckpt = backbone or cfg["model"].get("checkpoint")
    if ckpt:
        path = resolve_checkpoint_path(ckpt)
        if not path.is_file():
            raise FileNotFoundError(
                f"this checkpoint holds only the fine-tuned tensors; their backbone {ckpt!r} was not found. Pass "
                "--ckpt PATH to the pre-trained backbone, or evaluate a merged checkpoint"
            )
        load_pretrained(model, path, prefix=cfg["model"].get("checkpoint_prefix"), log=False)
    return model


def _from_state(state: Dict[str, torch.Tensor], cfg: Dict[str, Any], classes: List[str], backbone: Optional[str]):
    """Build the model the state belongs to: plain (merged / full), injected (complete), or backbone + partial."""
    from ..peft import inject_adapters, make_peft_config

    model = _plain_model(cfg, len(classes))
    if set(model.state_dict()) == set(state):
        model.load_state_dict(state)
        return model
    peft_cfg = make_peft_config(**dict(cfg.get("peft") or {"method": "none"}))
    inject_adapters(model, peft_cfg)
    own = model.state_dict()
    unknown = [k for k in state if k not in own]
    if unknown:
        raise ValueError(f"checkpoint tensors do not fit the configured model: {unknown[:5]}")
    if set(own) != set(state):  # only the fine-tuned tensors: start from the backbone
        model = inject_adapters(_with_backbone(cfg, len(classes), backbone), peft_cfg)
    model.load_state_dict(state, strict=False)
    return model


def load_classifier(
    path: str, device: Optional[torch.device] = None, backbone: Optional[str] = None, which: str = "best"
) -> LoadedClassifier:
    """See the module docstring. Returns the model in eval mode on ``device`` (CPU by default), config, class names."""
    device = device if device is not None else torch.device("cpu")
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"{path}: no such run directory, checkpoint or adapter folder")
    if p.is_dir() and (p / "adapter_config.json").is_file():
        return _from_adapter_dir(p, device, backbone)
    if p.is_dir():
        name = {"best": "best.pth", "last": "last.pth"}[which]
        for candidate in (p / "checkpoints" / name, p / name):
            if candidate.is_file():
                p = candidate
                break
        else:
            raise FileNotFoundError(f"{path}: no checkpoints/{name}; is this a run directory of tools/finetune.py?")
    obj = load_checkpoint(p)
    if "config" not in obj or "classes" not in obj:
        raise ValueError(
            f"{p}: a checkpoint for evaluation must record 'config' and 'classes' (run checkpoints and merged "
            f"checkpoints do); this one has keys {sorted(obj)[:8]}"
        )
    cfg = obj["config"] if isinstance(obj["config"], dict) else config_from_string(obj["config"])
    classes = [str(c) for c in obj["classes"]]
    model = _from_state(dict(obj["model"]), cfg, classes, backbone)
    return LoadedClassifier(model.to(device).eval(), cfg, classes, str(p))


def _from_adapter_dir(folder: Path, device: torch.device, backbone: Optional[str]) -> LoadedClassifier:
    from ..peft import load_adapter

    cfg_file, classes_file = folder / "config.yaml", folder / "classes.json"
    if not cfg_file.is_file() or not classes_file.is_file():
        raise FileNotFoundError(
            f"{folder}: an adapter folder needs the config.yaml and classes.json that tools/finetune.py writes beside "
            "the adapter (they say which backbone and which class names it belongs to)"
        )
    cfg = load_yaml(cfg_file)
    classes = [str(c) for c in json.loads(classes_file.read_text())["classes"]]
    model = _with_backbone(cfg, len(classes), backbone)
    load_adapter(model, folder)
    return LoadedClassifier(model.to(device).eval(), cfg, classes, str(folder))
