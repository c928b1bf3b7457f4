"""``data.val_split: auto`` on a folder dataset with train/ and test/ but no val/ carves a validation split."""

import json

import numpy as np

from pointclora.cli.finetune import main


def test_auto_val_split_carves_from_train_when_folder_has_no_val(tmp_path):
    rng = np.random.default_rng(0)
    for c, scale in (("a", 1.0), ("b", 2.0)):
        for split in ("train", "test"):
            folder = tmp_path / "data" / c / split
            folder.mkdir(parents=True)
            for i in range(6):
                np.save(folder / f"{i}.npy", (rng.normal(size=(64, 3)) * scale).astype("float32"))
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        "_base_: [schedules/cls_300e.yaml, adapters/clora.yaml]\n"
        f"dataset: {{name: folder, root: {tmp_path / 'data'}, num_points: 64}}\n"
        "model: {name: point_mae_tiny}\n"
        "data: {num_points: 64, batch_size: 4, eval_batch_size: 8, val_split: auto, val_fraction: 0.25}\n"
        "schedule: {epochs: 1, warmup_epochs: 0}\n"
    )
    assert main(["--cfg", str(cfg), "--output", str(tmp_path / "run"), "--quiet"]) == 0
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert "train samples carved" in metrics["val_source"]  # the validation source says it was carved from train
