"""The validation-selected sweep (engine/sweep.py): grid, selection, resumability, errors."""

from __future__ import annotations

import json

import pytest

from pointclora.config import DEFAULTS, ConfigError, merge
from pointclora.engine.sweep import parse_sweep, point_name, run_sweep, sweep_points


def _cfg():
    return merge(DEFAULTS, {"model": {"name": "point_mae_tiny"}, "dataset": {"name": "synthetic"}})


class FakeRunner:
    """Stands in for run_finetune: val accuracy peaks at lr 1e-3; test accuracy is highest elsewhere."""

    def __init__(self):
        self.calls = []

    def __call__(self, cfg, output, resume, quiet):
        lr = cfg["optim"]["lr"]
        self.calls.append((lr, cfg["peft"].get("r"), resume))
        output.mkdir(parents=True, exist_ok=True)
        val = {5e-4: 70.0, 1e-3: 80.0, 2e-3: 75.0}[lr]
        m = {"best_val_acc": val, "acc": 100.0 - val, "wall_time_s": 1.0}
        (output / "metrics.json").write_text(json.dumps(m))
        return m


def test_parse_sweep_and_grid_points():
    grid = parse_sweep(["optim.lr=5e-4,1e-3", "peft.r=4,8"])
    assert grid == {"optim.lr": [5e-4, 1e-3], "peft.r": [4, 8]}
    pts = sweep_points(grid)
    assert len(pts) == 4 and pts[0] == {"optim.lr": 5e-4, "peft.r": 4}
    assert point_name(pts[1]) == "optim.lr=0.0005,peft.r=8"
    for bad in (["optim.lr"], ["=1,2"], ["optim.lr="]):
        with pytest.raises(ValueError, match="KEY=V1"):
            parse_sweep(bad)
    with pytest.raises(ValueError, match="empty"):
        sweep_points({})


def test_sweep_selects_on_validation_and_skips_finished_points(tmp_path):
    runner = FakeRunner()
    res = run_sweep(_cfg(), {"optim.lr": [5e-4, 1e-3, 2e-3]}, tmp_path, runner=runner, log=lambda _: None)
    assert res["best"]["optim.lr"] == 1e-3  # chosen on val (80), not on test (where 5e-4 is best)
    assert [c[0] for c in runner.calls] == [5e-4, 1e-3, 2e-3]
    md = (tmp_path / "sweep.md").read_text()
    assert "| 0.001 | 80.00 | 20.00 | 1.00 | **yes** |" in md and "| 0.0005 | 70.00 |" in md
    assert json.loads((tmp_path / "sweep.json").read_text())["best"]["best_val_acc"] == 80.0
    again = FakeRunner()
    res2 = run_sweep(_cfg(), {"optim.lr": [5e-4, 1e-3, 2e-3, 4e-3 / 2]}, tmp_path, runner=again, log=lambda _: None)
    assert again.calls == [] and res2["best"] == res["best"]  # 4e-3 / 2 == 2e-3: the same finished point


def test_sweep_resumes_a_point_with_a_checkpoint_but_no_metrics(tmp_path):
    (tmp_path / "optim.lr=0.002" / "checkpoints").mkdir(parents=True)
    (tmp_path / "optim.lr=0.002" / "checkpoints" / "last.pth").write_bytes(b"")
    runner = FakeRunner()
    run_sweep(_cfg(), {"optim.lr": [1e-3, 2e-3]}, tmp_path, runner=runner, log=lambda _: None)
    assert runner.calls == [(1e-3, runner.calls[0][1], False), (2e-3, runner.calls[1][1], True)]


def test_sweep_rejects_unknown_keys_and_missing_metric(tmp_path):
    with pytest.raises(ConfigError, match="optim"):
        run_sweep(_cfg(), {"optim.lrr": [1e-3]}, tmp_path / "a", runner=FakeRunner(), log=lambda _: None)
    with pytest.raises(KeyError, match="val_top5"):
        run_sweep(
            _cfg(), {"optim.lr": [1e-3]}, tmp_path / "b", runner=FakeRunner(), select="val_top5", log=lambda _: None
        )
