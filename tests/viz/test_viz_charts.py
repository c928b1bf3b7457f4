"""Charts from plain dicts: run curves (history.jsonl), few-shot bars with error bars, per-category mIoU bars."""

import json

import numpy as np
import pytest
from viz_helpers import assert_nontrivial, color_mask, load_png

from pointclora import viz

C0, C1 = (0x1F / 255, 0x77 / 255, 0xB4 / 255), (0xFF / 255, 0x7F / 255, 0x0E / 255)  # matplotlib's first colours


def write_run(path, rows, tail=""):
    path.mkdir(parents=True)
    (path / "history.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows) + tail)
    return path


def rows(n, acc0=10.0, seed=0):
    rng = np.random.default_rng(seed)
    out = []
    for e in range(n):
        out.append({"epoch": e, "lr": 1e-3 * (1 - e / n) + 1e-6, "train_loss": 2.0 / (e + 1) + rng.random() * 0.1,
                    "train_acc": acc0 + 8 * e, "val_loss": 2.2 / (e + 1), "val_acc": acc0 + 7 * e})
    return out


def test_read_history_skips_a_half_written_last_line(tmp_path):
    run = write_run(tmp_path / "r", rows(3), tail='{"epoch": 3, "lr"')
    with pytest.warns(UserWarning, match=r"history.jsonl:4: skipping malformed line"):
        hist = viz.read_history(run)
    assert [r["epoch"] for r in hist] == [0, 1, 2]


def test_read_history_names_what_is_missing(tmp_path):
    (tmp_path / "empty_run").mkdir()
    with pytest.raises(FileNotFoundError, match="empty_run.*has no history.jsonl"):
        viz.read_history(tmp_path / "empty_run")


def test_curves_of_two_runs_in_one_picture(tmp_path):
    a = write_run(tmp_path / "clora", rows(6))
    b_rows = rows(4, acc0=5, seed=1)
    del b_rows[2]["val_acc"]  # a key missing in one epoch leaves a gap, not an error
    b_rows[1]["val_loss"] = None
    for r in b_rows:  # an auxiliary loss (own panel) and a mean-class accuracy (only on request)
        r.update(train_sade_loss=1e-3, val_mean_class_acc=r["train_acc"] - 1)
    b = write_run(tmp_path / "lora", b_rows)
    runs = viz.load_runs([a, b])
    assert list(runs) == ["clora", "lora"]
    panels = dict(viz.default_metric_panels(runs))
    assert panels == {"loss": ["train_loss", "val_loss"], "auxiliary loss": ["train_sade_loss"],
                      "accuracy": ["train_acc", "val_acc"], "learning rate": ["lr"]}
    out = tmp_path / "curves.png"
    viz.plot_run_curves(runs, out=out, width=900, height=300)
    img = load_png(out)
    assert_nontrivial(img, min_size=(300, 900), min_colors=20, max_ink=0.6)
    # One colour per run.
    assert color_mask(img, C0, tol=10).sum() > 200 and color_mask(img, C1, tol=10).sum() > 200


def test_run_labels_clash_are_widened(tmp_path):
    a = write_run(tmp_path / "x" / "seed0", rows(2))
    b = write_run(tmp_path / "y" / "seed0", rows(2))
    assert list(viz.load_runs([a, b])) == ["x/seed0", "y/seed0"]


def test_chosen_metrics_and_unknown_metrics(tmp_path):
    run = {"r": rows(3)}
    img = viz.plot_run_curves(run, metrics=["val_acc"], width=400, height=300)
    assert_nontrivial(img, min_size=(250, 350))
    with pytest.raises(ValueError, match=r"none of the metrics \['val_mIoU'\] was logged; logged keys: \["):
        viz.plot_run_curves(run, metrics=["val_mIoU"])


def test_fewshot_stats_from_folds_and_from_summaries():
    mean, std, n = viz.fewshot_stats([90.0, 92.0, 94.0])
    assert mean == pytest.approx(92.0) and std == pytest.approx(np.std([90, 92, 94])) and n == 3
    assert viz.fewshot_stats({"mean": 95.0, "std": 1.5, "accs": [94, 96]}) == (95.0, 1.5, 2)
    assert viz.fewshot_stats({"accs": [0.5, 0.7]})[0] == pytest.approx(0.6)
    with pytest.raises(ValueError, match="neither 'mean' nor"):
        viz.fewshot_stats({"std": 1.0})


@pytest.mark.parametrize("nested", [False, True])
def test_fewshot_bars_with_error_bars(tmp_path, nested):
    res = {"5way10shot": [96.0, 97.5, 95.0], "5way20shot": {"mean": 98.1, "std": 0.9},
           "10way10shot": [91.0, 93.0], "10way20shot": [94.0, 95.0, 93.5]}
    if nested:
        res = {"CLoRA": res, "LoRA": {k: [v - 2 for v in vs] if isinstance(vs, list) else {"mean": 96.0, "std": 1}
                                      for k, vs in res.items()}}
    out = tmp_path / "fewshot.png"
    viz.plot_fewshot(res, out=out)
    img = load_png(out)
    assert_nontrivial(img, min_size=(300, 500), min_colors=10)
    assert color_mask(img, C0, tol=10).sum() > 500
    assert (color_mask(img, C1, tol=10).sum() > 500) == nested


def test_miou_bars(tmp_path):
    per = {"airplane": 0.83, "bag": 0.79, "cap": 0.88, "car": 0.77}
    out = tmp_path / "miou.png"
    viz.plot_miou(per, overall={"class mIoU": 0.8175}, out=out)
    img = load_png(out)
    assert_nontrivial(img, min_size=(300, 500), min_colors=10)
    assert color_mask(img, C0, tol=10).sum() > 500
    with pytest.raises(ValueError, match="mIoU of 'bag' must be a number"):
        viz.plot_miou({"bag": "n/a"})
