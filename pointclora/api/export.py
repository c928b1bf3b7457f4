"""Export saved weights for deployment: the model rebuilt by the task its folder names, merged, written by
:func:`pointclora.deploy.export_model` (ONNX / TorchScript) with a JSON description beside it (``tools/export.py``)."""

from __future__ import annotations

import os
from typing import Any, Dict, Optional, Union

__all__ = ["export_weights"]

PathLike = Union[str, os.PathLike]


def export_weights(path: PathLike, out: PathLike, fmt: str = "onnx", which: str = "best",
                   backbone: Optional[PathLike] = None,
                   num_points: Optional[int] = None) -> Dict[str, Any]:  # fmt: skip
    """Export a run / weights folder (the model rebuilt as ``evaluate`` does, merged) and write ``<out>.json`` beside
    it: the task, input names and shapes, and the class / part names. Returns that description."""
    from ..deploy import export_model
    from ..utils.atomic import atomic_write_json
    from .weights import load_weights

    run = load_weights(path, which=which, backbone=backbone)
    n = int(num_points or run.task.num_points)
    export_model(run.model, out, fmt, num_points=n)
    seg = hasattr(run.model, "num_categories")
    info = {
        "format": fmt, "task": run.manifest["task"], "source": str(path), "method": run.manifest.get("method"),
        "inputs": {"points": ["batch", n, 3]} | ({"category": ["batch"]} if seg else {}),
        "output": {"logits": ["batch", n, "parts"] if seg else ["batch", "classes"]},
        "meta": run.manifest.get("meta", {}),
    }  # fmt: skip
    atomic_write_json(info, f"{os.fspath(out)}.json")
    return info
