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
from typing import Any, Dict, List, Optional, Sequence

from torch.utils.data import DataLoader

from .common import ToolParser, run_cli

__all__ = ["main", "build_parser", "evaluate_run"]


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


def evaluate_run(weights: str, split: str = "test", data_root: Optional[str] = None, vote: int = 0,
                 device: str = "auto", dataset: Optional[str] = None, which: str = "best",
                 backbone: Optional[str] = None, batch_size: Optional[int] = None,
                 seed: int = 0) -> Dict[str, Any]:  # fmt: skip
    """The library call behind the tool: the metrics dict it prints and writes."""
    from ..config import load_yaml, resolve_config_path
    from ..engine.evaluation import evaluate
    from ..engine.weights import load_weights
    from ..utils.device import resolve_device

    dev = resolve_device(device)
    run = load_weights(weights, which=which, backbone=backbone, device=dev)
    task, cfg = run.task, run.manifest["config"]
    dcfg = dict(load_yaml(resolve_config_path(dataset, key="dataset"))) if dataset else None
    if dcfg is None and not cfg.get("dataset"):
        raise ValueError(f"{weights} records no dataset (a bare adapter folder): pass --dataset NAME.yaml")
    ds = (task.eval_dataset(split, data_root=data_root, dataset_cfg=dcfg, vote=vote > 0)
          if task.name == "classification" else task.eval_dataset(split, data_root=data_root, dataset_cfg=dcfg))
    loader = DataLoader(ds, batch_size=batch_size or int(cfg["data"].get("eval_batch_size", 64)), shuffle=False)
    if task.name == "classification":
        classes = list(task.meta["classes"])
        res = evaluate(run.model, loader, len(classes), dev, vote=vote, vote_seed=seed,
                       num_points=int(cfg["data"]["num_points"]))  # fmt: skip
        res["per_class_acc"] = dict(zip(classes, res["per_class_acc"]))
        if vote:
            res["vote_per_class_acc"] = dict(zip(classes, res["vote_per_class_acc"]))
        res["classes"] = classes
    else:
        import contextlib

        res = task.evaluate(run.model, loader, dev, contextlib.nullcontext)
    res.update(task=task.name, weights=str(weights), epoch=run.manifest.get("epoch"), split=split,
               dataset=(dcfg or cfg["dataset"]).get("name"), method=run.manifest.get("method"))  # fmt: skip
    return res


def report(res: Dict[str, Any]) -> str:
    from ..engine.evaluation import format_confusion
    from ..engine.logging import markdown_table
    from ..engine.segmentation_metrics import format_category_table

    head = f"{res['weights']} (epoch {res['epoch']}, {res['method']}) on {res['dataset']} [{res['split']}]\n"
    if res["task"] != "classification":
        return head + "\n" + format_category_table(res) if "per_category" in res else head + str(res)
    rows: List[List[Any]] = [["no voting", f"{res['acc']:.2f}", f"{res['mean_class_acc']:.2f}"]]
    if res.get("vote_views"):
        rows.append([f"{res['vote_views']}-view vote", f"{res['vote_acc']:.2f}", f"{res['vote_mean_class_acc']:.2f}"])
    out = [head, markdown_table(["evaluation", "OA (%)", "mAcc (%)"], rows), "\nper-class accuracy (%):\n"]
    per = [[c, "-" if v is None else f"{v:.2f}"] for c, v in res["per_class_acc"].items()]
    out.append(markdown_table(["class", "no voting"], per))
    out.append("\nconfusion matrix (rows: true class, columns: predicted):\n")
    out.append(format_confusion(res["confusion"], res["classes"]))
    return "\n".join(out)


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
