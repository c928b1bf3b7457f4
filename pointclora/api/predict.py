"""Predict for a user's point-cloud or mesh files with saved weights: the task the weights name says what a prediction
is (top-k labels, a part per point, ...)."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

import torch

__all__ = ["predict_files", "predict_with_adapters", "prediction_line"]


@torch.no_grad()
def predict_files(files: Sequence[str], weights: str, topk: int = 5, num_points: Optional[int] = None,
                  normalize: bool = True, device: str = "auto", backbone: Optional[str] = None,
                  category: Optional[str] = None, views: int = 1, up: Optional[str] = None
                  ) -> List[Dict[str, Any]]:  # fmt: skip
    """One result per file, what the run's task predicts (:meth:`~pointclora.tasks.Task.predict_cloud`):
    ``{"file", "predictions": [...]}`` (classification) or ``{"file", "category", "labels": [part id of every input
    point, in input order], "points": M 3 (normalised), "input_points": M 3 (as read)}`` (part segmentation). ``up``:
    the files' up axis (default: that of the files the model was trained on); they are turned into the model's."""
    from ..utils.device import resolve_device
    from .weights import load_weights

    dev = resolve_device(device)
    run = load_weights(weights, backbone=backbone, device=dev)
    return _predict_loaded(run, files, topk, num_points, normalize, dev, category, views, up)


@torch.no_grad()
def predict_with_adapters(files: Sequence[str], folders: Sequence[str], topk: int = 5,
                          num_points: Optional[int] = None, normalize: bool = True, device: str = "auto",
                          backbone: Optional[str] = None, category: Optional[str] = None, views: int = 1,
                          up: Optional[str] = None) -> List[Dict[str, Any]]:  # fmt: skip
    """:func:`predict_files` for each of several runs that share one backbone: the first folder's model is rebuilt,
    the others' adapters (with their heads) are loaded beside it (:mod:`pointclora.peft.multi`), then each is made
    active in turn. One result per (adapter, file), with ``"adapter"`` the folder as given."""
    from ..engine.weights import read_manifest, resolve_weights_folder
    from ..peft import list_adapters, load_adapter, set_adapter
    from ..peft.io import ADAPTER_CONFIG
    from ..tasks import get_task
    from ..utils.device import resolve_device
    from .weights import load_weights

    if len(set(folders)) != len(folders):
        raise ValueError(f"--adapters lists a folder twice: {list(folders)}")
    dev = resolve_device(device)
    first = load_weights(folders[0], backbone=backbone, device=dev)
    model = first.model
    if getattr(model, "peft_config", None) is None:
        raise ValueError(f"--adapters: {folders[0]} holds a plain (merged) model, not an adapter on a frozen backbone; "
                         "give the runs themselves")  # fmt: skip
    runs = [(folders[0], first.task, first.manifest)]
    for folder in folders[1:]:
        weights = resolve_weights_folder(folder)
        if not (weights / ADAPTER_CONFIG).is_file():
            raise ValueError(f"{weights}: no {ADAPTER_CONFIG}; --adapters needs runs of a method that keeps the "
                             "backbone frozen and saves an adapter (clora, lora)")  # fmt: skip
        load_adapter(model, weights, adapter_name=str(folder))
        manifest = read_manifest(weights)
        task = get_task(manifest["task"])(manifest["config"])
        task.meta = dict(manifest["meta"])
        runs.append((folder, task, manifest))
    keys = list_adapters(model)  # the first run's own adapter is kept as "default"
    results = []
    for key, (folder, task, manifest) in zip(keys, runs):
        set_adapter(model, key)
        model.eval()
        run = first._replace(model=model, task=task, manifest=manifest)
        for r in _predict_loaded(run, files, topk, num_points, normalize, dev, category, views, up):
            results.append({"adapter": str(folder), **r})
    return results


def _predict_loaded(run: Any, files: Sequence[str], topk: int, num_points: Optional[int], normalize: bool,
                    dev: torch.device, category: Optional[str], views: int,
                    up: Optional[str]) -> List[Dict[str, Any]]:  # fmt: skip
    from ..datasets.base import pc_normalize
    from ..datasets.up_axis import dataset_up_axis, rotation_between

    n = num_points or run.task.num_points
    cfg = run.manifest["config"]
    frame = cfg["data"].get("up_axis")
    if up is not None and frame is None:
        raise ValueError(f"--up {up}: this model's run records no up axis, so there is no frame to turn the files "
                         "into; leave --up out")  # fmt: skip
    if up is None and frame is not None and cfg.get("dataset"):
        up = dataset_up_axis(cfg["dataset"])  # by default your files are taken to be up like the training files
    turn = rotation_between(up, frame).T.astype("float32") if up is not None and frame is not None else None
    results = []
    for path in files:
        raw = _read(path, max(n, 2048))
        xyz = pc_normalize(raw).astype("float32") if normalize else raw
        if turn is not None:  # the files' up axis -> the model's (exact quarter turns)
            xyz = (xyz @ turn).astype("float32")
        out = run.task.predict_cloud(run.model, xyz, n, dev, topk=topk, category=category, views=views)
        if "labels" in out:  # a label per point: the points as the model saw them and as read
            out.update(points=xyz.tolist(), input_points=raw.tolist(), up_axis=frame)
        results.append({"file": str(path), "task": run.task.name, **out})
    return results


def _read(path: str, num_points: int):
    """``read_point_cloud`` with any reader failure turned into a ValueError naming the file; native readers'
    own stderr chatter (Open3D's RPly) is silenced so the tool's one error line stays the only one."""
    import os

    import numpy as np

    from ..datasets.io import read_point_cloud

    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such file")
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            xyz = read_point_cloud(path, num_points=num_points)
    except (ValueError, FileNotFoundError):
        raise
    except Exception as err:  # a corrupt file must not look like a bug of ours
        raise ValueError(f"{path}: cannot read this point cloud ({type(err).__name__}: {err})") from None
    finally:
        os.dup2(saved, 2)
        os.close(saved)
    xyz = np.asarray(xyz)
    if xyz.ndim != 2 or xyz.shape[0] == 0 or xyz.shape[1] < 3:
        raise ValueError(f"{path}: expected N x 3 points, got an array of shape {xyz.shape}")
    return xyz[:, :3].astype("float32")




def prediction_line(result: Dict[str, Any]) -> str:
    """The line ``tools/predict.py`` prints for one file's result (the task's own format)."""
    from ..tasks import get_task

    where = f"[{result['adapter']}] " if "adapter" in result else ""
    return where + get_task(result["task"]).predict_report(result)
