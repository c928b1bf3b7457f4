"""Openness: a task defined and registered in this file alone (no library edit) trains on the one Trainer, is
resumed exactly after a kill, and its saved weights are rebuilt by the task the folder names."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Mapping, Optional

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import Dataset

from pointclora.api import build_task, load_weights
from pointclora.config import DEFAULTS, merge
from pointclora.engine import trainer as trainer_mod
from pointclora.engine.data import TaskData
from pointclora.engine.trainer import Trainer
from pointclora.tasks import StepResult, Task, list_tasks, register_task, unregister_task


class _Clouds(Dataset):
    """``{"points": N 3, "label"}`` clouds held in memory; each sample declares its identity (``sample_keys``)."""

    def __init__(self, points: torch.Tensor, labels: torch.Tensor, first_id: int) -> None:
        self.points, self.labels, self.first_id = points, labels, first_id

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> Dict[str, Any]:
        return {"points": self.points[i], "label": int(self.labels[i])}

    def sample_keys(self):
        return [f"toy:{self.first_id + i}" for i in range(len(self))]


class _Mean(nn.Module):
    """Pooled mean/max of the points, then a small MLP with dropout (so the RNG state matters for resume)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Dropout(0.2), nn.Linear(16, num_classes))

    def forward(self, points: torch.Tensor) -> torch.Tensor:  # B N 3 -> B C
        return self.net(torch.cat([points.mean(1), points.amax(1)], dim=-1))


class ToyTask(Task):
    """Is the cloud's centre above or below the origin (y)?"""

    name = "toy_centre_side"
    monitor = "acc"
    summary_metrics = ()

    def build_data(self, data_root: Optional[str] = None) -> TaskData:
        g = torch.Generator().manual_seed(0)
        pts = torch.randn(56, 12, 3, generator=g) * 0.3
        pts[:, :, 1] += torch.randn(56, 1, generator=g)
        labels = (pts[:, :, 1].mean(1) > 0).long()
        sets = [_Clouds(pts[a:b], labels[a:b], a) for a, b in ((0, 40), (40, 48), (48, 56))]
        return TaskData(*sets, "val split", {"classes": ["below", "above"]})

    def build_model(self, meta: Mapping[str, Any], backbone: Optional[Path], log) -> nn.Module:
        return _Mean(len(meta["classes"]))

    def training_step(self, model: nn.Module, batch: Mapping[str, Any], device: torch.device) -> StepResult:
        logits = model(batch["points"].to(device))
        labels = batch["label"].to(device).long()
        loss = F.cross_entropy(logits.float(), labels)
        return StepResult(loss=loss, stats={"correct": float((logits.argmax(-1) == labels).sum())},
                          count=labels.numel())  # fmt: skip

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader, device: torch.device, autocast) -> Dict[str, Any]:
        was = model.training
        model.eval()
        right = total = 0
        for batch in loader:
            right += int((model(batch["points"].to(device)).argmax(-1) == batch["label"].to(device)).sum())
            total += len(batch["label"])
        model.train(was)
        return {"acc": 100.0 * right / max(1, total)}

    def results_table(self, metrics: Mapping[str, Any]) -> str:
        return f"| toy | {metrics['acc']:.1f} |"


@pytest.fixture
def toy():
    register_task(ToyTask)
    yield ToyTask
    unregister_task(ToyTask.name)


def _cfg() -> Dict[str, Any]:
    return merge(DEFAULTS, {"task": ToyTask.name, "name": "toy", "peft": {"method": "full"},
                            "optim": {"lr": 0.01}, "schedule": {"epochs": 4, "warmup_epochs": 1},
                            "data": {"batch_size": 8, "eval_batch_size": 8, "validate": False},
                            "train": {"device": "cpu"}})  # fmt: skip


def _final(run: Path) -> Dict[str, Any]:
    return {k: v for k, v in json.loads((run / "metrics.json").read_text()).items() if k != "wall_time_s"}


def _history(run: Path):
    return [{k: v for k, v in json.loads(ln).items() if k != "time_s"}
            for ln in (run / "history.jsonl").read_text().splitlines()]  # fmt: skip


def test_toy_task_trains_and_resumes_exactly(tmp_path, toy, monkeypatch):
    assert ToyTask.name in list_tasks()
    cfg = _cfg()
    full = tmp_path / "full"
    metrics = Trainer(ToyTask(cfg), cfg, output=full, quiet=True).fit()  # the Trainer is handed the task
    assert metrics["task"] == ToyTask.name and metrics["epochs"] == 4
    assert metrics["split_check"]["train/val"] == "disjoint"  # the dataset declared each sample's identity
    assert metrics["acc"] >= 50.0 and (full / "results.md").read_text().startswith("| toy |")
    assert len((full / "history.jsonl").read_text().splitlines()) == 4

    # Killed right after epoch 2's checkpoint, then resumed: the same weights, history and metrics.
    real_save = trainer_mod.atomic_save

    def save_then_die(obj, path):
        real_save(obj, path)
        if Path(path).name == "last.pth" and obj["epoch"] == 2:
            raise KeyboardInterrupt("simulated kill")

    killed = tmp_path / "killed"
    monkeypatch.setattr(trainer_mod, "atomic_save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        Trainer(build_task(cfg), cfg, output=killed, quiet=True).fit()  # the API finds the task by its name
    monkeypatch.setattr(trainer_mod, "atomic_save", real_save)
    Trainer(ToyTask(cfg), cfg, output=killed, resume=True, quiet=True).fit()
    a = torch.load(full / "checkpoints" / "last.pth", weights_only=True)["model"]
    b = torch.load(killed / "checkpoints" / "last.pth", weights_only=True)["model"]
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert _final(full) == _final(killed)
    assert _history(full) == _history(killed)

    # The saved weights name the task; the API rebuilds the model with it.
    run = load_weights(full)
    assert isinstance(run.task, ToyTask) and run.manifest["task"] == ToyTask.name and run.manifest["method"] == "full"
    best = torch.load(full / "checkpoints" / "last.pth", weights_only=True)
    assert set(run.model.state_dict()) == set(best["model"])


def test_toy_task_through_the_training_tool(tmp_path, toy):
    from pointclora.cli import finetune

    path = tmp_path / "toy.yaml"
    cfg = {k: v for k, v in _cfg().items() if k in ("name", "peft", "optim", "schedule", "data", "train")}
    path.write_text(json.dumps(cfg))
    run = tmp_path / "run"
    assert finetune.main(["--cfg", str(path), "--task", ToyTask.name, "--output", str(run), "--quiet"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["task"] == ToyTask.name and metrics["best_epoch"] in (1, 2, 3, 4)
    assert json.loads((run / "best" / "manifest.json").read_text())["task"] == ToyTask.name
