"""Each loader on small files written in its official format."""

import pickle

import numpy as np
import pytest
import torch
from dataset_files import (
    MN_CLASSES,
    SNP_PARTS,
    write_fewshot,
    write_modelnet_h5,
    write_modelnet_txt,
    write_scanobjectnn,
    write_shapenet55,
    write_shapenetpart,
)

from pointclora.datasets import (
    ModelNet40,
    ModelNetFewShot,
    PointCloudFolder,
    ScanObjectNN,
    ShapeNet55,
    ShapeNetPart,
    fps_cache_path,
    generate_fewshot_episodes,
    safe_pickle_load,
    write_fps_cache,
)


def _norm_ok(p):
    xyz = p[:, :3].double()
    assert torch.allclose(xyz.mean(0), torch.zeros(3, dtype=torch.float64), atol=1e-5)
    assert abs(xyz.norm(dim=1).max().item() - 1) < 1e-5


@pytest.mark.parametrize("gz", [False, True])
def test_modelnet_txt(tmp_path, gz):
    ids = write_modelnet_txt(tmp_path, gz=gz)
    ds = ModelNet40(tmp_path, "train", num_points=30)
    assert len(ds) == len(ids["train"]) == 8 and ds.classes == MN_CLASSES and ds.num_classes == 4
    # class-from-id: night_stand_0005 -> night_stand/ (label 2)
    assert [ds.labels[i] for i, s in enumerate(ds.shape_ids) if s.startswith("night_stand")] == [2, 2]
    s = ds[0]
    assert s["points"].shape == (30, 3) and s["points"].dtype == torch.float32 and isinstance(s["label"], int)
    _norm_ok(s["points"])
    raw = np.loadtxt(ds.paths[0], delimiter=",")[:30]
    # train shuffles point order; test keeps the sampled rows in order ("first_rows": the file's first rows)
    t = ModelNet40(tmp_path, "test", num_points=30, use_normals=True, sampling="first_rows")
    assert t[0]["points"].shape == (30, 6)
    raw_t = np.loadtxt(t.paths[0], delimiter=",")[:30]
    np.testing.assert_allclose(t[0]["points"][:, 3:].numpy(), raw_t[:, 3:], rtol=1e-5)
    assert sorted(s["points"][:, 0].tolist()) != sorted(raw[:, 0].tolist())  # normalised, not raw


def test_modelnet_fps_cache_written_with_our_fps_and_read_back(tmp_path):
    write_modelnet_txt(tmp_path, n_rows=40)
    out = write_fps_cache(tmp_path, "train", num_points=16, seed=1)
    assert out == fps_cache_path(tmp_path, "train", 16)
    pts, labs = safe_pickle_load(out)
    assert len(pts) == 8 and pts[0].shape == (16, 6) and pts[0].dtype == np.float32
    assert labs[0].shape == (1,) and labs[0].dtype == np.int32
    # FPS subset: all rows distinct members of the file
    txt = ModelNet40(tmp_path, "train", num_points=None, shuffle=False, use_normals=True)
    full = np.loadtxt(txt.paths[0], delimiter=",").astype(np.float32)
    assert len({tuple(r) for r in pts[0]}) == 16 and all((full == r).all(1).any() for r in pts[0])
    # reproducible
    again = write_fps_cache(tmp_path, "train", num_points=16, seed=1, out_path=tmp_path / "again.dat")
    np.testing.assert_array_equal(safe_pickle_load(again)[0][3], pts[3])
    ds = ModelNet40(tmp_path, "train", source="fps_cache", num_points=16, shuffle=False)
    assert len(ds) == 8 and ds[0]["points"].shape == (16, 3) and ds.classes == MN_CLASSES
    np.testing.assert_array_equal(ds.labels, txt.labels)


def test_modelnet_fps_cache_build_on_demand(tmp_path):
    write_modelnet_txt(tmp_path, n_rows=20)
    ds = ModelNet40(tmp_path, "test", source="fps_cache", num_points=8, build_cache=True)
    assert fps_cache_path(tmp_path, "test", 8).is_file() and len(ds) == 4


