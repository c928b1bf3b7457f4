"""The frame a run works in: the backbone's up axis, and the rotation that turns a dataset's files into it.

``data.up_axis`` (null by default) is resolved once, when the task builds its data: the up axis the backbone was
pre-trained in (the shipped ``point_mae_mn10``: z; official Point-MAE / Point-BERT files: y, ShapeNet; files exported
by ``tools/pretrain.py``: the axis they record), else the dataset's own. It is written into the run's config, so
evaluation and prediction turn their clouds the same way. A dataset declares the axis of its files
(:func:`pointclora.datasets.up_axis.dataset_up_axis`); when the two differ every cloud is rotated (exactly, a quarter
turn) into the run's frame, and the run says so once.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, MutableMapping, Optional, Tuple

from ..datasets.up_axis import ToUpAxis, check_axis, dataset_up_axis

__all__ = ["backbone_up_axis", "axis_recorded_in", "resolve_frame", "with_up_axis", "rotation_note"]


def axis_recorded_in(obj: Any) -> Optional[str]:
    """The up axis a loaded backbone file records: ``up_axis`` / ``config.data.up_axis`` (our exports), ``y`` for
    official Point-MAE / Point-BERT files (pre-trained on ShapeNet, y-up), else None (unknown)."""
    if not isinstance(obj, Mapping):
        return None
    if obj.get("up_axis"):
        return check_axis(obj["up_axis"], "the backbone's up_axis")
    data = ((obj.get("config") or {}).get("data") or {}) if isinstance(obj.get("config"), Mapping) else {}
    if data.get("up_axis"):
        return check_axis(data["up_axis"], "the backbone's data.up_axis")
    from ..engine.protocol import is_official_checkpoint

    return "y" if is_official_checkpoint(obj) else None


def backbone_up_axis(cfg: Mapping[str, Any]) -> Optional[str]:
    """The up axis of ``model.checkpoint`` (a shipped name or a file), or None when it records none / is absent."""
    ckpt = (cfg.get("model") or {}).get("checkpoint")
    if not ckpt:
        return None
    from ..models.registry import pretrained_meta, pretrained_names

    if str(ckpt) in pretrained_names():
        return pretrained_meta(str(ckpt)).get("up_axis")
    from ..models.checkpoint import safe_torch_load
    from .common import resolve_checkpoint_path

    path = resolve_checkpoint_path(ckpt)
    return axis_recorded_in(safe_torch_load(path)) if path.is_file() else None  # the demo's: made later, none


def resolve_frame(cfg: MutableMapping[str, Any], dataset_cfg: Mapping[str, Any]) -> Tuple[Optional[str], Optional[str]]:
    """``(the run's up axis, the dataset files' up axis)``; records the first in ``cfg['data']['up_axis']``."""
    data = cfg.setdefault("data", {})
    frame = check_axis(data.get("up_axis"), "data.up_axis")
    files = dataset_up_axis(dataset_cfg) if dataset_cfg else None
    if frame is None:
        frame = backbone_up_axis(cfg) or files
        data["up_axis"] = frame
    return frame, files


def rotation_note(frame: Optional[str], files: Optional[str], what: str = "the dataset's files") -> Optional[str]:
    if frame and files and frame != files:
        return f"up axis: {what} are {files}-up, the model works {frame}-up: every cloud is rotated {files} -> {frame}"
    return None


def with_up_axis(transform: Optional[Callable], frame: Optional[str], files: Optional[str]) -> Optional[Callable]:
    """``transform`` preceded by the rotation ``files`` -> ``frame`` when they differ (else ``transform``)."""
    if not (frame and files and frame != files):
        return transform
    from ..datasets.transforms import Compose

    rot = ToUpAxis(files, frame)
    return rot if transform is None else Compose([rot, transform])
