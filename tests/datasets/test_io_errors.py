"""datasets/io.py: every malformed file gives a DataFormatError whose message names the file and says exactly what is
wrong (the text a user reads is checked whole, not only the exception type)."""

from __future__ import annotations

import gzip
import pickle
import re

import numpy as np
import pytest

from pointclora.datasets.io import (
    DataFormatError,
    DatasetNotFoundError,
    point_cloud_extensions,
    point_format,
    read_h5_arrays,
    read_lines,
    read_obj,
    read_off,
    read_pcd,
    read_point_cloud,
    register_point_format,
    safe_pickle_load,
    safe_pickle_loads,
    sample_mesh,
    unregister_point_format,
)


def _pcd(fields="x y z", size="4 4 4", types="F F F", count="1 1 1", n=2, mode="ascii", extra=""):
    lines = [f"FIELDS {fields}", f"SIZE {size}", f"TYPE {types}", f"COUNT {count}", f"POINTS {n}", extra,
             f"DATA {mode}"]  # fmt: skip
    return "\n".join(ln for ln in lines if ln) + "\n"


# (name, file name, content, message regex after "<path>: ")
CASES = [
    ("pcd no DATA", "a.pcd", "FIELDS x y z\nPOINTS 1\n", r"PCD header has no DATA line$"),
    ("pcd no FIELDS", "a.pcd", "POINTS 1\nDATA ascii\n1 2 3\n", r"malformed PCD header \(missing or bad 'FIELDS'\)$"),
    ("pcd bad POINTS", "a.pcd", _pcd(n="two"), r"malformed PCD header \(missing or bad invalid literal.*'two'\)$"),
    ("pcd no DATA mode", "a.pcd", "FIELDS x y z\nPOINTS 1\nDATA\n",
     r"malformed PCD header \(missing or bad list index out of range\)$"),
    ("pcd lengths", "a.pcd", _pcd(size="4 4"), r"PCD header FIELDS/SIZE/TYPE/COUNT lengths differ$"),
    ("pcd lengths type", "a.pcd", _pcd(types="F F"), r"PCD header FIELDS/SIZE/TYPE/COUNT lengths differ$"),
    ("pcd lengths count", "a.pcd", _pcd(count="1 1"), r"PCD header FIELDS/SIZE/TYPE/COUNT lengths differ$"),
    ("pcd no z", "a.pcd", _pcd("x y w") + "1 2 3\n4 5 6\n", r"PCD has no x y z fields \(FIELDS x y w\)$"),
    ("pcd ascii width", "a.pcd", _pcd() + "1 2 3 4\n5 6 7 8\n", r"PCD rows have 4 values, header declares 3$"),
    ("pcd ascii empty body", "a.pcd", _pcd(), r"PCD header declares 2 points, file holds 0$"),
    ("pcd bad type", "a.pcd", _pcd(types="F F X", mode="binary"), r"unsupported PCD TYPE/SIZE \('X', 4\)$"),
    ("pcd bad mode", "a.pcd", _pcd(mode="zipped"),
     r"unknown PCD DATA mode 'zipped' \(expected ascii, binary or binary_compressed\)$"),
    ("off not off", "m.off", "PLY\n3 1 0\n", r"not an OFF file \(first line 'PLY'\)$"),
    ("off empty", "m.off", "# only a comment\n\n", r"not an OFF file \(first line ''\)$"),
    ("off no counts", "m.off", "OFF\n", r"OFF header has no vertex/face counts$"),
    ("off bad counts", "m.off", "OFF\nthree 1 0\n0 0 0\n", r"bad OFF counts line 'three 1 0' \(expected 'V F E'\)$"),
    ("off bad vertex", "m.off", "OFF\n3 1 0\n0 0 0\n1 0 x\n0 1 0\n3 0 1 2\n",
     r"malformed OFF data line \(could not convert string to float: 'x'\)$"),
    ("off short vertex", "m.off", "OFF\n3 1 0\n0 0\n1 0\n0 1\n3 0 1 2\n",
     r"OFF vertex lines must hold 3 coordinates$"),
    ("off negative face", "m.off", "OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 -1 2\n",
     r"OFF face refers to vertex 2, mesh has 3 vertices$"),
    ("obj bad record", "m.obj", "v 0 0 0\nv 1 x 0\n",
     r"malformed OBJ record \(could not convert string to float: 'x'\)$"),
    ("obj face outside", "m.obj", "v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 4\n",
     r"OBJ face refers to a vertex outside 1\.\.3$"),
    ("obj face zero", "m.obj", "v 0 0 0\nv 1 0 0\nv 0 1 0\nf 0 1 2\n", r"OBJ face refers to a vertex outside 1\.\.3$"),
    ("obj no faces", "m.obj", "v 0 0 0\nv 1 0 0\n", r"mesh has no faces to sample$"),
    ("npy strings", "s.npy", None, r"\.npy holds dtype <U1, expected a numeric \(N, 3\+\) array$"),
    ("text comments only", "c.txt", "# x y z\n\n# nothing\n", r"empty point cloud \(no data rows\)$"),
    ("text two columns", "c.xyz", "1 2\n3 4\n",
     r"expected rows of at least 3 values \(x y z\), got array of shape \(2, 2\)$"),
    ("text inf", "c.pts", "# header\n1 2 3\n\n4 inf 6\n7 8 9\n-inf 1 1\n",
     r"2 row\(s\) with NaN/Inf coordinates \(first at row 1, line 4\); clean the file or drop those points$"),
    ("text bad cell", "c.txt", "1 2 3\n4 5 6\n7 8 nine\n", r"line 3, column 3: 'nine' is not a number \('7 8 nine'\)$"),
]


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_malformed_files_name_the_file_and_the_problem(tmp_path, case):
    _, name, content, pattern = case
    path = tmp_path / name
    if content is None:
        np.save(path, np.array(["a", "b", "c"]))
    else:
        path.write_text(content)
    with pytest.raises(DataFormatError) as info:
        read_point_cloud(path, num_points=8)
    assert re.fullmatch(re.escape(str(path)) + ": " + pattern, str(info.value)), str(info.value)


