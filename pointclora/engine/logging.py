"""Run logging: TensorBoard scalars, ``history.jsonl`` (one JSON object per epoch) and pasteable Markdown tables."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

__all__ = ["RunLogger", "markdown_table", "results_table", "seeds_table", "format_params", "mean_std"]


class RunLogger:
    """Writes ``<run>/tb/`` event files and appends epochs to ``<run>/history.jsonl``. Only the main process logs."""

    def __init__(self, run_dir: os.PathLike, enabled: bool = True, tensorboard: bool = True) -> None:
        self.run_dir = Path(run_dir)
        self.enabled = enabled
        self.writer = None
        if enabled and tensorboard:
            try:
                from torch.utils.tensorboard import SummaryWriter

                self.writer = SummaryWriter(log_dir=str(self.run_dir / "tb"))
            except ImportError:  # tensorboard is a dependency, but a broken install must not stop training
                self.writer = None

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        if self.writer is None:
            return
        for k, v in values.items():
            if v is not None and isinstance(v, (int, float)) and math.isfinite(v):
                self.writer.add_scalar(k, v, step)

    def epoch(self, record: Mapping[str, Any], keep_until: Optional[int] = None) -> None:
        """Append one epoch to history.jsonl (fsync'ed: the file is what a resumed run continues)."""
        if not self.enabled:
            return
        path = self.run_dir / "history.jsonl"
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(dict(record)) + "\n")
            f.flush()
            os.fsync(f.fileno())

    def truncate_history(self, last_epoch: int) -> None:
        """On resume, drop epochs after the checkpoint (they ran after it was written, then the run died)."""
        path = self.run_dir / "history.jsonl"
        if not self.enabled or not path.exists():
            return
        lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
        kept = [ln for ln in lines if json.loads(ln).get("epoch", -1) <= last_epoch]
        from ..utils.atomic import atomic_write_text

        atomic_write_text("".join(ln + "\n" for ln in kept), path)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.flush()
            self.writer.close()


def format_params(n: Optional[int]) -> str:
    if n is None:
        return "-"
    return f"{n / 1e6:.3f}M" if n >= 1e5 else f"{n / 1e3:.1f}K"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def _pct(v: Optional[float]) -> str:
    return "-" if v is None else f"{v:.2f}"


def results_table(metrics: Mapping[str, Any]) -> str:
    """The final table of one run: one row per model-selection rule, the protocol spelled out; the scores are on the
    test split (the run's test source, e.g. a carve, is in metrics.json)."""
    header = ["config", "method", "model selection", "test OA (%)", "test mAcc (%)", "trainable params", "GFLOPs"]
    common = [metrics.get("config", "-"), metrics.get("method", "-")]
    tail = [format_params(metrics.get("trainable_params")), f"{metrics.get('gflops', float('nan')):.2f}"]
    rows = [common + [metrics.get("selection_label", "selected"), _pct(metrics.get("acc")),
                      _pct(metrics.get("mean_class_acc"))] + tail]
    if metrics.get("vote_acc") is not None:
        rows.append(common + [f"same, {metrics.get('vote_views')}-view vote", _pct(metrics.get("vote_acc")),
                              _pct(metrics.get("vote_mean_class_acc"))] + tail)
    rows.append(common + ["last epoch", _pct(metrics.get("last_acc")), _pct(metrics.get("last_mean_class_acc"))] + tail)
    if metrics.get("selection") != "best_on_test" and metrics.get("best_test_acc") is not None:
        rows.append(common + ["best on test (field protocol, optimistic)", _pct(metrics.get("best_test_acc")),
                              _pct(metrics.get("best_test_mean_class_acc"))] + tail)
    return markdown_table(header, rows)


def mean_std(values: Sequence[float]) -> Dict[str, float]:
    """Mean and sample standard deviation (n-1; 0 for a single value)."""
    n = len(values)
    mean = sum(values) / n
    std = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1)) if n > 1 else 0.0
    return {"mean": mean, "std": std}


def seeds_table(runs: Sequence[Mapping[str, Any]], keys: Sequence[str] = ("acc", "mean_class_acc", "last_acc",
                                                                             "best_test_acc")) -> str:
    """Mean ± std over seeds, one column per metric."""
    first = runs[0]
    labels = {
        "acc": f"test OA, {first.get('selection_label', 'selected')} (%)",
        "mean_class_acc": "test mAcc (%)",
        "last_acc": "test OA, last epoch (%)",
        "best_test_acc": "test OA, best on test — field protocol (%)",
        "vote_acc": "test OA, vote (%)",
    }
    present = [k for k in keys if all(r.get(k) is not None for r in runs)]
    if first.get("selection") == "best_on_test":
        present = [k for k in present if k != "best_test_acc"]
    header = ["config", "method", "seeds"] + [labels.get(k, k) for k in present] + ["trainable params", "GFLOPs"]
    row: List[Any] = [first.get("config", "-"), first.get("method", "-"), " ".join(str(r.get("seed")) for r in runs)]
    for k in present:
        ms = mean_std([float(r[k]) for r in runs])
        row.append(f"{ms['mean']:.2f} ± {ms['std']:.2f}")
    row += [format_params(first.get("trainable_params")), f"{first.get('gflops', float('nan')):.2f}"]
    return markdown_table(header, [row])
