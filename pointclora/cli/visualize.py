"""Render a point cloud, the tokenizer's patches, part labels or a classification prediction to PNG (headless).

INPUT is a point-cloud file (.pcd .ply .off .obj .npy .txt .xyz, optionally .gz) or a dataset config (YAML: a
datasets/*.yaml file or an experiment config with a ``dataset:`` section) together with ``--index``.

Examples::

    python tools/visualize.py airplane_0001.txt.gz --out cloud.png                  # colour = height
    python tools/visualize.py airplane_0001.txt.gz --patches --num-groups 64 --group-size 32 --out patches.png
    python tools/visualize.py cattle_1.txt --labels --out parts.png                 # last column = part id
    python tools/visualize.py cattle_1.txt --labels --prediction pred.npy --out seg.png   # GT | pred | errors
    python tools/visualize.py chair.pcd --prediction topk.json --true-label chair --out cls.png
    python tools/visualize.py datasets/shapenetpart.yaml --index 3 --split test --labels --out sample.png
    python tools/visualize.py chair.pcd --show                                       # interactive window

Pictures are drawn with Open3D's offscreen renderer when it works on this machine, else with matplotlib (a warning
says so); force one with --backend or $POINTCLORA_VIZ_BACKEND.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

__all__ = ["main", "build_parser", "CAMERA_PRESETS", "default_up"]

#: Named views (azimuth, elevation) around the up axis; "front" looks along -front at the cloud.
CAMERA_PRESETS = {"iso": (45.0, 25.0), "front": (0.0, 0.0), "side": (90.0, 0.0), "top": (0.0, 89.9),
                  "back": (180.0, 0.0)}  # fmt: skip
_CONFIG_SUFFIXES = (".yaml", ".yml")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pointclora-visualize", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("input", help="point-cloud file, or a dataset / experiment config (.yaml) with --index")
    src = p.add_argument_group("dataset input")
    src.add_argument("--index", type=int, help="sample index in the dataset (INPUT is a config)")
    src.add_argument("--split", default="test", help="dataset split (default: test)")
    src.add_argument("--data-root", help="dataset root, overriding the config's")
    what = p.add_argument_group("what to draw")
    what.add_argument("--patches", action="store_true", help="the tokenizer's FPS centres and kNN groups")
    what.add_argument("--num-groups", type=int, default=64, help="G, number of patches (default 64)")
    what.add_argument("--group-size", type=int, default=32, help="K, points per patch (default 32)")
    what.add_argument("--labels", action="store_true",
                      help="colour by part label (a file's --label-column, or the dataset sample's 'seg')")
    what.add_argument("--label-column", type=int, default=-1,
                      help="column of INPUT holding part ids (default -1: the last)")
    what.add_argument("--part-names", help="JSON file {part_id: name} for the legend")
    what.add_argument("--prediction",
                      help="per-point part ids (.npy, or .txt with one id per line) -> GT | prediction | errors; "
                           "or a .json of class probabilities -> top-k picture ({name: prob}, "
                           "{'topk': [[name, prob], ...]} or {'probs': [...], 'classes': [...]})")
    what.add_argument("--prediction-title", default="prediction", help="title of the prediction panel")
    what.add_argument("--true-label", help="true class name for a classification picture")
    what.add_argument("--topk", type=int, default=5, help="classes shown in a classification picture (default 5)")
    what.add_argument("--num-points", type=int,
                      help="draw a random subset of this many points (fixed seed; labels follow)")
    what.add_argument("--title", help="text above the picture (default: the input's name)")
    view = p.add_argument_group("view")
    view.add_argument("--out", help="write the picture to this .png")
    view.add_argument("--show", action="store_true", help="open an interactive Open3D window (needs a display)")
    view.add_argument("--width", type=int, default=640, help="width of each rendered panel in pixels (640)")
    view.add_argument("--height", type=int, default=480, help="height of each rendered panel in pixels (480)")
    view.add_argument("--point-size", type=float, default=4.0, help="point size in pixels (4)")
    view.add_argument("--colormap", default="viridis", help="matplotlib colormap for height colouring (viridis)")
    view.add_argument("--up", choices=["x", "y", "z"], default=None,
                      help="up axis: height colouring and camera orbit. Default: the dataset's convention (its "
                           "up_axis: y for ModelNet40/ShapeNet/ScanObjectNN, z for folders of ModelNet10 meshes/PCDs); "
                           "for a file, z for mesh and PCD/PLY files (.off .obj .ply .pcd: ModelNet meshes and scans), "
                           "y for text and .npy clouds (ModelNet40 resampled, ShapeNetPart)")
    view.add_argument("--camera", default="iso",
                      help=f"view: a preset ({', '.join(CAMERA_PRESETS)}) or AZIMUTH,ELEVATION[,ZOOM] in degrees "
                           "(default iso = 45,25)")
    view.add_argument("--zoom", type=float, help="> 1 moves the camera closer (default 1: the cloud fills the view)")
    view.add_argument("--fov", type=float, default=30.0, help="vertical field of view in degrees (30)")
    view.add_argument("--backend", choices=["auto", "open3d", "matplotlib"], default="auto",
                      help="renderer (default auto: Open3D offscreen if it works here, else matplotlib)")
    return p


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


#: Up axis of a point-cloud file by its format when no dataset says otherwise (see ``--up``).
_FILE_UP = {".off": "z", ".obj": "z", ".ply": "z", ".pcd": "z", ".pcd.gz": "z"}


def default_up(path: str, dataset: Any = None) -> str:
    """The ``--up`` default: the dataset's ``up_axis``, else by file format (meshes and PCD z-up, text/npy y-up)."""
    axis = getattr(dataset, "up_axis", None)
    if axis in ("x", "y", "z"):
        return axis
    name = str(path).lower()
    for ext, up in _FILE_UP.items():
        if name.endswith(ext):
            return up
    return "y"


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


# ------------------------------------------------------------------------------------------------ main
def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except (ValueError, FileNotFoundError, IndexError, KeyError, RuntimeError) as e:
        msg = e.args[0] if isinstance(e, KeyError) and e.args else e
        print(f"pointclora-visualize: error: {msg}", file=sys.stderr)
        return 2


def _run(args) -> int:
    from .. import viz
    from ..viz.colors import get_colormap
    from ..viz.render import require_display

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

    if args.out:
        out = viz.save_png(img, args.out)
        backend = viz.resolve_backend(opts.backend)
        print(f"wrote {out} ({kind}, {img.shape[1]}x{img.shape[0]}, {len(points)} points, up axis {up}"
              f"{'' if args.up else ' (default for this input; --up to change)'}, renderer: {backend})")  # fmt: skip
    if args.show:
        viz.show_layers(layers, title=title, opts=opts)
    return 0


def _part_names(path: str) -> Dict[int, str]:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"--part-names {path!r} not found")
    try:
        raw = json.loads(p.read_text())
        return {int(k): str(v) for k, v in raw.items()}
    except (json.JSONDecodeError, AttributeError, ValueError) as e:
        raise ValueError(f"--part-names {path}: expected a JSON object {{part_id: name}} ({e})") from None


if __name__ == "__main__":
    raise SystemExit(main())