def test_pcd_binary_declaring_more_points_than_it_holds(tmp_path):
    path = tmp_path / "t.pcd"
    path.write_bytes(_pcd(n=3, mode="binary").encode() + np.zeros((3, 3), "<f4").tobytes()[:-1])
    with pytest.raises(DataFormatError, match=re.escape(f"{path}: truncated binary PCD: 35 bytes of data, 36 expected "
                                                        "for 3 points")):  # fmt: skip
        read_pcd(path)


def test_missing_files_say_what_was_looked_for(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=re.escape(f"split list not found: {tmp_path / 'l.txt'}")):
        read_lines(tmp_path / "l.txt", "split list")
    with pytest.raises(DatasetNotFoundError, match=re.escape(f"list file not found: {tmp_path / 'l.txt'}")):
        read_lines(tmp_path / "l.txt")
    with pytest.raises(DatasetNotFoundError, match=re.escape(f"file not found: {tmp_path / 'a.pcd'}")):
        read_point_cloud(tmp_path / "a.pcd")
    with pytest.raises(DatasetNotFoundError, match=re.escape(f"pickle file not found: {tmp_path / 'a.pkl'}")):
        safe_pickle_load(tmp_path / "a.pkl")
    with pytest.raises(DatasetNotFoundError, match=re.escape(f"HDF5 file not found: {tmp_path / 'a.h5'}")):
        read_h5_arrays(tmp_path / "a.h5", ["data"])
    (tmp_path / "folder.txt").mkdir()  # a directory is not a file
    with pytest.raises(DatasetNotFoundError, match="file not found"):
        read_point_cloud(tmp_path / "folder.txt")


def test_read_lines_strips_and_drops_blank_lines(tmp_path):
    (tmp_path / "l.txt").write_text("  a_0001 \n\n\tb_0002\n   \nc\n")
    assert read_lines(tmp_path / "l.txt") == ["a_0001", "b_0002", "c"]


