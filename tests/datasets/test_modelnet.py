"""ModelNet40 reader (pointclora/datasets/modelnet.py): the values each source returns, the defaults the official
format fixes (8192 FPS points, seed 0, 40 classes), the ModelNet10 lists, and every error's full message.

Small files in the official layouts (dataset_files.py); the FPS orders are checked against a plain restatement of
the official loader's loop (test_checks.reference_fps)."""

import pickle

import numpy as np
import pytest
import torch
from dataset_files import MN_CLASSES, raised, reference_fps, write_h5, write_modelnet_h5, write_modelnet_txt

from pointclora.datasets import DataFormatError, DatasetNotFoundError, ModelNet40, fps_cache_path, write_fps_cache
from pointclora.datasets.base import content_keys, missing_dataset, pc_normalize
from pointclora.datasets.cache import stable_digest
from pointclora.datasets.modelnet import LAYOUT_H5, LAYOUT_TXT, WHERE, fps_order_numpy, official_fps_start


def _rows(path) -> np.ndarray:
    return np.loadtxt(path, delimiter=",").astype(np.float32)


def _fps_rows(full: np.ndarray, sid: str, n: int, seed: int = 0) -> np.ndarray:
    return full[reference_fps(full[:, :3], n, official_fps_start(sid, len(full), seed))]


# ------------------------------------------------------------------------------------------------ arguments


@pytest.mark.parametrize(
    "kwargs,message",
    [
        ({"source": "ply"}, "ModelNet40: source must be one of ['txt', 'fps_cache', 'h5'], got 'ply'"),
        ({"num_categories": 20}, "ModelNet40: num_categories must be 40 or 10, got 20"),
        ({"num_points": 0}, "ModelNet40: num_points must be >= 1, got 0"),
        ({"sampling": "random"}, "ModelNet40: sampling must be one of ['fps', 'first_rows'], got 'random'"),
        ({"split": "val"}, "ModelNet40: split must be one of ['train', 'test'], got 'val'"),
    ],
)
def test_bad_arguments_name_the_argument_and_the_choices(tmp_path, kwargs, message):
    assert raised(ValueError, lambda: ModelNet40(tmp_path, **kwargs)) == message


def test_one_split_file_for_both_splits_message_in_full(tmp_path):
    write_modelnet_txt(tmp_path)
    assert raised(ValueError, lambda: ModelNet40(tmp_path, "train", split_file="mine.txt")) == (
        "ModelNet40: split_file='mine.txt' would be used for both the train and the test split, making the test set "
        "equal the training set. Give a pattern with {split} (e.g. split_file='present_{split}.txt') or one list "
        "per split (train_split_file='present_train.txt', test_split_file='present_test.txt')"
    )


@pytest.mark.parametrize("source,layout", [("txt", LAYOUT_TXT), ("fps_cache", LAYOUT_TXT), ("h5", LAYOUT_H5)])
def test_missing_root_names_the_layout_of_the_source(tmp_path, source, layout):
    root = tmp_path / "absent"
    got = raised(DatasetNotFoundError, lambda: ModelNet40(root, source=source))
    assert got == str(missing_dataset("ModelNet40", root, [root], WHERE, layout))


def test_split_hint_names_the_list_pairs_or_asks_for_one_list_per_split(tmp_path):
    write_modelnet_txt(tmp_path)
    ds = ModelNet40(tmp_path, "train", num_points=4)
    for name in ("a_train.txt", "a_test.txt", "b_train.txt", "c_test.txt"):  # b and c have no partner
        (tmp_path / name).write_text("airplane_0001\n")
    assert ds.split_hint() == (
        f"lists found in {tmp_path} that form a train/test pair: split_file='a_{{split}}.txt', "
        "split_file='modelnet40_{split}.txt'"
    )
    for k in range(3):  # five pairs: the first four (sorted) are shown
        (tmp_path / f"z{k}_train.txt").write_text("")
        (tmp_path / f"z{k}_test.txt").write_text("")
    assert ds.split_hint().endswith("split_file='z0_{split}.txt', split_file='z1_{split}.txt'")
    for p in tmp_path.glob("*_t*.txt"):
        p.unlink()
    assert ds.split_hint() == "give each split its own list (train_split_file=..., test_split_file=...)"


# ------------------------------------------------------------------------------------------------ text source


