"""Small files written in each official format, for the dataset tests. A uniquely named module (not conftest.py):
with several conftest.py files on the path, `from conftest import ...` picked another folder's under `-n 2`."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import h5py
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
MN_CLASSES = ["airplane", "bathtub", "night_stand", "xbox"]


def raised(exc, call) -> str:
    """The message of the ``exc`` that ``call()`` raises (the tests compare messages whole)."""
    with pytest.raises(exc) as info:
        call()
    return str(info.value)


def real_data_dir() -> Path:
    env = os.environ.get("POINTCLORA_REAL_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def cloud(rng, n=64, c=6):
    return rng.normal(size=(n, c)).astype(np.float32)


def reference_fps(xyz: np.ndarray, npoint: int, start: int) -> np.ndarray:
    """FPS restated plainly the way the official ModelNet loader computes it (mask update, argmax)."""
    distance = np.ones(len(xyz)) * 1e10
    chosen = np.zeros(npoint, dtype=np.int64)
    farthest = start
    for i in range(npoint):
        chosen[i] = farthest
        dist = np.sum((xyz - xyz[farthest, :]) ** 2, -1)
        mask = dist < distance
        distance[mask] = dist[mask]
        farthest = int(np.argmax(distance, -1))
    return chosen


def write_modelnet_txt(root: Path, n_rows=40, per_class=(2, 1), gz=False, seed=0):
    """``modelnet40_normal_resampled`` layout with 4 classes: ids ``<class>_0001``; comma rows x,y,z,nx,ny,nz."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "modelnet40_shape_names.txt").write_text("\n".join(MN_CLASSES) + "\n")
    ids = {"train": [], "test": []}
    k = 1
    for c in MN_CLASSES:
        (root / c).mkdir(exist_ok=True)
        for split, count in zip(("train", "test"), per_class):
            for _ in range(count):
                sid = f"{c}_{k:04d}"
                k += 1
                ids[split].append(sid)
                data = rng.normal(size=(n_rows, 6)) * 3 + 5
                p = root / c / f"{sid}.txt"
                np.savetxt(p, data, fmt="%.6f", delimiter=",")
                if gz:
                    import gzip

                    p.with_name(p.name + ".gz").write_bytes(gzip.compress(p.read_bytes()))
                    p.unlink()
    for split in ids:
        (root / f"modelnet40_{split}.txt").write_text("\n".join(ids[split]) + "\n")
    return ids


def write_h5(path: Path, **arrays):
    with h5py.File(path, "w") as f:
        for k, v in arrays.items():
            f.create_dataset(k, data=v)


def write_modelnet_h5(root: Path, n=(5, 3), points=32, label_shape_2d=True, seed=0):
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "shape_names.txt").write_text("\n".join(MN_CLASSES) + "\n")
    for split, count in zip(("train", "test"), n):
        names = []
        for j in range(2):
            lab = rng.integers(0, len(MN_CLASSES), size=count)
            write_h5(
                root / f"ply_data_{split}{j}.h5",
                data=rng.normal(size=(count, points, 3)).astype(np.float32),
                label=(lab[:, None] if label_shape_2d else lab).astype(np.uint8),
                normal=rng.normal(size=(count, points, 3)).astype(np.float32),
            )
            names.append(f"data/modelnet40_ply_hdf5_2048/ply_data_{split}{j}.h5")
        (root / f"{split}_files.txt").write_text("\n".join(names) + "\n")


def write_scanobjectnn(root: Path, n=(6, 4), points=48, seed=0):
    rng = np.random.default_rng(seed)
    files = {
        "main_split": [
            "training_objectdataset.h5",
            "test_objectdataset.h5",
            "training_objectdataset_augmentedrot_scale75.h5",
            "test_objectdataset_augmentedrot_scale75.h5",
        ],
        "main_split_nobg": ["training_objectdataset.h5", "test_objectdataset.h5"],
    }
    for folder, names in files.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for name in names:
            count = n[0] if name.startswith("training") else n[1]
            write_h5(
                root / folder / name,
                data=rng.normal(size=(count, points, 3)).astype(np.float32),
                label=rng.integers(0, 15, size=count).astype(np.int64),
                mask=rng.integers(-1, 2, size=(count, points)).astype(np.int64),
            )
    return root


SNP_CATS = [("Airplane", "02691156"), ("Bag", "02773838"), ("Cap", "02954340")]
SNP_PARTS = {"Airplane": [0, 1, 2, 3], "Bag": [4, 5], "Cap": [6, 7]}


def write_shapenetpart(root: Path, normals=True, counts=None, seed=0, with_missing_category=True):
    """Official layout; Cap listed in the category file but (optionally) without a folder."""
    rng = np.random.default_rng(seed)
    counts = counts or {"train": 3, "val": 1, "test": 2}
    root.mkdir(parents=True, exist_ok=True)
    (root / "synsetoffset2category.txt").write_text("".join(f"{c}\t{s}\n" for c, s in SNP_CATS))
    split_dir = root / "train_test_split"
    split_dir.mkdir(exist_ok=True)
    present = SNP_CATS[:2] if with_missing_category else SNP_CATS
    lists = {s: [] for s in counts}
    for c, syn in present:
        (root / syn).mkdir(exist_ok=True)
        for split, k in counts.items():
            for j in range(k):
                sid = f"{c.lower()}{split}{j}"
                npts = int(rng.integers(50, 90))
                xyz = rng.normal(size=(npts, 3))
                seg = rng.choice(SNP_PARTS[c], size=npts).astype(float)
                seg[: len(SNP_PARTS[c])] = SNP_PARTS[c]  # every part present in each file
                rows = (
                    np.column_stack([xyz, rng.normal(size=(npts, 3)), seg]) if normals else np.column_stack([xyz, seg])
                )
                np.savetxt(root / syn / f"{sid}.txt", rows, fmt="%.6f", delimiter=" ")
                lists[split].append(f"shape_data/{syn}/{sid}")
    for split, entries in lists.items():
        (split_dir / f"shuffled_{split}_file_list.json").write_text(json.dumps(entries))
    return lists


def write_fewshot(root: Path, way=5, shot=2, fold=0, n_query=3, points=40, cols=6, seed=0):
    rng = np.random.default_rng(seed)
    orig = rng.choice(40, size=way, replace=False)
    ep = {
        "train": [(cloud(rng, points, cols), i, np.int32(orig[i])) for i in range(way) for _ in range(shot)],
        "test": [(cloud(rng, points, cols), i, np.int32(orig[i])) for i in range(way) for _ in range(n_query)],
    }
    d = root / f"{way}way{shot}shot"
    d.mkdir(parents=True, exist_ok=True)
    with open(d / f"{fold}.pkl", "wb") as f:
        pickle.dump(ep, f)
    return ep, orig


def write_shapenet55(root: Path, n=(4, 2), points=64, seed=0):
    rng = np.random.default_rng(seed)
    (root / "ShapeNet-55").mkdir(parents=True, exist_ok=True)
    (root / "shapenet_pc").mkdir(exist_ok=True)
    syns = ["02691156", "03001627"]
    for split, count in zip(("train", "test"), n):
        lines = []
        for j in range(count):
            name = f"{syns[j % 2]}-{split}model{j}.npy"
            np.save(root / "shapenet_pc" / name, rng.normal(size=(points, 3)))
            lines.append(name)
        (root / "ShapeNet-55" / f"{split}.txt").write_text("\n".join(lines) + "\n")
    return root
