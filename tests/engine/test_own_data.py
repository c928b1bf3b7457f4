"""A user's own folder (issue 19): a train-only folder gets a carved test split (seeded, stratified, recorded, never
overlapping); a run records the data folder it read, so `evaluate RUN` needs no --data-root; a validation set too
small to choose an epoch on makes the last epoch the result, said so in metrics.json and the table."""

import json

import numpy as np
import pytest

from pointclora.config import DEFAULTS, merge
from pointclora.engine.data import stratified_carve
from pointclora.tasks.classification import build_classification_data


def train_only_folder(root, per_class=(10, 6, 3), points=80):
    """<root>/train/<class>/*.npy: three classes of differently shaped random clouds, no test/ folder."""
    rng = np.random.default_rng(0)
    for c, n in enumerate(per_class):
        d = root / "train" / f"class{c}"
        d.mkdir(parents=True)
        for i in range(n):
            xyz = rng.normal(size=(points, 3)) * np.array([1.0, 1.0 + c, 0.3 + c])
            np.save(d / f"s{i}.npy", xyz.astype(np.float32))
    return root


def cfg_for(root, **data):
    return merge(DEFAULTS, {
        "name": "own", "dataset": {"name": "folder", "root": str(root), "num_points": 64},
        "model": {"name": "point_mae_tiny"}, "peft": {"method": "linear"},
        "data": {"num_points": 32, "batch_size": 4, "eval_batch_size": 8, **data},
        "optim": {"lr": 0.002}, "schedule": {"epochs": 2, "warmup_epochs": 0}, "train": {"device": "cpu"},
    })  # fmt: skip


def test_stratified_carve_holds_out_every_class_in_proportion():
    labels = np.array([0] * 10 + [1] * 6 + [2] * 3 + [3])
    keep, held = stratified_carve(labels, len(labels), 0.2, seed=3)
    assert sorted(keep + held) == list(range(20)) and not set(keep) & set(held)
    assert np.bincount(labels[held], minlength=4).tolist() == [2, 1, 1, 0]  # round(0.2 n), >= 1; a lone sample stays
    assert stratified_carve(labels, 20, 0.2, seed=3) == (keep, held)
    assert stratified_carve(labels, 20, 0.2, seed=4)[1] != held


def test_train_only_folder_needs_carve_and_says_so(tmp_path):
    root = train_only_folder(tmp_path / "mine")
    with pytest.raises(FileNotFoundError, match="data.test_split=carve"):
        build_classification_data(cfg_for(root))


def test_carved_test_split_is_disjoint_and_recorded(tmp_path):
    from pointclora.datasets.validation import check_disjoint_splits, sample_keys

    root = train_only_folder(tmp_path / "mine")
    data = build_classification_data(cfg_for(root, test_split="carve", test_fraction=0.2, test_seed=1))
    assert len(data.test) == 2 + 1 + 1 and len(data.train) + len(data.val) == 19 - 4
    assert data.meta["classes"] == ["class0", "class1", "class2"]
    check_disjoint_splits({"train": data.train, "val": data.val, "test": data.test})  # raises on any shared file
    keys = [set(sample_keys(d)) for d in (data.train, data.val, data.test)]
    assert not (keys[0] & keys[2]) and not (keys[1] & keys[2]) and len(keys[2]) == 4
    assert "4 of 19 train samples carved as the test split" in data.meta["test_source"]
    assert data.test[0]["points"].shape == (32, 3)


def test_run_records_its_data_root_and_selects_last_epoch_on_a_tiny_val(tmp_path, monkeypatch):
    from pointclora.cli.evaluate import evaluate_run
    from pointclora.config import load_yaml
    from pointclora.engine.trainer import Trainer

    root = train_only_folder(tmp_path / "mine")
    cfg = cfg_for("data/NotHere", test_split="carve")  # the config file's root, as in a shipped YAML
    run = tmp_path / "run"
    monkeypatch.chdir(tmp_path)
    metrics = Trainer(cfg, output=run, quiet=True, data_root="mine").fit()
    assert load_yaml(run / "config.yaml")["dataset"]["root"] == str(root)  # absolute, the folder actually read
    monkeypatch.chdir("/")
    res = evaluate_run(str(run), device="cpu")  # no --data-root
    assert res["acc"] == metrics["acc"]
    # 2 validation shapes: the last epoch is the result, and every output says why
    assert metrics["selection"] == "last_epoch" and metrics["best_epoch"] == 2
    assert "last epoch (2 validation samples, under 100)" == metrics["selection_label"]
    assert metrics["acc"] == metrics["last_acc"]
    assert "carved as the test split" in metrics["test_source"]
    saved = json.loads((run / "metrics.json").read_text())
    assert saved["selection"] == "last_epoch"
    assert "last epoch (2 validation samples" in (run / "results.md").read_text()
    assert "warning: the validation set is too small" in (run / "log.txt").read_text()


def test_large_enough_validation_keeps_best_on_val():
    from pointclora.engine.data import TaskData
    from pointclora.engine.selection import choose_selection, small_validation_reason

    class Val:
        def __init__(self, labels):
            self.labels = np.asarray(labels)

        def __len__(self):
            return len(self.labels)

    assert small_validation_reason(Val([0] * 60 + [1] * 60)) is None
    assert small_validation_reason(Val([0] * 100 + [1] * 19)) == "19 validation samples in the smallest class, under 20"
    assert choose_selection("auto", TaskData([], Val([0] * 60 + [1] * 60), None, "x")) == (False, None)
    assert choose_selection("best", TaskData([], Val([0] * 5), None, "x")) == (False, None)
    assert choose_selection("last", TaskData([], Val([0] * 500), None, "x"))[0] is True
    assert choose_selection("auto", TaskData([], Val([0] * 5), None, "x"), small_val_selects_last=False)[0] is False
    from pointclora.tasks import get_task

    assert get_task("mae_pretraining").small_val_selects_last is False  # its Chamfer loss: steady on few clouds
    assert get_task("classification").small_val_selects_last and get_task("part_segmentation").small_val_selects_last


def test_a_run_from_before_these_keys_still_resumes(tmp_path, monkeypatch):
    """A run started before issue 19 recorded a relative root and none of the new keys: --resume must not refuse it
    over keys it never had (they are at their defaults) or over its root now being read as absolute."""
    import torch

    from pointclora.config import config_from_string, dump_config
    from pointclora.engine.trainer import Trainer

    train_only_folder(tmp_path / "mine")
    monkeypatch.chdir(tmp_path)
    cfg = cfg_for("mine", test_split="carve")
    run = tmp_path / "run"

    def killed(epoch, record):
        raise RuntimeError("killed after the first checkpoint")

    with pytest.raises(RuntimeError, match="killed"):
        Trainer(cfg, output=run, quiet=True, on_epoch_end=killed).fit()
    state = torch.load(run / "checkpoints" / "last.pth", weights_only=True)
    old = config_from_string(state["config"])
    old["dataset"]["root"] = "mine"  # relative, as recorded before
    for k in ("test_fraction", "test_seed"):
        old["data"].pop(k)
    old["train"].pop("select")
    state["config"] = dump_config(old)
    torch.save(state, run / "checkpoints" / "last.pth")
    (run / "config.yaml").write_text(dump_config(old))
    cfg2 = cfg_for("elsewhere", test_split="carve")  # the config file's root: the recorded one is used
    m = Trainer(cfg2, output=run, resume=True, quiet=True).fit()  # the recorded root, no --data-root
    assert m["epochs"] == 2 and "resumed" in (run / "log.txt").read_text()
