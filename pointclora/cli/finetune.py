"""Fine-tune a pre-trained point-cloud transformer for classification with CLoRA (or LoRA, full, linear probing).

Examples::

    python tools/finetune.py --cfg demo.yaml                          # the embedded demo, no downloads
    python tools/finetune.py --cfg scanobjectnn.yaml --ckpt checkpoints/point_mae_pretrain.pth --peft clora
    python tools/finetune.py --cfg modelnet40.yaml --set optim.lr=1e-3 data.batch_size=16 --seeds 0 1 2
    python tools/finetune.py --cfg demo.yaml --output runs/x --resume       # continue a killed run exactly
    torchrun --nproc_per_node 2 tools/finetune.py --cfg scanobjectnn.yaml   # DDP (gloo on CPU, NCCL on GPU)
"""

from __future__ import annotations

import argparse
from typing import Optional, Sequence

from ..tasks import list_tasks
from ..tasks.classification import ClassificationTask
from .common import ToolParser, add_config_args, add_training_args, config_from_args, run_cli

__all__ = ["main", "build_parser", "TASK"]

#: the task this tool trains (``pointclora.tasks.ClassificationTask.name``)
TASK = ClassificationTask.name


def build_parser(prog: str = "pointclora-finetune", doc: str = __doc__) -> argparse.ArgumentParser:
    p = ToolParser(prog=prog, description=doc)
    add_config_args(p, "experiment config: a path or a bare name found in configs/")
    add_training_args(p)
    p.add_argument("--task", choices=list_tasks(), help=f"train another registered task (default: {prog}'s own)")
    p.add_argument("--seeds", type=int, nargs="+", help="run once per seed and report mean ± std")
    p.add_argument("--sweep", nargs="+", metavar="KEY=V1,V2", help="run every combination (e.g. optim.lr=5e-4,1e-3,"
                   "2e-3), choose the best on validation, print the table; resumable (finished points are "
                   "kept)")  # fmt: skip
    return p


def train_main(args: argparse.Namespace, task: Optional[str] = None) -> int:
    """The body of finetune / segment: one run, one per seed, or a sweep (``task`` None: the config's own)."""
    from .. import api

    cfg = config_from_args(args, task=args.task or task)
    if args.sweep and args.seeds:
        raise ValueError("--sweep and --seeds together: sweep first, then run the chosen values with --seeds")
    if args.sweep:
        print(api.sweep(cfg, args.sweep, output=args.output, quiet=args.quiet)["table"])
    elif args.seeds:
        api.fit_seeds(cfg, args.seeds, output=args.output, resume=args.resume, data_root=args.data_root,
                      quiet=args.quiet)  # fmt: skip
    else:
        api.train(cfg, output=args.output, resume=args.resume, data_root=args.data_root, quiet=args.quiet)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_cli(lambda a: train_main(a, TASK), build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
