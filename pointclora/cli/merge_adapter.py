"""Fold a run's adapters into its backbone: a plain model that runs at exactly the frozen backbone's FLOPs.

Examples::

    python tools/merge_adapter.py runs/x --output runs/x-merged                 # a weights folder evaluate/predict read
    python tools/merge_adapter.py runs/x --output runs/x-merged --plain merged.pth   # + a plain state-dict file

The input is a run folder or weights folder (``best/``, ``last/``); the backbone is the one the run recorded (``--ckpt``
when it moved); another backbone is refused.
"""

from __future__ import annotations

import argparse
from typing import List, Optional

from .common import ToolParser, run_cli

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    p = ToolParser(prog="pointclora-merge-adapter", description=__doc__)
    p.add_argument("weights", metavar="RUN_OR_WEIGHTS", help="run folder or weights folder")
    p.add_argument("--output", required=True, help="merged weights folder to write")
    p.add_argument("--which", choices=["best", "last"], default="best", help="weights of a run folder")
    p.add_argument("--ckpt", help="the backbone file, when the one recorded in the run moved")
    p.add_argument("--plain", help="also write a plain checkpoint {'model': state_dict, 'config'} here (.pth)")
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    return p


def _body(args: argparse.Namespace) -> int:
    from ..api import merge_weights

    out = merge_weights(args.weights, args.output, which=args.which, backbone=args.ckpt, plain_checkpoint=args.plain)
    print(f"merged weights: {out}" + (f"; plain checkpoint: {args.plain}" if args.plain else ""))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    return run_cli(_body, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
