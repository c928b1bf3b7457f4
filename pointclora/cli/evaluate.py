"""Score a fine-tuned classifier: accuracy with and without voting, per-class accuracy, confusion matrix.

Examples::

    python tools/evaluate.py runs/demo/clora-seed0-...                  # the run's best checkpoint, its test split
    python tools/evaluate.py runs/x --vote 10                           # + 10-view voting (one honest pass)
    python tools/evaluate.py runs/x/best_adapter --data-root data/MyScans --split test
    python tools/evaluate.py merged.pth --dataset modelnet10_folder.yaml --data-root data/ModelNet10

Voting: 10 copies of each test cloud with scale & translate augmentation, logits averaged, argmax -- computed once
with a fixed seed, never the max over repeated votes. Class names come from the checkpoint; a dataset whose classes
are named differently or ordered differently is mapped by name.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from torch.utils.data import DataLoader, Dataset

__all__ = ["main", "build_parser", "evaluate_checkpoint", "RemapLabels"]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pointclora-evaluate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("checkpoint", metavar="RUN_OR_CHECKPOINT",
                   help="run directory, best.pth/last.pth, merged checkpoint or adapter folder")
    p.add_argument("--data-root", help="dataset folder (overrides the config's root)")
    p.add_argument("--split", default="test", help="split to score (default test)")
    p.add_argument("--dataset", help="another dataset config (path or bare name in datasets/) instead of the run's")
    p.add_argument("--vote", type=int, default=0, metavar="N", help="also score N-view voting (10 in the literature)")
    p.add_argument("--which", choices=["best", "last"], default="best", help="checkpoint of a run directory")
    p.add_argument("--ckpt", help="pre-trained backbone, when the one recorded in the config moved")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=int, help="default: the config's data.eval_batch_size")
    p.add_argument("--num-workers", type=int, default=0)
    p.add_argument("--seed", type=int, default=0, help="seed of the voting views")
    p.add_argument("--output", help="write the metrics as JSON here (default <run>/eval_<split>.json for runs)")
    p.add_argument("--quiet", action="store_true")
    return p


class RemapLabels(Dataset):
    """Relabel a dataset's samples into the checkpoint's class order, by class name."""

    def __init__(self, dataset: Any, dataset_classes: Sequence[str], model_classes: Sequence[str]) -> None:
        index = {c: i for i, c in enumerate(model_classes)}
        unknown = [c for c in dataset_classes if c not in index]
        if unknown:
            raise ValueError(
                f"the dataset has classes the model was not trained on: {unknown[:10]}; model classes: "
                f"{list(model_classes)}"
            )
        self.dataset, self.mapping = dataset, [index[c] for c in dataset_classes]

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> Dict[str, Any]:
        sample = dict(self.dataset[i])
        sample["label"] = self.mapping[int(sample["label"])]
        return sample


def evaluate_checkpoint(
    checkpoint: str,
    split: str = "test",
    data_root: Optional[str] = None,
    vote: int = 0,
    device: str = "auto",
    dataset: Optional[str] = None,
    which: str = "best",
    backbone: Optional[str] = None,
    batch_size: Optional[int] = None,
    num_workers: int = 0,
    seed: int = 0,
) -> Dict[str, Any]:
    """Python entry point of the tool: returns the metrics dict that ``main`` prints and writes."""
    from ..config import load_yaml, resolve_config_path
    from ..datasets import build_dataset
    from ..datasets.transforms import eval_transforms
    from ..engine.evaluation import evaluate
    from ..engine.inference import load_classifier
    from ..utils.device import resolve_device

    dev = resolve_device(device)
    loaded = load_classifier(checkpoint, dev, backbone=backbone, which=which)
    cfg = loaded.config
    dcfg = dict(cfg["dataset"])
    if dataset:
        dcfg = dict(load_yaml(resolve_config_path(dataset, key="dataset")))
    num_points = int(cfg["data"]["num_points"])
    ds = build_dataset(dcfg, split, transform=eval_transforms(num_points), root=data_root)
    ds_classes = [str(c) for c in getattr(ds, "classes", loaded.classes)]
    if ds_classes != loaded.classes:
        ds = RemapLabels(ds, ds_classes, loaded.classes)
    bs = batch_size or int(cfg["data"].get("eval_batch_size", 64))
    loader = DataLoader(ds, batch_size=bs, shuffle=False, num_workers=num_workers)
    res = evaluate(loaded.model, loader, len(loaded.classes), dev, vote=vote, vote_seed=seed)
    res["per_class_acc"] = dict(zip(loaded.classes, res["per_class_acc"]))
    if vote:
        res["vote_per_class_acc"] = dict(zip(loaded.classes, res["vote_per_class_acc"]))
    res.update(checkpoint=loaded.source, split=split, dataset=dcfg.get("name"), classes=loaded.classes,
               num_classes=len(loaded.classes), num_points=num_points)  # fmt: skip
    return res


def report(res: Dict[str, Any]) -> str:
    from ..engine.evaluation import format_confusion
    from ..engine.logging import markdown_table

    rows: List[List[Any]] = [["no voting", f"{res['acc']:.2f}", f"{res['mean_class_acc']:.2f}"]]
    if res.get("vote_views"):
        rows.append([f"{res['vote_views']}-view vote", f"{res['vote_acc']:.2f}", f"{res['vote_mean_class_acc']:.2f}"])
    out = [f"{res['checkpoint']} on {res['dataset']} [{res['split']}], {res['num_samples']} samples\n",
           markdown_table(["evaluation", "OA (%)", "mAcc (%)"], rows), "\nper-class accuracy (%):\n"]  # fmt: skip
    header = ["class", "no voting"] + (["vote"] if res.get("vote_views") else [])
    per = []
    for c, v in res["per_class_acc"].items():
        row = [c, "-" if v is None else f"{v:.2f}"]
        if res.get("vote_views"):
            vv = res["vote_per_class_acc"][c]
            row.append("-" if vv is None else f"{vv:.2f}")
        per.append(row)
    out.append(markdown_table(header, per))
    out.append("\nconfusion matrix (rows: true class, columns: predicted):\n")
    out.append(format_confusion(res["confusion"], res["classes"]))
    return "\n".join(out)


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from ..config import ConfigError
    from ..engine.checkpoint import atomic_write_json

    try:
        res = evaluate_checkpoint(args.checkpoint, split=args.split, data_root=args.data_root, vote=args.vote,
                                  device=args.device, dataset=args.dataset, which=args.which, backbone=args.ckpt,
                                  batch_size=args.batch_size, num_workers=args.num_workers, seed=args.seed)  # fmt: skip
    except (FileNotFoundError, ConfigError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not args.quiet:
        print(report(res))
    out = args.output
    path = Path(args.checkpoint)
    if out is None and path.is_dir() and (path / "checkpoints").is_dir():
        out = str(path / f"eval_{args.split}{'_vote' + str(args.vote) if args.vote else ''}.json")
    if out:
        atomic_write_json(res, out)
        if not args.quiet:
            print(f"\nmetrics written to {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
