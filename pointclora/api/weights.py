"""Reading saved weights back: a run folder, a weights folder (``best/``, ``last/``, merged) or a bare adapter
folder -> the model, rebuilt by the task its manifest names; and folding a run's adapters into its backbone.

The folder format and the exact rebuild are the engine's (:mod:`pointclora.engine.weights`); finding the task a folder
names is this layer's job, so the engine never looks a task up.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Callable, Dict, NamedTuple, Optional, Union

import torch
from torch import nn

from ..engine.weights import (
    MANIFEST,
    WeightsError,
    read_manifest,
    rebuild_model,
    resolve_weights_folder,
    save_weights,
)
from ..tasks import get_task

__all__ = ["LoadedRun", "load_weights", "merge_weights", "WeightsError"]

PathLike = Union[str, os.PathLike]


class LoadedRun(NamedTuple):
    model: nn.Module
    manifest: Dict[str, Any]
    task: Any  # the Task instance (config and meta bound)


def load_weights(path: PathLike, which: str = "best", backbone: Optional[PathLike] = None,
                 device: Union[str, torch.device] = "cpu",
                 log: Callable[[str], None] = lambda _m: None) -> LoadedRun:  # fmt: skip
    """Rebuild the saved model: the task the manifest names (its builder, config and meta), its backbone
    (``backbone`` overrides the recorded path), the saved tensors. Raises :class:`WeightsError` for another backbone,
    a newer format, or any key that is not accounted for."""
    if _is_adapter_folder(path):
        return _load_adapter_folder(Path(path), backbone, device)
    folder = resolve_weights_folder(path, which)
    manifest = read_manifest(folder)
    task = get_task(manifest["task"])(manifest["config"])
    task.meta = dict(manifest["meta"])
    model = rebuild_model(task, folder, manifest, backbone=backbone, device=device, log=log)
    return LoadedRun(model, manifest, task)


def _is_adapter_folder(path: PathLike) -> bool:
    from ..peft.io import ADAPTER_CONFIG

    return (Path(path) / ADAPTER_CONFIG).is_file() and not (Path(path) / MANIFEST).is_file()


def _load_adapter_folder(folder: Path, backbone: Optional[PathLike], device: Union[str, torch.device]) -> LoadedRun:
    """A bare ``save_adapter`` folder from the library: the classifier is rebuilt from the variant and constructor
    arguments it records, the backbone file (``--ckpt``) loaded, then the adapter (its fingerprint checked). Class
    names are not recorded there, so labels are class indices; the dataset comes from the caller (``--dataset``)."""
    from ..config import DEFAULTS, merge
    from ..models import create_model, load_pretrained
    from ..peft import load_adapter, read_adapter_config
    from ..tasks.classification import ClassificationTask

    meta = read_adapter_config(folder)
    base = meta.get("base_model") or {}
    kwargs = {k: v for k, v in dict(base.get("constructor") or {}).items() if k != "name"}
    if base.get("class") not in (None, "PointTransformer") or not base.get("variant"):
        raise WeightsError(f"{folder}: a bare adapter folder is evaluated as a classifier; it was made for "
                           f"{base.get('class')!r} (use the run's best/ or last/ folder instead)")  # fmt: skip
    model = create_model(base["variant"], **kwargs)
    if backbone is not None:
        load_pretrained(model, backbone, log=False)
    elif base.get("fingerprint"):
        raise WeightsError(f"{folder} was trained on a backbone file: pass it with --ckpt")
    load_adapter(model, folder)
    num_classes = int(kwargs.get("num_classes", getattr(model, "num_classes", 0)))
    ckpt = None if backbone is None else str(backbone)
    cfg = merge(DEFAULTS, {"model": {"name": base["variant"], "checkpoint": ckpt},
                           "peft": dict(meta.get("peft_config") or {}), "dataset": {}})  # fmt: skip
    task = ClassificationTask(cfg)
    # No names recorded: labels are indices, and a dataset's labels are taken in its own order.
    task.meta = {"classes": [str(i) for i in range(num_classes)], "classes_are_indices": True}
    manifest = {"task": task.name, "method": cfg["peft"].get("method"), "epoch": None, "config": cfg,
                "meta": task.meta, "backbone": {"path": cfg["model"]["checkpoint"]}}  # fmt: skip
    return LoadedRun(model.to(device).eval(), manifest, task)


def merge_weights(path: PathLike, output: PathLike, which: str = "best", backbone: Optional[PathLike] = None,
                  plain_checkpoint: Optional[PathLike] = None) -> Path:  # fmt: skip
    """Fold a run's adapters into its backbone: ``output`` becomes a weights folder of the plain model (every tensor,
    no adapters, no backbone file needed) that ``evaluate`` / ``predict`` read like any other; it runs at exactly
    the frozen backbone's FLOPs. ``plain_checkpoint`` also writes ``{"model": state_dict, "config", "version"}`` for
    :func:`pointclora.models.load_pretrained` / ``--ckpt``."""
    import copy

    from .. import __version__
    from ..peft import NoneMethod, merge_and_unload
    from ..utils.atomic import atomic_save

    run = load_weights(path, which=which, backbone=backbone)
    plain = merge_and_unload(run.model)
    plain.backbone_info = {"path": None, "fingerprint": None, "keys": []}
    cfg = copy.deepcopy(run.manifest["config"])
    cfg["model"]["checkpoint"] = None
    cfg["peft"] = {"method": NoneMethod.name}
    plain.peft_config = None  # a plain model: every tensor is saved
    metrics = {**run.manifest.get("metrics", {}), "merged_from": str(path), "merged_method": run.manifest["method"]}
    save_weights(plain, output, task=run.manifest["task"], config=cfg, meta=run.manifest["meta"],
                 epoch=run.manifest["epoch"], metrics=metrics)  # fmt: skip
    if plain_checkpoint is not None:
        atomic_save({"model": {k: v.detach().cpu() for k, v in plain.state_dict().items()}, "config": cfg,
                     "version": __version__}, plain_checkpoint)  # fmt: skip
    return Path(output)
