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
from typing import Optional, Sequence

from ..viz.tool import CAMERA_PRESETS, default_up, visualize
from .common import ToolParser, run_cli

__all__ = ["main", "build_parser", "CAMERA_PRESETS", "default_up"]


def build_parser() -> argparse.ArgumentParser:
    p = ToolParser(prog="pointclora-visualize", description=__doc__)
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
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    return p


def _body(args: argparse.Namespace) -> int:
    try:
        line = visualize(args)
    except (IndexError, RuntimeError) as err:  # a sample index out of range, no display for --show: the user's
        raise ValueError(str(err)) from None
    if line:
        print(line)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_cli(_body, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
