"""Draw training curves of one or several runs into one PNG; or few-shot / per-category mIoU bar charts.

Examples::

    python tools/plot_runs.py runs/demo/clora-seed0-* --out curves.png            # loss / accuracy / lr panels
    python tools/plot_runs.py runs/a runs/b --metrics val_acc train_loss --out cmp.png
    python tools/plot_runs.py --fewshot fewshot.json --out fewshot.png             # bars with ±std error bars
    python tools/plot_runs.py --miou seg_metrics.json --out miou.png               # per-category mIoU bars

A run is a directory holding ``history.jsonl`` (one JSON object per epoch, written by training) or that file
itself. Keys missing from some epochs leave gaps; metrics never logged are skipped with a warning.

``--fewshot`` reads ``{setting: [fold accs] | {"mean", "std", ...}}`` (or ``{method: {setting: ...}}``, or a file
with such a mapping under ``"results"``). ``--miou`` reads ``{category: miou}`` (or ``{method: {...}}``, or a file
with it under ``"per_category"`` / ``"category_miou"`` / ``"per_category_miou"``; ``class_miou`` /
``instance_miou`` beside it become reference lines).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

__all__ = ["main", "build_parser"]

_MIOU_KEYS = ("per_category", "category_miou", "per_category_miou", "per_class_miou", "categories")
_OVERALL_KEYS = ("class_miou", "instance_miou", "cls_miou", "ins_miou", "miou")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pointclora-plot-runs", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("runs", nargs="*", metavar="RUN_DIR", help="run directories (or history.jsonl files)")
    p.add_argument("--out", required=True, help="output .png")
    p.add_argument("--metrics", nargs="+", help="keys to draw, one panel each (default: loss / accuracy / lr)")
    p.add_argument("--labels", nargs="+", help="legend names for the runs, in order (default: directory names)")
    p.add_argument("--title", help="text above the picture")
    p.add_argument("--fewshot", metavar="JSON", help="draw few-shot results as bars with error bars instead")
    p.add_argument("--miou", metavar="JSON", help="draw per-category mIoU bars instead")
    p.add_argument("--width", type=int, default=1400, help="curves picture width in pixels (1400)")
    p.add_argument("--height", type=int, default=420, help="curves picture height in pixels (420)")
    return p


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


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return _run(args)
    except (ValueError, FileNotFoundError) as e:
        print(f"pointclora-plot-runs: error: {e}", file=sys.stderr)
        return 2


def _run(args) -> int:
    from ..viz import load_runs, plot_fewshot, plot_miou, plot_run_curves

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
    print(f"wrote {args.out} ({what}, {img.shape[1]}x{img.shape[0]})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
