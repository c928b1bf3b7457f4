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

What a method keeps is its own declaration (:attr:`pointclora.peft.PeftMethod.saves_every_tensor`); a method with
``writes_adapter_files`` (CLoRA, LoRA) also leaves ``save_adapter``'s ``adapter.safetensors`` + ``adapter_config.json``
for peft-style tools. :func:`rebuild_model` rebuilds the model with the given task's own builder, checks the backbone
fingerprint (a different backbone is refused, never guessed around), and loads the tensors with every key accounted
for: each saved key must exist in the model and each model key must be either saved or provided by the backbone.
Finding the task a folder names, bare adapter folders and merging live above the engine (:mod:`pointclora.api`).
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Union

import torch
from torch import nn

from .. import __version__
from ..utils.atomic import atomic_write_json

__all__ = [
    "save_weights",
    "saved_state",
    "rebuild_model",
    "read_manifest",
    "resolve_weights_folder",
    "WeightsError",
    "MANIFEST",
    "WEIGHTS",
    "FORMAT",
    "FORMAT_VERSION",
]

MANIFEST = "manifest.json"
WEIGHTS = "weights.safetensors"
FORMAT = "pointclora-weights"
#: The manifest layout this version writes and reads (older folders: same layout; newer ones are refused).
FORMAT_VERSION = 1
PathLike = Union[str, os.PathLike]


class WeightsError(ValueError):
    """The saved weights do not fit the model or backbone they are loaded with."""


def _canonical(name: str) -> str:
    return name.replace(".base_layer.", ".")


def saved_state(model: nn.Module) -> Dict[str, torch.Tensor]:
    """The tensors a weights folder stores for ``model`` (see the module docstring)."""
    from ..peft import saves_every_tensor

    from_backbone = set((getattr(model, "backbone_info", None) or {}).get("keys", []))
    save_all = saves_every_tensor(model) or not from_backbone
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

    from ..peft import method_name, write_method_files

    folder = Path(folder)
    tmp, old = folder.with_name(folder.name + ".tmp"), folder.with_name(folder.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    tensors = saved_state(model)
    save_file(tensors, str(tmp / WEIGHTS), metadata={"format": FORMAT})
    info = dict(getattr(model, "backbone_info", None) or {})
    manifest = {
        "format": FORMAT, "format_version": FORMAT_VERSION, "pointclora_version": __version__, "task": task,
        "method": method_name(model), "epoch": int(epoch), "metrics": dict(metrics or {}), "meta": dict(meta),
        "backbone": {"path": info.get("path"), "fingerprint": info.get("fingerprint"), "keys": info.get("keys", [])},
        "config": json.loads(json.dumps(config)), "tensors": sorted(tensors),
    }  # fmt: skip
    atomic_write_json(manifest, tmp / MANIFEST)
    write_method_files(model, tmp)
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
    version = manifest.get("format_version")
    if not isinstance(version, int) or not 1 <= version <= FORMAT_VERSION:
        raise WeightsError(f"{path}: format_version {version!r} is not one this pointclora {__version__} reads "
                           f"(1..{FORMAT_VERSION}); evaluate it with the version that wrote it "
                           f"({manifest.get('pointclora_version')})")  # fmt: skip
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


def rebuild_model(task: Any, folder: PathLike, manifest: Mapping[str, Any], backbone: Optional[PathLike] = None,
                  device: Union[str, torch.device] = "cpu", log: Callable[[str], None] = lambda _m: None
                  ) -> nn.Module:  # fmt: skip
    """The model saved in ``folder`` (a weights folder), rebuilt by ``task`` (a task object bound to the run's config
    and ``meta``): its builder, its backbone (``backbone`` overrides the recorded path), the saved tensors. Raises
    :class:`WeightsError` for another backbone or any key that is not accounted for."""
    from safetensors.torch import load_file

    folder = Path(folder)
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
    return model.to(device).eval()


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
