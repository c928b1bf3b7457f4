"""Providing a run's backbone file: a shipped name, a path, or — for the demo — pre-training it first.

This sits above the engine on purpose: pre-training is a whole training run of another task, so the engine never starts
one itself; the API hands the Trainer a ``provide(log)`` callable (:func:`backbone_provider`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Mapping, Optional

from ..config import get_key
from ..models.registry import find_backbone

__all__ = ["provision_backbone", "backbone_provider", "ensure_backbone"]

Log = Callable[[str], None]


def _default_cache() -> Path:
    from ..datasets.cache import default_cache_dir

    return default_cache_dir()  # one variable for every cache: $POINTCLORA_CACHE


def provision_backbone(cfg: Mapping[str, Any], log: Log = print, cache_dir: Optional[Path] = None) -> Optional[Path]:
    """The pre-trained backbone file named by ``model.checkpoint``.

    When it is missing and the config has a ``pretrain`` section (the demo), the backbone is pre-trained first with
    the Point-MAE task into the cache folder (``$POINTCLORA_CACHE``, ``$XDG_CACHE_HOME/pointclora`` or
    ``~/.cache/pointclora``), never into the installed package, and that file is used.
    """
    ckpt = get_key(cfg, "model.checkpoint")
    pcfg = cfg.get("pretrain")
    try:
        return find_backbone(ckpt)
    except FileNotFoundError:
        if not pcfg:
            raise
    target = (cache_dir or _default_cache()) / Path(ckpt).name
    if target.is_file():
        log(f"pre-trained backbone: {target} (made by an earlier demo run)")
        return target
    run_dir = target.parent / f"{target.stem}-pretrain-run"
    log(f"pre-trained backbone {ckpt} not found: pre-training it first -> {target} (run folder {run_dir})")
    from ..tasks.mae_pretraining import pretrain_backbone

    pretrain_backbone(dict(pcfg), run_dir=run_dir, export_to=target, log=log)
    return target


#: the name this had in ``pointclora.tasks.common``
ensure_backbone = provision_backbone


def backbone_provider(cfg: Mapping[str, Any], cache_dir: Optional[Path] = None) -> Callable[[Log], Optional[Path]]:
    """``provide(log)`` for :class:`~pointclora.engine.trainer.Trainer`'s ``backbone``."""
    return lambda log: provision_backbone(cfg, log=log, cache_dir=cache_dir)
