"""Several runs of one config: ``fit_seeds`` (one run per seed, mean ± std table) for every task."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

from ..utils.atomic import atomic_write_json, atomic_write_text
from .logging import markdown_table, mean_std

__all__ = ["fit_seeds", "summary_keys"]


def summary_keys(task: str) -> Sequence[str]:
    from ..tasks import get_task

    m = get_task(task).monitor
    extra = ("mean_class_acc", "vote_acc") if task == "classification" else (
        ("class_miou",) if task == "part_segmentation" else ())
    return (m, *extra, f"last_{m}", f"best_test_{m}")


def fit_seeds(cfg: Mapping[str, Any], seeds: Sequence[int], output: Optional[str] = None, resume: bool = False,
              data_root: Optional[str] = None, quiet: bool = False) -> Dict[str, Any]:  # fmt: skip
    """One run per seed in ``<output>/seed<N>`` (finished seeds are skipped on ``resume``), then
    ``summary.json`` / ``summary.md`` with mean ± sample std of the task's metrics."""
    from .trainer import Trainer

    task = str(cfg.get("task") or "classification")
    root = Path(output) if output else Path("runs") / str(cfg.get("name") or "run") / (
        f"{cfg['peft'].get('method', 'clora')}-seeds-{time.strftime('%Y%m%d-%H%M%S')}")  # fmt: skip
    runs: List[Dict[str, Any]] = []
    for seed in seeds:
        run_dir = root / f"seed{seed}"
        done = run_dir / "metrics.json"
        if resume and done.exists():
            runs.append(json.loads(done.read_text()))
            continue
        seed_cfg = {**cfg, "train": {**cfg["train"], "seed": int(seed)}}
        again = resume and (run_dir / "checkpoints" / "last.pth").exists()
        runs.append(Trainer(seed_cfg, output=run_dir, resume=again, data_root=data_root, quiet=quiet).fit())
    keys = [k for k in summary_keys(task) if all(isinstance(r.get(k), (int, float)) for r in runs)]
    summary: Dict[str, Any] = {k: {**mean_std([float(r[k]) for r in runs]), "values": [r[k] for r in runs]}
                               for k in keys}  # fmt: skip
    summary.update(seeds=list(seeds), task=task, selection=runs[0].get("selection"),
                   trainable_params=runs[0].get("trainable_params"), gflops=runs[0].get("gflops"))  # fmt: skip
    row = [runs[0].get("config", "-"), runs[0].get("method", "-"), " ".join(str(s) for s in seeds)]
    row += [f"{summary[k]['mean']:.2f} ± {summary[k]['std']:.2f}" for k in keys]
    row += [f"{runs[0].get('trainable_params', 0):,}"]
    table = markdown_table(["config", "method", "seeds", *keys, "trainable params"], [row])
    atomic_write_json(summary, root / "summary.json")
    atomic_write_text(table + "\n", root / "summary.md")
    print(f"\n{table}\n\nper-seed runs and summary.json in {root}")  # the result: printed even when quiet
    return summary
