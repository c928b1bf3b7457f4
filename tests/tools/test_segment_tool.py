"""tools/segment.py: training + standard metrics on data in the ShapeNetPart layout, parts read from the data."""

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
from task_configs import cattle_like  # noqa: E402

from pointclora.cli.segment import main
from pointclora.config import DEFAULTS, merge
from pointclora.tasks.part_segmentation import PartSegmentationTask, build_segmentation_data, seg_variant


def _cattle_like(root, n_train=6, n_test=3, points=150):
    """One category 'Cattle' with global part ids 50-53 (no normals, x y z label rows), no val list entries."""
    return cattle_like(root, n_train, n_test, points)


def _cfg(root, method="clora", epochs=2):
    return merge(DEFAULTS, {
        "name": "seg_tiny",
        "dataset": {"name": "shapenetpart", "root": str(root)},
        "task": "part_segmentation",
        "model": {"name": "point_mae_tiny", "checkpoint": None},
        "peft": {"method": method, **({"r": 2, "num_bases": 2} if method == "clora" else {})},
        "data": {"num_points": 96, "batch_size": 4, "eval_batch_size": 8, "val_fraction": 0.2},
        "optim": {"lr": 0.002},
        "schedule": {"epochs": epochs, "warmup_epochs": 0},
        "train": {"device": "cpu"},
    })  # fmt: skip


def test_parts_and_categories_come_from_the_data(tmp_path):
    data = build_segmentation_data(_cfg(_cattle_like(tmp_path / "d")))
    meta = data.meta
    assert meta["categories"] == ["Cattle"] and meta["category_parts"] == {"Cattle": [50, 51, 52, 53]}
    assert meta["num_parts"] == 54
    assert len(data.train) + len(data.val) == 6 and len(data.test) == 3  # empty val list -> carved
    assert "carved" in data.val_source
    # Carved validation shapes are drawn identically on every evaluation.
    assert torch.equal(data.val[0]["points"], data.val[0]["points"])
    model = PartSegmentationTask(_cfg(tmp_path / "d")).build_model(meta, None, log=lambda m: None)
    assert model.convs3.out_channels == 54 and model.num_categories == 1
    trainable = {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad}
    assert {"label_conv", "propagation_0", "convs1", "convs3"} <= trainable  # the head trains under CLoRA
    assert not model.blocks[0].attn.qkv.base_layer.weight.requires_grad


def test_seg_variant_mapping():
    assert seg_variant("point_mae_s") == "point_mae_s_seg"
    assert seg_variant("point_mae_demo_seg") == "point_mae_demo_seg"
    # The shipped backbone segments too: its encoder loads whole into the segmentation variant.
    from pointclora.models import create_model, load_pretrained

    seg = create_model(seg_variant("point_mae_mn10"), num_classes=4, num_categories=1)
    result = load_pretrained(seg, "point_mae_mn10", log=False)
    assert result.unexpected_keys == [] and result.missing_keys
    assert not [k for k in result.missing_keys if k.startswith(("encoder.", "blocks.", "pos_embed.", "norm."))]
    with pytest.raises(ValueError, match="no segmentation variant"):
        seg_variant("point_bert_s")


@pytest.mark.parametrize("method", ["clora", "linear"])
def test_segment_runs_and_writes_metrics(tmp_path, method, capsys):
    import yaml

    root = _cattle_like(tmp_path / "d")
    cfg_path = tmp_path / "seg.yaml"
    cfg = _cfg(root, method="clora")
    cfg_path.write_text(
        yaml.safe_dump({k: cfg[k] for k in ("task", "dataset", "model", "peft", "data", "optim", "schedule", "train")})
    )
    out = tmp_path / "run"
    # --peft swaps the whole peft section (CLoRA's r / num_bases would be invalid options for linear).
    extra = [] if method == "clora" else ["--peft", method]
    assert main(["--cfg", str(cfg_path), "--output", str(out), "--quiet", *extra]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert 0 <= metrics["instance_miou"] <= 100 and list(metrics["per_category"]) == ["Cattle"]
    assert metrics["class_miou"] == pytest.approx(metrics["per_category"]["Cattle"]["miou"])
    assert metrics["num_shapes"] == 3 and metrics["num_parts"] == 54 and metrics["gflops"] > 0
    assert metrics["method"] == method
    if method == "linear":
        assert metrics["adapter_params"] == 0
    table = (out / "results.md").read_text()
    assert "| Cattle | 3 |" in table and "instance mIoU" in table
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert len(history) == 2 and all("val_instance_miou" in h for h in history)
    # A resume that changes the schedule is refused with the changed key named, in one line.
    assert main(["--cfg", str(cfg_path), "--output", str(out), "--resume", "--epochs", "3", "--quiet", *extra]) == 2
    assert "schedule.epochs: 2 -> 3" in capsys.readouterr().err


def test_one_optimizer_step_per_iteration(tmp_path, monkeypatch):
    from pointclora.engine.trainer import Trainer

    steps = []
    orig = torch.optim.AdamW.step

    def counting(self, *a, **k):
        steps.append(1)
        return orig(self, *a, **k)

    monkeypatch.setattr(torch.optim.AdamW, "step", counting)
    cfg = _cfg(_cattle_like(tmp_path / "d", n_train=10), epochs=1)
    Trainer(cfg, output=tmp_path / "r", quiet=True).fit()
    # 8 training shapes (10 minus 2 carved for val), batch 4 -> 2 iterations, 2 steps (the reference would do 4).
    assert len(steps) == 2


def test_real_cattle_scans_metadata(real_data):
    root = real_data / "cattle_parts" / "shapenetcore_partanno_segmentation_benchmark_v0_normal"
    if not root.is_dir():
        pytest.skip(f"{root} not found")
    cfg = _cfg(root)
    data = build_segmentation_data(cfg)
    assert data.meta["categories"] == ["Cattle"] and data.meta["category_parts"]["Cattle"] == [50, 51, 52, 53]
    assert len(data.train) == 70 and len(data.val) == 10 and len(data.test) == 20
    sample = data.test[0]
    assert sample["points"].shape == (96, 3) and set(sample["seg"].tolist()) <= {50, 51, 52, 53}
