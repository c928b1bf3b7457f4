"""Point-MAE masked-autoencoder pre-training on any dataset; exports an encoder checkpoint for ``--ckpt``.

Examples::

    python tools/pretrain.py --cfg pretrain_shapenet.yaml
    python tools/pretrain.py --cfg pretrain_demo.yaml --output runs/pre --resume     # continue across sittings
"""

from __future__ import annotations

import argparse
from typing import Optional, Sequence

from .common import ToolParser, add_config_args, add_training_args, config_from_args, run_cli

__all__ = ["main", "build_parser"]


def build_parser() -> argparse.ArgumentParser:
    p = ToolParser(prog="pointclora-pretrain", description=__doc__)  # fmt: skip
    add_config_args(p, "config file or bare name in configs/ (e.g. pretrain_shapenet.yaml)")
    add_training_args(p, with_peft=False)
    p.add_argument("--layout", choices=["ours", "point_mae"], help="exported checkpoint layout (pretrain.layout)")
    return p


def _body(args: argparse.Namespace) -> int:
    from ..api import train
    from ..tasks.mae_pretraining import MAEPretrainingTask

    if args.layout:
        args.overrides.append(f"pretrain.layout={args.layout}")
    cfg = config_from_args(args, task=MAEPretrainingTask.name)
    train(cfg, output=args.output, resume=args.resume, data_root=args.data_root, quiet=args.quiet)
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_cli(_body, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
