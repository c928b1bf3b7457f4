"""Charts from plain Python data: training curves (``history.jsonl``), few-shot bars, per-category mIoU bars.

Every function takes dicts/lists (whatever tool produced them), returns the picture as an ``(H, W, 3)`` uint8
array and writes a PNG when ``out`` is given.
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .figures import figure_to_array, save_png


def _finish_chart(fig, out) -> np.ndarray:
    """Lay out ``fig``, rasterise it to ``(H, W, 3)`` uint8 and write it to ``out`` when given."""
    fig.tight_layout()
    img = figure_to_array(fig)
    if out is not None:
        save_png(img, out)
    return img


__all__ = [
    "read_history",
    "load_runs",
    "default_metric_panels",
    "plot_run_curves",
    "fewshot_stats",
    "plot_fewshot",
    "plot_miou",
]

PathLike = Union[str, Path]
History = List[Dict[str, object]]


# ------------------------------------------------------------------------------------------------ run curves
def read_history(path: PathLike) -> History:
    """Rows of a run's ``history.jsonl`` (a run directory or the file itself).

    A run still training may have a half-written last line; malformed lines are skipped with a warning naming
    file and line, not fatal, so curves of a live run can be drawn.
    """
    path = Path(path)
    file = path / "history.jsonl" if path.is_dir() else path
    if not file.exists():
        where = f"run directory {str(path)!r} has no history.jsonl" if path.is_dir() else f"{str(file)!r} not found"
        raise FileNotFoundError(f"{where} (plot_runs reads the per-epoch log that training writes)")
    rows: History = []
    for n, line in enumerate(file.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as e:
            warnings.warn(f"{file}:{n}: skipping malformed line ({e.msg})", stacklevel=2)
            continue
        if not isinstance(row, dict):
            warnings.warn(f"{file}:{n}: skipping a line that is not a JSON object", stacklevel=2)
            continue
        rows.append(row)
    if not rows:
        raise ValueError(f"{file} holds no epochs yet")
    return rows


def load_runs(paths: Sequence[PathLike]) -> Dict[str, History]:
    """``{label: rows}`` for several runs; labels are directory names, widened with parents when they clash."""
    paths = [Path(p) for p in paths]
    dirs = [p if p.is_dir() else p.parent for p in paths]
    labels = [d.name or str(d) for d in dirs]
    if len(set(labels)) < len(labels):
        labels = [f"{d.parent.name}/{d.name}" for d in dirs]
    if len(set(labels)) < len(labels):
        labels = [str(d) for d in dirs]
    return {lab: read_history(p) for lab, p in zip(labels, paths)}


def _value(row: Mapping, key: str) -> Optional[float]:
    v = row.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    v = float(v)
    return v if math.isfinite(v) else None


def default_metric_panels(runs: Mapping[str, History]) -> List[Tuple[str, List[str]]]:
    """Panels ``[(title, keys)]`` from the keys the runs actually logged.

    Main losses (``train/val/test_loss``) apart from auxiliary ones (e.g. ``train_sade_loss``, orders of magnitude
    smaller, which would flatten the main curves), overall accuracies (``*_acc``; mean-class accuracy on request
    via ``metrics``), mIoUs, learning rate.
    """
    keys: List[str] = []
    for rows in runs.values():
        for row in rows:
            for k in row:
                if k not in keys and k != "epoch" and any(_value(r, k) is not None for r in rows):
                    keys.append(k)

    def nonzero(k: str) -> bool:
        return any((_value(r, k) or 0.0) != 0.0 for rows in runs.values() for r in rows)

    main_loss = [k for k in keys if k in ("loss", "train_loss", "val_loss", "test_loss")]
    other_loss = [k for k in keys if "loss" in k and k not in main_loss]
    if not main_loss:
        main_loss, other_loss = other_loss, []
    panels = [
        ("loss", main_loss),
        ("auxiliary loss", [k for k in other_loss if nonzero(k)]),
        ("accuracy", [k for k in keys if k.endswith("acc") and "mean_class" not in k and "mAcc" not in k]),
        ("mIoU", [k for k in keys if "miou" in k.lower()]),
        ("learning rate", [k for k in keys if k == "lr" or k.startswith("lr_") or k.endswith("_lr")]),
    ]
    return [(t, ks) for t, ks in panels if ks]


_SPLIT_STYLE = {"train": "-", "val": "--", "test": ":"}


def _line_style(key: str, index: int) -> str:
    """Line style by split (train solid, val dashed, test dotted) so the same split looks alike in every panel."""
    prefix = key.split("_", 1)[0]
    return _SPLIT_STYLE.get(prefix, ("-", "-.", (0, (5, 1, 1, 1)))[index % 3])


def plot_run_curves(
    runs: Mapping[str, History],
    metrics: Optional[Sequence[str]] = None,
    title: Optional[str] = None,
    out: Optional[PathLike] = None,
    width: int = 1400,
    height: int = 420,
) -> np.ndarray:
    """Curves of one or several runs in one picture: one colour per run, one line style per metric.

    ``metrics``: keys to draw, one panel each (e.g. ``["val_acc", "lr"]``); default: loss / accuracy / lr panels
    from whatever keys were logged. Missing keys and non-numeric values are skipped, epochs without a value leave
    a gap. x is ``epoch`` when logged, else the row number.
    """
    from matplotlib.figure import Figure

    if not runs:
        raise ValueError("no runs to plot")
    if metrics:
        logged = {k for rows in runs.values() for row in rows for k in row}
        missing = [m for m in metrics if m not in logged]
        if len(missing) == len(metrics):
            raise ValueError(f"none of the metrics {list(metrics)} was logged; logged keys: {sorted(logged)}")
        if missing:
            warnings.warn(f"metrics never logged, skipped: {missing}", stacklevel=2)
        panels = [(m, [m]) for m in metrics if m not in missing]
    else:
        panels = default_metric_panels(runs)
        if not panels:
            raise ValueError("the runs logged no numeric metrics besides 'epoch'")
    n = len(panels)
    dpi = 100
    fig = Figure(figsize=(max(width, 380 * n) / dpi, height / dpi), dpi=dpi, facecolor="white")
    axes = fig.subplots(1, n, squeeze=False)[0]
    run_colors = [f"C{i % 10}" for i in range(len(runs))]
    for ax, (ptitle, keys) in zip(axes, panels):
        for (label, rows), color in zip(runs.items(), run_colors):
            for si, key in enumerate(keys):
                xs, ys = [], []
                for i, row in enumerate(rows):
                    x = _value(row, "epoch")
                    xs.append(x if x is not None else float(i))
                    y = _value(row, key)
                    ys.append(np.nan if y is None else y)
                if all(np.isnan(ys)):
                    continue
                ys = np.asarray(ys)
                line_label = key if len(runs) == 1 else f"{label}: {key}"
                marker = "o" if np.sum(~np.isnan(ys)) < 3 else None
                ax.plot(xs, ys, linestyle=_line_style(key, si), color=color if len(runs) > 1 else f"C{si}",
                        label=line_label, marker=marker, linewidth=1.6)
        if ptitle == "learning rate" or (keys == ["lr"]):
            ys_all = [v for rows in runs.values() for r in rows for v in [_value(r, keys[0])] if v]
            if ys_all and max(ys_all) / max(min(ys_all), 1e-30) > 100:
                ax.set_yscale("log")
        ax.set_title(ptitle)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return _finish_chart(fig, out)


# ------------------------------------------------------------------------------------------------ few-shot
def fewshot_stats(entry) -> Tuple[float, float, int]:
    """``(mean, std, folds)`` from a list of per-fold accuracies or a dict with ``mean``/``std`` and/or the folds.

    Fold lists may sit under ``accs``, ``folds``, ``accuracies`` or ``acc``; std is the population std over folds
    (as the few-shot papers report) when not given.
    """
    if isinstance(entry, Mapping):
        folds = next((entry[k] for k in ("accs", "folds", "accuracies", "acc", "fold_accs") if k in entry), None)
        if folds is not None and not isinstance(folds, (list, tuple)):
            folds = None
        if "mean" in entry:
            mean = float(entry["mean"])
            std = float(entry.get("std", np.std(folds) if folds else 0.0))
            return mean, std, len(folds) if folds else int(entry.get("folds_count", entry.get("n", 0)) or 0)
        if folds:
            entry = folds
        else:
            raise ValueError(f"few-shot entry has neither 'mean' nor a list of fold accuracies: {dict(entry)}")
    vals = np.asarray(list(entry), dtype=np.float64)
    if vals.size == 0:
        raise ValueError("few-shot entry has an empty list of fold accuracies")
    return float(vals.mean()), float(vals.std()), int(vals.size)


def _is_setting_map(d: Mapping) -> bool:
    """True when ``d`` maps settings to results (not methods to setting maps)."""
    return all(not isinstance(v, Mapping) or "mean" in v or any(k in v for k in ("accs", "folds", "accuracies"))
               for v in d.values())


def plot_fewshot(
    results: Mapping, title: str = "few-shot accuracy", out: Optional[PathLike] = None, ylabel: str = "accuracy (%)"
) -> np.ndarray:
    """Bars with ±std error bars per setting (``"5way10shot"``...); several methods give grouped bars.

    ``results``: ``{setting: folds | {"mean", "std", ...}}``, or ``{method: {setting: ...}}`` to compare methods.
    Accuracies in [0, 1] are shown as percentages.
    """
    from matplotlib.figure import Figure

    if not results:
        raise ValueError("no few-shot results to plot")
    methods = {"": results} if _is_setting_map(results) else dict(results)
    settings: List[str] = []
    for m in methods.values():
        if not isinstance(m, Mapping):
            raise ValueError(f"expected {{method: {{setting: result}}}} or {{setting: result}}, got {type(m).__name__}")
        settings += [s for s in m if s not in settings]
    stats = {m: {s: fewshot_stats(v) for s, v in r.items()} for m, r in methods.items()}
    scale = 100.0 if all(mean <= 1.0 for r in stats.values() for mean, _, _ in r.values()) else 1.0
    dpi = 100
    fig = Figure(figsize=(max(6.0, 1.6 * len(settings) * max(1, len(methods)) ** 0.5 + 2), 4.2), dpi=dpi)
    ax = fig.subplots()
    width = 0.8 / len(methods)
    x = np.arange(len(settings))
    for i, (m, r) in enumerate(stats.items()):
        means = [r[s][0] * scale if s in r else np.nan for s in settings]
        stds = [r[s][1] * scale if s in r else 0.0 for s in settings]
        bars = ax.bar(x + (i - (len(methods) - 1) / 2) * width, means, width * 0.95, yerr=stds, capsize=4,
                      label=m or None, color=f"C{i}")
        for b, mu, sd in zip(bars, means, stds):
            if np.isfinite(mu):
                ax.text(b.get_x() + b.get_width() / 2, mu + sd + 0.5, f"{mu:.1f}±{sd:.1f}", ha="center",
                        va="bottom", fontsize=8)
    ax.set_xticks(x)
    ax.set_xticklabels(settings)
    all_means = [v[0] * scale - v[1] * scale for r in stats.values() for v in r.values()]
    lo = max(0.0, math.floor(min(all_means) / 10) * 10 - 10) if all_means else 0.0
    # Start near the lowest bar so small differences between methods stay visible; top leaves room for labels.
    ax.set_ylim(lo, 105 if scale == 100.0 else ax.get_ylim()[1] * 1.08)
    ax.set_ylabel(ylabel)
    folds = sorted({v[2] for r in stats.values() for v in r.values()})
    ax.set_title(f"{title} (mean ± std over {'/'.join(map(str, folds))} folds)" if folds and folds[0] else title)
    ax.grid(axis="y", alpha=0.3)
    if len(methods) > 1:
        ax.legend(fontsize=9)
    return _finish_chart(fig, out)


# ------------------------------------------------------------------------------------------------ mIoU
def plot_miou(
    per_category: Mapping,
    title: str = "per-category mIoU",
    out: Optional[PathLike] = None,
    overall: Optional[Mapping[str, float]] = None,
) -> np.ndarray:
    """Bars of mIoU per category: ``{category: miou}``, or ``{method: {category: miou}}`` for grouped bars.

    Values in [0, 1] are shown as percentages. ``overall`` (e.g. ``{"class mIoU": .., "instance mIoU": ..}``)
    is drawn as horizontal reference lines.
    """
    from matplotlib.figure import Figure

    if not per_category:
        raise ValueError("no per-category mIoU values to plot")
    nested = all(isinstance(v, Mapping) for v in per_category.values())
    methods = dict(per_category) if nested else {"": per_category}
    cats: List[str] = []
    for r in methods.values():
        cats += [c for c in r if c not in cats]
    for m, r in methods.items():
        for c, v in r.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError(f"mIoU of {c!r}{' (' + m + ')' if m else ''} must be a number, got {v!r}")
    vals = [float(v) for r in methods.values() for v in r.values()]
    scale = 100.0 if all(v <= 1.0 for v in vals) else 1.0
    fig = Figure(figsize=(max(6.0, 0.55 * len(cats) * max(1, len(methods)) ** 0.5 + 2), 4.2), dpi=100)
    ax = fig.subplots()
    x = np.arange(len(cats))
    width = 0.8 / len(methods)
    for i, (m, r) in enumerate(methods.items()):
        ys = [float(r[c]) * scale if c in r else np.nan for c in cats]
        bars = ax.bar(x + (i - (len(methods) - 1) / 2) * width, ys, width * 0.95, label=m or None, color=f"C{i}")
        if len(methods) == 1:
            for b, y in zip(bars, ys):
                if np.isfinite(y):
                    ax.text(b.get_x() + b.get_width() / 2, y + 0.5, f"{y:.1f}", ha="center", va="bottom", fontsize=8)
    for j, (name, v) in enumerate((overall or {}).items()):
        ax.axhline(float(v) * scale, color=f"C{j + 3}", linestyle="--", linewidth=1,
                   label=f"{name} {float(v) * scale:.1f}")
    ax.set_xticks(x)
    ax.set_xticklabels(cats, rotation=45 if len(cats) > 6 else 0, ha="right" if len(cats) > 6 else "center")
    ax.set_ylim(0, 105 if scale == 100.0 else None)
    ax.set_ylabel("mIoU (%)" if scale == 100.0 else "mIoU")
    ax.set_title(title)
    ax.grid(axis="y", alpha=0.3)
    if len(methods) > 1 or overall:
        ax.legend(fontsize=9)
    return _finish_chart(fig, out)
