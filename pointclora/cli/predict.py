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
from typing import Optional, Sequence

from ..api.predict import predict_files, predict_with_adapters, prediction_line
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
        hidden = ("points", "input_points")
        print(json.dumps({k: v for k, v in r.items() if k not in hidden}) if args.json else prediction_line(r))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_cli(_body, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
