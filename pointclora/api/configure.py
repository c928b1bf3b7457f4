"""A tool's config: the file (+ bases), a method's own adapter defaults, the backbone, the epochs, the ``--protocol``
switch for the task the config names, then checked ``--set`` overrides (an explicit override wins over the protocol).
"""

from __future__ import annotations

import sys
from typing import Any, Dict, Optional, Sequence

from ..config import ConfigError, apply_overrides, load_config, load_yaml, resolve_config_path

__all__ = ["load_cli_config", "resolve_config"]


def _adapter_section(method: str) -> Dict[str, Any]:
    try:
        data = load_yaml(resolve_config_path(f"adapters/{method}.yaml"))
        return dict(data.get("peft", {"method": method}))
    except ConfigError:
        return {"method": method}


def load_cli_config(cfg_path: str, overrides: Sequence[str] = (), method: Optional[str] = None,
                    ckpt: Optional[str] = None, epochs: Optional[int] = None, task: Optional[str] = None
                    ) -> Dict[str, Any]:  # fmt: skip
    """Load ``cfg_path`` (+ bases), swap in ``method``'s own adapter defaults, set the backbone checkpoint and epochs,
    then apply ``--set`` overrides (checked against the schema)."""
    cfg = load_config(cfg_path)
    if task is not None:
        cfg["task"] = task
    if method and method != cfg["peft"].get("method"):
        cfg["peft"] = _adapter_section(method)
    if ckpt:
        cfg["model"]["checkpoint"] = ckpt
    if epochs is not None:
        cfg["schedule"]["epochs"] = epochs
    from ..tasks.backbone_settings import apply_shipped_backbone

    changes = apply_shipped_backbone(cfg)  # a shipped backbone's variant, tokenizer, points (--set still wins)
    if changes:
        print(f"backbone {cfg['model']['checkpoint']}: " + "; ".join(changes) + " (as it was pre-trained)",
              file=sys.stderr)  # fmt: skip
    return apply_overrides(cfg, overrides)


def resolve_config(cfg_path: str, overrides: Sequence[str] = (), *, task: Optional[str] = None,
                   method: Optional[str] = None, ckpt: Optional[str] = None, epochs: Optional[int] = None,
                   protocol: Optional[str] = None, seed: Optional[int] = None, device: Optional[str] = None,
                   amp: bool = False) -> Dict[str, Any]:  # fmt: skip
    """The resolved config of a training tool: file (+ bases), then the flags, then the protocol (for the column of
    its table the config's task follows, :attr:`~pointclora.tasks.Task.protocol_name`), then ``--set``."""
    from ..tasks.protocol import apply_protocol
    from .run import build_task

    cfg = load_cli_config(cfg_path, method=method, ckpt=ckpt, epochs=epochs, task=task)
    protocol = protocol or cfg.get("protocol")
    if protocol and protocol != "ours":
        cfg = apply_protocol(cfg, protocol, type(build_task(cfg)).protocol_name)
    if seed is not None:
        cfg["train"]["seed"] = seed
    if device:
        cfg["train"]["device"] = device
    if amp:
        cfg["train"]["amp"] = True
    return apply_overrides(cfg, overrides)
