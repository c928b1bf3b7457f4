"""Silent-error guards: per-split lists, split overlap, the official FPS text default, empty classes, validation."""

import os
import warnings

import numpy as np
import pytest
import torch
from dataset_files import reference_fps, write_modelnet_h5, write_modelnet_txt
from torch.utils.data import Subset

from pointclora.datasets import (
    DataFormatError,
    DatasetValidationError,
    ModelNet40,
    PointCloudFolder,
    SplitOverlapError,
    check_disjoint_splits,
    official_fps_start,
    safe_pickle_load,
    validate_dataset,
    write_fps_cache,
)

# ------------------------------------------------------------------------------------------------ split lists


def test_one_split_file_for_both_splits_is_refused(tmp_path):
    write_modelnet_txt(tmp_path)
    (tmp_path / "mine.txt").write_text("airplane_0001\n")
    with pytest.raises(ValueError, match=r"split_file='mine.txt' would be used for both .*present_\{split\}.txt"):
        ModelNet40(tmp_path, "test", split_file="mine.txt")
    # a {split} pattern and per-split files both work and give different lists
    (tmp_path / "a_train.txt").write_text("airplane_0001\nbathtub_0004\n")
    (tmp_path / "a_test.txt").write_text("airplane_0003\n")
    tr = ModelNet40(tmp_path, "train", split_file="a_{split}.txt", num_points=8)
    te = ModelNet40(tmp_path, "test", split_file="a_{split}.txt", num_points=8)
    assert tr.shape_ids == ["airplane_0001", "bathtub_0004"] and te.shape_ids == ["airplane_0003"]
    te2 = ModelNet40(tmp_path, "test", split_file="a_{split}.txt", test_split_file="mine.txt", num_points=8)
    assert te2.shape_ids == ["airplane_0001"]  # the split's own file wins


def test_overlapping_train_test_lists_error(tmp_path):
    ids = write_modelnet_txt(tmp_path)
    tr = ModelNet40(tmp_path, "train", num_points=8)
    same = ModelNet40(tmp_path, "test", test_split_file="modelnet40_train.txt", num_points=8)
    with pytest.raises(SplitOverlapError) as info:
        check_disjoint_splits({"train": tr, "test": same})
    msg = str(info.value)
    assert "the train and test splits overlap: 8 of the 8 test samples are also in train" in msg
    assert f"e.g. {ids['train'][0]!r}" in msg
    assert "split_file='modelnet40_{split}.txt'" in msg  # a correct pair found in the folder
    ok = ModelNet40(tmp_path, "test", num_points=8)
    assert check_disjoint_splits({"train": tr, "val": ok, "test": ok}) == {
        "train/val": "disjoint",
        "train/test": "disjoint",
        "val/test": "same split",
    }


def test_overlap_through_subsets_and_in_memory_sources(tmp_path):
    write_modelnet_txt(tmp_path)
    tr = ModelNet40(tmp_path, "train", num_points=8)
    assert check_disjoint_splits({"train": Subset(tr, [0, 1, 2]), "val": Subset(tr, [3, 4])})["train/val"] == "disjoint"
    with pytest.raises(SplitOverlapError, match=r"1 of the 2 val samples are also in train"):
        check_disjoint_splits({"train": Subset(tr, [0, 1, 2]), "val": Subset(tr, [2, 4])})
    # HDF5: `files=` applies to both splits; the same clouds are caught by content
    h5 = tmp_path / "h5"
    write_modelnet_h5(h5)
    files = ["ply_data_train0.h5"]
    a = ModelNet40(h5, "train", source="h5", files=files)
    b = ModelNet40(h5, "test", source="h5", files=files)
    with pytest.raises(SplitOverlapError, match=r"5 of the 5 test samples"):
        check_disjoint_splits({"train": a, "test": b})
    assert check_disjoint_splits({"train": a, "test": ModelNet40(h5, "test", source="h5")}) == {
        "train/test": "disjoint"
    }


@pytest.mark.realdata
def test_overlap_on_the_real_lists(real_data):
    root = real_data / "modelnet40_normal_resampled"
    tr = ModelNet40(root, "train", train_split_file="present_train.txt", sampling="first_rows")
    bad = ModelNet40(root, "test", test_split_file="present_train.txt", sampling="first_rows")
    with pytest.raises(SplitOverlapError) as info:
        check_disjoint_splits({"train": tr, "test": bad})
    assert "337 of the 337 test samples are also in train (e.g. 'airplane_0001')" in str(info.value)
    assert "split_file='present_{split}.txt'" in str(info.value)
    good = ModelNet40(root, "test", split_file="present_{split}.txt", sampling="first_rows")
    assert check_disjoint_splits({"train": tr, "test": good}) == {"train/test": "disjoint"}


