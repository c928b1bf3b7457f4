"""ScanObjectNN reader (pointclora/datasets/scanobjectnn.py): which official h5 file each variant name reads, the
stored values (no normalisation; train shuffles points and mask together), the accepted roots, and every error's
full message. Small h5 files in the official layout (dataset_files.write_scanobjectnn)."""

import h5py
import numpy as np
import pytest
import torch
from dataset_files import raised, write_h5, write_scanobjectnn

from pointclora.datasets import DataFormatError, DatasetNotFoundError, ScanObjectNN
from pointclora.datasets.base import content_keys, missing_dataset
from pointclora.datasets.scanobjectnn import LAYOUT, SCANOBJECTNN_CLASSES, WHERE

OBJ_BG_TRAIN = "main_split/training_objectdataset.h5"


def _stored(path, key="data"):
    with h5py.File(path) as f:
        return f[key][()]


@pytest.mark.parametrize(
    "name,variant,file",
    [
        ("hardest", "PB_T50_RS", "main_split/test_objectdataset_augmentedrot_scale75.h5"),
        ("pb_t50_rs", "PB_T50_RS", "main_split/test_objectdataset_augmentedrot_scale75.h5"),
        ("OBJ_BG", "OBJ_BG", "main_split/test_objectdataset.h5"),
        ("objectbg", "OBJ_BG", "main_split/test_objectdataset.h5"),
        ("objbg", "OBJ_BG", "main_split/test_objectdataset.h5"),
        ("object_bg", "OBJ_BG", "main_split/test_objectdataset.h5"),  # an alias is matched without its underscores
        ("obj_only", "OBJ_ONLY", "main_split_nobg/test_objectdataset.h5"),
        ("ObjectOnly", "OBJ_ONLY", "main_split_nobg/test_objectdataset.h5"),
        ("objonly", "OBJ_ONLY", "main_split_nobg/test_objectdataset.h5"),
    ],
)
def test_each_variant_name_reads_its_official_file(tmp_path, name, variant, file):
    write_scanobjectnn(tmp_path)
    ds = ScanObjectNN(tmp_path, "test", variant=name)
    assert ds.variant == variant and ds.path == tmp_path / file and ds.source_files() == [tmp_path / file]
    stored = _stored(tmp_path / file)
    np.testing.assert_array_equal(ds[3]["points"].numpy(), stored[3])  # test: stored order, not normalised
    assert ds.labels.tolist() == _stored(tmp_path / file, "label").tolist()
    assert repr(ds) == f"ScanObjectNN(root={str(tmp_path)!r}, split='test', samples=4, variant={variant!r})"


def test_default_variant_is_the_hardest_and_train_reads_the_training_file(tmp_path):
    write_scanobjectnn(tmp_path)
    ds = ScanObjectNN(tmp_path)
    assert ds.split == "train" and ds.variant == "PB_T50_RS" and ds.shuffle is True
    assert ds.path == tmp_path / "main_split/training_objectdataset_augmentedrot_scale75.h5"
    assert ds.classes == SCANOBJECTNN_CLASSES and ds.num_classes == 15 and ds.classes[10] == "bed"
    assert ds.sample_keys() == content_keys(_stored(ds.path))


def test_transform_is_applied_to_each_sample(tmp_path):
    write_scanobjectnn(tmp_path)
    ds = ScanObjectNN(tmp_path, "test", variant="OBJ_BG", transform=lambda s: {**s, "points": s["points"] * 2})
    stored = _stored(tmp_path / "main_split/test_objectdataset.h5")[1]
    np.testing.assert_array_equal(ds[1]["points"].numpy(), stored * 2)


def test_train_shuffles_points_and_mask_together(tmp_path):
    write_scanobjectnn(tmp_path)
    ds = ScanObjectNN(tmp_path, "train", variant="OBJ_BG", return_mask=True)
    data, mask = _stored(tmp_path / OBJ_BG_TRAIN)[2], _stored(tmp_path / OBJ_BG_TRAIN, "mask")[2]
    torch.manual_seed(0)
    s = ds[2]
    order = [int(np.nonzero((data == p).all(1))[0][0]) for p in s["points"].numpy()]
    assert sorted(order) == list(range(48)) and order != list(range(48))
    assert s["mask"].tolist() == mask[order].tolist() and s["mask"].dtype == torch.int64
    fixed = ScanObjectNN(tmp_path, "train", variant="OBJ_BG", return_mask=True, shuffle=False)[2]
    np.testing.assert_array_equal(fixed["points"].numpy(), data)
    assert fixed["mask"].tolist() == mask.tolist()
    assert "mask" not in ScanObjectNN(tmp_path, "train", variant="OBJ_BG", shuffle=False)[2]
    # a test split can be shuffled on request
    torch.manual_seed(0)
    te = ScanObjectNN(tmp_path, "test", variant="OBJ_BG", shuffle=True)[0]["points"].numpy()
    assert not np.array_equal(te, _stored(tmp_path / "main_split/test_objectdataset.h5")[0])


