"""tools/pretrain.py: runs from a config on any dataset, resumes, and hands a checkpoint to fine-tuning."""

import json

import numpy as np
import torch

from pointclora.cli.pretrain import main
from pointclora.engine.data import carve_indices
from pointclora.models import create_model, load_pretrained
from pointclora.tasks.mae_pretraining import pretrain_backbone

HEAD = ("cls_head_finetune", "cls_token", "cls_pos")


def _folder(root, classes=("box", "ball"), per_class=6, points=96):
    # The official ModelNet10 layout <class>/train/<file>, as .npy clouds (PointCloudFolder).
    rng = np.random.default_rng(0)
    for c in classes:
        (root / c / "train").mkdir(parents=True)
        for i in range(per_class):
            p = rng.uniform(-1, 1, (points, 3)) if c == "box" else rng.normal(size=(points, 3))
            if c == "ball":
                p /= np.linalg.norm(p, axis=1, keepdims=True)
            np.save(root / c / "train" / f"{c}_{i}.npy", p.astype(np.float32))
    return root


def _cfg_text(root, epochs=2):
    return (
        f"dataset: {{name: folder, root: {root}, num_points: 96}}\n"
        "model: {name: point_mae_tiny}\n"
        "data: {num_points: 64, batch_size: 4, eval_batch_size: 8, val_fraction: 0.25}\n"
        f"schedule: {{epochs: {epochs}, warmup_epochs: 0}}\n"
        "optim: {lr: 0.002}\n"
        "train: {device: cpu}\n"
        "pretrain: {mask_ratio: 0.6, decoder_depth: 1}\n"
    )


def test_the_one_validation_carve_is_deterministic_and_disjoint():
    tr, va = carve_indices(20, 0.25, seed=3)
    assert len(va) == 5 and not set(tr) & set(va) and sorted(tr + va) == list(range(20))
    assert carve_indices(20, 0.25, seed=3) == (tr, va)
    assert carve_indices(3, 0.01, seed=0)[1] != []  # at least one validation shape


def test_pretrain_on_point_cloud_folder_then_finetune_loads(tmp_path, capsys):
    data = _folder(tmp_path / "mn")
    cfg = tmp_path / "pre.yaml"
    cfg.write_text(_cfg_text(data))
    run = tmp_path / "run"
    assert main(["--cfg", str(cfg), "--output", str(run), "--quiet"]) == 0
    ckpt = run / "encoder-best.pth"
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["val_source"].startswith("3 of 12")  # 12 shapes, 25 % held out
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2] and all(np.isfinite(h["val_loss"]) for h in history)

    model = create_model("point_mae_tiny", num_classes=2)
    result = load_pretrained(model, ckpt, log=False)
    assert [k for k in result.missing_keys if not k.startswith(HEAD)] == []
    assert result.unexpected_keys == []
    saved = torch.load(ckpt, weights_only=True)
    assert saved["variant"] == "point_mae_tiny" and "model" in saved


def test_official_layout_and_finetune_demo_entry_point(tmp_path):
    # The demo path: a fine-tuning config's `pretrain` section is a whole pre-training config.
    data = _folder(tmp_path / "mn")
    section = {
        "dataset": {"name": "folder", "root": str(data), "num_points": 96},
        "model": {"name": "point_mae_tiny"},
        "data": {"num_points": 64, "batch_size": 4, "val_fraction": 0.25},
        "schedule": {"epochs": 1, "warmup_epochs": 0},
        "train": {"device": "cpu"},
        "pretrain": {"layout": "point_mae", "decoder_depth": 1},
    }
    path = pretrain_backbone(section, run_dir=tmp_path / "r", export_to=tmp_path / "enc.pth", log=lambda m: None)
    assert path == tmp_path / "enc.pth"
    keys = torch.load(path, weights_only=True)["base_model"]
    assert "module.MAE_encoder.blocks.blocks.0.attn.qkv.weight" in keys and "module.mask_token" in keys
    result = load_pretrained(create_model("point_mae_tiny", num_classes=3), path, log=False)
    assert [k for k in result.missing_keys if not k.startswith(HEAD)] == []


def test_config_errors_name_the_key(tmp_path, capsys):
    data = _folder(tmp_path / "mn")
    cfg = tmp_path / "pre.yaml"
    cfg.write_text(_cfg_text(data).replace("mask_ratio", "mask_ratoi"))
    assert main(["--cfg", str(cfg), "--output", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "pretrain.mask_ratoi" in err and "mask_ratio" in err and "Traceback" not in err
