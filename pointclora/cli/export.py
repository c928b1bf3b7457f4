"""Export a trained model to ONNX or TorchScript: one file that runs from raw points, no PyTorch model code needed.

Examples::

    python tools/export.py runs/x --format onnx --out model.onnx              # + model.onnx.json (classes, inputs)
    python tools/export.py runs/seg/best --format torchscript --out seg.pt

The adapters are merged first; the graph holds FPS, kNN and grouping (and the 3-NN interpolation of part
segmentation), batch size dynamic, the point count fixed (``--num-points``, default the run's ``data.num_points``).
Inputs: ``points`` (batch, N, 3) float32 (centred, unit sphere, as ``predict`` feeds them) and, for part
segmentation, ``category`` (batch,) int64. Output: ``logits``.
"""

from __future__ import annotations

import argparse
from typing import List, Optional

from .common import ToolParser, run_cli

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    p = ToolParser(prog="pointclora-export", description=__doc__)
    p.add_argument("weights", metavar="RUN_OR_WEIGHTS", help="run folder or weights folder")
    p.add_argument("--format", required=True, choices=["onnx", "torchscript"], help="what to write")
    p.add_argument("--out", required=True, help="the file to write (a .json description is written beside it)")
    p.add_argument("--which", choices=["best", "last"], default="best", help="weights of a run folder")
    p.add_argument("--num-points", type=int, help="points per cloud (default: the run's data.num_points)")
    p.add_argument("--ckpt", help="the backbone file, when the one recorded in the run moved")
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    return p


def _body(args: argparse.Namespace) -> int:
    from ..api.export import export_weights

    info = export_weights(args.weights, args.out, fmt=args.format, which=args.which, backbone=args.ckpt,
                          num_points=args.num_points)  # fmt: skip
    print(f"{args.format}: {args.out} ({info['task']}, inputs {info['inputs']}); description: {args.out}.json")
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    return run_cli(_body, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
