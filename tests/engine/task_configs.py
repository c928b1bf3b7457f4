"""Tiny configs for every task of the one Trainer (seconds per run on a CPU)."""

import json

import numpy as np

from pointclora.config import DEFAULTS, merge


def cattle_like(root, n_train=6, n_test=3, points=150):
    """One category 'Cattle' with global part ids 50-53 (x y z label rows), ShapeNetPart layout, empty val list."""
    syn = "05896765"
    (root / syn).mkdir(parents=True)
    (root / "synsetoffset2category.txt").write_text(f"Cattle\t{syn}\n")
    rng = np.random.default_rng(0)
    names = []
    for i in range(n_train + n_test):
        xyz = rng.normal(size=(points + i, 3))
        label = 50 + (xyz[:, 0] > 0).astype(int) + 2 * (xyz[:, 2] > 0.8).astype(int)
        np.savetxt(root / syn / f"cow_{i}.txt", np.c_[xyz, label], fmt="%.5f")
        names.append(f"shape_data/{syn}/cow_{i}")
    split = root / "train_test_split"
    split.mkdir()
    (split / "shuffled_train_file_list.json").write_text(json.dumps(names[:n_train]))
    (split / "shuffled_val_file_list.json").write_text("[]")
    (split / "shuffled_test_file_list.json").write_text(json.dumps(names[n_train:]))
    return root


def task_cfg(task, tmp_path, method="clora", epochs=2, **train):
    common = {"optim": {"lr": 0.002}, "schedule": {"epochs": epochs, "warmup_epochs": 1},
              "train": {"device": "cpu", **train}}  # fmt: skip
    peft = {"method": method, **({"r": 2, "num_bases": 2} if method == "clora" else {})}
    if task == "classification":
        cfg = {"dataset": {"name": "synthetic", "num_samples": 24, "num_points": 96, "num_classes": 4},
               "model": {"name": "point_mae_tiny", "drop_path_rate": 0.1}, "peft": peft,
               "data": {"num_points": 64, "batch_size": 8, "eval_batch_size": 16}}  # fmt: skip
    elif task == "part_segmentation":
        root = tmp_path / "cattle"
        if not root.exists():
            cattle_like(root)
        cfg = {"dataset": {"name": "shapenetpart", "root": str(root)}, "model": {"name": "point_mae_tiny"},
               "peft": peft,
               "data": {"num_points": 96, "batch_size": 4, "eval_batch_size": 8, "val_fraction": 0.2}}  # fmt: skip
    else:
        cfg = {"dataset": {"name": "synthetic", "num_samples": 24, "num_points": 96, "num_classes": 4},
               "model": {"name": "point_mae_tiny"}, "pretrain": {"mask_ratio": 0.6, "decoder_depth": 1},
               "data": {"num_points": 64, "batch_size": 8, "eval_batch_size": 16}}  # fmt: skip
    return merge(DEFAULTS, {"task": task, "name": f"tiny_{task}", **cfg, **common})


TASKS = ("classification", "part_segmentation", "mae_pretraining")


def run_folder_line(run):
    """The last line of a run's summary (after its results table), as the Trainer writes it for the folder ``run``."""
    return f"run folder: {run}  (weights: best/, last/; TensorBoard: tensorboard --logdir {run / 'tb'})"


def write_tiny_backbone(path):
    """A 'pre-trained' backbone file at ``path``: a seeded random point_mae_tiny encoder with no head and no cls
    tokens, as Point-MAE's pretrain.pth has none. Returns ``path``."""
    import torch

    from pointclora.models import create_model

    torch.manual_seed(7)
    state = {k: v for k, v in create_model("point_mae_tiny", num_classes=4).state_dict().items()
             if not k.startswith(("cls_head_finetune", "cls_token", "cls_pos"))}  # fmt: skip
    torch.save({"model": state}, path)
    return path
