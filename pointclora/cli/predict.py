"""Predict for your own point clouds or meshes: top-k class labels, or a part label per point.

Examples::

    python tools/predict.py scan.ply chair.off cloud.npy --weights runs/demo/clora-seed0-... --topk 5
    python tools/predict.py cow.txt --weights runs/seg --png cow_parts.png       # part segmentation (+ picture)
    python tools/predict.py cow.txt --weights runs/seg --labels-out out/ --views 4  # a label for EVERY point
    python tools/predict.py scan.ply --adapters runs/mn40 runs/scan runs/mine    # one backbone, one adapter each

Part segmentation gives a label to every point of the file, in the file's order: the model's probabilities on its
``num_points`` sub-sample are carried to every point by 3-NN interpolation (averaged over ``--views`` sub-samples);
``--labels-out DIR`` writes ``<name>.labels.txt`` (``x y z label``, the file's own coordinates) or ``.ply``
(``--format ply``). ``--up y`` says your files are y-up: they are turned into the model's frame (by default they are
taken to be up like the files the model was trained on).

Files are read with ``pointclora.datasets.io.read_point_cloud`` (.ply/.pcd/.off/.obj/.npy/.txt/.xyz; meshes are
sampled), centred and scaled to the unit sphere (``--no-normalize`` keeps them as they are), subsampled to the
model's ``data.num_points`` (farthest points), and passed to the model rebuilt from its weights folder.
"""

from __future__ import annotations

import argparse
import json
from typing import Any, Dict, List, Optional, Sequence

import torch

from .common import ToolParser, run_cli

__all__ = ["main", "build_parser", "predict_files"]


def build_parser() -> argparse.ArgumentParser:
    p = ToolParser(prog="pointclora-predict", description=__doc__)  # fmt: skip
    p.add_argument("files", nargs="+", metavar="FILE", help="point clouds or meshes")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--weights", help="run folder or weights folder (best/, last/, merged)")
    which.add_argument("--adapters", nargs="+", metavar="DIR",
                       help="several run / weights folders trained on the same backbone: the backbone is loaded once, "
                            "each adapter (and its head) is switched in, every file is classified by each")  # fmt: skip
    p.add_argument("--topk", type=int, default=5, help="classification: labels per file")
    p.add_argument("--category", help="part segmentation: the object's category (when the model knows several)")
    p.add_argument("--png", help="part segmentation: also draw the labelled points to this PNG (one file only)")
    p.add_argument("--labels-out", metavar="DIR", help="part segmentation: write every point with its label here")
    p.add_argument("--format", choices=["txt", "ply"], default="txt", help="file type of --labels-out (default txt)")
    p.add_argument("--views", type=int, default=1, help="part segmentation: sub-samples averaged (default 1)")
    p.add_argument("--num-points", type=int, help="points fed to the model (default: the config's data.num_points)")
    p.add_argument("--no-normalize", action="store_true", help="do not centre / scale to the unit sphere")
    p.add_argument("--up", choices=["x", "y", "z"],
                   help="the up axis of your files; they are turned into the model's frame (recorded in its run). "
                        "Default: the up axis of the files the model was trained on")  # fmt: skip
    p.add_argument("--ckpt", help="the backbone file, when the one recorded in the run moved")
    p.add_argument("--device", default="auto")
    p.add_argument("--json", action="store_true", help="print JSON lines instead of a table")
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    return p


@torch.no_grad()
def predict_files(files: Sequence[str], weights: str, topk: int = 5, num_points: Optional[int] = None,
                  normalize: bool = True, device: str = "auto", backbone: Optional[str] = None,
                  category: Optional[str] = None, views: int = 1, up: Optional[str] = None
                  ) -> List[Dict[str, Any]]:  # fmt: skip
    """One result per file: ``{"file", "predictions": [...]}`` (classification) or ``{"file", "category",
    "labels": [part id of every input point, in input order], "points": M 3 (normalised), "input_points": M 3 (as
    read)}`` (part segmentation)."""
    from ..engine.weights import load_weights
    from ..utils.device import resolve_device

    dev = resolve_device(device)
    run = load_weights(weights, backbone=backbone, device=dev)
    return _predict_loaded(run, files, topk, num_points, normalize, dev, category, views, up)


