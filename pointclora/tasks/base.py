"""What a task is: the pieces the one :class:`~pointclora.engine.trainer.Trainer` asks for.

A task supplies its datasets, its model (backbone + adapters), the loss of one batch, its evaluation and the metric
that selects the best epoch, the final report, and how to read a user's file for prediction. Everything else — the
loop, AMP, accumulation, clipping, DDP, resume, checkpoints, logging — belongs to the Trainer, so each task gets all
of it. A new task is one new file that subclasses :class:`Task` and calls :func:`register_task`.

Every hook the Trainer (or a tool) may call is declared here with its default, so this class is the whole contract:

==============================  ==========================================================================
must implement                  ``build_data``, ``build_model``, ``training_step``, ``evaluate``
may override (Trainer)          ``final_metrics``, ``results_table``, ``epoch_line``, ``better``,
                                ``on_best``, ``on_epoch_saved``, ``extra_metrics``, ``gflops``,
                                ``manifest_meta``, ``run_label``
may set (Trainer)               ``name``, ``monitor``, ``monitor_mode``, ``ddp_find_unused_parameters``,
                                ``official_extra_epoch``, ``default_num_points``, ``small_val_selects_last``
may set / override (tools)      ``protocol_name``, ``summary_metrics``, ``eval_dataset``, ``evaluate_split``,
                                ``evaluation_report``, ``predict``, ``predict_cloud``, ``predict_report``
==============================  ==========================================================================
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Callable, ClassVar, Dict, List, Mapping, Optional, Tuple, Type

import torch
from torch import nn
from torch.utils.data import DataLoader

from ..engine.data import TaskData

__all__ = ["Task", "register_task", "unregister_task", "get_task", "list_tasks", "StepResult"]

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
    #: DDP: some parameters may get no gradient in a step (the Trainer passes it as ``find_unused_parameters``)
    ddp_find_unused_parameters: ClassVar[bool] = False
    #: under ``schedule.stepping: official``, run ``max_epoch + 1`` epochs as the official classification and
    #: pre-training runners do (their segmentation script runs ``max_epoch``)
    official_extra_epoch: ClassVar[bool] = True
    #: the column of the ``--protocol`` table (:data:`pointclora.tasks.protocol.TASKS`) this task follows
    protocol_name: ClassVar[str] = "classification"
    #: metrics a multi-seed summary reports besides ``monitor``, ``last_<monitor>`` and ``best_test_<monitor>``
    summary_metrics: ClassVar[Tuple[str, ...]] = ()
    #: points per cloud when the config leaves ``data.num_points`` unset (see :attr:`num_points`)
    default_num_points: ClassVar[int] = 1024
    #: ``train.select: auto`` reports the last epoch when the validation set is too small to choose on (#19): true
    #: for scores counted per sample (accuracy, mIoU); a loss averaged over many points (pre-training) keeps choosing.
    small_val_selects_last: ClassVar[bool] = True

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        self.cfg = cfg
        #: the task metadata of the built data (classes, categories...); the Trainer sets it before training
        self.meta: Dict[str, Any] = {}

    @property
    def num_points(self) -> int:
        """Points per cloud for this task: ``data.num_points``, else :attr:`default_num_points` (the one place a
        task settles it; the Trainer, evaluation and prediction all read it here)."""
        data = self.cfg.get("data") or {}
        value = data.get("num_points")
        return int(self.default_num_points if value is None else value)

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

    def on_epoch_saved(self, model: nn.Module, run_dir: Path, epoch: int) -> None:
        """Called after every epoch's ``last/`` weights were saved (pre-training exports ``encoder-last.pth``)."""

    def extra_metrics(self, model: nn.Module, val: Any, epoch: int, device: torch.device) -> Dict[str, float]:
        """More validation scalars for this epoch (logged as ``<name>`` to TensorBoard and history); ``{}``."""
        return {}

    def gflops(self, model: nn.Module, num_points: int) -> Dict[str, Any]:
        """FLOP figures for ``metrics.json`` (e.g. ``{"gflops": ..., "gflops_unmerged": ...}``); ``{}`` = not
        counted."""
        return {}

    def manifest_meta(self, meta: Mapping[str, Any]) -> Dict[str, Any]:
        """What the saved-weights manifest records besides the config (classes, categories, parts...)."""
        return {k: v for k, v in meta.items() if isinstance(v, (list, dict, str, int, float))}

    def run_label(self) -> str:
        """The first part of a default run folder's name (``<label>-seed<seed>-<time>``): the PEFT method."""
        return str((self.cfg.get("peft") or {}).get("method") or "run")

    # ---- what the tools ask (evaluate / predict)
    def eval_dataset(self, split: str, data_root: Optional[str] = None, dataset_cfg: Optional[Mapping] = None,
                     vote: bool = False) -> Any:  # fmt: skip
        """``split`` of the run's dataset (or ``dataset_cfg``) ready for :meth:`evaluate_split`."""
        raise NotImplementedError(f"task {self.name!r} cannot be evaluated on a split by the tools")

    def evaluate_split(self, model: nn.Module, loader: DataLoader, device: torch.device, vote: int = 0,
                       seed: int = 0) -> Dict[str, Any]:  # fmt: skip
        """``tools/evaluate.py``'s metrics of ``model`` on ``loader`` (default: :meth:`evaluate`; ``vote`` views
        where the task votes)."""
        import contextlib

        return dict(self.evaluate(model, loader, device, contextlib.nullcontext))

    @classmethod
    def evaluation_report(cls, result: Mapping[str, Any]) -> str:
        """The text ``tools/evaluate.py`` prints for :meth:`evaluate_split`'s result (a class method: the result
        alone says everything)."""
        return "\n".join(f"{k}: {v}" for k, v in result.items() if isinstance(v, (int, float, str)))

    @torch.no_grad()
    def predict(self, model: nn.Module, points: torch.Tensor, **options: Any) -> Dict[str, Any]:
        """``points (N, 3)``, normalised and sampled to :attr:`num_points` -> what ``tools/predict.py`` prints for
        one file (classification: ``{"predictions": [...]}``; segmentation: ``{"labels": [...], ...}``)."""
        raise NotImplementedError(f"task {self.name!r} does not predict for a user's file")

    def predict_cloud(self, model: nn.Module, xyz: Any, num_points: int, device: torch.device,
                      **options: Any) -> Dict[str, Any]:
        """One user file's cloud ``xyz (M, 3)`` (numpy, normalised, in the model's frame) -> :meth:`predict` on its
        ``num_points`` evaluation sub-sample (farthest points). A task that labels every point overrides this."""
        from ..datasets.transforms import eval_transforms

        points = eval_transforms(num_points)({"points": torch.from_numpy(xyz)})["points"][:, :3].to(device)
        return self.predict(model, points, **options)

    @classmethod
    def predict_report(cls, result: Mapping[str, Any]) -> str:
        """One line of ``tools/predict.py`` for :meth:`predict`'s result of one file."""
        return f"{result.get('file')}: " + ", ".join(f"{k}={v}" for k, v in result.items() if k != "file")


def register_task(cls: Type[Task]) -> Type[Task]:
    """Class decorator: make ``cls`` available as ``task: <cls.name>`` and to every tool."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} needs a non-empty `name`")
    _TASKS[cls.name] = cls
    return cls


def unregister_task(name: str) -> None:
    """Remove a task (tests registering a toy task clean up with this)."""
    _TASKS.pop(name, None)


def list_tasks() -> List[str]:
    return sorted(_TASKS)


def get_task(name: str) -> Type[Task]:
    if name not in _TASKS:
        close = difflib.get_close_matches(str(name), _TASKS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise KeyError(f"unknown task {name!r}{hint} Available: {', '.join(list_tasks())}")
    return _TASKS[name]
