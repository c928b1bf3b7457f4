"""Which epoch the Trainer keeps: the best validation accuracy (the first on a tie), its weights in best/, its numbers
in metrics.json — checked against the run's own history, epoch by epoch, with validation on a split of its own and
on the test split (the papers' protocol: then the test scores are the validation scores)."""

import json
import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from task_configs import task_cfg  # noqa: E402

from pointclora.engine.trainer import Trainer  # noqa: E402


@pytest.mark.parametrize("val_split", ["auto", "test"])
def test_best_epoch_is_the_first_best_validation_score_of_the_history(tmp_path, val_split):
    task, key, pick = "classification", "val_acc", max
    cfg = task_cfg(task, tmp_path, epochs=3)
    cfg["optim"]["lr"] = 0.01  # scores move from epoch to epoch
    cfg["train"]["select"] = "best"  # the tiny carve is under 100 samples: `auto` would keep the last epoch
    cfg["train"]["eval_test"] = True  # the test split scored every epoch too, its best kept apart (never selected on)
    cfg["data"]["val_split"] = val_split
    on_test = val_split == "test"
    run = tmp_path / "run"
    trainer = Trainer(cfg, output=run, quiet=True)
    start = time.time()
    metrics = trainer.fit()
    took = time.time() - start
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    scores = [h[key] for h in history]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    best = pick(scores)
    best_epoch = scores.index(best) + 1  # the first epoch with the best score
    assert metrics["best_epoch"] == best_epoch and metrics[f"best_{key}"] == best
    assert "warning:" not in (run / "log.txt").read_text()  # chosen by train.select: nothing to warn about
    assert json.loads((run / "best" / "manifest.json").read_text())["epoch"] == best_epoch
    assert json.loads((run / "last" / "manifest.json").read_text())["epoch"] == 3
    assert len(set(scores)) > 1  # the scores moved, so a wrong choice would show
    tests = [h["test_acc"] for h in history]
    assert metrics["best_test_acc"] == max(tests) and metrics["best_test_epoch"] == tests.index(max(tests)) + 1
    assert metrics["last_acc"] == tests[-1]
    best_manifest = json.loads((run / "best" / "manifest.json").read_text())
    assert best_manifest["metrics"] == {"epoch": best_epoch, "val_acc": best, "test_acc": tests[best_epoch - 1]}
    last_manifest = json.loads((run / "last" / "manifest.json").read_text())
    meta = {"test_source": "the dataset's test split", "classes": trainer.data.meta["classes"]}
    assert best_manifest["meta"] == last_manifest["meta"] == meta and last_manifest["metrics"] == {}
    assert best_manifest["task"] == last_manifest["task"] == task
    assert best_manifest["config"] == last_manifest["config"] == trainer.cfg
    # the final numbers are those of the selected epoch's model (rebuilt from best/) on the test split
    chosen = history[best_epoch - 1]
    assert (metrics["acc"], metrics["loss"]) == pytest.approx((chosen["test_acc"], chosen["test_loss"]), rel=1e-6)
    source = "test (papers' protocol: best epoch chosen on test, optimistic)" if on_test else "the dataset's val split"
    assert trainer.data.val_source == source and metrics["val_source"] == source
    assert (metrics["selection"], metrics["selection_label"]) == (
        ("best_on_test", "best on test (papers' protocol, optimistic)") if on_test
        else ("best_on_val", f"best on val [{source}]"))  # fmt: skip
    assert metrics["test_source"] == "the dataset's test split" and metrics["classes"] == trainer.data.meta["classes"]
    assert (metrics["epochs"], metrics["num_points"], metrics["seed"], metrics["method"]) == (3, 64, 0, "clora")
    unchecked = "not checked (Synthetic gives no sample identity)"
    assert metrics["split_check"] == {"train/val": unchecked, "train/test": unchecked,
                                      "val/test": "same split" if on_test else unchecked}  # fmt: skip
    assert metrics["threads"] == trainer.threads
    trainable = sum(p.numel() for p in trainer.model.parameters() if p.requires_grad)
    total = sum(p.numel() for p in trainer.model.parameters())
    assert (metrics["trainable_params"], metrics["total_params"], metrics["frozen_params"]) == (
        trainable, total, total - trainable)
    assert metrics["gflops"] > 0 and 0 < metrics["wall_time_s"] <= took + 0.05  # rounded to 0.1 s
    assert sorted(metrics) == [  # every key of metrics.json, no other
        "acc", "adapter_params", "best_epoch", "best_test_acc", "best_test_epoch", "best_val_acc", "classes", "config",
        "confusion", "device", "epochs", "frozen_params", "gflops", "gflops_unmerged", "last_acc", "last_loss",
        "last_mean_class_acc", "last_num_samples", "loss", "mean_class_acc", "method", "num_points", "num_samples",
        "per_class_acc", "protocol", "seed", "selection", "selection_label", "split_check", "task", "test_source",
        "threads", "total_params", "trainable_params", "trainable_params_without_head", "val_source", "wall_time_s",
        "world_size"]  # fmt: skip
    state = torch.load(run / "checkpoints" / "last.pth", weights_only=True)
    assert 0 < state["elapsed_s"] <= took and state["best"] == best_manifest["metrics"]
    if on_test:  # one split scored once an epoch, under both names
        assert all(h["val_loss"] == h["test_loss"] and h["val_acc"] == h["test_acc"] for h in history)
    else:
        assert all(h["val_loss"] != h["test_loss"] for h in history)  # two splits, not one scored twice
