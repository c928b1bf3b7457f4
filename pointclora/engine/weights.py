"""The one saved-weights format of every task and method: a folder with ``weights.safetensors`` + ``manifest.json``.

``weights.safetensors`` holds every tensor of the trained model that the backbone file did not provide: the adapters
(CLoRA banks once, every ``Q``; LoRA ``A``/``B``), the head, every buffer that changed, and frozen tensors drawn at
random when the model was built (e.g. ``cls_token``/``cls_pos`` under linear probing on a Point-MAE checkpoint, which
has none) — so a reload gives back exactly the model that was scored. Full fine-tuning and runs without a backbone
file save every tensor. ``manifest.json``::

    {"format": "pointclora-weights", "format_version": 1, "pointclora_version": "...", "task": "classification",
     "method": "clora", "epoch": 12, "metrics": {...}, "meta": {"classes": [...]} (or categories / parts),
     "backbone": {"path": "...", "fingerprint": sha256 of the tensors it provided, "keys": [...]},
     "config": {... the resolved run config ...}, "tensors": [...]}

For peft-style tools, CLoRA / LoRA folders also hold ``save_adapter``'s ``adapter.safetensors`` +
``adapter_config.json``. :func:`load_weights` rebuilds the model with the task's own builder, checks the backbone
fingerprint (a different backbone is refused, never guessed around), and loads the tensors with every key accounted
for: each saved key must exist in the model and each model key must be either saved or provided by the backbone.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, NamedTuple, Optional, Union

import torch
from torch import nn

from .. import __version__
from ..utils.atomic import atomic_write_json

__all__ = [
    "save_weights",
    "load_weights",
    "merge_weights",
    "read_manifest",
    "WeightsError",
    "LoadedRun",
    "MANIFEST",
    "WEIGHTS",
]

MANIFEST = "manifest.json"
WEIGHTS = "weights.safetensors"
FORMAT = "pointclora-weights"
PathLike = Union[str, os.PathLike]


class WeightsError(ValueError):
    """The saved weights do not fit the model or backbone they are loaded with."""


class LoadedRun(NamedTuple):
    model: nn.Module
    manifest: Dict[str, Any]
    task: Any  # the Task instance (config and meta bound)


def _canonical(name: str) -> str:
    return name.replace(".base_layer.", ".")


def _method(model: nn.Module) -> str:
    return str(getattr(getattr(model, "peft_config", None), "method", "full"))


def saved_state(model: nn.Module) -> Dict[str, torch.Tensor]:
    """The tensors a weights folder stores for ``model`` (see the module docstring)."""
    from_backbone = set((getattr(model, "backbone_info", None) or {}).get("keys", []))
    save_all = _method(model) == "full" or not from_backbone
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    if getattr(model, "peft_config", None) is not None:
        # what the method itself saves: also the buffers of trained backbone modules (PPT / PointLoRA train
        # encoder.first_conv, whose BatchNorm statistics move; the backbone file holds the old ones)
        from ..peft import adapter_state_names

        trainable |= set(adapter_state_names(model))
    return {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()
            if save_all or k in trainable or _canonical(k) not in from_backbone}  # fmt: skip


def save_weights(model: nn.Module, folder: PathLike, *, task: str, config: Mapping[str, Any],
                 meta: Mapping[str, Any], epoch: int, metrics: Optional[Mapping[str, Any]] = None) -> Path:  # fmt: skip
    """Write the folder into ``folder.tmp`` then swap it in, so a kill leaves the previous folder whole."""
    from safetensors.torch import save_file

    folder = Path(folder)
    tmp, old = folder.with_name(folder.name + ".tmp"), folder.with_name(folder.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tensors = saved_state(model)
    save_file(tensors, str(tmp / WEIGHTS), metadata={"format": FORMAT})
    info = dict(getattr(model, "backbone_info", None) or {})
    manifest = {
        "format": FORMAT, "format_version": 1, "pointclora_version": __version__, "task": task,
        "method": _method(model), "epoch": int(epoch), "metrics": dict(metrics or {}), "meta": dict(meta),
        "backbone": {"path": info.get("path"), "fingerprint": info.get("fingerprint"), "keys": info.get("keys", [])},
        "config": json.loads(json.dumps(config)), "tensors": sorted(tensors),
    }  # fmt: skip
    atomic_write_json(manifest, tmp / MANIFEST)
    if _method(model) in ("clora", "lora"):
        from ..peft import save_adapter

        save_adapter(model, tmp)
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)
    return folder


def read_manifest(folder: PathLike) -> Dict[str, Any]:
    path = Path(folder) / MANIFEST
    if not path.is_file():
        raise WeightsError(f"{folder}: no {MANIFEST}; expected a weights folder written by a training run "
                           "(<run>/best or <run>/last) or a run folder")  # fmt: skip
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise WeightsError(f"{path}: not valid JSON ({err})") from None
    if manifest.get("format") != FORMAT:
        raise WeightsError(f"{path}: format {manifest.get('format')!r} is not {FORMAT!r}")
    return manifest


def resolve_weights_folder(path: PathLike, which: str = "best") -> Path:
    """A run folder -> its ``best``/``last`` weights folder; a weights folder as is."""
    p = Path(path)
    if (p / MANIFEST).is_file():
        return p
    if (p / which / MANIFEST).is_file():
        return p / which
    if not p.exists():
        raise FileNotFoundError(f"{p} does not exist")
    raise WeightsError(f"{p}: neither a weights folder ({MANIFEST}) nor a run folder with {which}/{MANIFEST}")


def load_weights(path: PathLike, which: str = "best", backbone: Optional[PathLike] = None,
                 device: Union[str, torch.device] = "cpu",
                 log: Callable[[str], None] = lambda _m: None) -> LoadedRun:  # fmt: skip
    """Rebuild the saved model: the task's builder, its backbone (``backbone`` overrides the recorded path), the
    saved tensors. Raises :class:`WeightsError` for another backbone or any key that is not accounted for."""
    from safetensors.torch import load_file

    from ..tasks import get_task

    if _is_adapter_folder(path):
        return _load_adapter_folder(Path(path), backbone, device)
    folder = resolve_weights_folder(path, which)
    manifest = read_manifest(folder)
    cfg = manifest["config"]
    task = get_task(manifest["task"])(cfg)
    task.meta = dict(manifest["meta"])
    recorded = manifest["backbone"]
    ckpt = backbone or recorded.get("path")
    if recorded.get("fingerprint") and not ckpt:
        raise WeightsError(f"{folder} was trained on a backbone file; pass its path (--ckpt)")
    if ckpt is not None and not Path(ckpt).is_file():
        raise FileNotFoundError(f"backbone {ckpt} (recorded in {folder / MANIFEST}) not found; pass --ckpt PATH")
    model = task.build_model(task.meta, Path(ckpt) if recorded.get("fingerprint") else None, log)
    got = (getattr(model, "backbone_info", None) or {}).get("fingerprint")
    if got != recorded.get("fingerprint"):
        raise WeightsError(f"{folder} was trained on another backbone than {ckpt}: tensor fingerprint {str(got)[:12]} "
                           f"!= recorded {str(recorded.get('fingerprint'))[:12]}; pass the backbone it was "
                           "trained on")  # fmt: skip
    tensors = load_file(str(folder / WEIGHTS))
    _load_exactly(model, tensors, set(recorded.get("keys", [])), folder)
    return LoadedRun(model.to(device).eval(), manifest, task)


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
    from ..tasks import get_task

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
    task = get_task("classification")(cfg)
    # No names recorded: labels are indices, and a dataset's labels are taken in its own order.
    task.meta = {"classes": [str(i) for i in range(num_classes)], "classes_are_indices": True}
    manifest = {"task": "classification", "method": cfg["peft"].get("method"), "epoch": None, "config": cfg,
                "meta": task.meta, "backbone": {"path": cfg["model"]["checkpoint"]}}  # fmt: skip
    return LoadedRun(model.to(device).eval(), manifest, task)


def _load_exactly(model: nn.Module, tensors: Mapping[str, torch.Tensor], from_backbone: set, folder: Path) -> None:
    own = model.state_dict()
    unexpected = sorted(set(tensors) - set(own))
    unaccounted = sorted(k for k in own if k not in tensors and _canonical(k) not in from_backbone)
    if unexpected or unaccounted:
        raise WeightsError(f"{folder}: saved tensors do not fit the rebuilt model; not in the model: "
                           f"{unexpected[:5]}, in neither the file nor the backbone: {unaccounted[:5]}")  # fmt: skip
    bad = [f"{k}: saved {tuple(v.shape)} vs model {tuple(own[k].shape)}" for k, v in tensors.items()
           if tuple(v.shape) != tuple(own[k].shape)]  # fmt: skip
    if bad:
        raise WeightsError(f"{folder}: shape mismatch: {'; '.join(bad[:5])}")
    model.load_state_dict(dict(tensors), strict=False)


def merge_weights(path: PathLike, output: PathLike, which: str = "best", backbone: Optional[PathLike] = None,
                  plain_checkpoint: Optional[PathLike] = None) -> Path:  # fmt: skip
    """Fold a run's adapters into its backbone: ``output`` becomes a weights folder of the plain model (every tensor,
    no adapters, no backbone file needed) that ``evaluate`` / ``predict`` read like any other; it runs at exactly
    the frozen backbone's FLOPs. ``plain_checkpoint`` also writes ``{"model": state_dict, "config", "version"}`` for
    :func:`pointclora.models.load_pretrained` / ``--ckpt``."""
    import copy

    from ..peft import merge_and_unload
    from ..utils.atomic import atomic_save

    run = load_weights(path, which=which, backbone=backbone)
    plain = merge_and_unload(run.model)
    plain.backbone_info = {"path": None, "fingerprint": None, "keys": []}
    cfg = copy.deepcopy(run.manifest["config"])
    cfg["model"]["checkpoint"] = None
    cfg["peft"] = {"method": "none"}
    plain.peft_config = None  # a plain model: every tensor is saved
    metrics = {**run.manifest.get("metrics", {}), "merged_from": str(path), "merged_method": run.manifest["method"]}
    save_weights(plain, output, task=run.manifest["task"], config=cfg, meta=run.manifest["meta"],
                 epoch=run.manifest["epoch"], metrics=metrics)  # fmt: skip
    if plain_checkpoint is not None:
        atomic_save({"model": {k: v.detach().cpu() for k, v in plain.state_dict().items()}, "config": cfg,
                     "version": __version__}, plain_checkpoint)  # fmt: skip
    return Path(output)
