"""Which epoch the Trainer keeps: the best validation accuracy (the first on a tie), its weights in best/, its numbers
in metrics.json — checked against the run's own history, epoch by epoch."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from task_configs import task_cfg  # noqa: E402

from pointclora.engine.trainer import Trainer  # noqa: E402


def test_best_epoch_is_the_first_best_validation_score_of_the_history(tmp_path):
    task, key, pick = "classification", "val_acc", max
    cfg = task_cfg(task, tmp_path, epochs=3)
    cfg["optim"]["lr"] = 0.01  # scores move from epoch to epoch
    cfg["train"]["select"] = "best"  # the tiny carve is under 100 samples: `auto` would keep the last epoch
    cfg["train"]["eval_test"] = True  # the test split scored every epoch too, its best kept apart (never selected on)
    run = tmp_path / "run"
    metrics = Trainer(cfg, output=run, quiet=True).fit()
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    scores = [h[key] for h in history]
    assert [h["epoch"] for h in history] == [1, 2, 3]
    best = pick(scores)
    best_epoch = scores.index(best) + 1  # the first epoch with the best score
    assert metrics["best_epoch"] == best_epoch and metrics[f"best_{key}"] == best
    assert json.loads((run / "best" / "manifest.json").read_text())["epoch"] == best_epoch
    assert json.loads((run / "last" / "manifest.json").read_text())["epoch"] == 3
    assert len(set(scores)) > 1  # the scores moved, so a wrong choice would show
    tests = [h["test_acc"] for h in history]
    assert metrics["best_test_acc"] == max(tests) and metrics["best_test_epoch"] == tests.index(max(tests)) + 1
    assert metrics["last_acc"] == tests[-1] and metrics["selection"] == "best_on_val"
    best_manifest = json.loads((run / "best" / "manifest.json").read_text())
    assert best_manifest["metrics"] == {"epoch": best_epoch, "val_acc": best, "test_acc": tests[best_epoch - 1]}
    assert all(h["val_loss"] != h["test_loss"] for h in history)  # two splits, not one scored twice
