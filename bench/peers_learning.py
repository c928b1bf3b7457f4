"""Learning check of the peer PEFT methods: each one, on the shipped ``point_mae_mn10`` backbone, learns ModelNet10
far above chance (10 %) on the fixed held-out split, and none is broken by its port. Not the comparison (that is the
next issue): one seed, few epochs, a two-point learning-rate grid chosen on validation.

    python bench/splits.py --out /work/exp/splits                   # once: the held-out split (symlinks)
    OMP_NUM_THREADS=1 nice python bench/peers_learning.py --splits /work/exp/splits/mn10_heldout \
        --out /work/exp/peers_learning [--methods idpt dapt ...] [--epochs 20]

Regime: bench/learning.py's ``10pc`` (10 labelled shapes per class for training, 10 others per class for
validation, test on the 798 held-out shapes never used for a choice). Options that the small backbone (4 blocks, 32
groups of 32 points, width 128) needs are in ``SMALL``: they scale each method's published structure down
(IDPT's prompt before the last block, PPT's and PointLoRA's extra groups, PointGST's windows, GAPrompt's prompt
depth); everything else is the official default. Resumable: finished runs are skipped.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from learning import build_regime  # noqa: E402

from pointclora.config import DEFAULTS, merge  # noqa: E402
from pointclora.engine.sweep import run_sweep  # noqa: E402
from pointclora.engine.trainer import run_finetune  # noqa: E402

METHODS = ("clora", "idpt", "dapt", "ppt", "pointlora", "pointgst", "gaprompt")
#: The published structures scaled to point_mae_mn10 (4 blocks, 32 groups x 32 points, width 128).
SMALL: Dict[str, Dict[str, Any]] = {
    "clora": {"r": 8, "num_bases": 4, "alpha": 8, "sade_weight": 0.1},
    "idpt": {"prompt_layer": 3},
    "dapt": {"drop_adapter_rate": 0.0},
    "ppt": {"prompt_num_group": 32},
    "pointlora": {"num_group_scales": [32, 16], "topk_scales": [8, 2], "official_slices": False},
    "pointgst": {"local": 16},
    "gaprompt": {"prompt_depth": 2, "perturbation": 0.05},
}


def config(method: str, backbone: str, epochs: int) -> Dict[str, Any]:
    return merge(DEFAULTS, {
        "name": f"peers-learning-{method}",
        "model": {"name": "point_mae_mn10", "checkpoint": backbone},
        "peft": {"method": method, **SMALL[method]},
        "data": {"num_points": 1024, "batch_size": 16, "eval_batch_size": 128},
        "schedule": {"epochs": epochs, "warmup_epochs": 1},
        "train": {"device": "cpu", "eval_every": epochs},
    })  # fmt: skip


def main(argv: List[str] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--splits", type=Path, default=Path("/work/exp/splits/mn10_heldout"))
    p.add_argument("--out", type=Path, default=Path("/work/exp/peers_learning"))
    p.add_argument("--backbone", default=str(ROOT / "pointclora" / "assets" / "point_mae_mn10.pth"))
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--lrs", type=float, nargs="+", default=[1e-3, 4e-3])
    args = p.parse_args(argv)
    data = build_regime("10pc", args.splits)
    rows = []
    for method in args.methods:
        def runner(c, output, resume, quiet):
            return run_finetune(c, output=output, resume=resume, quiet=quiet, datasets=data)

        sweep = run_sweep(config(method, args.backbone, args.epochs), {"optim.lr": args.lrs}, args.out / method,
                          runner=runner, log=lambda s, m=method: print(f"[{m}] {s}", flush=True))  # fmt: skip
        best = json.loads((Path(sweep["best"]["dir"]) / "metrics.json").read_text())
        rows.append({"method": method, "lr": sweep["best"]["optim.lr"], "val": best.get("best_val_acc"),
                     "test": best["acc"], "trainable": best["trainable_params"],
                     "s_per_epoch": best["wall_time_s"] / best["epochs"]})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    lines = ["| method | lr (chosen on val) | val OA % | test OA % (798 held-out) | trainable | s / epoch |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for r in rows:
        val = f"{r['val']:.1f}" if r["val"] is not None else "-"
        lines.append(f"| {r['method']} | {r['lr']:g} | {val} | {r['test']:.1f} | {r['trainable']:,} | "
                     f"{r['s_per_epoch']:.1f} |")  # fmt: skip
    print("\n".join(lines))
    (args.out / "peers_learning.md").write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