# ------------------------------------------------------------------------------------------------ FPS default


@pytest.mark.realdata
def test_txt_default_is_the_official_fps_of_8192(real_data, tmp_path):
    root = real_data / "modelnet40_normal_resampled"
    ds = ModelNet40(root, "test", split_file="present_{split}.txt", use_normals=True, shuffle=False, cache_dir=tmp_path)
    assert ds.sampling == "fps" and ds.num_points == 8192
    # one shape in full; two more through the first 512 picks (an FPS order's prefix is the smaller FPS)
    for i, npoint in ((0, 8192), (57, 512), (128, 512)):
        full = np.loadtxt(ds.paths[i], delimiter=",").astype(np.float32)
        assert full.shape == (10000, 6)
        start = official_fps_start(ds.shape_ids[i], len(full), 0)
        expected = full[reference_fps(full[:, :3], npoint, start)]
        got = ds.raw_points(i)
        assert got.shape == (8192, 6)
        np.testing.assert_array_equal(got[:npoint], expected)
        assert len(np.unique(got, axis=0)) == 8192
        # the old "first rows" differ from the official cloud in a large share of points
        first = {r.tobytes() for r in full[:8192]}
        assert sum(r.tobytes() not in first for r in got) / 8192 > 0.05
    cached = list((tmp_path / "modelnet_fps").rglob("*.npz"))
    assert len(cached) == 3
    # served from the cache afterwards (a corrupted cache is recomputed, never trusted)
    again = ModelNet40(
        root, "test", split_file="present_{split}.txt", use_normals=True, shuffle=False, cache_dir=tmp_path
    )
    np.testing.assert_array_equal(again.raw_points(0), ds.raw_points(0))
    target = [p for p in cached if p.name.startswith(ds.shape_ids[0] + ".")][0]
    target.write_bytes(b"garbage")
    np.testing.assert_array_equal(again.raw_points(0), ds.raw_points(0))
    # first_rows is the named option for the old behaviour
    fr = ModelNet40(root, "test", split_file="present_{split}.txt", use_normals=True, shuffle=False,
                    sampling="first_rows")  # fmt: skip
    np.testing.assert_array_equal(fr.raw_points(0), np.loadtxt(fr.paths[0], delimiter=",").astype(np.float32)[:8192])


def test_fps_cache_tracks_the_source_file(tmp_path):
    write_modelnet_txt(tmp_path / "mn", n_rows=40)
    ds = ModelNet40(tmp_path / "mn", "test", num_points=16, shuffle=False, cache_dir=tmp_path / "c")
    before = ds.raw_points(0)
    full = np.loadtxt(ds.paths[0], delimiter=",").astype(np.float32)
    np.testing.assert_array_equal(
        before, full[reference_fps(full[:, :3], 16, official_fps_start(ds.shape_ids[0], 40))][:, :3]
    )
    # rewrite the file with other coordinates: the cached order must not be reused
    new = full.copy()
    new[:, :3] = -(new[:, :3] ** 3)
    np.savetxt(ds.paths[0], new, fmt="%.6f", delimiter=",")
    os.utime(ds.paths[0], ns=(1, 1))
    new = np.loadtxt(ds.paths[0], delimiter=",").astype(np.float32)
    expected = new[reference_fps(new[:, :3], 16, official_fps_start(ds.shape_ids[0], 40))][:, :3]
    np.testing.assert_array_equal(ds.raw_points(0), expected)


def test_fps_cache_file_equals_the_text_default(tmp_path):
    write_modelnet_txt(tmp_path, n_rows=40)
    out = write_fps_cache(tmp_path, "train", num_points=16, seed=3)
    pts, _ = safe_pickle_load(out)
    txt = ModelNet40(tmp_path, "train", num_points=16, use_normals=True, shuffle=False, fps_seed=3,
                     cache_dir=tmp_path / "c")  # fmt: skip
    for i in range(len(txt)):
        np.testing.assert_array_equal(pts[i], txt.raw_points(i))


# ------------------------------------------------------------------------------------------------ empty classes


def _folder(root, layout="class/split", empty=("chair",), classes=("bed", "chair", "desk", "sofa")):
    rng = np.random.default_rng(0)
    for c in classes:
        d = root / c / "train" if layout == "class/split" else root / c
        d.mkdir(parents=True)
        if c in empty:
            continue
        for j in range(2):
            np.save(d / f"{c}_{j}.npy", rng.normal(size=(20, 3)).astype(np.float32))
    return root


