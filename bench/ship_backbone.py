"""Package a pre-training run's encoder as the shipped backbone file (the model card's last step).

    python tools/pretrain.py --cfg pretrain_mn10.yaml --output runs/pretrain/mn10
    python bench/ship_backbone.py --run runs/pretrain/mn10 --out pointclora/assets/point_mae_mn10.pth

Reads ``<run>/encoder-best.pth`` (the epoch with the lowest validation Chamfer-L2) and ``<run>/metrics.json``, and
writes the same tensors with what a user of the file needs to know beside them: the recipe (the run's resolved config
and the command), the pre-training wall time, and the data licence. Nothing is retrained or changed.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Optional, Sequence

import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from pointclora.models.checkpoint import safe_torch_load  # noqa: E402
from pointclora.utils.atomic import atomic_save  # noqa: E402

LICENCE = "weights derived from ModelNet (Princeton): academic, non-commercial research use only"


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", type=Path, required=True, help="a finished tools/pretrain.py run folder")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--command", help="how the run was made (default: tools/pretrain.py with the run's own config)")
    p.add_argument("--licence", default=LICENCE)
    a = p.parse_args(argv)
    metrics_path, encoder_path = a.run / "metrics.json", a.run / "encoder-best.pth"
    for path in (metrics_path, encoder_path):
        if not path.is_file():
            p.error(f"{path} not found: --run must be a finished tools/pretrain.py run")
    metrics = json.loads(metrics_path.read_text())
    config = metrics.get("config")
    if not (a.command or config):  # a guessed config name would write a recipe that does not make these weights
        p.error(f"{metrics_path} names no config (its 'config' is {config!r}): pass --command, how the run was made")
    command = a.command or f"python tools/pretrain.py --cfg {config}.yaml --output RUN"
    state = safe_torch_load(str(encoder_path))
    state.update(
        recipe=f"{command} ({(a.run / 'config.yaml').read_text()})",
        epoch=int(metrics["best_epoch"]),
        train_cpu_min=float(metrics["wall_time_s"]) / 60,
        licence=a.licence,
    )
    atomic_save(state, str(a.out))
    tensors = sum(1 for v in state["model"].values() if isinstance(v, torch.Tensor))
    print(f"{a.out}: {tensors} tensors from {encoder_path} (epoch {state['epoch']}), {a.out.stat().st_size:,} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
