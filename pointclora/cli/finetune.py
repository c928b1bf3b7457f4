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

from .common import ToolParser, add_config_args, add_training_args, config_from_args, run_cli

__all__ = ["main", "build_parser"]


def build_parser(prog: str = "pointclora-finetune", doc: str = __doc__) -> argparse.ArgumentParser:
    p = ToolParser(prog=prog, description=doc)
    add_config_args(p, "experiment config: a path or a bare name found in configs/")
    add_training_args(p)
    p.add_argument("--seeds", type=int, nargs="+", help="run once per seed and report mean ± std")
    return p


def train_main(args: argparse.Namespace, task: str) -> int:
    """The body of finetune / segment: one run, or one per seed."""
    from ..engine.runs import fit_seeds
    from ..engine.trainer import Trainer

    cfg = config_from_args(args, task=task)
    if args.seeds:
        fit_seeds(cfg, args.seeds, output=args.output, resume=args.resume, data_root=args.data_root, quiet=args.quiet)
    else:
        Trainer(cfg, output=args.output, resume=args.resume, data_root=args.data_root, quiet=args.quiet).fit()
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_cli(lambda a: train_main(a, "classification"), build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