@pytest.mark.parametrize("two_d", [True, False])
def test_modelnet_h5(tmp_path, two_d):
    write_modelnet_h5(tmp_path, label_shape_2d=two_d)
    ds = ModelNet40(tmp_path, "train", source="h5")
    assert len(ds) == 10 and ds.num_points == 32 and ds.classes == MN_CLASSES
    s = ds[0]
    assert s["points"].shape == (32, 3) and 0 <= s["label"] < 4
    n = ModelNet40(tmp_path, "test", source="h5", use_normals=True, num_points=16, shuffle=False)
    assert len(n) == 6 and n[0]["points"].shape == (16, 6)


def test_fewshot_read(tmp_path):
    ep, orig = write_fewshot(tmp_path, way=5, shot=2, n_query=3)
    names = [f"c{i}" for i in range(40)]
    tr = ModelNetFewShot(tmp_path, way=5, shot=2, fold=0, split="train", shape_names=names)
    te = ModelNetFewShot(tmp_path, way=5, shot=2, fold=0, split="test")
    assert len(tr) == 10 and len(te) == 15 and tr.num_classes == 5
    assert tr.classes == [f"c{o}" for o in orig] and te.classes[0] == f"label_{orig[0]}"
    s = tr[3]
    assert s["points"].shape == (40, 3) and s["label"] == ep["train"][3][1]
    _norm_ok(s["points"])


def test_fewshot_generate_official_format_seeded(tmp_path):
    write_modelnet_txt(tmp_path / "mn", n_rows=12, per_class=(6, 3))
    train = ModelNet40(tmp_path / "mn", "train", num_points=10, use_normals=True)
    test = ModelNet40(tmp_path / "mn", "test", num_points=10, use_normals=True)
    paths = generate_fewshot_episodes(
        train, tmp_path / "a", ways=[3], shots=[2], folds=2, seed=7, num_query=3, query_dataset=test
    )
    assert [p.relative_to(tmp_path / "a").as_posix() for p in paths] == ["3way2shot/0.pkl", "3way2shot/1.pkl"]
    with open(paths[0], "rb") as f:
        ep = pickle.load(f)
    assert set(ep) == {"train", "test"} and len(ep["train"]) == 6 and len(ep["test"]) == 9
    pts, new, orig = ep["train"][0]
    assert pts.dtype == np.float32 and pts.shape == (10, 6) and isinstance(new, int)
    assert isinstance(orig, np.int32) and MN_CLASSES[int(orig)]
    assert {e[1] for e in ep["test"]} == {0, 1, 2}
    # same seed -> identical bytes; other seed -> different episode
    again = generate_fewshot_episodes(
        train, tmp_path / "b", ways=[3], shots=[2], folds=[0], seed=7, num_query=3, query_dataset=test
    )
    assert again[0].read_bytes() == paths[0].read_bytes()
    ds = ModelNetFewShot(tmp_path / "a", way=3, shot=2, fold=1, split="test")
    assert len(ds) == 9
    # query drawn from the same dataset: disjoint from supports
    p = generate_fewshot_episodes(train, tmp_path / "c", ways=[2], shots=[2], folds=1, num_query=4)[0]
    e = safe_pickle_load(p)
    sup = {e_[0].tobytes() for e_ in e["train"]}
    assert not sup & {e_[0].tobytes() for e_ in e["test"]}
    with pytest.raises(ValueError, match="needs 4 classes with >= 20 samples"):
        generate_fewshot_episodes(train, tmp_path / "d", ways=[4], shots=[10], folds=1, num_query=10)


@pytest.mark.parametrize("layout", ["plain", "h5_files", "main_split_root"])
def test_scanobjectnn_variants_and_roots(tmp_path, layout):
    base = tmp_path / "ScanObjectNN"
    write_scanobjectnn(base / "h5_files" if layout == "h5_files" else base)
    root = base / "main_split" if layout == "main_split_root" else base
    for variant in ["OBJ_BG", "PB_T50_RS"] if layout == "main_split_root" else ["OBJ_BG", "OBJ_ONLY", "PB_T50_RS"]:
        tr = ScanObjectNN(root, "train", variant=variant)
        te = ScanObjectNN(root, "test", variant=variant, return_mask=True)
        assert len(tr) == 6 and len(te) == 4 and tr.num_classes == 15 and tr.classes[0] == "bag"
        s = te[1]
        assert s["points"].shape == (48, 3) and s["mask"].shape == (48,) and s["mask"].dtype == torch.int64
    # no normalisation: test sample equals the stored cloud
    import h5py

    with h5py.File(te.path) as f:
        np.testing.assert_array_equal(te[0]["points"].numpy(), f["data"][0])
        assert te[0]["label"] == int(f["label"][0])