@torch.no_grad()
def predict_with_adapters(files: Sequence[str], folders: Sequence[str], topk: int = 5,
                          num_points: Optional[int] = None, normalize: bool = True, device: str = "auto",
                          backbone: Optional[str] = None,
                          category: Optional[str] = None, views: int = 1,
                          up: Optional[str] = None) -> List[Dict[str, Any]]:  # fmt: skip
    """:func:`predict_files` for each of several runs that share one backbone: the first folder's model is rebuilt,
    the others' adapters (with their heads) are loaded beside it (:mod:`pointclora.peft.multi`), then each is made
    active in turn. One result per (adapter, file), with ``"adapter"`` the folder as given."""
    from ..engine.weights import load_weights, read_manifest, resolve_weights_folder
    from ..peft import list_adapters, load_adapter, set_adapter
    from ..peft.io import ADAPTER_CONFIG
    from ..tasks import get_task
    from ..utils.device import resolve_device

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


def _predict_loaded(run, files, topk, num_points, normalize, dev, category, views, up) -> List[Dict[str, Any]]:
    from ..datasets.base import pc_normalize
    from ..datasets.transforms import eval_transforms

    n = num_points or int(run.manifest["config"]["data"]["num_points"])
    transform = eval_transforms(n)
    from ..datasets.up_axis import dataset_up_axis, rotation_between

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
        if run.task.name == "classification":
            points = transform({"points": torch.from_numpy(xyz)})["points"][:, :3].to(dev)
            out = run.task.predict(run.model, points, topk=topk)
        else:
            from ..tasks.scan_labels import labels_for_every_point

            cat = run.task.resolve_category(category)
            parts = run.task.meta["category_parts"][cat]
            index = list(run.task.meta["categories"]).index(cat)
            res = labels_for_every_point(run.model, torch.from_numpy(xyz).to(dev), index, parts, n, views=views)
            labels = res["labels"]
            out = {"category": cat, "labels": labels.tolist(), "model_points": min(n, len(xyz)), "views": views,
                   "counts": {int(p): int((labels == p).sum()) for p in parts},
                   "points": xyz.tolist(), "input_points": raw.tolist(), "up_axis": frame}  # fmt: skip
        results.append({"file": str(path), **out})
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


def _body(args: argparse.Namespace) -> int:
    predict = predict_files if args.weights else predict_with_adapters
    results = predict(args.files, args.weights or args.adapters, topk=args.topk, num_points=args.num_points,
                      normalize=not args.no_normalize, device=args.device, backbone=args.ckpt,
                      category=args.category, views=args.views, up=args.up)  # fmt: skip
    if args.labels_out:
        if any("labels" not in r for r in results):
            raise ValueError("--labels-out writes part labels: give a part-segmentation run")
        from pathlib import Path

        from ..tasks.scan_labels import write_point_labels

        for r in results:
            name = Path(r["file"]).name.split(".")[0]
            r["labels_file"] = str(write_point_labels(Path(args.labels_out) / f"{name}.labels.{args.format}",
                                                      r["input_points"], r["labels"]))  # fmt: skip
    if args.png:
        if len(results) != 1 or "labels" not in results[0]:
            raise ValueError("--png draws one part-segmentation result: give one FILE and a segmentation run")
        from ..viz import render_segmentation
        from ..viz.render import RenderOptions

        # "points" are in the model's frame: draw them with its up axis pointing up
        render_segmentation(results[0]["points"], results[0]["labels"], title=f"predicted parts "
                            f"({results[0]['category']})", opts=RenderOptions(up=results[0].get("up_axis") or "y"),
                            out=args.png)  # fmt: skip
    for r in results:
        where = f"[{r['adapter']}] " if "adapter" in r else ""
        if args.json:
            print(json.dumps({k: v for k, v in r.items() if k not in ("points", "input_points")}))
        elif "predictions" in r:
            print(f"{where}{r['file']}: " + ", ".join(f"{p['label']} {100 * p['prob']:.1f}%" for p in r["predictions"]))
        else:
            counts = ", ".join(f"part {p}: {c}" for p, c in r["counts"].items())
            print(f"{where}{r['file']} [{r['category']}]: {len(r['labels'])} points labelled (every input point, input "
                  f"order; model saw {r['model_points']} x {r['views']} view(s)); {counts}"
                  + (f" -> {r['labels_file']}" if "labels_file" in r else ""))  # fmt: skip
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_cli(_body, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
