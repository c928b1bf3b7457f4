"""Score a finished run (or any saved weights folder) on a split: the task's metrics, with voting for classifiers.

Examples::

    python tools/evaluate.py runs/demo/clora-seed0-...                  # the run's best weights, its test split
    python tools/evaluate.py runs/x --vote 10                           # + 10-view voting (one honest pass)
    python tools/evaluate.py runs/x/last --data-root data/MyScans --split test
    python tools/evaluate.py runs/seg                                   # part segmentation: class / instance mIoU

The model is rebuilt exactly as trained from the weights folder (``best/``, ``last/``, or a merged folder) and its
backbone; a different backbone is refused. Class names come from the weights, never from a folder's order.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Optional, Sequence

from ..api.evaluate import evaluate_run
from ..api.evaluate import evaluation_report as report
from .common import ToolParser, run_cli

__all__ = ["main", "build_parser", "evaluate_run", "report"]


def build_parser() -> argparse.ArgumentParser:
    p = ToolParser(prog="pointclora-evaluate", description=__doc__)  # fmt: skip
    p.add_argument("weights", metavar="RUN_OR_WEIGHTS", help="run folder or weights folder (best/, last/, merged)")
    p.add_argument("--data-root", help="dataset folder (overrides the config's root)")
    p.add_argument("--split", default="test", help="split to score (default test)")
    p.add_argument("--dataset", help="another dataset config (path or bare name in datasets/) instead of the run's")
    p.add_argument("--vote", type=int, default=0, metavar="N", help="classification: also score N-view voting")
    p.add_argument("--which", choices=["best", "last"], default="best", help="weights of a run folder")
    p.add_argument("--ckpt", help="the backbone file, when the one recorded in the run moved")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, help="default: the config's data.eval_batch_size")
    p.add_argument("--seed", type=int, default=0, help="seed of the voting views")
    p.add_argument("--output", help="write the metrics as JSON here (default <run>/eval_<split>.json for runs)")
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    return p


def _body(args: argparse.Namespace) -> int:
    from ..utils.atomic import atomic_write_json

    res = evaluate_run(args.weights, split=args.split, data_root=args.data_root, vote=args.vote, device=args.device,
                       dataset=args.dataset, which=args.which, backbone=args.ckpt, batch_size=args.batch_size,
                       seed=args.seed)  # fmt: skip
    if not args.quiet:
        print(report(res))
    out = args.output
    path = Path(args.weights)
    if out is None and (path / "checkpoints").is_dir():
        out = str(path / f"eval_{args.split}{'_vote' + str(args.vote) if args.vote else ''}.json")
    if out:
        atomic_write_json(res, out)
        if not args.quiet:
            print(f"\nmetrics written to {out}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_cli(_body, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
