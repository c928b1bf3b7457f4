"""The proof table: CLoRA / LoRA / full / linear / scratch on the fixed ModelNet10 held-out split (issue 12).

    python bench/splits.py                                         # once: the held-out split
    python bench/learning.py --out /work/exp/learning              # sweep + seeds + table (resumable)

For each label regime (``all``: the 3,193 non-held-out shapes minus a 20 % stratified validation carve; ``10pc``: 10
labelled shapes per class for training and another 10 per class for validation, both from the same non-held-out
shapes) and each method (``clora``, ``lora``, ``full``, ``linear`` on the shipped pre-trained backbone, ``scratch`` =
full training from random weights), the learning rate is chosen on the validation carve by
:func:`pointclora.engine.sweep.run_sweep` (seed 0, recorded in ``<out>/<regime>/<method>/sweep/sweep.md``), then the
chosen lr runs with the other seeds. Test accuracy is scored on the 798 held-out shapes, never used for any choice
(model selection inside a run is on validation too). Writes ``<out>/learning.md`` / ``learning.json`` and the plot
``--plot`` (accuracy vs trainable parameters). Every run is resumable: rerunning skips finished runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import torch
from torch.utils.data import Dataset

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from pointclora.api import run_finetune  # noqa: E402
from pointclora.config import DEFAULTS, apply_overrides, merge  # noqa: E402
from pointclora.datasets.base import to_sample  # noqa: E402
from pointclora.datasets.transforms import ScaleAndTranslate  # noqa: E402
from pointclora.engine.sweep import parse_sweep, run_sweep  # noqa: E402
from pointclora.models.probe import few_label_indices  # noqa: E402

METHODS = ("clora", "lora", "full", "linear", "scratch")
#: Two-point grids (CPU budget): adapters with zero-initialised up-projections want larger steps than full tuning.
DEFAULT_LRS = {
    "clora": [2e-3, 4e-3],
    "lora": [2e-3, 4e-3],
    "full": [5e-4, 1e-3],
    "linear": [4e-3, 1e-2],
    "scratch": [1e-3, 2e-3],
}


class ArrayDataset(Dataset):
    """``(S, N, 3)`` clouds in memory; ``augment``: a random point order and Point-MAE scale-and-translate (torch's
    global RNG, which the trainer seeds per sample)."""

    def __init__(self, x: np.ndarray, y: np.ndarray, classes: Sequence[str], augment: bool = False):
        self.x, self.y, self.classes, self.augment = torch.as_tensor(x), np.asarray(y), list(classes), augment
        self.labels = self.y
        self.st = ScaleAndTranslate()

    def __len__(self) -> int:
        return len(self.x)

    def __getitem__(self, i: int) -> Dict[str, Any]:
        pts = self.x[i]
        sample = to_sample(pts, label=int(self.y[i]))
        if self.augment:
            sample["points"] = pts[torch.randperm(len(pts))]
            sample = self.st(sample)
        return sample


def _carve(y: np.ndarray, fraction: float, seed: int):
    rng = np.random.default_rng(seed)
    fit, val = [], []
    for c in np.unique(y):
        m = rng.permutation(np.flatnonzero(y == c))
        k = int(round(len(m) * fraction))
        val += m[:k].tolist()
        fit += m[k:].tolist()
    return np.sort(fit), np.sort(val)


def build_regime(regime: str, splits: Path) -> Dict[str, Any]:
    from pretrain_backbone import load_split

    cache = splits.parent / "cache"
    x, y, classes = load_split(splits, "train", cache / f"{splits.name}_train.npz")
    xt, yt, _ = load_split(splits, "test", cache / f"{splits.name}_test.npz")
    fit, val = _carve(y, 0.2, seed=0)
    if regime == "10pc":
        fit = fit[few_label_indices(y[fit], 10, seed=0)]
        val = val[few_label_indices(y[val], 10, seed=1)]
        source = "10 other labelled shapes per class"
    elif regime == "all":
        source = "20 % of the non-held-out shapes (stratified, seed 0)"
    else:
        raise ValueError(f"regime must be 'all' or '10pc', got {regime!r}")
    return {
        "train": ArrayDataset(x[fit], y[fit], classes, augment=True),
        "val": ArrayDataset(x[val], y[val], classes),
        "test": ArrayDataset(xt, yt, classes),
        "classes": classes,
        "val_source": source,
    }


def base_config(
    method: str, backbone: str, variant: str, epochs: int, eval_every: int, batch: int = 32
) -> Dict[str, Any]:
    peft = {
        "clora": {"method": "clora", "r": 8, "num_bases": 4, "alpha": 8, "sade_weight": 0.1},
        "lora": {"method": "lora", "r": 8, "alpha": 8},
        "full": {"method": "full"},
        "linear": {"method": "linear"},
        "scratch": {"method": "full"},
    }[method]
    return merge(
        DEFAULTS,
        {
            "name": f"learning-{method}",
            "model": {"name": variant, "checkpoint": None if method == "scratch" else backbone},
            "peft": peft,
            "data": {"num_points": 1024, "batch_size": batch, "eval_batch_size": 128},
            "schedule": {"epochs": epochs, "warmup_epochs": 1},
            "train": {"device": "cpu", "eval_every": eval_every},
        },
    )


def run_method(regime: str, method: str, data: Dict[str, Any], a: argparse.Namespace) -> Dict[str, Any]:
    epochs = a.epochs_all if regime == "all" else a.epochs_few
    batch = a.batch_all if regime == "all" else a.batch_few
    cfg = base_config(method, a.backbone, a.variant, epochs, max(1, epochs // a.evals), batch)
    out = a.out / regime / method

    def runner(c, output, resume, quiet):
        return run_finetune(c, output=output, resume=resume, quiet=quiet, datasets=data)

    lrs = a.lrs.get(method, DEFAULT_LRS[method])
    grid = {"optim.lr": lrs, **a.grids.get(method, {})}
    sweep = run_sweep(
        cfg,
        grid,
        out / "sweep",
        runner=runner,
        log=lambda s: print(f"[{regime} {method}] {s}", flush=True),
    )
    lr = sweep["best"]["optim.lr"]
    chosen = {k: sweep["best"][k] for k in grid}  # lr and any other swept key
    runs = [json.loads((Path(sweep["best"]["dir"]) / "metrics.json").read_text())]
    for seed in a.seeds[1:]:
        d = out / f"seed{seed}"
        if (d / "metrics.json").exists():
            runs.append(json.loads((d / "metrics.json").read_text()))
            continue
        c = apply_overrides(cfg, [f"{k}={v}" for k, v in chosen.items()] + [f"train.seed={seed}"])
        runs.append(runner(c, d, (d / "checkpoints" / "last.pth").exists(), True))
        print(f"[{regime} {method}] seed {seed}: acc {runs[-1]['acc']:.2f}", flush=True)
    accs = [float(r["acc"]) for r in runs]
    return {
        "regime": regime,
        "method": method,
        "lr": lr,
        "chosen": chosen,
        "sweep": sweep["table"],
        "seeds": len(runs),
        "accs": accs,
        "mean": statistics.mean(accs),
        "std": statistics.pstdev(accs) if len(accs) > 1 else 0.0,
        "trainable_params": int(runs[0]["trainable_params"]),
        "trainable_params_without_head": int(runs[0]["trainable_params_without_head"]),
        "s_per_epoch": statistics.mean(float(r["wall_time_s"]) / float(r["epochs"]) for r in runs),
        "epochs": epochs,
    }


def table(rows: List[Dict[str, Any]]) -> str:
    lines = [
        "| labels | method | chosen on val | test OA % (mean ± std) | seeds | trainable params | s / epoch |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        chosen = ", ".join(f"{k.split('.')[-1]} {v:g}" for k, v in r.get("chosen", {"optim.lr": r["lr"]}).items())
        lines.append(
            f"| {r['regime']} | {r['method']} | {chosen} | {r['mean']:.2f} ± {r['std']:.2f} | "
            f"{r['seeds']} | {r['trainable_params']:,} | {r['s_per_epoch']:.1f} |"
        )
    return "\n".join(lines)


def plot(rows: List[Dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, regime in zip(axes, ("all", "10pc")):
        for r in (r for r in rows if r["regime"] == regime):
            ax.errorbar(r["trainable_params"], r["mean"], yerr=r["std"], fmt="o", capsize=3)
            ax.annotate(r["method"], (r["trainable_params"], r["mean"]), textcoords="offset points", xytext=(5, 5))
        ax.set_xscale("log")
        ax.set_xlabel("trainable parameters")
        ax.set_ylabel("held-out test OA (%)")
        ax.set_title(f"ModelNet10 held-out, {'all labels' if regime == 'all' else '10 labels per class'}")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main(argv: Optional[Sequence[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("/work/exp/learning"))
    p.add_argument("--splits", type=Path, default=Path("/work/exp/splits/mn10_heldout"))
    p.add_argument("--backbone", default="pointclora/assets/point_mae_mn10.pth")
    p.add_argument("--variant", default="point_mae_mn10")
    p.add_argument("--regimes", nargs="+", default=["10pc", "all"])
    p.add_argument("--methods", nargs="+", default=list(METHODS))
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--epochs-all", type=int, default=6)
    p.add_argument("--epochs-few", type=int, default=30)
    p.add_argument("--batch-all", type=int, default=32)
    p.add_argument("--batch-few", type=int, default=16, help="100 labelled shapes: smaller batches, more steps")
    p.add_argument("--evals", type=int, default=1, help="validation passes per run (each also scores the test split)")
    p.add_argument("--lr", action="append", default=[], metavar="METHOD=LR1,LR2", help="override a method's lr grid")
    p.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="METHOD:KEY=V1,V2",
        help="also sweep KEY for METHOD (the product with its lr grid), e.g. clora:peft.sade_weight=0,0.1,1",
    )
    p.add_argument(
        "--combine",
        nargs="+",
        type=Path,
        default=None,
        help="only merge these learning.json files into one table (stdout) and the plot",
    )
    p.add_argument("--plot", default=str(ROOT / "docs" / "images" / "learning.png"), help="'' for no plot")
    a = p.parse_args(argv)
    a.lrs = {m: [float(v) for v in vals.split(",")] for m, vals in (s.split("=", 1) for s in a.lr)}
    a.grids = {}
    for spec in a.grid:
        method, sep, rest = spec.partition(":")
        if not sep or method not in METHODS:
            p.error(f"--grid {spec!r}: expected METHOD:KEY=V1,V2 with METHOD one of {', '.join(METHODS)}")
        a.grids.setdefault(method, {}).update(parse_sweep([rest]))
    if a.combine:
        rows = [r for f in a.combine for r in json.loads(f.read_text())]
        print(table(rows))
        for r in rows:  # every sweep that chose a row's values, as recorded
            print(f"\n{r['regime']} {r['method']}, chosen on validation:\n{r['sweep']}")
        if a.plot:
            plot(rows, Path(a.plot))
        return 0
    torch.set_num_threads(1)
    rows = []
    t0 = time.time()
    for regime in a.regimes:
        data = build_regime(regime, a.splits)
        for method in a.methods:
            rows.append(run_method(regime, method, data, a))
            (a.out / "learning.json").write_text(json.dumps(rows, indent=1))
            (a.out / "learning.md").write_text(table(rows) + "\n")
            print(table(rows[-1:]).splitlines()[-1], flush=True)
    print(table(rows))
    print(f"total {(time.time() - t0) / 60:.1f} min")
    if a.plot:
        plot(rows, Path(a.plot))
    return 0


if __name__ == "__main__":
    sys.exit(main())
