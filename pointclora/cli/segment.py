"""Part segmentation with the Point-MAE head and any PEFT method (the classification tool's flags, task
``part_segmentation``).

Examples::

    python tools/segment.py --cfg shapenetpart.yaml --ckpt checkpoints/point_mae_pretrain.pth --peft clora
    python tools/segment.py --cfg shapenetpart.yaml --output runs/seg --resume
"""

from __future__ import annotations

from typing import Optional, Sequence

from ..tasks.part_segmentation import PartSegmentationTask
from .common import run_cli
from .finetune import build_parser as _finetune_parser
from .finetune import train_main

__all__ = ["main", "build_parser"]


def build_parser():
    return _finetune_parser("pointclora-segment", __doc__)


def main(argv: Optional[Sequence[str]] = None) -> int:
    return run_cli(lambda a: train_main(a, PartSegmentationTask.name), build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