def test_corrupt_pickle_and_gzip_are_format_errors(tmp_path):
    with pytest.raises(DataFormatError, match=r"^x\.pkl: corrupt or truncated pickle \((UnpicklingError|EOFError)"):
        safe_pickle_loads(pickle.dumps([1, 2, 3])[:-3], "x.pkl")
    with pytest.raises(DataFormatError, match=r"^<bytes>: corrupt or truncated pickle"):
        safe_pickle_loads(b"\x80\x04garbage")
    bad = tmp_path / "c.txt.gz"
    bad.write_bytes(gzip.compress(b"1 2 3\n")[:-4])
    with pytest.raises(DataFormatError, match=re.escape(f"{bad}: cannot read file (")):
        read_point_cloud(bad)


def test_register_point_format_checks_its_arguments_and_matches_case_insensitively(tmp_path):
    def read(path, n, seed):
        return np.full((n, 3), float(seed), np.float32)

    with pytest.raises(ValueError, match=r"^up_axis must be None, 'x', 'y' or 'z', got 'w'$"):
        register_point_format(".toy", read=read, up_axis="w")
    with pytest.raises(ValueError, match=r"^a point-file extension starts with '\.', got 'toy'$"):
        register_point_format("TOY", read=read)
    assert ".toy" not in point_cloud_extensions()
    register_point_format(".Toy", ".toy.GZ", read=read, up_axis="z")
    try:
        assert point_cloud_extensions()[-2:] == (".toy", ".toy.gz")  # lower case, in registration order
        assert point_format(tmp_path / "A.TOY.GZ") == (read, "z")
        (tmp_path / "a.TOY").write_bytes(b"")
        # a point reader gets num_points and seed: the defaults are 2048 and 0, else the values passed
        np.testing.assert_array_equal(read_point_cloud(tmp_path / "a.TOY"), np.zeros((2048, 3), np.float32))
        np.testing.assert_array_equal(read_point_cloud(tmp_path / "a.TOY", 5, seed=7), np.full((5, 3), 7.0))
    finally:
        unregister_point_format(".TOY", ".toy.gz")
    assert not {".toy", ".toy.gz"} & set(point_cloud_extensions())
    assert point_format("a.toy") is None
    assert point_format("a.pcd.gz").up_axis == "z" and point_format("a.NPY").up_axis is None
    assert point_format("scan.txt.gz") == point_format("scan.xyz")  # the longest suffix: .txt.gz, not .gz


def test_h5_optional_keys_and_missing_keys(tmp_path):
    h5py = pytest.importorskip("h5py")
    path = tmp_path / "a.h5"
    with h5py.File(path, "w") as f:
        f["data"] = np.arange(6, dtype=np.float32).reshape(2, 3)
        f["label"] = np.array([1, 0])
        f["normal"] = np.ones((2, 3))
    out = read_h5_arrays(path, ["data", "label"], ["normal", "mask"])
    assert sorted(out) == ["data", "label", "normal"]  # an absent optional key is left out, not an error
    np.testing.assert_array_equal(out["data"], np.arange(6).reshape(2, 3))
    assert out["normal"].shape == (2, 3) and out["label"].tolist() == [1, 0]
    assert sorted(read_h5_arrays(path, ["label"])) == ["label"]
    with pytest.raises(DataFormatError, match=re.escape(f"{path}: missing HDF5 dataset 'seg' (found keys: "
                                                        "['data', 'label', 'normal'])")):  # fmt: skip
        read_h5_arrays(path, ["data", "seg"])


def test_mesh_readers_refuse_bad_geometry(tmp_path):
    msg = r"^m\.off: 1 row\(s\) with NaN/Inf vertex coordinates \(first at row 1\)"
    with pytest.raises(DataFormatError, match=msg):
        sample_mesh(np.array([[0, 0, 0], [np.nan, 0, 0], [0, 1, 0]]), np.array([[0, 1, 2]]), 4, path="m.off")
    with pytest.raises(DataFormatError, match=r"^<mesh>: mesh has no faces to sample$"):
        sample_mesh(np.eye(3), np.zeros((0, 3), np.int64), 4)
    (tmp_path / "v.off").write_text("OFF\n3 0 0\n0 0 0\n1 0 0\n0 1 0\n")
    v, t = read_off(tmp_path / "v.off")
    assert v.shape == (3, 3) and t.shape == (0, 3)
    (tmp_path / "v.obj").write_text("v 0 0 0\n")
    v, t = read_obj(tmp_path / "v.obj")
    assert v.shape == (1, 3) and t.shape == (0, 3)