def test_shapenetpart_official_layout(tmp_path):
    lists = write_shapenetpart(tmp_path)
    ds = ShapeNetPart(tmp_path, "trainval", num_points=100)
    assert len(ds) == 8  # (3 train + 1 val) x 2 present categories; Cap is listed but has no folder
    assert ds.categories == ["Airplane", "Bag", "Cap"] and ds.num_categories == 3
    assert ds.category_parts == {"Airplane": [0, 1, 2, 3], "Bag": [4, 5]} and ds.num_parts == 6
    s = ds[len(ds) - 1]
    assert s["points"].shape == (100, 3) and s["seg"].dtype == torch.int64 and s["cls"] == 1
    assert set(s["seg"].tolist()) <= {4, 5}
    t = ShapeNetPart(tmp_path, "test", num_points=100, use_normals=True, category_parts=SNP_PARTS)
    assert len(t) == 4 and t.num_parts == 8 and t[0]["points"].shape == (100, 6)
    # deterministic evaluation sampling: same points every time; random: differs
    assert torch.equal(t[2]["points"], t[2]["points"]) and torch.equal(t[2]["seg"], t[2]["seg"])
    r = ShapeNetPart(tmp_path, "test", num_points=100, eval_sampling="random", category_parts=SNP_PARTS)
    assert not torch.equal(r[2]["points"], r[2]["points"])
    full = ShapeNetPart(tmp_path, "val", num_points=None, categories=["Bag"])
    assert len(full) == 1 and full[0]["cls"] == 1
    rows = np.loadtxt(full.items[0][1])
    assert full[0]["points"].shape == (len(rows), 3)
    np.testing.assert_array_equal(full[0]["seg"].numpy(), rows[:, -1].astype(int))
    assert len(lists["test"]) == 4


def test_shapenetpart_rows_without_normals(tmp_path):
    write_shapenetpart(tmp_path, normals=False, with_missing_category=False)
    ds = ShapeNetPart(tmp_path, "test", num_points=64)
    assert ds[0]["points"].shape == (64, 3) and ds.category_parts["Cap"] == [6, 7] and ds.num_parts == 8


def test_shapenet55(tmp_path):
    write_shapenet55(tmp_path)
    tr = ShapeNet55(tmp_path, "train", num_points=16)
    te = ShapeNet55(tmp_path, "test", num_points=16)
    assert len(tr) == 4 and len(te) == 2 and tr.taxonomy_ids[0] == "02691156" and tr.model_ids[0] == "trainmodel0"
    assert tr[0]["points"].shape == (16, 3)
    assert torch.equal(te[1]["points"], te[1]["points"])  # eval subset is fixed
    whole = ShapeNet55(tmp_path / "ShapeNet-55", "train", whole=True, num_points=None)  # DATA_PATH-style root
    assert len(whole) == 6 and whole[0]["points"].shape == (64, 3)
    explicit = ShapeNet55(tmp_path, "test", pc_path=tmp_path / "shapenet_pc")
    assert len(explicit) == 2


@pytest.mark.parametrize("layout", ["class_split", "split_class", "flat"])
def test_folder_layouts(tmp_path, layout):
    rng = np.random.default_rng(0)
    for c in ["cup", "ant"]:
        for split in ["train", "test"]:
            d = {"class_split": tmp_path / c / split, "split_class": tmp_path / split / c, "flat": tmp_path / c}[layout]
            d.mkdir(parents=True, exist_ok=True)
            np.save(d / f"{split}0.npy", rng.normal(size=(30, 3)) * 100)
            np.savetxt(d / f"{split}1.txt", rng.normal(size=(50, 3)), delimiter=",")
            (d / "notes.md").write_text("ignored")
    split = None if layout == "flat" else "train"
    ds = PointCloudFolder(tmp_path, split, num_points=40)
    assert ds.classes == ["ant", "cup"] and ds.class_to_idx == {"ant": 0, "cup": 1}
    assert len(ds) == (8 if layout == "flat" else 4)
    s = ds[0]
    assert s["points"].shape == (40, 3) and s["label"] == 0
    _norm_ok(s["points"])
    assert torch.equal(ds[1]["points"], ds[1]["points"])
    fixed = PointCloudFolder(tmp_path, split, classes=["cup", "ant", "bee"])
    assert fixed.labels[0] == 1 and fixed.num_classes == 3
