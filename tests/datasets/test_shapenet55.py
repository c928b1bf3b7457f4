"""ShapeNet-55 reader (pointclora/datasets/shapenet55.py): the list files and ids, the three root layouts, `whole`,
the sampled values (train: torch's permutation; test: fixed by seed and index, restated here), and every error's
full message. Small .npy files in the Point-BERT layout (dataset_files.write_shapenet55)."""

import numpy as np
import torch
from dataset_files import raised, write_shapenet55

from pointclora.datasets import DataFormatError, DatasetNotFoundError, ShapeNet55
from pointclora.datasets.base import missing_dataset, pc_normalize
from pointclora.datasets.shapenet55 import LAYOUT, WHERE


def test_lists_ids_labels_and_files(tmp_path):
    write_shapenet55(tmp_path)
    tr = ShapeNet55(tmp_path)
    assert tr.split == "train" and tr.num_points == 1024 and tr.pc_path == tmp_path / "shapenet_pc"
    assert tr.files == [f"{s}-trainmodel{j}.npy" for j, s in enumerate(["02691156", "03001627"] * 2)]
    assert tr.taxonomy_ids == ["02691156", "03001627"] * 2 and tr.model_ids == [f"trainmodel{j}" for j in range(4)]
    assert tr.classes == ["02691156", "03001627"] and tr.labels.tolist() == [0, 1, 0, 1]
    assert tr.sample_keys() == tr.files and tr.source_files() == [tmp_path / "shapenet_pc" / f for f in tr.files]
    assert repr(tr) == f"ShapeNet55(root={str(tmp_path)!r}, split='train', samples=4, num_points=1024, synsets=2)"
    # the model id is what follows the first '-', up to the first '.'
    (tmp_path / "ShapeNet-55" / "test.txt").write_text("04379243-a-b.c.npy\n03001627-x.npy\n")
    te = ShapeNet55(tmp_path, "test")
    assert te.taxonomy_ids == ["04379243", "03001627"] and te.model_ids == ["a-b", "x"]
    assert te.classes == ["03001627", "04379243"] and te.labels.tolist() == [1, 0]


def test_whole_prepends_test_to_train_only(tmp_path):
    write_shapenet55(tmp_path)
    whole = ShapeNet55(tmp_path, "train", whole=True)
    assert whole.files == ShapeNet55(tmp_path, "test").files + ShapeNet55(tmp_path, "train").files
    assert ShapeNet55(tmp_path, "test", whole=True).files == ShapeNet55(tmp_path, "test").files


def test_roots_data_path_style_and_pc_path(tmp_path):
    write_shapenet55(tmp_path)
    inner = ShapeNet55(tmp_path / "ShapeNet-55", "test")  # DATA_PATH style: shapenet_pc beside it
    assert inner.pc_path == tmp_path / "shapenet_pc" and len(inner) == 2
    moved = tmp_path / "clouds"
    (tmp_path / "shapenet_pc").rename(moved)
    ds = ShapeNet55(tmp_path, "test", pc_path=str(moved), num_points=None)
    assert ds.pc_path == moved
    np.testing.assert_allclose(ds[1]["points"].numpy(), pc_normalize(np.load(moved / ds.files[1]).astype(np.float32)),
                               rtol=1e-6, atol=1e-7)  # fmt: skip


def test_sampled_values_train_and_test(tmp_path):
    write_shapenet55(tmp_path)
    te = ShapeNet55(tmp_path, "test", num_points=16, seed=5)
    arr = np.load(tmp_path / "shapenet_pc" / te.files[1]).astype(np.float32)
    choice = np.random.default_rng([5, 1]).permutation(64)[:16]
    s = te[1]
    assert s["label"] == 1 and s["points"].dtype == torch.float32
    np.testing.assert_array_equal(s["points"].numpy(), pc_normalize(arr[choice]))
    assert not torch.equal(ShapeNet55(tmp_path, "test", num_points=16, seed=6)[1]["points"], s["points"])
    tr = ShapeNet55(tmp_path, "train", num_points=16)
    arr = np.load(tmp_path / "shapenet_pc" / tr.files[2]).astype(np.float32)
    torch.manual_seed(3)
    want = pc_normalize(arr[torch.randperm(64)[:16].numpy()])
    torch.manual_seed(3)
    np.testing.assert_array_equal(tr[2]["points"].numpy(), want)
    full = ShapeNet55(tmp_path, "train", num_points=64)  # exactly the stored count: every point, in some order
    whole = pc_normalize(np.load(tmp_path / "shapenet_pc" / full.files[0]).astype(np.float32))
    np.testing.assert_allclose(np.sort(full[0]["points"][:, 0].numpy()), np.sort(whole[:, 0]), rtol=1e-5, atol=1e-6)


