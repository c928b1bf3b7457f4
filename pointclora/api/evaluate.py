"""Score saved weights on a split: the model rebuilt by the task its folder names, that task's evaluation."""

from __future__ import annotations

from typing import Any, Dict, Optional

from torch.utils.data import DataLoader

from .weights import load_weights

__all__ = ["evaluate_run", "evaluation_report"]


def evaluate_run(weights: str, split: str = "test", data_root: Optional[str] = None, vote: int = 0,
                 device: str = "auto", dataset: Optional[str] = None, which: str = "best",
                 backbone: Optional[str] = None, batch_size: Optional[int] = None,
                 seed: int = 0) -> Dict[str, Any]:  # fmt: skip
    """The metrics ``tools/evaluate.py`` prints and writes: :meth:`~pointclora.tasks.Task.evaluate_split` on
    :meth:`~pointclora.tasks.Task.eval_dataset` (``dataset``: another dataset config instead of the run's)."""
    from ..config import load_yaml, resolve_config_path
    from ..utils.device import resolve_device

    dev = resolve_device(device)
    run = load_weights(weights, which=which, backbone=backbone, device=dev)
    task, cfg = run.task, run.manifest["config"]
    dcfg = dict(load_yaml(resolve_config_path(dataset, key="dataset"))) if dataset else None
    if dcfg is None and not cfg.get("dataset"):
        raise ValueError(f"{weights} records no dataset (a bare adapter folder): pass --dataset NAME.yaml")
    ds = task.eval_dataset(split, data_root=data_root, dataset_cfg=dcfg, vote=vote > 0)
    loader = DataLoader(ds, batch_size=batch_size or int(cfg["data"].get("eval_batch_size", 64)), shuffle=False)
    res = task.evaluate_split(run.model, loader, dev, vote=vote, seed=seed)
    res.update(task=task.name, weights=str(weights), epoch=run.manifest.get("epoch"), split=split,
               dataset=(dcfg or cfg["dataset"]).get("name"), method=run.manifest.get("method"))  # fmt: skip
    return res


def evaluation_report(res: Dict[str, Any]) -> str:
    """The text ``tools/evaluate.py`` prints: a header line, then the task's own report."""
    from ..tasks import get_task

    head = f"{res['weights']} (epoch {res['epoch']}, {res['method']}) on {res['dataset']} [{res['split']}]\n"
    return head + "\n" + get_task(res["task"]).evaluation_report(res)
