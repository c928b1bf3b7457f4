"""tools/finetune.py end to end on tiny data: outputs, exact resume after a kill, torn checkpoint writes, config
errors, seeds, method switches (the Trainer itself: tests/engine/test_trainer.py). Every run: Synthetic (24
samples), point_mae_tiny, 2 epochs -- seconds."""

import json
from pathlib import Path

import pytest

from pointclora.cli.finetune import main

TINY = """\
_base_: [adapters/clora.yaml]
dataset: {name: synthetic, num_samples: 24, num_points: 96, num_classes: 4}
model: {name: point_mae_tiny, drop_path_rate: 0.1}
data: {num_points: 64, batch_size: 8, eval_batch_size: 16}
optim: {lr: 0.002}
schedule: {epochs: 2, warmup_epochs: 1}
"""


@pytest.fixture
def tiny_cfg(tmp_path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return path


def _run(cfg: Path, out: Path, *extra: str) -> int:
    return main(["--cfg", str(cfg), "--output", str(out), "--device", "cpu", "--quiet", *extra])


def test_unknown_config_key_is_an_error_with_a_suggestion(tiny_cfg, tmp_path, capsys):
    assert _run(tiny_cfg, tmp_path / "x", "--set", "optim.lrr=0.1") == 2
    err = capsys.readouterr().err
    assert "optim.lrr" in err and "did you mean 'lr'" in err
    assert not (tmp_path / "x").exists()
    bad = tmp_path / "bad.yaml"
    bad.write_text(TINY + "train: {seeds: 3}\n")
    assert _run(bad, tmp_path / "y") == 2
    assert "bad.yaml" in capsys.readouterr().err


def test_resume_needs_an_existing_run(tiny_cfg, tmp_path, capsys):
    assert main(["--cfg", str(tiny_cfg), "--resume"]) == 2
    assert _run(tiny_cfg, tmp_path / "none", "--resume") == 2
    assert "no checkpoint" in capsys.readouterr().err


def test_seeds_mean_std_and_method_switch(tiny_cfg, tmp_path, capsys):
    out = tmp_path / "seeds"
    assert _run(tiny_cfg, out, "--seeds", "0", "1", "--peft", "linear", "--epochs", "1") == 0
    summary = json.loads((out / "summary.json").read_text())
    a0 = json.loads((out / "seed0" / "metrics.json").read_text())
    a1 = json.loads((out / "seed1" / "metrics.json").read_text())
    assert summary["seeds"] == [0, 1] and summary["acc"]["values"] == [a0["acc"], a1["acc"]]
    assert summary["acc"]["mean"] == pytest.approx((a0["acc"] + a1["acc"]) / 2)
    assert a0["method"] == "linear" and a0["epochs"] == 1 and a0["seed"] == 0 and a1["seed"] == 1
    from pointclora.models import create_model

    head = create_model("point_mae_tiny", num_classes=4).cls_head_finetune
    assert a0["trainable_params"] == sum(p.numel() for p in head.parameters())  # linear probing: the head only
    assert "±" in (out / "summary.md").read_text() and "±" in capsys.readouterr().out


def test_selection_on_test_is_labelled_as_the_field_protocol(tiny_cfg, tmp_path):
    run = tmp_path / "ontest"
    assert _run(tiny_cfg, run, "--set", "data.val_split=test", "--epochs", "1") == 0
    m = json.loads((run / "metrics.json").read_text())
    assert m["selection"] == "best_on_test" and "papers' protocol" in m["selection_label"]
    assert "papers' protocol" in (run / "results.md").read_text()
