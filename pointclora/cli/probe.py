"""``tools/probe.py --weights BACKBONE --cfg DATASET``: linear probe of a frozen backbone beside a random one.

    python tools/probe.py --weights runs/pretrain/x/encoder-best.pth --cfg datasets/modelnet10_folder.yaml
    python tools/probe.py --weights point_mae_demo_mn10 --cfg my_dataset.yaml --per-class 10 --json

Builds the dataset's ``train`` and ``test`` splits (``--train-split``/``--test-split``), extracts frozen pooled
features (``cls_max`` = ``[cls, max patch token]``, ``mean_max`` = ``[mean, max]`` of the patch tokens), fits a
logistic regression (or ``--classifier svm``: LinearSVC) with C chosen on a validation carve of the training features,
and prints OA / mean class accuracy for the backbone and, always, for a randomly initialised backbone of the same
architecture. ``--weights`` is a checkpoint file (anything ``finetune --ckpt`` reads) or the name of a shipped
pre-trained backbone; ``--weights random`` probes only random weights. ``--cfg`` is a dataset config (``name`` +
arguments, found on the ``datasets/`` shelf by bare name) or an experiment config with a ``dataset`` section.
"""

from __future__ import annotations

import argparse
import json
from typing import Optional, Sequence

from ..api.probe import load_dataset_config, probe_table, run_probe
from .common import ToolParser, run_cli

__all__ = ["build_parser", "main", "run_probe", "load_dataset_config"]


def build_parser() -> argparse.ArgumentParser:
    p = ToolParser(prog="pointclora-probe", description=__doc__.splitlines()[0])
    p.add_argument("--weights", required=True, help="backbone checkpoint, shipped backbone name, or 'random'")
    p.add_argument("--cfg", required=True, help="dataset config (datasets/NAME.yaml) or experiment config")
    p.add_argument("--model", default=None, help="registered variant (default: the checkpoint's, else point_mae_demo)")
    p.add_argument("--data-root", default=None, help="override the dataset's root")
    p.add_argument("--npoints", type=int, default=1024, help="points per cloud (default 1024)")
    p.add_argument("--train-split", default="train")
    p.add_argument("--test-split", default="test")
    p.add_argument("--per-class", type=int, nargs="*", default=[10], help="few-label budgets besides all labels")
    p.add_argument("--draws", type=int, default=3, help="random draws averaged per few-label budget")
    p.add_argument("--classifier", choices=("logreg", "svm"), default="logreg")
    p.add_argument("--layers", type=int, nargs="*", default=None, help="also pool these 0-based blocks")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--debug", action="store_true", help="show tracebacks")
    return p


def _body(args: argparse.Namespace) -> int:
    ds = load_dataset_config(args.cfg)
    if args.data_root:
        ds["root"] = args.data_root
    result = run_probe(args.weights, ds, args.model, args.npoints, args.train_split, args.test_split, args.per_class,
                       args.draws, args.classifier, args.layers, args.seed, args.batch_size, args.device)  # fmt: skip
    print(json.dumps(result) if args.json else probe_table(result))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_cli(_body, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
