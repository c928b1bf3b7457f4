"""From a config to a trained run: the task it names, its backbone, the Trainer — and several runs (seeds, sweeps).

``make_trainer(cfg, ...)`` is the one place a config's ``task`` is looked up and its backbone provided; the engine's
:class:`~pointclora.engine.trainer.Trainer` is then *given* the task object.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from ..engine.logging import markdown_table, mean_std
from ..engine.trainer import Backbone, EpochCallback, Trainer, as_task_data, set_task_resolver
from ..tasks import Task, get_task
from ..utils.atomic import atomic_write_json, atomic_write_text
from .backbone import backbone_provider

__all__ = ["build_task", "make_trainer", "train", "run_finetune", "fewshot_episode", "fit_seeds", "summary_keys",
           "sweep"]  # fmt: skip


def build_task(cfg: Mapping[str, Any]) -> Task:
    """The task object ``cfg['task']`` names (the config's default task when unset), bound to ``cfg``."""
    from ..config import DEFAULTS

    return get_task(str(cfg.get("task") or DEFAULTS["task"]))(cfg)


def _resolve(cfg: Mapping[str, Any]) -> Tuple[Task, Backbone]:
    return build_task(cfg), backbone_provider(cfg)


set_task_resolver(_resolve)  # the old Trainer(cfg) keeps working for code written against it


def make_trainer(cfg: Mapping[str, Any], output: Optional[os.PathLike | str] = None, resume: bool = False,
                 data_root: Optional[str] = None, data: Optional[Any] = None, quiet: bool = False,
                 on_epoch_end: Optional[EpochCallback] = None, log: Any = None) -> Trainer:  # fmt: skip
    """``Trainer(build_task(cfg), cfg, backbone=<model.checkpoint, pre-trained first when the config says how>)``."""
    return Trainer(build_task(cfg), cfg, output=output, resume=resume, data_root=data_root, data=as_task_data(data),
                   quiet=quiet, on_epoch_end=on_epoch_end, log=log, backbone=backbone_provider(cfg))  # fmt: skip


def train(cfg: Mapping[str, Any], **kwargs: Any) -> Dict[str, Any]:
    """One run: :func:`make_trainer` ``(cfg, **kwargs).fit()`` -> the metrics written to ``metrics.json``."""
    return make_trainer(cfg, **kwargs).fit()


def run_finetune(cfg: Mapping[str, Any], output: Optional[os.PathLike | str] = None, resume: bool = False,
                 data_root: Optional[str] = None, datasets: Optional[Any] = None, quiet: bool = False,
                 on_epoch_end: Optional[EpochCallback] = None, log: Any = None) -> Dict[str, Any]:  # fmt: skip
    """The library's one-call entry: ``datasets`` is a :class:`~pointclora.engine.data.TaskData` or a dict
    ``{"train", "val", "test", "classes"}`` (the few-shot driver passes episodes)."""
    return train(cfg, output=output, resume=resume, data_root=data_root, data=datasets, quiet=quiet,
                 on_epoch_end=on_epoch_end, log=log)  # fmt: skip


def fewshot_episode(cfg: Mapping[str, Any], datasets: Mapping[str, Any], run_dir: Path,
                    resume: bool) -> Dict[str, Any]:  # fmt: skip
    """One few-shot episode (the runner :func:`pointclora.tasks.fewshot.run_fewshot` takes): the config's task on the
    episode's datasets, its backbone provided as for any run. Its lines go to its log.txt only: the driver prints one
    line per episode and the summary table."""
    return train(cfg, output=run_dir, resume=resume, data=datasets, quiet=True, log=lambda _msg: None)


def summary_keys(task: Task) -> Sequence[str]:
    """The metrics a multi-seed summary reports for ``task``."""
    m = task.monitor
    return (m, *task.summary_metrics, f"last_{m}", f"best_test_{m}")


def fit_seeds(cfg: Mapping[str, Any], seeds: Sequence[int], output: Optional[str] = None, resume: bool = False,
              data_root: Optional[str] = None, quiet: bool = False) -> Dict[str, Any]:  # fmt: skip
    """One run per seed in ``<output>/seed<N>`` (finished seeds are skipped on ``resume``), then
    ``summary.json`` / ``summary.md`` with mean ± sample std of the task's metrics."""
    task = build_task(cfg)
    root = Path(output) if output else Path("runs") / str(cfg.get("name") or "run") / (
        f"{task.run_label()}-seeds-{time.strftime('%Y%m%d-%H%M%S')}")  # fmt: skip
    runs: List[Dict[str, Any]] = []
    for seed in seeds:
        run_dir = root / f"seed{seed}"
        done = run_dir / "metrics.json"
        if resume and done.exists():
            runs.append(json.loads(done.read_text()))
            continue
        seed_cfg = {**cfg, "train": {**cfg["train"], "seed": int(seed)}}
        again = resume and (run_dir / "checkpoints" / "last.pth").exists()
        runs.append(train(seed_cfg, output=run_dir, resume=again, data_root=data_root, quiet=quiet))
    keys = [k for k in summary_keys(task) if all(isinstance(r.get(k), (int, float)) for r in runs)]
    summary: Dict[str, Any] = {k: {**mean_std([float(r[k]) for r in runs]), "values": [r[k] for r in runs]}
                               for k in keys}  # fmt: skip
    summary.update(seeds=list(seeds), task=task.name, selection=runs[0].get("selection"),
                   trainable_params=runs[0].get("trainable_params"), gflops=runs[0].get("gflops"))  # fmt: skip
    row = [runs[0].get("config", "-"), runs[0].get("method", "-"), " ".join(str(s) for s in seeds)]
    row += [f"{summary[k]['mean']:.2f} ± {summary[k]['std']:.2f}" for k in keys]
    row += [f"{runs[0].get('trainable_params', 0):,}"]
    table = markdown_table(["config", "method", "seeds", *keys, "trainable params"], [row])
    atomic_write_json(summary, root / "summary.json")
    atomic_write_text(table + "\n", root / "summary.md")
    print(f"\n{table}\n\nper-seed runs and summary.json in {root}")  # the result: printed even when quiet
    return summary


def sweep(cfg: Mapping[str, Any], specs: Sequence[str], output: Optional[str] = None,
          quiet: bool = False) -> Dict[str, Any]:  # fmt: skip
    """``--sweep KEY=V1,V2 ...``: every combination run (resumably), the best chosen on the task's validation
    metric; returns :func:`pointclora.engine.sweep.run_sweep`'s result (its ``table`` is the Markdown table)."""
    from ..engine.sweep import parse_sweep, run_sweep

    out = Path(output) if output else Path("runs") / str(cfg.get("name") or "run") / (
        f"sweep-{time.strftime('%Y%m%d-%H%M%S')}")  # fmt: skip

    def runner(point_cfg: Mapping[str, Any], output: Path, resume: bool, quiet: bool) -> Mapping[str, Any]:
        return train(point_cfg, output=output, resume=resume, quiet=quiet)

    select = f"best_val_{build_task(cfg).monitor}"
    return run_sweep(cfg, parse_sweep(specs), output=out, select=select, runner=runner, quiet=quiet)