def test_text_sample_is_the_fps_cloud_normalised_with_raw_normals_and_shuffled_only_in_train(tmp_path):
    ids = write_modelnet_txt(tmp_path, n_rows=40)
    te = ModelNet40(tmp_path, "test", num_points=12, use_normals=True, cache_dir=tmp_path / "c")
    assert te.shuffle is False and te.num_points == 12 and te.labels.tolist() == [0, 1, 2, 3]
    assert te.shape_ids == ids["test"] and te.source_files() == te.paths == te.paths[:4]
    full = _rows(te.paths[1])
    picked = _fps_rows(full, te.shape_ids[1], 12)
    np.testing.assert_array_equal(te.raw_points(1), picked)
    s = te[1]
    assert s["label"] == 1 and s["points"].dtype == torch.float32
    np.testing.assert_allclose(s["points"][:, :3].numpy(), pc_normalize(picked[:, :3]), rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(s["points"][:, 3:].numpy(), picked[:, 3:])  # normals are not normalised
    tr = ModelNet40(tmp_path, "train", num_points=12, cache_dir=tmp_path / "c")
    assert tr.shuffle is True and tr.sample_keys() == ids["train"]
    torch.manual_seed(0)
    got = tr[0]["points"].numpy()
    want = pc_normalize(_fps_rows(_rows(tr.paths[0]), tr.shape_ids[0], 12)[:, :3])
    order = [int(np.argmin(np.abs(want - r).sum(1))) for r in got]
    assert sorted(order) == list(range(12)) and order != list(range(12))  # the same points, in another order
    np.testing.assert_allclose(got, want[order], rtol=1e-6, atol=1e-7)
    assert not ModelNet40(tmp_path, "train", num_points=12, shuffle=False, cache_dir=tmp_path / "c").shuffle


def test_transform_is_applied_and_an_empty_list_gives_an_empty_int64_label_array(tmp_path):
    write_modelnet_txt(tmp_path, n_rows=10)
    double = ModelNet40(tmp_path, "test", num_points=10, sampling="first_rows",
                        transform=lambda s: {**s, "points": s["points"] * 2})  # fmt: skip
    plain = ModelNet40(tmp_path, "test", num_points=10, sampling="first_rows")
    np.testing.assert_array_equal(double[2]["points"].numpy(), plain[2]["points"].numpy() * 2)
    (tmp_path / "none_test.txt").write_text("\n")
    empty = ModelNet40(tmp_path, "test", test_split_file="none_test.txt")
    assert len(empty) == 0 and empty.labels.dtype == np.int64 and empty.labels.shape == (0,)


def test_fps_seed_moves_the_start_and_first_rows_takes_the_head(tmp_path):
    write_modelnet_txt(tmp_path, n_rows=40)
    full = _rows(tmp_path / "airplane" / "airplane_0003.txt")
    for seed in (0, 5):
        ds = ModelNet40(tmp_path, "test", num_points=10, fps_seed=seed, use_normals=True, cache_dir=tmp_path / "c")
        np.testing.assert_array_equal(ds.raw_points(0), _fps_rows(full, "airplane_0003", 10, seed))
    assert official_fps_start("airplane_0003", 40, 0) != official_fps_start("airplane_0003", 40, 5)
    fr = ModelNet40(tmp_path, "test", num_points=10, sampling="first_rows", cache_dir=tmp_path / "c")
    np.testing.assert_array_equal(fr.raw_points(0), full[:10, :3])
    one = ModelNet40(tmp_path, "test", num_points=1, sampling="first_rows")
    assert one[0]["points"].shape == (1, 3)


def test_official_fps_start_is_uniform_over_the_rows_and_the_order_matches_the_official_loop():
    starts = [official_fps_start(f"chair_{k:04d}", 7) for k in range(200)]
    assert set(starts) == set(range(7))  # [0, N): both ends reached, nothing outside
    assert official_fps_start("chair_0001", 7, seed=0) == official_fps_start("chair_0001", 7)
    xyz = np.random.default_rng(3).normal(size=(30, 3)).astype(np.float32)
    np.testing.assert_array_equal(fps_order_numpy(xyz, 30, 4), reference_fps(xyz, 30, 4))
    assert fps_order_numpy(xyz, 1, 9).tolist() == [9]
    # a float64 cloud keeps float64 distances, and the running minimum starts at 1e10 as in the official loop:
    # squared distances of 1e10, 1e10 + 1 and 1e10 + 4 all tie at the cap, so the lowest index is next
    far = np.array([[0, 0, 0], [1e5, 0, 0], [1e5, 1, 0], [1e5, 2, 0]], np.float64)
    assert fps_order_numpy(far, 2, 0).tolist() == reference_fps(far, 2, 0).tolist() == [0, 1]
    for bad in (0, 31):
        assert raised(ValueError, lambda: fps_order_numpy(xyz, bad, 0)) == (
            f"fps_order_numpy: num_points must be in [1, 30], got {bad}"
        )


def test_fps_orders_are_cached_per_file_and_a_file_of_exactly_num_points_rows_is_read(tmp_path):
    write_modelnet_txt(tmp_path, n_rows=16)
    ds = ModelNet40(tmp_path, "test", num_points=16, use_normals=True, fps_seed=2, cache_dir=tmp_path / "c")
    full = _rows(ds.paths[0])
    np.testing.assert_array_equal(ds.raw_points(0), _fps_rows(full, ds.shape_ids[0], 16, 2))
    (cache,) = (tmp_path / "c" / "modelnet_fps").rglob("*.npz")
    assert cache.name == f"{ds.shape_ids[0]}.n16.s2.npz"
    with np.load(cache) as z:
        assert z["idx"].dtype == np.uint16 and z["stamp"].tolist()[2] == 16
        np.testing.assert_array_equal(full[z["idx"].astype(np.int64)], ds.raw_points(0))
    assert cache.parent.name == stable_digest(str(tmp_path.resolve()))  # one folder per dataset root
    # a stored order is what is served while the stamp matches (the file is not read for FPS again)
    with np.load(cache) as z:
        stamp = z["stamp"]
    np.savez(cache, idx=np.arange(16, dtype=np.uint16), stamp=stamp)
    np.testing.assert_array_equal(ds.raw_points(0), full)
    # another size from the same cache folder is its own order, not the 16-point one cut or reused
    small = ModelNet40(tmp_path, "test", num_points=5, use_normals=True, fps_seed=2, cache_dir=tmp_path / "c")
    np.testing.assert_array_equal(small.raw_points(0), _fps_rows(full, ds.shape_ids[0], 5, 2))


def test_cached_orders_are_uint16_up_to_65535_rows_and_int32_from_65536(tmp_path):
    write_modelnet_txt(tmp_path, n_rows=8)
    ds = ModelNet40(tmp_path, "test", num_points=2, cache_dir=tmp_path / "c")
    path, sid = ds.paths[0], ds.shape_ids[0]
    rng = np.random.default_rng(0)
    for n, dtype in ((65535, np.uint16), (65536, np.int32)):
        xyz = rng.random((n, 3), dtype=np.float32)
        assert ds._fps_order(path, xyz, 2).tolist() == reference_fps(xyz, 2, official_fps_start(sid, n)).tolist()
        with np.load(next((tmp_path / "c").rglob(f"{sid}.n2.s0.npz"))) as z:
            assert z["idx"].dtype == dtype and z["stamp"].tolist()[2] == n


def test_fps_order_of_a_file_longer_than_65535_rows_survives_the_cache(tmp_path):
    """Orders are stored as uint16 up to 65,535 rows; past that an index >= 65,536 must not wrap around."""
    write_modelnet_txt(tmp_path, n_rows=8)
    rows = np.zeros((65537, 6), np.float32)
    rows[:, :3] = np.random.default_rng(0).random((65537, 3)) * 0.01
    rows[-1, :3] = 5.0  # the farthest point is the last row: the second pick is index 65,536
    path = tmp_path / "xbox" / "xbox_0012.txt"
    np.savetxt(path, rows, fmt="%.4f", delimiter=",")
    first = ModelNet40(tmp_path, "test", num_points=2, shuffle=False, cache_dir=tmp_path / "c").raw_points(3)
    again = ModelNet40(tmp_path, "test", num_points=2, shuffle=False, cache_dir=tmp_path / "c").raw_points(3)
    np.testing.assert_array_equal(again, first)
    assert again[1].tolist() == [5.0, 5.0, 5.0]
    with np.load(next((tmp_path / "c").rglob("xbox_0012.*.npz"))) as z:
        assert z["idx"].tolist()[1] == 65536


def test_text_without_normals_and_with_short_rows_name_the_file(tmp_path):
    write_modelnet_txt(tmp_path)
    path = tmp_path / "airplane" / "airplane_0001.txt"
    np.savetxt(path, np.random.default_rng(0).normal(size=(40, 3)), delimiter=",")
    ds = ModelNet40(tmp_path, "train", num_points=8, shuffle=False, cache_dir=tmp_path / "c")
    assert ds.raw_points(0).shape == (8, 3)  # xyz-only rows are enough without normals
    nrm = ModelNet40(tmp_path, "train", num_points=8, use_normals=True, cache_dir=tmp_path / "c")
    assert raised(DataFormatError, lambda: nrm[0]) == f"{path}: rows hold 3 values, expected >= 6 (x,y,z,nx,ny,nz)"
    np.savetxt(path, np.ones((40, 2)), delimiter=",")
    assert raised(DataFormatError, lambda: ds[0]) == f"{path}: rows hold 2 values, expected >= 3 (x,y,z)"
    np.savetxt(path, np.ones((5, 6)), delimiter=",")
    assert raised(DataFormatError, lambda: ds[0]) == f"{path}: 5 points, fewer than num_points=8"


def test_text_list_errors_in_full(tmp_path):
    write_modelnet_txt(tmp_path)
    lst, names = tmp_path / "modelnet40_train.txt", tmp_path / "modelnet40_shape_names.txt"
    lst.write_text("airplane_0001\nzebra_0001\n")
    assert raised(DataFormatError, lambda: ModelNet40(tmp_path)) == (
        f"{lst}: id 'zebra_0001' names class 'zebra', which is not in modelnet40_shape_names.txt"
    )
    lst.write_text("airplane_0001\nxbox_0099\nxbox_0098\nxbox_0097\nxbox_0096\n")
    missing = [tmp_path / "xbox" / f"xbox_00{k}.txt" for k in (99, 98, 97)]  # the first three, as listed
    assert raised(DatasetNotFoundError, lambda: ModelNet40(tmp_path)) == (
        f"ModelNet40: 4 of 5 shapes listed in {lst} are missing, e.g. {', '.join(map(str, missing))}. Complete the "
        f"dataset ({WHERE}) or pass lists of the ids you have, one per split (e.g. split_file='present_{{split}}.txt',"
        " or train_split_file=... and test_split_file=...)."
    )
    names.unlink()
    lst.unlink()
    assert raised(DatasetNotFoundError, lambda: ModelNet40(tmp_path)) == str(
        missing_dataset("ModelNet40 (text release)", tmp_path, [names, lst], WHERE, LAYOUT_TXT)
    )


def _write_modelnet10(root, n_rows=20):
    """ModelNet10 lists beside the ModelNet40 ones: other names file, other ids, other label order."""
    (root / "modelnet10_shape_names.txt").write_text("bathtub\nnight_stand\n")
    (root / "modelnet10_train.txt").write_text("night_stand_0007\nbathtub_0004\n")
    (root / "modelnet10_test.txt").write_text("bathtub_0006\n")


def test_modelnet10_reads_its_own_names_and_lists(tmp_path):
    write_modelnet_txt(tmp_path, n_rows=20)
    _write_modelnet10(tmp_path)
    ds = ModelNet40(tmp_path, "train", num_categories=10, num_points=8)
    assert ds.classes == ["bathtub", "night_stand"] and ds.shape_ids == ["night_stand_0007", "bathtub_0004"]
    assert ds.labels.tolist() == [1, 0] and ds.num_classes == 2
    out = write_fps_cache(tmp_path, "train", num_points=8, num_categories=10)
    assert out == tmp_path / "modelnet10_train_8pts_fps.dat" == fps_cache_path(tmp_path, "train", 8, 10)
    pts, labs = pickle.loads(out.read_bytes())
    assert [int(lb[0]) for lb in labs] == [1, 0]
    np.testing.assert_array_equal(pts[0], _fps_rows(_rows(ds.paths[0]), "night_stand_0007", 8))
    # the cache built on demand for ModelNet10 is the ModelNet10 one
    te = ModelNet40(tmp_path, "test", source="fps_cache", num_categories=10, num_points=8, build_cache=True,
                    use_normals=True, shuffle=False)  # fmt: skip
    assert fps_cache_path(tmp_path, "test", 8, 10).is_file() and len(te) == 1 and te.labels.tolist() == [0]
    np.testing.assert_array_equal(te.raw_points(0), _fps_rows(_rows(tmp_path / "bathtub" / "bathtub_0006.txt"),
                                                              "bathtub_0006", 8))  # fmt: skip


# ------------------------------------------------------------------------------------------------ FPS cache file


def test_defaults_are_the_official_8192_points_seed_0(tmp_path):
    """One 8192-row shape: the text default, the cache writer's default and the cache reader's default agree."""
    write_modelnet_txt(tmp_path, n_rows=8)
    rows = np.random.default_rng(1).normal(size=(8192, 6)).astype(np.float32)
    np.savetxt(tmp_path / "xbox" / "xbox_0012.txt", rows, fmt="%.5f", delimiter=",")
    (tmp_path / "one_train.txt").write_text("xbox_0012\n")
    (tmp_path / "one_test.txt").write_text("xbox_0012\n")
    out = write_fps_cache(tmp_path, "test", split_file="one_{split}.txt")
    assert out == tmp_path / "modelnet40_test_8192pts_fps.dat" == fps_cache_path(tmp_path, "test")
    pts, labs = pickle.loads(out.read_bytes())
    assert len(pts) == 1 and pts[0].shape == (8192, 6) and labs[0].tolist() == [3]
    txt = ModelNet40(tmp_path, "test", split_file="one_{split}.txt", use_normals=True, cache_dir=tmp_path / "c")
    assert txt.num_points == 8192
    np.testing.assert_array_equal(txt.raw_points(0), pts[0])
    start = official_fps_start("xbox_0012", 8192, 0)
    full = _rows(txt.paths[0])
    np.testing.assert_array_equal(pts[0][:64], full[reference_fps(full[:, :3], 64, start)])
    cache = ModelNet40(tmp_path, "test", source="fps_cache", use_normals=True, shuffle=False)
    assert cache.num_points == 8192 and repr(cache).endswith("num_points=8192, use_normals=True)")
    np.testing.assert_array_equal(cache.raw_points(0), pts[0])


def test_write_fps_cache_options(tmp_path, monkeypatch):
    write_modelnet_txt(tmp_path, n_rows=12)
    (tmp_path / "a_train.txt").write_text("bathtub_0004\nairplane_0001\n")
    target = tmp_path / "elsewhere.dat"
    (tmp_path / "elsewhere.dat.tmp").write_bytes(b"torn")  # left by a run killed while writing
    # pickle protocol 4, readable by the official Python 3.7 loaders, also where pickle's default is 5 (Python
    # 3.14): the pure-Python pickler reads the module's DEFAULT_PROTOCOL when it is given none
    monkeypatch.setattr(pickle, "DEFAULT_PROTOCOL", 5)
    monkeypatch.setattr(pickle, "dump", pickle._dump)
    out = write_fps_cache(tmp_path, "train", num_points=12, seed=4, split_file="a_{split}.txt", out_path=target)
    assert out == target and not fps_cache_path(tmp_path, "train", 12).exists()
    assert sorted(p.name for p in tmp_path.glob("elsewhere*")) == ["elsewhere.dat"]  # the torn file was replaced
    assert target.read_bytes()[:2] == b"\x80\x04"
    pts, labs = pickle.loads(target.read_bytes())
    assert [int(lb[0]) for lb in labs] == [1, 0] and all(lb.dtype == np.int32 and lb.shape == (1,) for lb in labs)
    np.testing.assert_array_equal(pts[0], _fps_rows(_rows(tmp_path / "bathtub" / "bathtub_0004.txt"),
                                                    "bathtub_0004", 12, 4))  # fmt: skip
    assert pts[0].dtype == np.float32 and pts[0].flags["C_CONTIGUOUS"]
    # the cache stores normals: xyz-only text files are refused, naming the file
    path = tmp_path / "airplane" / "airplane_0001.txt"
    np.savetxt(path, np.ones((12, 3)), delimiter=",")
    assert raised(DataFormatError, lambda: write_fps_cache(tmp_path, "train", num_points=12)) == (
        f"{path}: rows hold 3 values, expected >= 6 (x,y,z,nx,ny,nz)"
    )
    np.savetxt(path, np.ones((11, 6)), delimiter=",")
    assert raised(DataFormatError, lambda: write_fps_cache(tmp_path, "train", num_points=12)) == (
        f"{path}: 11 points, fewer than num_points=12"
    )


def test_rows_with_more_than_six_values_keep_xyz_and_normals_only(tmp_path):
    write_modelnet_txt(tmp_path, n_rows=10)
    path = tmp_path / "xbox" / "xbox_0012.txt"
    rows = np.column_stack([_rows(path), np.full(10, 7.0, np.float32)])  # a trailing extra column (e.g. a label)
    np.savetxt(path, rows, fmt="%.6f", delimiter=",")
    ds = ModelNet40(tmp_path, "test", num_points=10, use_normals=True, sampling="first_rows", shuffle=False)
    np.testing.assert_array_equal(ds.raw_points(3), rows[:, :6])
    out = write_fps_cache(tmp_path, "test", num_points=10)
    assert pickle.loads(out.read_bytes())[0][3].shape == (10, 6)
    # an FPS cache whose clouds carry a seventh column gives six with normals, three without
    seven = [np.random.default_rng(1).normal(size=(5, 7)).astype(np.float32)]
    _cache(tmp_path, seven, [np.array([0], np.int32)], write_txt=False)
    for normals, width in ((True, 6), (False, 3)):
        c = ModelNet40(tmp_path, "train", source="fps_cache", num_points=4, use_normals=normals, shuffle=False)
        np.testing.assert_array_equal(c.raw_points(0), seven[0][:4, :width])


def _cache(root, points, labels, use_normals=False, num_points=4, write_txt=True):
    if write_txt:
        write_modelnet_txt(root)
    path = fps_cache_path(root, "train", num_points)
    path.write_bytes(pickle.dumps([points, labels]))
    return path, lambda: ModelNet40(root, "train", source="fps_cache", num_points=num_points, use_normals=use_normals)


def test_fps_cache_reader_values_and_keys(tmp_path):
    rng = np.random.default_rng(0)
    clouds = [rng.normal(size=(6, 6)).astype(np.float32) for _ in range(3)]
    path, load = _cache(tmp_path, clouds, [np.array([2], np.int32), np.array(3), [1]], use_normals=True)
    ds = load()
    assert ds.labels.tolist() == [2, 3, 1] and ds.num_points == 4 and ds.classes == MN_CLASSES
    np.testing.assert_array_equal(ds.raw_points(1), clouds[1][:4])
    assert ds.sample_keys() == content_keys(clouds) and ds.source_files() == []
    xyz_only = [c[:, :3].copy() for c in clouds]  # 3 columns are enough without normals
    _cache(tmp_path, xyz_only, [np.array([0], np.int32)] * 3, write_txt=False)
    np.testing.assert_array_equal(ModelNet40(tmp_path, "train", source="fps_cache", num_points=4,
                                             shuffle=False).raw_points(2), xyz_only[2][:4])  # fmt: skip
    # a float64 cache is cast to float32 before normalising, as the official loader (float32 clouds)
    wide = [rng.normal(size=(6, 6)) * 3 + 5 for _ in range(2)]
    _cache(tmp_path, wide, [np.array([1], np.int32)] * 2, write_txt=False)
    got = ModelNet40(tmp_path, "train", source="fps_cache", num_points=4, shuffle=False)[1]["points"].numpy()
    np.testing.assert_array_equal(got, pc_normalize(wide[1][:4, :3].astype(np.float32)))


def test_fps_cache_errors_in_full(tmp_path):
    ok = np.zeros((4, 6), np.float32)
    lab = np.array([0], np.int32)
    path, load = _cache(tmp_path, [ok], [lab, lab])
    want = f"{path}: expected a pickled [list_of_points, list_of_labels] of equal length, got list"
    assert raised(DataFormatError, load) == want
    path.write_bytes(pickle.dumps([[ok], [lab], [lab]]))
    assert raised(DataFormatError, load) == want
    path.write_bytes(pickle.dumps(([ok], 7)))
    assert raised(DataFormatError, load) == want.replace("got list", "got tuple")
    for bad in ([ok.tolist()], [np.zeros((4, 2), np.float32)], [np.zeros(4, np.float32)]):
        _cache(tmp_path, bad, [lab], write_txt=False)
        got = raised(DataFormatError, load)
        p = bad[0]
        desc = f"{type(p).__name__} {getattr(p, 'shape', '')} {getattr(p, 'dtype', '')}"
        assert got == f"{path}: points[0] must be a float (N, 6) array, got {desc}"
    _cache(tmp_path, [ok, np.zeros((3, 6), np.float32)], [lab, lab], write_txt=False)
    assert raised(DataFormatError, load) == f"{path}: points[1] has 3 points, fewer than 4"
    _, load_n = _cache(tmp_path, [ok, np.zeros((4, 5), np.float32)], [lab, lab], use_normals=True, write_txt=False)
    assert raised(DataFormatError, load_n) == f"{path}: points[1] has no normals (shape (4, 5)), use_normals=True"
    nan = ok.copy()
    nan[2, 1] = np.nan
    _cache(tmp_path, [ok, nan], [lab, lab], write_txt=False)
    assert raised(DataFormatError, load).startswith(f"{path} (points[1]): 1 row(s) with NaN/Inf coordinates")
    for lab_bad in (np.array([], np.int32), np.array([0, 0, 1, 0], np.int32)):  # none, or a one-hot vector
        _cache(tmp_path, [ok], [lab_bad], write_txt=False)
        got = raised(DataFormatError, load)
        assert got == f"{path}: labels must be arrays of shape (1,) (np.int32), one per shape"
    _cache(tmp_path, [ok], [np.array([4], np.int32)], write_txt=False)
    assert raised(DataFormatError, load) == (
        f"{path}: label 4 (sample 0) out of range: modelnet40_shape_names.txt define 4 classes (valid ids 0..3)"
    )
    (tmp_path / "modelnet40_shape_names.txt").unlink()
    names = tmp_path / "modelnet40_shape_names.txt"
    assert raised(DatasetNotFoundError, load) == str(
        missing_dataset("ModelNet40 shape names", tmp_path, [names], WHERE, LAYOUT_TXT)
    )
    path.unlink()
    assert raised(DatasetNotFoundError, load) == str(
        missing_dataset(
            "ModelNet40 FPS cache",
            tmp_path,
            [path],
            "build it from the text files with pointclora.datasets.write_fps_cache(root, 'train') or "
            f"ModelNet40(..., source='fps_cache', build_cache=True); text files: {WHERE}",
            LAYOUT_TXT,
        )
    )


def test_fps_cache_built_on_demand_follows_the_split_list(tmp_path):
    write_modelnet_txt(tmp_path, n_rows=10)
    (tmp_path / "a_test.txt").write_text("xbox_0012\n")
    ds = ModelNet40(tmp_path, "test", source="fps_cache", num_points=10, build_cache=True,
                    test_split_file="a_test.txt", use_normals=True)  # fmt: skip
    assert len(ds) == 1 and ds.labels.tolist() == [3]
    np.testing.assert_array_equal(ds.raw_points(0), _fps_rows(_rows(tmp_path / "xbox" / "xbox_0012.txt"),
                                                              "xbox_0012", 10))  # fmt: skip


# ------------------------------------------------------------------------------------------------ HDF5 source


def test_h5_samples_are_the_stored_clouds_not_normalised(tmp_path):
    write_modelnet_h5(tmp_path, n=(5, 3), points=32)
    ds = ModelNet40(tmp_path, "test", source="h5", use_normals=True, num_points=20)
    import h5py

    with h5py.File(tmp_path / "ply_data_test1.h5") as f:
        data, normal, label = f["data"][1], f["normal"][1], int(f["label"][1, 0])
    s = ds[4]  # file 1, row 1
    assert ds.shuffle is False and s["label"] == label
    np.testing.assert_array_equal(s["points"].numpy(), np.concatenate([data, normal], 1)[:20])
    assert ds.source_files() == [tmp_path / "ply_data_test0.h5", tmp_path / "ply_data_test1.h5"]
    assert ds.sample_keys()[4] == content_keys([np.concatenate([data, normal], 1)])[0]
    assert repr(ds) == (
        f"ModelNet40(root={str(tmp_path)!r}, split='test', samples=6, source='h5', num_points=20, use_normals=True)"
    )
    xyz = ModelNet40(tmp_path, "test", source="h5")
    assert xyz.num_points == 32 and xyz[4]["points"].shape == (32, 3)
    np.testing.assert_array_equal(xyz[4]["points"].numpy(), data)
    same = ModelNet40(tmp_path, "test", source="h5", num_points=32)  # num_points == stored: accepted
    assert same.num_points == 32


def test_h5_files_and_classes_arguments(tmp_path):
    write_modelnet_h5(tmp_path)
    ds = ModelNet40(tmp_path, "train", source="h5", files=["ply_data_test1.h5"], classes=list("abcd"))
    assert len(ds) == 3 and ds.classes == ["a", "b", "c", "d"]
    write_h5(tmp_path / "bad.h5", data=np.zeros((2, 8, 3), np.float32), label=np.array([1, 4]))
    got = raised(DataFormatError, lambda: ModelNet40(tmp_path, source="h5", files=["bad.h5"], classes=list("abcd")))
    assert got == (
        f"{tmp_path / 'bad.h5'} ('label'): label 4 (sample 1) out of range: the classes argument define 4 classes "
        "(valid ids 0..3)"
    )
    got = raised(DataFormatError, lambda: ModelNet40(tmp_path, source="h5", files=[]))
    assert got == "ModelNet40: the h5 files [] hold no shapes"


def test_h5_file_of_a_single_shape(tmp_path):
    write_modelnet_h5(tmp_path)
    one = np.random.default_rng(1).normal(size=(1, 8, 3)).astype(np.float32)
    write_h5(tmp_path / "one.h5", data=one, label=np.array([[2]], np.uint8))
    ds = ModelNet40(tmp_path, source="h5", files=["one.h5"])
    assert len(ds) == 1 and ds.num_points == 8 and ds.labels.tolist() == [2]
    np.testing.assert_array_equal(ds.raw_points(0), one[0])
    got = raised(DataFormatError, lambda: ModelNet40(tmp_path, source="h5", files=["one.h5"], num_points=9))
    assert got == f"{tmp_path / 'one.h5'}: clouds hold 8 points, fewer than num_points=9"


def test_h5_files_of_different_point_counts_are_refused(tmp_path):
    # num_points comes from the first file: a later file of shorter clouds is refused, not served short samples
    write_modelnet_h5(tmp_path)
    write_h5(tmp_path / "one.h5", data=np.zeros((1, 8, 3), np.float32), label=np.array([[2]], np.uint8))
    write_h5(tmp_path / "short.h5", data=np.zeros((2, 6, 3), np.float32), label=np.array([0, 1]))
    for n in (None, 7):
        got = raised(DataFormatError, lambda: ModelNet40(tmp_path, source="h5", files=["one.h5", "short.h5"],
                                                         num_points=n))  # fmt: skip
        assert got == (
            f"{tmp_path / 'short.h5'}: clouds hold 6 points, those of {tmp_path / 'one.h5'} 8; every h5 file of a "
            "split must hold the same number of points"
        )
    write_h5(tmp_path / "empty.h5", data=np.zeros((0, 8, 3), np.float32), label=np.zeros(0, np.int64))
    after_empty = ModelNet40(tmp_path, source="h5", files=["empty.h5", "short.h5"])  # a file of no shapes sets nothing
    assert len(after_empty) == 2 and after_empty.num_points == 6 and after_empty[1]["points"].shape == (6, 3)


def test_h5_errors_in_full(tmp_path):
    write_modelnet_h5(tmp_path)
    f = tmp_path / "x.h5"

    def load(**kw):
        return lambda: ModelNet40(tmp_path, source="h5", files=["x.h5"], **kw)

    write_h5(f, data=np.zeros((2, 8, 4), np.float32), label=np.zeros(2, np.int64))
    assert raised(DataFormatError, load()) == f"{f}: 'data' must be float (n, P, 3), got float32 (2, 8, 4)"
    write_h5(f, data=np.zeros((2, 8, 3), np.int16), label=np.zeros(2, np.int64))
    assert raised(DataFormatError, load()) == f"{f}: 'data' must be float (n, P, 3), got int16 (2, 8, 3)"
    for label in (np.zeros((2, 2), np.int64), np.zeros(3, np.int64)):
        write_h5(f, data=np.zeros((2, 8, 3), np.float32), label=label)
        assert raised(DataFormatError, load()) == (
            f"{f}: 'label' must be (n,) or (n, 1) with n=2, got {label.shape}"
        )
    write_h5(f, data=np.zeros((2, 8, 3), np.float32), label=np.zeros((2, 1), np.int64))
    want = f"{f}: use_normals=True needs a 'normal' dataset of shape (2, 8, 3)"
    assert raised(DataFormatError, load(use_normals=True)) == want
    write_h5(f, data=np.zeros((2, 8, 3), np.float32), label=np.zeros(2, np.int64), normal=np.zeros((2, 7, 3)))
    assert raised(DataFormatError, load(use_normals=True)) == want
    data = np.zeros((2, 8, 3), np.float32)
    data[1, 2, 0] = np.inf
    write_h5(f, data=data, label=np.zeros(2, np.int64))
    assert raised(DataFormatError, load()).startswith(f"{f}: 1 row(s) with NaN/Inf coordinates in 'data' (first at "
                                                      "row 10)")  # fmt: skip
    write_h5(f, data=np.zeros((2, 8, 3), np.float32), label=np.zeros(2, np.int64))
    assert raised(DataFormatError, load(num_points=9)) == f"{f}: clouds hold 8 points, fewer than num_points=9"
    (tmp_path / "ply_data_test1.h5").unlink()
    got = raised(DatasetNotFoundError, lambda: ModelNet40(tmp_path, "test", source="h5"))
    assert got == str(missing_dataset("ModelNet40 (HDF5 release)", tmp_path, [tmp_path / "ply_data_test1.h5"], WHERE,
                                      LAYOUT_H5))  # fmt: skip
    for name in ("shape_names.txt", "test_files.txt"):
        (tmp_path / name).unlink()
        got = raised(DatasetNotFoundError, lambda: ModelNet40(tmp_path, "test", source="h5"))
        assert got == str(missing_dataset("ModelNet40 (HDF5 release)", tmp_path, [tmp_path / name], WHERE, LAYOUT_H5))


def test_repr_of_the_text_source_names_sampling_and_seed(tmp_path):
    write_modelnet_txt(tmp_path)
    ds = ModelNet40(tmp_path, "test", num_points=16, sampling="first_rows", fps_seed=3)
    assert repr(ds) == (
        f"ModelNet40(root={str(tmp_path)!r}, split='test', samples=4, source='txt', num_points=16, "
        "use_normals=False, sampling='first_rows', fps_seed=3)"
    )
