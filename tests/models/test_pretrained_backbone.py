"""The shipped pre-trained backbone (point_mae_mn10): loads offline by name, and its frozen features beat a random
backbone's on real ModelNet10 shapes it was never pre-trained on."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from pointclora.models import create_model, load_pretrained, pretrained_names, pretrained_path
from pointclora.models.backbone import PointTransformer
from pointclora.models.probe import extract_features, few_label_indices, fit_linear_probe, random_like

REPO_ROOT = Path(__file__).resolve().parents[2]
NAME = "point_mae_mn10"


def test_shipped_backbone_loads_offline_by_name():
    assert NAME in pretrained_names()
    path = pretrained_path(NAME)
    assert path.is_file() and path.stat().st_size < 16 * 2**20
    torch.manual_seed(0)
    model = create_model(NAME, num_classes=10, pretrained=True)
    torch.manual_seed(0)
    fresh = create_model(NAME, num_classes=10)
    differs = [k for k, v in model.state_dict().items() if not torch.equal(v, fresh.state_dict()[k])]
    # Every encoder tensor came from the file (cls token and head are not in a Point-MAE encoder and stay random).
    assert any(k.startswith("blocks.") for k in differs) and any(k.startswith("encoder.") for k in differs)
    assert not any(k.startswith("cls_head_finetune") for k in differs)
    # `--ckpt NAME` goes through load_pretrained, which accepts the name too.
    other = create_model(NAME, num_classes=10)
    res = load_pretrained(other, NAME, log=False)
    assert not [k for k in res.missing_keys if not k.startswith(("cls_", "cls_head"))]
    assert torch.equal(other.blocks[0].attn.qkv.weight, model.blocks[0].attn.qkv.weight)


def test_a_backbone_built_locally_is_read_from_the_hub_cache(tmp_path, monkeypatch):
    """point_mae_mn10_8x256's 26 MB file is not package data: pretrained=True reads it where its recipe writes it,
    and says how to make it when it is not there."""
    from pointclora.models import model_defaults
    from pointclora.models.mae import PointMAEPretrain, export_encoder_state

    big = "point_mae_mn10_8x256"
    monkeypatch.setenv("POINTCLORA_CACHE", str(tmp_path))
    where = tmp_path / "hub" / f"{big}.pth"
    assert big in pretrained_names()
    with pytest.raises(FileNotFoundError, match="--cfg pretrain_mn10_8x256.yaml") as missing:
        create_model(big, num_classes=10, pretrained=True)
    assert f"--out {where}" in str(missing.value) and (REPO_ROOT / "configs" / "pretrain_mn10_8x256.yaml").is_file()

    torch.manual_seed(1)
    export_encoder_state(PointMAEPretrain(decoder_depth=1, **model_defaults(big)), str(where), variant=big)
    assert pretrained_path(big) == where
    model = create_model(big, num_classes=10, pretrained=True)
    saved = torch.load(where, weights_only=True)["model"]
    assert torch.equal(model.blocks[7].mlp.fc2.weight, saved["blocks.7.mlp.fc2.weight"])
    # 8 blocks x 256: 6,486,784 encoder parameters + 642 BatchNorm statistics (the head has 0.2M)
    assert sum(v.numel() for v in saved.values()) == 6_487_426


def test_unknown_pretrained_name_is_a_clear_error():
    with pytest.raises(KeyError, match="ships no pre-trained weights"):
        create_model("point_mae_tiny", pretrained=True)


def _heldout_sample(real_data: Path, per_class_test: int = 30):
    """Train / test clouds from the fixed held-out split (bench/splits.py): the backbone never saw the test ones."""
    spec = importlib.util.spec_from_file_location("splits", REPO_ROOT / "bench" / "splits.py")
    splits = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(splits)
    from pointclora.datasets.base import pc_normalize
    from pointclora.datasets.io import read_pcd

    mn10 = real_data / "modelnet10_pcd"
    split = splits.heldout_split(mn10)
    classes = sorted(split["test"])

    def load(part: str, k: int, seed: int):
        xs, ys = [], []
        rng = np.random.default_rng(seed)
        for c, name in enumerate(classes):
            files = split[part][name]
            for f in rng.choice(files, min(k, len(files)), replace=False):
                pts = read_pcd(mn10 / name / "train" / f)[:, :3]
                xs.append(pc_normalize(pts.astype(np.float64)).astype(np.float32))
                ys.append(c)
        return torch.as_tensor(np.stack(xs)), np.asarray(ys)

    return load("train", 20, 0), load("test", per_class_test, 1)


def test_shipped_backbone_probe_beats_random_on_real_heldout_shapes(real_data):
    (xtr, ytr), (xte, yte) = _heldout_sample(real_data)
    model: PointTransformer = create_model(NAME, num_classes=10, pretrained=True)
    accs = {}
    for tag, enc in (("pretrained", model), ("random", random_like(model, seed=0))):
        ftr = extract_features(enc, xtr, poolings=("mean_max",))["mean_max"]
        fte = extract_features(enc, xte, poolings=("mean_max",))["mean_max"]
        # 10 labels per class, averaged over three draws (the few-label regime the backbone is for).
        accs[tag] = np.mean(
            [
                fit_linear_probe(ftr[i], ytr[i], fte, yte, seed=s)["oa"]
                for s in range(3)
                for i in [few_label_indices(ytr, 10, seed=s)]
            ]
        )
    assert accs["pretrained"] > accs["random"] + 3.0, accs
