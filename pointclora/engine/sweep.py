"""One-command hyper-parameter sweep selected on validation: ``run_sweep(cfg, {"optim.lr": [5e-4, 1e-3, 2e-3]})``.

Every point of the grid (the product of the value lists) is a full run in ``<output>/<key=value,...>/``; a point whose
``metrics.json`` exists is read back instead of rerun, and a point with a checkpoint but no metrics is resumed, so an
interrupted sweep continues where it stopped. The point with the best validation metric (``select``, default
``best_val_acc``; never a test metric unless asked) is chosen; ``sweep.json`` and ``sweep.md`` (a Markdown table of
every point, the chosen one marked) are written atomically to ``output``.
"""

from __future__ import annotations

import copy
import itertools
import json
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from ..utils.atomic import atomic_write_json, atomic_write_text

__all__ = ["run_sweep", "parse_sweep", "sweep_points", "point_name"]

Runner = Callable[..., Mapping[str, Any]]


def parse_sweep(specs: Sequence[str]) -> Dict[str, List[Any]]:
    """``["optim.lr=5e-4,1e-3", "peft.r=4,8"]`` -> ``{"optim.lr": [0.0005, 0.001], "peft.r": [4, 8]}`` (values parsed
    as YAML scalars, as ``--set``)."""
    from ..config import _parse_value

    grid: Dict[str, List[Any]] = {}
    for spec in specs:
        key, sep, values = str(spec).partition("=")
        if not sep or not key or not values.strip(","):
            raise ValueError(f"--sweep {spec!r}: expected KEY=V1,V2,... (e.g. optim.lr=5e-4,1e-3,2e-3)")
        grid[key.strip()] = [_parse_value(v.strip()) for v in values.split(",") if v.strip()]
    return grid


def sweep_points(grid: Mapping[str, Sequence[Any]]) -> List[Dict[str, Any]]:
    """Every combination of the grid, in the order the keys and values were given."""
    if not grid:
        raise ValueError("the sweep grid is empty: give at least one KEY=V1,V2,...")
    for key, values in grid.items():
        if not isinstance(values, (list, tuple)) or not values:
            raise ValueError(f"sweep key {key!r}: expected a non-empty list of values, got {values!r}")
    keys = list(grid)
    return [dict(zip(keys, combo)) for combo in itertools.product(*(grid[k] for k in keys))]


def point_name(point: Mapping[str, Any]) -> str:
    """Folder name of a grid point: ``optim.lr=0.001,peft.r=8`` (path separators replaced)."""
    return ",".join(f"{k}={v}" for k, v in point.items()).replace("/", "_").replace(" ", "")


def _default_runner(cfg: Mapping[str, Any], output: Path, resume: bool, quiet: bool) -> Mapping[str, Any]:
    from .trainer import run_finetune

    return run_finetune(cfg, output=output, resume=resume, quiet=quiet)


def _table(rows: List[Dict[str, Any]], keys: List[str], select: str, best: int) -> str:
    cols = keys + [select, "acc", "wall_time_s"]
    lines = ["| " + " | ".join(cols) + " | chosen |", "|" + "---|" * (len(cols) + 1)]
    for i, r in enumerate(rows):
        # grid values as given (1e-3 must not print as 0.00)
        cells = [f"{r.get(c):g}" if isinstance(r.get(c), float) else str(r.get(c)) for c in keys]
        cells += [f"{r.get(c):.2f}" if isinstance(r.get(c), float) else str(r.get(c)) for c in cols[len(keys) :]]
        lines.append("| " + " | ".join(cells) + f" | {'**yes**' if i == best else ''} |")
    return "\n".join(lines)


def run_sweep(
    cfg: Mapping[str, Any],
    grid: Mapping[str, Sequence[Any]],
    output: Any,
    select: str = "best_val_acc",
    runner: Optional[Runner] = None,
    quiet: bool = True,
    log: Callable[[str], None] = print,
) -> Dict[str, Any]:
    """Run every grid point of ``cfg`` (resumably) and choose the best on ``select``.

    Args:
        cfg: a resolved config (:func:`pointclora.config.load_config`).
        grid: ``{dotted key: [values]}`` (e.g. from :func:`parse_sweep`); keys are checked like ``--set``.
        output: sweep directory; each point runs in ``output/<point_name>``.
        select: the metric of the runner's result to maximise (a validation metric).
        runner: ``runner(cfg, output=Path, resume=bool, quiet=bool) -> metrics`` (default
            :func:`pointclora.engine.trainer.run_finetune`).

    Returns:
        ``{"select", "best": {point..., metrics...}, "rows": [...], "table": markdown}``.
    """
    from ..config import apply_overrides

    runner = runner or _default_runner
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    points = sweep_points(grid)
    rows: List[Dict[str, Any]] = []
    for i, point in enumerate(points):
        run_dir = out / point_name(point)
        done = run_dir / "metrics.json"
        if done.exists():
            metrics = json.loads(done.read_text())
            log(f"[sweep {i + 1}/{len(points)}] {point_name(point)}: done before, {select}={metrics.get(select)}")
        else:
            overrides = [f"{k}={json.dumps(v) if isinstance(v, (list, dict)) else v}" for k, v in point.items()]
            point_cfg = apply_overrides(copy.deepcopy(dict(cfg)), overrides)
            resume = (run_dir / "checkpoints" / "last.pth").exists()
            metrics = dict(runner(point_cfg, output=run_dir, resume=resume, quiet=quiet))
            if not done.exists():  # runners other than run_finetune may not write it
                atomic_write_json(metrics, done)
            log(f"[sweep {i + 1}/{len(points)}] {point_name(point)}: {select}={metrics.get(select)}")
        if metrics.get(select) is None:
            raise KeyError(f"sweep point {point_name(point)}: the run's metrics have no {select!r}")
        rows.append({**point, **{k: metrics.get(k) for k in (select, "acc", "wall_time_s")}, "dir": str(run_dir)})
    best = max(range(len(rows)), key=lambda j: float(rows[j][select]))  # first of equals wins: grid order
    table = _table(rows, list(grid), select, best)
    result = {"select": select, "best": rows[best], "rows": rows, "table": table}
    atomic_write_json(result, out / "sweep.json")
    atomic_write_text(table + "\n", out / "sweep.md")
    return result