def test_empty_class_folder_is_refused_or_skipped(tmp_path):
    root = _folder(tmp_path / "a", layout="flat")
    with pytest.raises(DataFormatError, match=r"1 class folder\(s\) hold no .* file for split None: .*a/chair\b"):
        PointCloudFolder(root, split=None)
    with pytest.warns(UserWarning, match=r"skipping 1 empty class folder\(s\) \(not recorded as classes\): .*chair"):
        ds = PointCloudFolder(root, split=None, empty_classes="skip")
    assert ds.classes == ["bed", "desk", "sofa"] and len(ds) == 6 and sorted(set(ds.labels.tolist())) == [0, 1, 2]
    root = _folder(tmp_path / "b")  # <class>/train/ with chair/train/ empty
    with pytest.raises(DataFormatError, match=r"b/chair/train"):
        PointCloudFolder(root, "train")
    # explicit classes (e.g. from a checkpoint) fix the ids, so an empty folder is no ambiguity
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = PointCloudFolder(root, "train", classes=["bed", "chair", "desk", "sofa"])
    assert ds.class_to_idx["desk"] == 2 and len(ds) == 6


def test_class_without_this_split_is_an_empty_class_not_a_label_shift(tmp_path):
    root = _folder(tmp_path, empty=())
    for c in ("bed", "desk", "sofa"):  # chair has no test folder
        (root / c / "test").mkdir()
        np.save(root / c / "test" / "x.npy", np.ones((20, 3), np.float32))
    with pytest.raises(DataFormatError, match=r"chair/test"):
        PointCloudFolder(root, "test")
    te = PointCloudFolder(root, "test", classes=PointCloudFolder(root, "train").classes)
    assert te.class_to_idx["sofa"] == 3  # not 2, as it would be had chair been dropped silently


# ------------------------------------------------------------------------------------------------ validate_dataset


def _bad_row(path, line_text, at=5):
    rows = path.read_text().splitlines()
    rows.insert(at, line_text)
    path.write_text("\n".join(rows) + "\n")


def test_validate_dataset_names_file_and_line_before_training(tmp_path):
    write_modelnet_txt(tmp_path / "mn", n_rows=40)
    ds = ModelNet40(tmp_path / "mn", "train", num_points=16, cache_dir=tmp_path / "c")
    rep = validate_dataset(ds, cache_dir=tmp_path / "c")
    assert rep.num_samples == 8 and not rep.cached and rep.point_counts == [16, 16] and rep.channels == [3]
    assert validate_dataset(ds, cache_dir=tmp_path / "c").cached  # fingerprint remembered
    _bad_row(ds.paths[3], "1.0,2.0,oops,0,0,1")
    _bad_row(ds.paths[5], "nan,2.0,3.0,0,0,1", at=0)
    state = torch.get_rng_state()
    with pytest.raises(DatasetValidationError) as info:
        validate_dataset(ds, cache_dir=tmp_path / "c")  # the files changed: checked again
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random stream is untouched
    msg = str(info.value)
    assert "2 of 8 samples failed the check before training" in msg
    assert f"{ds.paths[3]}: line 6, column 3: 'oops' is not a number" in msg
    assert f"{ds.paths[5]}: 1 row(s) with NaN/Inf coordinates (first at row 0, line 1)" in msg
    assert [p[0] for p in info.value.problems] == [3, 5]


def test_validate_dataset_with_workers_and_fixed_point_count(tmp_path):
    root = _folder(tmp_path, layout="flat", empty=())
    np.save(root / "bed" / "short.npy", np.ones((2, 3), np.float32))  # fewer points than num_points -> resampled
    np.save(root / "desk" / "flat.npy", np.ones((5, 2), np.float32))  # only x, y
    ds = PointCloudFolder(root, split=None, num_points=8)
    with pytest.raises(DatasetValidationError, match=r"(?s)1 of 10 samples .*flat.npy: expected rows of at least 3"):
        validate_dataset(ds, num_workers=1, use_cache=False)
    (root / "desk" / "flat.npy").unlink()
    ds = PointCloudFolder(root, split=None, num_points=8)
    assert validate_dataset(ds, num_workers=1).point_counts == [8, 8]


def test_in_memory_datasets_are_not_read_again_unless_asked(tmp_path):
    from pointclora.datasets import Synthetic

    h5 = tmp_path / "h5"
    write_modelnet_h5(h5)
    ds = ModelNet40(h5, "train", source="h5")
    rep = validate_dataset(ds, cache_dir=tmp_path / "c")
    assert rep.skipped.startswith("held in memory") and rep.point_counts == []
    rep = validate_dataset(Synthetic(num_samples=4, num_points=32), cache_dir=tmp_path / "c", full=True)
    assert rep.skipped == "" and rep.point_counts == [32, 32] and rep.num_samples == 4
