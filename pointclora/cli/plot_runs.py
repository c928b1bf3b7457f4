"""Draw training curves of one or several runs into one PNG; or few-shot / per-category mIoU bar charts.

Examples::

    python tools/plot_runs.py runs/demo/clora-seed0-* --out curves.png            # loss / accuracy / lr panels
    python tools/plot_runs.py runs/a runs/b --metrics val_acc train_loss --out cmp.png
    python tools/plot_runs.py --fewshot fewshot.json --out fewshot.png             # bars with ±std error bars
    python tools/plot_runs.py --miou seg_metrics.json --out miou.png               # per-category mIoU bars

A run is a directory holding ``history.jsonl`` (one JSON object per epoch, written by training) or that file
itself. Keys missing from some epochs leave gaps; metrics never logged are skipped with a warning.

``--fewshot`` reads ``{setting: [fold accs] | {"mean", "std", ...}}`` (or ``{method: {setting: ...}}``, or a file
with such a mapping under ``"results"``). ``--miou`` reads ``{category: miou}`` (or ``{method: {...}}``, or a file
with it under ``"per_category"`` / ``"category_miou"`` / ``"per_category_miou"``; ``class_miou`` /
``instance_miou`` beside it become reference lines).
"""

from __future__ import annotations

import argparse
from typing import Optional, Sequence

from .common import ToolParser, run_cli

__all__ = ["main", "build_parser"]

def build_parser() -> argparse.ArgumentParser:
    p = ToolParser(prog="pointclora-plot-runs", description=__doc__)
    p.add_argument("runs", nargs="*", metavar="RUN_DIR", help="run directories (or history.jsonl files)")
    p.add_argument("--out", required=True, help="output .png")
    p.add_argument("--metrics", nargs="+", help="keys to draw, one panel each (default: loss / accuracy / lr)")
    p.add_argument("--labels", nargs="+", help="legend names for the runs, in order (default: directory names)")
    p.add_argument("--title", help="text above the picture")
    p.add_argument("--fewshot", metavar="JSON", help="draw few-shot results as bars with error bars instead")
    p.add_argument("--miou", metavar="JSON", help="draw per-category mIoU bars instead")
    p.add_argument("--width", type=int, default=1400, help="curves picture width in pixels (1400)")
    p.add_argument("--height", type=int, default=420, help="curves picture height in pixels (420)")
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    return p


def _body(args: argparse.Namespace) -> int:
    from ..viz.run_plots import plot_runs

    print(plot_runs(args.runs, args.out, fewshot=args.fewshot, miou=args.miou, metrics=args.metrics,
                    labels=args.labels, title=args.title, width=args.width, height=args.height))  # fmt: skip
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_cli(_body, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
