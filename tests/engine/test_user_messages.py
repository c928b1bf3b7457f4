"""What a user sees (issue 19 item 8): --quiet keeps the final table and run folder; one cache variable; every bad
file in one error; --resume of a run stopped before its first checkpoint says so in one line; no progress-bar
redraws in a redirected log; the table says its scores are on the test split; no `from conftest import`."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))
from task_configs import task_cfg  # noqa: E402

from pointclora.engine.trainer import Trainer  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def test_quiet_still_prints_the_table_and_run_folder_and_no_bars_when_redirected(tmp_path, capsys):
    Trainer(task_cfg("classification", tmp_path, epochs=1), output=tmp_path / "q", quiet=True).fit()
    out = capsys.readouterr().out
    assert f"run folder: {tmp_path / 'q'}" in out and "| test OA (%) | test mAcc (%) |" in out
    assert "epoch 1/1" not in out  # the per-epoch lines stay quiet
    Trainer(task_cfg("classification", tmp_path, epochs=1), output=tmp_path / "loud").fit()
    cap = capsys.readouterr()
    assert "epoch 1/1: lr" in cap.out and "it/s" not in cap.err and "\r" not in cap.err  # stderr is not a terminal


def test_one_cache_variable(monkeypatch, capsys):
    from pointclora.api.backbone import _default_cache
    from pointclora.datasets import cache

    monkeypatch.setenv("POINTCLORA_CACHE", "/tmp/pc_one")
    monkeypatch.setenv("POINTCLORA_CACHE_DIR", "/tmp/pc_old")
    assert cache.default_cache_dir() == Path("/tmp/pc_one") == _default_cache()  # datasets and demo backbone alike
    monkeypatch.delenv("POINTCLORA_CACHE")
    monkeypatch.setattr(cache, "_NOTED", set())
    assert cache.default_cache_dir() == Path("/tmp/pc_old") == _default_cache()
    err = capsys.readouterr().err
    assert err.count("POINTCLORA_CACHE_DIR is deprecated; set POINTCLORA_CACHE") == 1  # once per process


def test_every_bad_file_of_every_split_in_one_error(tmp_path):
    from pointclora.datasets.validation import DatasetValidationError

    root = tmp_path / "data"
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in ("box", "ball"):
            (root / c / split).mkdir(parents=True)
            for i in range(4):
                np.savetxt(root / c / split / f"{c}_{i}.txt", rng.normal(size=(40, 3)), fmt="%.5f")
    bad = ["ball/train/ball_2.txt", "box/train/box_1.txt", "box/test/box_3.txt"]
    for b in bad:
        lines = (root / b).read_text().splitlines()
        lines[6] = "0.1 oops 0.3"
        (root / b).write_text("\n".join(lines) + "\n")
    cfg = task_cfg("classification", tmp_path, epochs=1)
    cfg["dataset"] = {"name": "folder", "root": str(root)}
    cfg["data"].update(batch_size=4, num_points=32, val_split="carve", val_fraction=0.25)
    with pytest.raises(DatasetValidationError) as info:
        Trainer(cfg, output=tmp_path / "run", quiet=True).fit()
    msg = str(info.value)
    assert msg.startswith("3 files failed the check") and all(f"{b}: line 7" in msg for b in bad)


def test_resume_of_a_run_stopped_before_its_first_checkpoint(tmp_path):
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text("dataset: {name: synthetic, num_samples: 16, num_points: 64, num_classes: 2}\n"
                   "model: {name: point_mae_tiny}\ndata: {num_points: 64, batch_size: 8}\n")  # fmt: skip
    run = tmp_path / "run"
    run.mkdir()
    (run / "log.txt").write_text("classification ...\n")
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (run / ".lock").write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename, "started": "earlier",
                                           "command": "finetune", "proc_start": None}))  # fmt: skip
    proc = subprocess.run([sys.executable, "-m", "pointclora.cli.finetune", "--cfg", str(cfg), "--output", str(run),
                           "--resume", "--device", "cpu"], capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})  # fmt: skip
    assert proc.returncode == 2
    assert "Warning" not in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert "stopped before its first epoch ended" in proc.stderr and "without --resume" in proc.stderr


def test_no_test_imports_conftest():
    import re

    pattern = re.compile(r"^\s*(from conftest import|import conftest)", re.M)
    offenders = [str(p) for p in (ROOT / "tests").rglob("test_*.py") if pattern.search(p.read_text())]
    assert offenders == []
