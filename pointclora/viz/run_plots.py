"""The pictures ``tools/plot_runs.py`` draws from finished runs: training curves, few-shot bars, per-category mIoU."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Dict, Optional, Sequence

__all__ = ["plot_runs"]

_MIOU_KEYS = ("per_category", "category_miou", "per_category_miou", "per_class_miou", "categories")
_OVERALL_KEYS = ("class_miou", "instance_miou", "cls_miou", "ins_miou", "miou")


def _read_json(path: str, flag: str) -> Any:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{flag} {path!r} not found")
    try:
        return json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{flag} {path}: invalid JSON ({e})") from None


def _fewshot_results(data: Any, path: str) -> Dict[str, Any]:
    if isinstance(data, dict) and isinstance(data.get("results"), dict):
        data = data["results"]
    if not isinstance(data, dict) or not data:
        raise ValueError(f"--fewshot {path}: expected a JSON object {{setting: fold accuracies or {{mean, std}}}}")
    return data


def _miou_results(data: Any, path: str):
    if not isinstance(data, dict) or not data:
        raise ValueError(f"--miou {path}: expected a JSON object {{category: miou}}")
    overall = {}
    for k in _OVERALL_KEYS:
        v = data.get(k)
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            overall[k.replace("_", " ")] = float(v)
    for k in _MIOU_KEYS:
        if isinstance(data.get(k), dict):
            return data[k], overall
    # The mapping itself, minus the overall summaries.
    per = {k: v for k, v in data.items() if k not in _OVERALL_KEYS}
    return per, overall


def plot_runs(runs: Sequence[str], out: str, fewshot: Optional[str] = None, miou: Optional[str] = None,
              metrics: Optional[Sequence[str]] = None, labels: Optional[Sequence[str]] = None,
              title: Optional[str] = None, width: int = 1400, height: int = 420) -> str:  # fmt: skip
    """Draw run curves (``runs``: run folders or history.jsonl files), few-shot bars (``fewshot`` JSON) or
    per-category mIoU bars (``miou`` JSON) into ``out``; returns the line ``tools/plot_runs.py`` prints."""
    from . import load_runs, plot_fewshot, plot_miou, plot_run_curves

    args = SimpleNamespace(runs=runs, out=out, fewshot=fewshot, miou=miou, metrics=metrics, labels=labels,
                           title=title, width=width, height=height)  # fmt: skip
    chosen = sum(bool(x) for x in (args.runs, args.fewshot, args.miou))
    if chosen != 1:
        raise ValueError("give exactly one of: RUN_DIR..., --fewshot JSON, --miou JSON")
    if args.fewshot:
        results = _fewshot_results(_read_json(args.fewshot, "--fewshot"), args.fewshot)
        img = plot_fewshot(results, title=args.title or "few-shot accuracy", out=args.out)
        what = f"few-shot bars, {len(results)} entries"
    elif args.miou:
        per, overall = _miou_results(_read_json(args.miou, "--miou"), args.miou)
        img = plot_miou(per, title=args.title or "per-category mIoU", overall=overall or None, out=args.out)
        what = f"mIoU bars, {len(per)} entries"
    else:
        runs = load_runs(args.runs)
        if args.labels:
            if len(args.labels) != len(runs):
                raise ValueError(f"--labels: {len(args.labels)} names for {len(runs)} runs")
            if len(set(args.labels)) != len(args.labels):
                raise ValueError(f"--labels must be distinct, got {args.labels}")
            runs = dict(zip(args.labels, runs.values()))
        img = plot_run_curves(runs, metrics=args.metrics, title=args.title, out=args.out, width=args.width,
                              height=args.height)  # fmt: skip
        what = f"curves of {len(runs)} run(s), {sum(len(r) for r in runs.values())} epochs"
    return f"wrote {args.out} ({what}, {img.shape[1]}x{img.shape[0]})"
