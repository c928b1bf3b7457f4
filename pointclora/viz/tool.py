"""What ``tools/visualize.py`` draws: a point-cloud file or a dataset sample, its tokenizer patches, part labels, a
segmentation against its ground truth, or a classification's top-k, rendered headless to PNG or shown in a window.

The up axis of a file follows its format (:func:`default_up`); a dataset's own ``up_axis`` wins."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional, Tuple

import numpy as np

__all__ = ["visualize", "CAMERA_PRESETS", "default_up", "parse_camera", "load_input"]

#: Named views (azimuth, elevation) around the up axis; "front" looks along -front at the cloud.
CAMERA_PRESETS = {"iso": (45.0, 25.0), "front": (0.0, 0.0), "side": (90.0, 0.0), "top": (0.0, 89.9),
                  "back": (180.0, 0.0)}  # fmt: skip
_CONFIG_SUFFIXES = (".yaml", ".yml")


def parse_camera(text: str) -> Tuple[float, float, Optional[float]]:
    if text in CAMERA_PRESETS:
        az, el = CAMERA_PRESETS[text]
        return az, el, None
    parts = text.split(",")
    try:
        vals = [float(v) for v in parts]
    except ValueError:
        vals = []
    if len(vals) not in (2, 3):
        raise ValueError(
            f"--camera {text!r}: expected a preset ({', '.join(CAMERA_PRESETS)}) or AZIMUTH,ELEVATION[,ZOOM]"
        )
    return vals[0], vals[1], (vals[2] if len(vals) == 3 else None)


# ------------------------------------------------------------------------------------------------ inputs
def _dataset_cfg(path: str) -> Dict[str, Any]:
    """The dataset section of ``path``: a flat datasets/*.yaml, or an experiment config's ``dataset:``."""
    from ..config import load_config, load_yaml, resolve_config_path

    src = resolve_config_path(path)
    raw = load_yaml(src) or {}
    if not isinstance(raw, dict):
        raise ValueError(f"{src}: expected a mapping, got {type(raw).__name__}")
    if "dataset" in raw:
        return dict(load_config(src, validate=False)["dataset"])
    # A flat dataset file: let the config loader expand its _base_ chain by including it as a dataset section.
    with tempfile.TemporaryDirectory() as tmp:
        wrapper = Path(tmp) / "visualize_dataset.yaml"
        wrapper.write_text(json.dumps({"dataset": {"_base_": str(src)}}))
        return dict(load_config(wrapper, validate=False)["dataset"])


def default_up(path: str, dataset: Any = None) -> str:
    """The ``--up`` default: the dataset's ``up_axis``, else by file format (meshes and PCD z-up, text/npy y-up)."""
    axis = getattr(dataset, "up_axis", None)
    if axis in ("x", "y", "z"):
        return axis
    from ..datasets.io import point_format

    fmt = point_format(path)  # the convention registered with the format (register_point_format's up_axis)
    return fmt.up_axis if fmt is not None and fmt.up_axis else "y"


def load_input(args) -> Dict[str, Any]:
    """``{"points", "labels" (or None), "true_label" (or None), "name", "part_names"}`` from a file or a dataset."""
    path = Path(args.input)
    if path.suffix.lower() in _CONFIG_SUFFIXES:
        return _load_sample(args)
    if args.index is not None:
        raise ValueError(f"--index applies to a dataset config (.yaml); {args.input!r} is a point-cloud file")
    from ..datasets.io import read_point_cloud

    table = read_point_cloud(path)
    labels = None
    if args.labels or (args.prediction and not args.prediction.endswith(".json")):
        labels = _label_column(table, args.label_column, path)
    name = path.name + (f" ({args.true_label})" if args.true_label else "")
    return {"points": table[:, :3], "labels": labels, "true_label": args.true_label, "name": name,
            "part_names": None, "up": default_up(str(path))}  # fmt: skip


def _label_column(table: np.ndarray, column: int, path: Path) -> np.ndarray:
    ncol = table.shape[1]
    if ncol < 4:
        raise ValueError(f"{path}: has only {ncol} columns (x y z); --labels needs a column of part ids")
    if not -ncol <= column < ncol or column in (0, 1, 2, -ncol, -ncol + 1, -ncol + 2):
        raise ValueError(f"{path}: --label-column {column} is not a label column of a {ncol}-column table "
                         f"(columns 0-2 are x y z)")  # fmt: skip
    col = table[:, column]
    if not np.all(col == np.round(col)):
        bad = col[col != np.round(col)][0]
        raise ValueError(
            f"{path}: column {column} holds non-integer values (e.g. {bad:g}), so it is not part ids "
            f"(normals?); choose the label column with --label-column"
        )
    return col.astype(np.int64)


def _load_sample(args) -> Dict[str, Any]:
    from ..datasets import build_dataset

    if args.index is None:
        raise ValueError(f"{args.input} is a dataset config: give the sample with --index I")
    cfg = _dataset_cfg(args.input)
    kwargs = {"root": args.data_root} if args.data_root else {}
    ds = build_dataset(cfg, args.split, **kwargs)
    if not -len(ds) <= args.index < len(ds):
        raise IndexError(f"--index {args.index} out of range: {args.input} split {args.split!r} has {len(ds)} samples")
    sample = ds[args.index]
    points = sample["points"]
    points = points.numpy() if hasattr(points, "numpy") else np.asarray(points)
    true_label = args.true_label
    name = f"{Path(args.input).stem}[{args.split}][{args.index}]"
    classes = getattr(ds, "classes", None)
    if true_label is None and "label" in sample and classes is not None:
        true_label = classes[int(sample["label"])]
        name += f" {true_label}"
    if "cls" in sample and getattr(ds, "categories", None) is not None:
        name += f" {ds.categories[int(sample['cls'])]}"
    labels = None
    if args.labels or args.prediction:
        if "seg" in sample:
            seg = sample["seg"]
            labels = seg.numpy() if hasattr(seg, "numpy") else np.asarray(seg)
        elif args.labels:
            raise ValueError(f"{args.input}: samples of this dataset have no per-point 'seg' labels (classification?)")
    return {"points": points[:, :3], "labels": labels, "true_label": true_label, "name": name, "part_names": None,
            "up": default_up(args.input, ds)}  # fmt: skip


def _read_point_labels(path: str, n: int) -> np.ndarray:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--prediction {path!r} not found")
    if p.suffix == ".npy":
        arr = np.load(p, allow_pickle=False)
    else:
        try:
            arr = np.loadtxt(p, ndmin=1)
        except ValueError as e:
            raise ValueError(f"--prediction {path}: expected one integer part id per line ({e})") from None
    arr = np.asarray(arr)
    if arr.ndim == 2 and arr.shape[1] > 1:
        # (N, P) scores: the prediction is the arg-max part.
        arr = arr.argmax(1)
    arr = arr.reshape(-1)
    if len(arr) != n:
        raise ValueError(f"--prediction {path}: {len(arr)} labels for {n} points")
    return arr


def _read_class_probs(path: str, input_name: str):
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--prediction {path!r} not found")
    try:
        data = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"--prediction {path}: invalid JSON ({e})") from None
    if isinstance(data, list) and data and isinstance(data[0], dict):
        # A list of per-file predictions: take the one for this input.
        match = [d for d in data if Path(str(d.get("file", d.get("path", "")))).name == input_name]
        if len(match) != 1 and len(data) != 1:
            raise ValueError(f"--prediction {path}: holds {len(data)} predictions and none names {input_name!r}")
        data = match[0] if match else data[0]
    if isinstance(data, dict):
        if "topk" in data:
            top = data["topk"]
            if top and isinstance(top[0], dict):
                return [(d.get("label", d.get("name", d.get("class"))),
                         float(d.get("prob", d.get("probability", d.get("score"))))) for d in top], None
            return top, None
        probs = data.get("probs", data.get("probabilities"))
        if probs is not None:
            return probs, data.get("classes", data.get("class_names"))
        return {k: v for k, v in data.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}, None
    if isinstance(data, list):
        return data, None
    raise ValueError(f"--prediction {path}: unrecognised JSON layout")


def visualize(args: Any) -> str:
    """Draw what ``args`` (the options of ``tools/visualize.py``: ``input``, ``out``, ``show``, ``patches``,
    ``labels``, ``prediction``, ``camera``, ...) asks for; returns the line the tool prints ("" with ``--show``
    only)."""
    from .. import viz
    from .colors import get_colormap
    from .render import require_display

    if not args.out and not args.show:
        raise ValueError("nothing to do: give --out FILE.png (headless) and/or --show (interactive window)")
    if args.show:
        require_display()  # fail before any work, with the reason
    az, el, zoom = parse_camera(args.camera)
    get_colormap(args.colormap)  # fail early on a typo, naming the colormap
    data = load_input(args)
    up = args.up or data.get("up") or "y"
    opts = viz.RenderOptions(width=args.width, height=args.height, point_size=args.point_size,
                             colormap=args.colormap, up=up, azimuth=az, elevation=el,
                             zoom=args.zoom or zoom or 1.0, fov=args.fov, backend=args.backend)  # fmt: skip
    points, labels = np.asarray(data["points"], dtype=np.float64), data["labels"]
    title = args.title if args.title is not None else data["name"]
    part_names = _part_names(args.part_names) if args.part_names else data["part_names"]

    pred = probs = classes = None
    if args.prediction:
        if args.prediction.endswith(".json"):
            probs, classes = _read_class_probs(args.prediction, Path(args.input).name)
        else:
            pred = _read_point_labels(args.prediction, len(points))

    if args.num_points and args.num_points < len(points):
        keep = np.sort(np.random.default_rng(0).choice(len(points), args.num_points, replace=False))
        points = points[keep]
        labels = None if labels is None else np.asarray(labels)[keep]
        pred = None if pred is None else pred[keep]

    if args.patches:
        kind = "patches"
        img = viz.render_patches(points, args.num_groups, args.group_size, opts=opts, title=title)
        layers, _ = viz.patch_layers(points, args.num_groups, args.group_size, opts)
    elif probs is not None:
        kind = "classification"
        img = viz.render_classification(points, probs, classes, label=data["true_label"], k=args.topk, opts=opts,
                                        title=title)  # fmt: skip
        layers = viz.cloud_layers(points, None, opts)
    elif labels is not None:
        kind = "segmentation" if pred is not None else "part labels"
        img = viz.render_segmentation(points, labels, pred, part_names=part_names, opts=opts, title=title,
                                      pred_title=args.prediction_title)  # fmt: skip
        _, (colors, _) = viz.label_colors(labels, pred)
        layers = [viz.Layer(points, colors, opts.point_size, "labels")]
    else:
        kind = "cloud"
        img = viz.render_cloud(points, opts=opts, title=title)
        layers = viz.cloud_layers(points, None, opts)

    line = ""
    if args.out:
        out = viz.save_png(img, args.out)
        backend = viz.resolve_backend(opts.backend)
        line = (f"wrote {out} ({kind}, {img.shape[1]}x{img.shape[0]}, {len(points)} points, up axis {up}"
                f"{'' if args.up else ' (default for this input; --up to change)'}, renderer: {backend})")  # fmt: skip
    if args.show:
        if line:
            print(line, flush=True)  # before the window blocks
            line = ""
        viz.show_layers(layers, title=title, opts=opts)
    return line


def _part_names(path: str) -> Dict[int, str]:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--part-names {path!r} not found")
    try:
        raw = json.loads(p.read_text())
        return {int(k): str(v) for k, v in raw.items()}
    except (json.JSONDecodeError, AttributeError, ValueError) as e:
        raise ValueError(f"--part-names {path}: expected a JSON object {{part_id: name}} ({e})") from None
