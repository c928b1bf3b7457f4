"""tools/finetune.py end to end on tiny data: outputs, exact resume after a kill, torn checkpoint writes, config
errors, seeds, method switches. Every run: Synthetic (24 samples), point_mae_tiny, 2 epochs -- seconds."""

import json
from pathlib import Path

import pytest
import torch

from pointclora.cli.finetune import main
from pointclora.engine import checkpoint as ck
from pointclora.engine import trainer
from pointclora.utils import atomic

TINY = """\
_base_: [adapters/clora.yaml]
dataset: {name: synthetic, num_samples: 24, num_points: 96, num_classes: 4}
model: {name: point_mae_tiny, drop_path_rate: 0.1}
data: {num_points: 64, batch_size: 8, eval_batch_size: 16}
optim: {lr: 0.002}
schedule: {epochs: 2, warmup_epochs: 1}
"""
RUN_TO_RUN_KEYS = ("wall_time_s",)


@pytest.fixture
def tiny_cfg(tmp_path) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(TINY)
    return path


def _run(cfg: Path, out: Path, *extra: str) -> int:
    return main(["--cfg", str(cfg), "--output", str(out), "--device", "cpu", "--quiet", *extra])


def _final_state(run: Path):
    return torch.load(run / "checkpoints" / "last.pth", weights_only=True)


def _metrics(run: Path):
    m = json.loads((run / "metrics.json").read_text())
    return {k: v for k, v in m.items() if k not in RUN_TO_RUN_KEYS}


def _history(run: Path):
    return [{k: v for k, v in json.loads(ln).items() if k != "time_s"}
            for ln in (run / "history.jsonl").read_text().splitlines()]  # fmt: skip


def _assert_same_run(a: Path, b: Path):
    sa, sb = _final_state(a), _final_state(b)
    assert sa["model"].keys() == sb["model"].keys()
    for k in sa["model"]:
        assert torch.equal(sa["model"][k], sb["model"][k]), k
    assert _metrics(a) == _metrics(b)
    assert _history(a) == _history(b)


def test_run_directory_layout_and_metrics(tiny_cfg, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(["--cfg", str(tiny_cfg), "--output", str(run), "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "| config | method | model selection | OA (%) | mAcc (%) | trainable params | GFLOPs |" in out
    for rel in ("config.yaml", "history.jsonl", "metrics.json", "results.md", "checkpoints/last.pth",
                "checkpoints/best.pth", "best_adapter/adapter.safetensors", "best_adapter/classes.json",
                "last_adapter/adapter_config.json"):  # fmt: skip
        assert (run / rel).is_file(), rel
    assert any((run / "tb").iterdir())
    m = json.loads((run / "metrics.json").read_text())
    for key in ("acc", "mean_class_acc", "num_classes", "trainable_params", "gflops", "last_acc", "best_test_acc"):
        assert key in m, key
    assert m["num_classes"] == 4 and m["classes"] == ["sphere", "box", "cylinder", "cone"]
    assert 0 <= m["acc"] <= 100 and m["gflops"] > 0 and m["trainable_params"] > 0
    assert m["gflops"] <= m["gflops_unmerged"]  # merged adapters cost nothing at inference
    assert m["selection"] == "best_on_val" and m["val_source"] == "val split"  # Synthetic has its own val split
    hist = [json.loads(ln) for ln in (run / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in hist] == [0, 1]
    for key in ("lr", "train_loss", "train_sade_loss", "train_acc", "val_loss", "val_acc", "val_mean_class_acc"):
        assert key in hist[0], key
    assert hist[0]["lr"] == pytest.approx(1e-6) and hist[1]["lr"] > hist[0]["lr"]
    best = torch.load(run / "checkpoints" / "best.pth", weights_only=True)
    assert best["classes"] == m["classes"] and "peft:" in best["config"] and best["kind"] == "model"
    state = _final_state(run)
    assert state["epoch"] == 1 and "optimizer" in state and "rng" in state and "name: tiny" in state["config"]
    # a second run into the same folder must not silently overwrite it
    assert _run(tiny_cfg, run) == 2


def test_resume_after_kill_matches_uninterrupted_run(tiny_cfg, tmp_path, monkeypatch):
    full, killed = tmp_path / "full", tmp_path / "killed"
    assert _run(tiny_cfg, full) == 0

    real_save = trainer.atomic_save

    def save_then_die(obj, path):
        real_save(obj, path)
        if Path(path).name == "last.pth" and obj["epoch"] == 0:
            raise KeyboardInterrupt("simulated kill right after epoch 0's checkpoint")

    monkeypatch.setattr(trainer, "atomic_save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        _run(tiny_cfg, killed)
    monkeypatch.setattr(trainer, "atomic_save", real_save)
    assert _final_state(killed)["epoch"] == 0 and not (killed / "metrics.json").exists()
    torch.manual_seed(1234)  # the resumed process starts from another global RNG state: the checkpoint must fix it
    assert _run(tiny_cfg, killed, "--resume") == 0
    _assert_same_run(full, killed)


def test_kill_during_checkpoint_write_leaves_previous_checkpoint(tiny_cfg, tmp_path, monkeypatch):
    full, killed = tmp_path / "full", tmp_path / "killed"
    assert _run(tiny_cfg, full) == 0
    real_save = trainer.atomic_save

    def torn_save(obj, path):
        if Path(path).name == "last.pth" and obj["epoch"] == 1:
            data = ck.torch_save_bytes(obj)

            def half_then_die(f):
                f.write(data[: len(data) // 2])
                raise KeyboardInterrupt("simulated kill in the middle of writing last.pth")

            atomic._atomic_write(path, half_then_die)
        real_save(obj, path)

    monkeypatch.setattr(trainer, "atomic_save", torn_save)
    with pytest.raises(KeyboardInterrupt):
        _run(tiny_cfg, killed)
    monkeypatch.setattr(trainer, "atomic_save", real_save)
    state = _final_state(killed)  # still loads: the epoch-0 checkpoint, intact
    assert state["epoch"] == 0
    assert not [p for p in (killed / "checkpoints").iterdir() if p.name not in ("last.pth", "best.pth")]
    assert [json.loads(x)["epoch"] for x in (killed / "history.jsonl").read_text().splitlines()] == [0, 1]
    assert _run(tiny_cfg, killed, "--resume") == 0
    _assert_same_run(full, killed)  # history.jsonl's orphan epoch 1 was replaced, not duplicated


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


def test_amp_and_accumulation_run(tiny_cfg, tmp_path):
    run = tmp_path / "amp"
    assert _run(tiny_cfg, run, "--amp", "--set", "optim.accumulation_steps=2", "data.val_split=carve",
                "schedule.epochs=1") == 0  # fmt: skip
    m = json.loads((run / "metrics.json").read_text())
    assert m["val_source"].startswith("10% of train") and m["selection"] == "best_on_val"
    assert (run / "checkpoints" / "last.pth").is_file()


def test_selection_on_test_is_labelled_as_the_field_protocol(tiny_cfg, tmp_path):
    run = tmp_path / "ontest"
    assert _run(tiny_cfg, run, "--set", "data.val_split=test", "--epochs", "1") == 0
    m = json.loads((run / "metrics.json").read_text())
    assert m["selection"] == "best_on_test" and "field protocol" in m["selection_label"]
    assert "field protocol" in (run / "results.md").read_text()
