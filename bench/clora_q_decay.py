"""Ablation: CLoRA with its coefficient matrices Q kept out of weight decay (default) vs decayed toward 0 (old).

    python bench/clora_q_decay.py --backbone BACKBONE.pth [--data ../shared/data/modelnet10_pcd] [--epochs 8] [--seed 0]

Both runs share everything else (data split, seed, schedule): ModelNet10's official train folder split 70/10/20
(seeded) into train / val / test, 256 points, the point_mae_demo backbone (pre-trained with
configs/pretrain_demo.yaml), AdamW lr 2e-3, weight decay 0.05. Prints each run's test accuracy and how far Q moved
from the identity (mean diagonal, mean |Q - I|).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
from torch.utils.data import Subset


def _split(n: int, seed: int = 0):
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed)).tolist()
    n_test, n_val = n // 5, n // 10
    return perm[n_test + n_val :], perm[n_test : n_test + n_val], perm[:n_test]


def _q_stats(run_dir: Path) -> dict:
    state = torch.load(run_dir / "checkpoints" / "last.pth", map_location="cpu", weights_only=True)["model"]
    qs = [t for n, t in state.items() if n.endswith(".Q")]
    eye = torch.eye(qs[0].shape[-1])
    diag = torch.cat([torch.diagonal(q, dim1=-2, dim2=-1).reshape(-1) for q in qs])
    dev = torch.cat([(q - eye).abs().reshape(-1) for q in qs])
    return {"q_mean_diag": float(diag.mean()), "q_mean_abs_dev_from_I": float(dev.mean())}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--backbone", required=True)
    p.add_argument("--data", default=os.environ.get("POINTCLORA_REAL_DATA", "../shared/data") + "/modelnet10_pcd")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--output", default="runs/ablation_q_decay")
    p.add_argument("--seed", type=int, default=0, help="training seed (the data split stays seed 0)")
    args = p.parse_args()

    from pointclora.api import run_finetune
    from pointclora.config import load_config
    from pointclora.datasets import PointCloudFolder

    full = PointCloudFolder(args.data, split="train", num_points=256, normalize=True)
    train, val, test = (Subset(full, idx) for idx in _split(len(full)))
    data = {"train": train, "val": val, "test": test, "classes": full.classes, "val_source": "seeded 10% of train"}
    results = {}
    for label, decay in (("Q not decayed (new default)", False), ("Q decayed toward 0 (old)", True)):
        cfg = load_config("demo.yaml", [
            f"model.checkpoint={args.backbone}", f"schedule.epochs={args.epochs}", "schedule.warmup_epochs=1",
            f"peft.q_weight_decay={str(decay).lower()}", "data.num_points=256", f"train.seed={args.seed}",
        ])  # fmt: skip
        cfg["pretrain"] = None
        run_dir = Path(args.output) / f"{'q_decay' if decay else 'q_no_decay'}_seed{args.seed}"
        metrics = run_finetune(cfg, output=run_dir, datasets=data, quiet=True)
        results[label] = {k: v for k, v in metrics.items() if "acc" in k}
        results[label].update(_q_stats(run_dir))
        print(label, json.dumps(results[label]), flush=True)
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