def test_default_seed_is_0_and_transform_is_applied(tmp_path):
    write_shapenet55(tmp_path)
    ds = ShapeNet55(tmp_path, "test", num_points=16, transform=lambda s: {**s, "points": s["points"] * 2})
    arr = np.load(tmp_path / "shapenet_pc" / ds.files[1]).astype(np.float32)
    want = pc_normalize(arr[np.random.default_rng([0, 1]).permutation(64)[:16]])
    np.testing.assert_array_equal(ds[1]["points"].numpy(), want * 2)
    assert ds.seed == 0


def test_lists_in_the_shapenet_55_folder_win_over_lists_in_the_root(tmp_path):
    write_shapenet55(tmp_path)
    (tmp_path / "test.txt").write_text("03001627-trainmodel1.npy\n")  # a stray list in the root itself
    ds = ShapeNet55(tmp_path, "test")
    assert ds.files == ["02691156-testmodel0.npy", "03001627-testmodel1.npy"]


def test_an_empty_list_gives_an_empty_int64_label_array(tmp_path):
    write_shapenet55(tmp_path)
    (tmp_path / "ShapeNet-55" / "test.txt").write_text("\n")
    ds = ShapeNet55(tmp_path, "test")
    assert len(ds) == 0 and ds.classes == [] and ds.labels.dtype == np.int64 and ds.labels.shape == (0,)


def test_extra_columns_are_dropped(tmp_path):
    write_shapenet55(tmp_path)
    path = tmp_path / "shapenet_pc" / "02691156-testmodel0.npy"
    data = np.random.default_rng(0).normal(size=(20, 5))
    np.save(path, data)
    got = ShapeNet55(tmp_path, "test", num_points=None)[0]["points"].numpy()
    np.testing.assert_allclose(got, pc_normalize(data[:, :3].astype(np.float32)), rtol=1e-6, atol=1e-7)


def test_errors_in_full(tmp_path):
    write_shapenet55(tmp_path)
    ds = ShapeNet55(tmp_path, "test", num_points=8)
    path = tmp_path / "shapenet_pc" / "02691156-testmodel0.npy"
    for arr in (np.zeros(24), np.zeros((8, 2)), np.zeros((0, 3)), np.zeros((2, 4, 3))):
        np.save(path, arr)
        assert raised(DataFormatError, lambda: ds[0]) == f"{path}: expected an (8192, 3) array, got shape {arr.shape}"
    np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert raised(DataFormatError, lambda: ds[0]).startswith(f"{path}: not a plain numeric .npy array (")
    bad = np.zeros((8, 3))
    bad[6, 0] = np.nan
    np.save(path, bad)
    assert raised(DataFormatError, lambda: ds[0]).startswith(f"{path}: 1 row(s) with NaN/Inf coordinates (first at "
                                                             "row 6)")  # fmt: skip
    np.save(path, np.zeros((7, 3)))
    assert raised(DataFormatError, lambda: ds[0]) == f"{path}: 7 points, fewer than num_points=8"
    path.unlink()
    assert raised(DatasetNotFoundError, lambda: ds[0]) == str(
        missing_dataset("ShapeNet-55 cloud", tmp_path, [path], WHERE, LAYOUT)
    )
    lst = tmp_path / "ShapeNet-55" / "test.txt"
    lst.write_text("02691156-a.npy\nno_dash.npy\n")
    assert raised(DataFormatError, lambda: ShapeNet55(tmp_path, "test")) == (
        f"{tmp_path / 'ShapeNet-55'}: line 'no_dash.npy' is not '<synset>-<model id>.npy'"
    )
    assert raised(ValueError, lambda: ShapeNet55(tmp_path, "val")) == (
        "ShapeNet55: split must be one of ['train', 'test'], got 'val'"
    )


def test_missing_lists_and_clouds_folder_in_full(tmp_path):
    write_shapenet55(tmp_path)
    (tmp_path / "shapenet_pc").rename(tmp_path / "other")
    got = raised(DatasetNotFoundError, lambda: ShapeNet55(tmp_path, "train"))
    assert got == str(missing_dataset("ShapeNet-55", tmp_path, [tmp_path / "shapenet_pc"], WHERE, LAYOUT))
    (tmp_path / "ShapeNet-55" / "test.txt").unlink()
    got = raised(DatasetNotFoundError, lambda: ShapeNet55(tmp_path, "train", whole=True, pc_path=tmp_path / "other"))
    assert got == str(missing_dataset("ShapeNet-55", tmp_path, [tmp_path / "ShapeNet-55" / "test.txt"], WHERE, LAYOUT))
