"""What a task is: the pieces the one :class:`~pointclora.engine.trainer.Trainer` asks for.

A task supplies its datasets, its model (backbone + adapters), the loss of one batch, its evaluation and the metric
that selects the best epoch, the final report, and how to read a user's file for prediction. Everything else — the
loop, AMP, accumulation, clipping, DDP, resume, checkpoints, logging — belongs to the Trainer, so each task gets all
of it. A new task is one new file that subclasses :class:`Task` and calls :func:`register_task`.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Callable, ClassVar, Dict, List, Mapping, Optional, Type

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..engine.data import TaskData

__all__ = ["Task", "register_task", "get_task", "list_tasks", "StepResult"]

Log = Callable[[str], None]

_TASKS: Dict[str, Type[Task]] = {}


class StepResult(Dict[str, Any]):
    """``{"loss": differentiable 0-dim tensor, "stats": {name: sum over the batch}, "count": samples}``."""


class Task:
    """Base class. Subclasses set :attr:`name`, :attr:`monitor` and implement the ``build_*`` / ``*_step`` hooks.

    ``cfg`` is the resolved config (``pointclora.config.load_config``); a task reads only its own keys.
    """

    name: ClassVar[str] = ""
    #: the validation metric that selects the best epoch (a key of :meth:`evaluate`'s result) and its direction
    monitor: ClassVar[str] = "acc"
    monitor_mode: ClassVar[str] = "max"
    #: ``train.select: auto`` reports the last epoch when the validation set is too small to choose on (#19): true
    #: for scores counted per sample (accuracy, mIoU); a loss averaged over many points (pre-training) keeps choosing.
    small_val_selects_last: ClassVar[bool] = True

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        self.cfg = cfg
        #: the task metadata of the built data (classes, categories...); the Trainer sets it before training
        self.meta: Dict[str, Any] = {}

    # ---- data and model
    def build_data(self, data_root: Optional[str] = None) -> TaskData:
        raise NotImplementedError

    def build_model(self, meta: Mapping[str, Any], backbone: Optional[Path], log: Log) -> nn.Module:
        raise NotImplementedError

    # ---- one batch / one evaluation pass
    def training_step(self, model: nn.Module, batch: Mapping[str, Any], device: torch.device) -> StepResult:
        raise NotImplementedError

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: DataLoader, device: torch.device,
                 autocast: Callable) -> Dict[str, Any]:  # fmt: skip
        raise NotImplementedError

    # ---- reports
    def better(self, value: float, best: Optional[float]) -> bool:
        if best is None:
            return True
        return value > best if self.monitor_mode == "max" else value < best

    def final_metrics(self, model: nn.Module, loaders: Mapping[str, DataLoader], device: torch.device,
                      autocast: Callable, meta: Mapping[str, Any]) -> Dict[str, Any]:  # fmt: skip
        """Metrics of the selected model on the test split (default: :meth:`evaluate`)."""
        if loaders.get("test") is None:
            return {}
        return dict(self.evaluate(model, loaders["test"], device, autocast))

    def results_table(self, metrics: Mapping[str, Any]) -> str:
        return ""

    def epoch_line(self, record: Mapping[str, Any]) -> str:
        keys = [k for k in (f"val_{self.monitor}", f"test_{self.monitor}") if k in record]
        return " | ".join(f"{k} {record[k]:.4g}" for k in keys)

    def on_best(self, model: nn.Module, run_dir: Path, epoch: int) -> None:
        """Called after a new best epoch was saved (pre-training exports the encoder here)."""

    def manifest_meta(self, meta: Mapping[str, Any]) -> Dict[str, Any]:
        """What the saved-weights manifest records besides the config (classes, categories, parts...)."""
        return {k: v for k, v in meta.items() if isinstance(v, (list, dict, str, int, float))}


def register_task(cls: Type[Task]) -> Type[Task]:
    """Class decorator: make ``cls`` available as ``task: <cls.name>`` and to every tool."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a non-empty `name`")
    _TASKS[cls.name] = cls
    return cls


def list_tasks() -> List[str]:
    return sorted(_TASKS)


def get_task(name: str) -> Type[Task]:
    if name not in _TASKS:
        close = difflib.get_close_matches(str(name), _TASKS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise KeyError(f"unknown task {name!r}{hint} Available: {', '.join(list_tasks())}")
    return _TASKS[name]