def test_files_without_mask_extra_channels_and_two_d_labels(tmp_path):
    write_scanobjectnn(tmp_path)
    data = np.random.default_rng(0).normal(size=(3, 5, 6)).astype(np.float64)
    write_h5(tmp_path / OBJ_BG_TRAIN, data=data, label=np.array([[14], [0], [3]], np.uint8))
    ds = ScanObjectNN(tmp_path, "train", variant="OBJ_BG", return_mask=True, shuffle=False, classes=None)
    assert ds.labels.tolist() == [14, 0, 3] and ds.labels.dtype == np.int64
    s = ds[0]
    assert "mask" not in s and s["label"] == 14 and s["points"].dtype == torch.float32
    np.testing.assert_array_equal(s["points"].numpy(), data[0, :, :3].astype(np.float32))  # xyz of 6 channels
    # held as float32 xyz: the sample keys are those of the float32 clouds the samples return
    assert ds.sample_keys() == content_keys(np.ascontiguousarray(data[:, :, :3], dtype=np.float32))
    relabelled = ScanObjectNN(tmp_path, "train", variant="OBJ_BG", classes=[f"c{i}" for i in range(20)])
    assert relabelled.classes[19] == "c19" and relabelled.num_classes == 20


def test_mask_values_come_back_exactly_as_int64(tmp_path):
    # an int64 field must not pass through float64 on the way (2**53 + 1 has no float64 value)
    write_scanobjectnn(tmp_path)
    data = np.arange(2 * 4 * 3, dtype=np.float32).reshape(2, 4, 3)
    mask = np.array([[-1, 2**53 + 1, 7, 0], [3, 3, -1, 2**62]], np.int64)
    write_h5(tmp_path / OBJ_BG_TRAIN, data=data, label=np.array([1, 2]), mask=mask)
    ds = ScanObjectNN(tmp_path, "train", variant="OBJ_BG", return_mask=True, shuffle=False)
    for i in range(2):
        assert ds[i]["mask"].dtype == torch.int64 and ds[i]["mask"].tolist() == mask[i].tolist()


@pytest.mark.parametrize("layout", ["plain", "h5_files", "main_split_root"])
def test_the_three_accepted_roots(tmp_path, layout):
    base = tmp_path / "ScanObjectNN"
    write_scanobjectnn(base / "h5_files" if layout == "h5_files" else base)
    root = base / "main_split" if layout == "main_split_root" else base
    folder = base / ("h5_files/main_split" if layout == "h5_files" else "main_split")
    ds = ScanObjectNN(root, "test", variant="OBJ_BG")
    assert ds.path == folder / "test_objectdataset.h5"
    np.testing.assert_array_equal(ds[1]["points"].numpy(), _stored(folder / "test_objectdataset.h5")[1])


def test_missing_file_and_bad_arguments_in_full(tmp_path):
    got = raised(DatasetNotFoundError, lambda: ScanObjectNN(tmp_path, "test", variant="OBJ_ONLY"))
    assert got == str(
        missing_dataset("ScanObjectNN OBJ_ONLY", tmp_path, [tmp_path / "main_split_nobg/test_objectdataset.h5"],
                        WHERE, LAYOUT)  # fmt: skip
    )
    # main_split_nobg/ as the root does not stand for main_split/
    (tmp_path / "main_split_nobg").mkdir()
    write_scanobjectnn(tmp_path / "x")
    with pytest.raises(DatasetNotFoundError):
        ScanObjectNN(tmp_path / "x" / "main_split_nobg", "test", variant="OBJ_BG")
    assert raised(ValueError, lambda: ScanObjectNN(tmp_path, variant="hard")) == (
        "ScanObjectNN: variant must be one of ['OBJ_BG', 'OBJ_ONLY', 'PB_T50_RS'], got 'hard'"
    )
    assert raised(ValueError, lambda: ScanObjectNN(tmp_path, "val")) == (
        "ScanObjectNN: split must be one of ['train', 'test'], got 'val'"
    )


def test_bad_files_in_full(tmp_path):
    write_scanobjectnn(tmp_path)
    path = tmp_path / OBJ_BG_TRAIN

    def load(**arrays):
        write_h5(path, **arrays)
        return raised(DataFormatError, lambda: ScanObjectNN(tmp_path, "train", variant="OBJ_BG"))

    ok, lab = np.zeros((2, 4, 3), np.float32), np.zeros(2, np.int64)
    for data in (np.zeros((2, 4), np.float32), np.zeros((2, 4, 2), np.float32), np.zeros((2, 4, 3), np.int32)):
        assert load(data=data, label=lab) == (
            f"{path}: 'data' must be float (n, 2048, 3), got {data.dtype} {data.shape}"
        )
    for label in (np.zeros((2, 2), np.int64), np.zeros(3, np.int64), np.zeros((2, 1, 1), np.int64)):
        assert load(data=ok, label=label) == f"{path}: 'label' must be (n,) with n=2, got shape {label.shape}"
    assert load(data=np.zeros((0, 4, 3), np.float32), label=np.zeros(0, np.int64)) == (
        f"{path}: no points in 'data' (shape (0, 4, 3))"
    )
    assert load(data=np.zeros((2, 0, 3), np.float32), label=lab) == f"{path}: no points in 'data' (shape (2, 0, 3))"
    nan = ok.copy()
    nan[1, 3, 2] = np.nan
    assert load(data=nan, label=lab).startswith(f"{path}: 1 row(s) with NaN/Inf coordinates in 'data' (first at row 7")
    assert load(data=ok, label=np.array([0, 15])) == (
        f"{path} ('label'): label 15 (sample 1) out of range: the ScanObjectNN classes define 15 classes "
        "(valid ids 0..14)"
    )
    assert load(data=ok, label=lab, mask=np.zeros((2, 5), np.int64)) == f"{path}: 'mask' must be (2, 4), got (2, 5)"
