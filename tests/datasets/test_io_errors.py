"""datasets/io.py: every malformed file gives a DataFormatError whose message names the file and says exactly what is
wrong (the text a user reads is checked whole, not only the exception type)."""

from __future__ import annotations

import gzip
import pickle
import re
import sys

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
    ("off long first line", "m.off", "ply format ascii 1.0 element vertex 8 property float x\n0 0 0\n",
     r"not an OFF file \(first line 'ply format ascii 1\.0 element vertex 8 pr'\)$"),  # the first 40 characters
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


def test_text_errors_quote_the_cell_and_the_line_cut_to_their_limits(tmp_path):
    cell, line = "n" * 35, " ".join(["1.5"] * 30)
    path = tmp_path / "long.txt"
    path.write_text(f"{line}\n{line[:-3]}{cell}\n")
    with pytest.raises(DataFormatError) as info:
        read_point_cloud(path)
    assert str(info.value) == f"{path}: line 2, column 30: {cell[:30]!r} is not a number ({(line[:-3] + cell)[:60]!r})"
    path.write_text(f"{line}\n{line} 2\n")
    with pytest.raises(DataFormatError) as info:
        read_point_cloud(path)
    assert str(info.value) == f"{path}: line 2: 31 values, the first data row has 30 ({(line + ' 2')[:60]!r})"
    # undecodable bytes and a comment with two '#' do not hide the line of the bad cell
    path.write_bytes(b"# a # b\n1 2 3 # c # d\n4 5 \xff\n")
    with pytest.raises(DataFormatError, match=re.escape(f"{path}: line 3, column 3: '\ufffd' is not a number")):
        read_point_cloud(path)


def test_point_and_mesh_files_with_one_element(tmp_path):
    np.save(tmp_path / "e.npy", np.zeros((0, 3), np.float32))
    with pytest.raises(DataFormatError, match=re.escape(f"{tmp_path / 'e.npy'}: empty point cloud (0 points)")):
        read_point_cloud(tmp_path / "e.npy")
    np.save(tmp_path / "one.npy", np.array([[1, 2, 3]], np.int16))  # one point, an integer dtype: accepted
    out = read_point_cloud(tmp_path / "one.npy")
    assert out.dtype == np.float32 and out.tolist() == [[1, 2, 3]]
    (tmp_path / "one.txt").write_text("1 2 3\n")
    assert read_point_cloud(tmp_path / "one.txt").tolist() == [[1, 2, 3]]
    (tmp_path / "num.txt").write_text("5\n")
    with pytest.raises(DataFormatError, match=re.escape("expected rows of at least 3 values (x y z), got array of "
                                                        "shape (1, 1)")):  # fmt: skip
        read_point_cloud(tmp_path / "num.txt")


def test_pcd_header_edge_cases(tmp_path):
    xyz = np.arange(6, dtype=np.float32).reshape(2, 3)
    # a leading blank line, a non-ASCII comment, and a newline after the binary data (as some writers leave)
    head = "\n# scan caf\xe9\n" + _pcd(n=2, mode="binary")
    (tmp_path / "a.pcd").write_bytes(head.encode("latin1") + xyz.tobytes() + b"\n")
    np.testing.assert_array_equal(read_pcd(tmp_path / "a.pcd"), xyz)
    # POINTS wins over WIDTH x HEIGHT
    (tmp_path / "b.pcd").write_text(_pcd(n=2, extra="WIDTH 5\nHEIGHT 7") + "1 2 3\n4 5 6\n")
    assert read_pcd(tmp_path / "b.pcd").tolist() == [[1, 2, 3], [4, 5, 6]]
    # a NaN coordinate names the PCD file
    (tmp_path / "n.pcd").write_text(_pcd(n=2) + "1 2 3\nnan 5 6\n")
    with pytest.raises(DataFormatError, match=re.escape(f"{tmp_path / 'n.pcd'}: 1 row(s) with NaN/Inf coordinates")):
        read_pcd(tmp_path / "n.pcd")
    # normals are moved next to xyz wherever they are declared; other fields keep their order after them
    (tmp_path / "o.pcd").write_text(_pcd("label normal_z x normal_x y normal_y z", "4 " * 7, "F " * 7, "1 " * 7, n=1) +
                                    "9 0.3 1 0.1 2 0.2 3\n")  # fmt: skip
    np.testing.assert_allclose(read_pcd(tmp_path / "o.pcd"), [[1, 2, 3, 0.1, 0.2, 0.3, 9]], rtol=1e-6)


def test_mesh_file_edge_cases(tmp_path):
    # an OFF with one face too few is truncated, not a mesh without that face
    (tmp_path / "t.off").write_text("OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n")
    with pytest.raises(DataFormatError, match="truncated OFF: header declares 3 vertices \\+ 1 faces, file has 3"):
        read_off(tmp_path / "t.off")
    # a face index equal to the vertex count is out of range
    (tmp_path / "i.off").write_text("OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 3\n")
    with pytest.raises(DataFormatError, match="OFF face refers to vertex 3, mesh has 3 vertices"):
        read_off(tmp_path / "i.off")
    (tmp_path / "i.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 0\n")
    with pytest.raises(DataFormatError, match=r"OBJ face refers to a vertex outside 1\.\.3"):
        read_obj(tmp_path / "i.obj")
    # extra values on a vertex line (colours, a w coordinate), non-ASCII names and comments, '#' twice on a line
    (tmp_path / "c.off").write_bytes("OFF\n# caf\xe9\n3 1 0\n0 0 0 255 0 0\n1 0 0 0 255 0\n0 1 0 9 9 9\n"
                                     "3 0 1 2 # face # one\n".encode("latin1"))  # fmt: skip
    v, t = read_off(tmp_path / "c.off")
    assert v.tolist() == [[0, 0, 0], [1, 0, 0], [0, 1, 0]] and t.tolist() == [[0, 1, 2]] and t.dtype == np.int64
    obj = "o Stuhl caf\xe9\nv 0 0 0 1.0\nv 2 0 0 1.0\nv 0 2 0 1.0\nf 1 2 3\n"
    (tmp_path / "c.obj").write_bytes(obj.encode("latin1"))
    v, t = read_obj(tmp_path / "c.obj")
    assert v.tolist() == [[0, 0, 0], [2, 0, 0], [0, 2, 0]] and t.tolist() == [[0, 1, 2]]
    (tmp_path / "v.off").write_text("OFF\n1 0 0\n0 0 0\n")
    assert read_off(tmp_path / "v.off")[1].dtype == np.int64  # no faces: still an integer (0, 3) array
    (tmp_path / "v.obj").write_text("v 0 0 0\n")
    assert read_obj(tmp_path / "v.obj")[1].dtype == np.int64 and read_obj(tmp_path / "v.obj")[0].dtype == np.float64


def test_mesh_normals_are_unit_for_small_faces_and_the_mesh_reader_passes_its_arguments(tmp_path):
    from pointclora.datasets.io import _read_mesh

    v = np.array([[0, 0, 0], [0.01, 0, 0], [0, 0.02, 0.0]])
    pts = sample_mesh(v, np.array([[0, 1, 2]]), 20, seed=1)
    np.testing.assert_allclose(pts[:, 3:], np.broadcast_to([0, 0, 1], (20, 3)), atol=1e-6)
    (tmp_path / "m.off").write_text("OFF\n3 1 0\n0 0 0\n1 0 0\n0 1 0\n3 0 1 2\n")
    # the built-in mesh readers are made by _read_mesh when the module is imported: called here so its lines run
    read = _read_mesh(read_off)
    np.testing.assert_array_equal(read(tmp_path / "m.off", 7, 5), sample_mesh(*read_off(tmp_path / "m.off"), 7, 5))
    (tmp_path / "z.off").write_text("OFF\n3 1 0\n0 0 0\n1 0 0\n2 0 0\n3 0 1 2\n")
    with pytest.raises(DataFormatError, match=re.escape(f"{tmp_path / 'z.off'}: mesh has zero surface area")):
        read(tmp_path / "z.off", 7, 5)


def test_open3d_files(tmp_path):
    o3d = pytest.importorskip("open3d")
    from pointclora.datasets.io import read_ply

    one = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.array([[1.0, 2, 3]])))
    o3d.io.write_point_cloud(str(tmp_path / "one.ply"), one)
    out = read_ply(tmp_path / "one.ply")
    assert out.dtype == np.float32 and out.tolist() == [[1, 2, 3]]
    mesh = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]])),
                                     o3d.utility.Vector3iVector(np.array([[0, 1, 2]])))  # fmt: skip
    o3d.io.write_triangle_mesh(str(tmp_path / "tri.ply"), mesh)
    pts = read_ply(tmp_path / "tri.ply")  # one face is a mesh; 2048 points with seed 0 by default
    tri = np.array([[0.0, 0, 0], [1, 0, 0], [0, 1, 0]])
    np.testing.assert_array_equal(pts, sample_mesh(tri, np.array([[0, 1, 2]]), 2048, 0))
    # num_points and seed reach the sampling, called directly or through read_point_cloud
    seeded = sample_mesh(tri, np.array([[0, 1, 2]]), 7, 5)
    np.testing.assert_array_equal(read_ply(tmp_path / "tri.ply", 7, seed=5), seeded)
    np.testing.assert_array_equal(read_point_cloud(tmp_path / "tri.ply", 7, seed=5), seeded)
    assert not np.array_equal(seeded, sample_mesh(tri, np.array([[0, 1, 2]]), 7, 0))
    flat = o3d.geometry.TriangleMesh(o3d.utility.Vector3dVector(np.array([[0.0, 0, 0], [1, 0, 0], [2, 0, 0]])),
                                     o3d.utility.Vector3iVector(np.array([[0, 1, 2]])))  # fmt: skip
    o3d.io.write_triangle_mesh(str(tmp_path / "flat.ply"), flat)
    with pytest.raises(DataFormatError, match=re.escape(f"{tmp_path / 'flat.ply'}: mesh has zero surface area")):
        read_ply(tmp_path / "flat.ply")
    pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.eye(3)))
    o3d.io.write_point_cloud(str(tmp_path / "c.pcd"), pc, compressed=True)
    (tmp_path / "c.pcd.gz").write_bytes(gzip.compress((tmp_path / "c.pcd").read_bytes()))
    with pytest.raises(DataFormatError, match=re.escape(f"{tmp_path / 'c.pcd.gz'}: Open3D cannot read gzip-compressed "
                                                        "files; gunzip it first")):  # fmt: skip
        read_point_cloud(tmp_path / "c.pcd.gz")


def test_check_finite_with_a_label_that_is_not_a_path():
    from pointclora.datasets.io import check_finite

    bad = np.array([[0.0, 0, 0], [np.inf, 0, 0]])
    for where in (None, 3):
        with pytest.raises(DataFormatError, match=rf"^{where}: 1 row\(s\) with NaN/Inf coordinates \(first at row 1\)"):
            check_finite(bad, where)


def test_text_delimiter_detection_skips_comments_and_every_text_suffix_has_line_numbers(tmp_path):
    from pointclora.datasets.io import text_line_of_row

    for head in ("# x, y, z\n", "   # indented, with a comma\n"):
        (tmp_path / "s.txt").write_text(head + "1 2 3\n4 5 6\n")
        assert read_point_cloud(tmp_path / "s.txt").tolist() == [[1, 2, 3], [4, 5, 6]]
    body = b"# c\n1 2 3\n\n4 5 6\n"
    for name in ("a.txt", "a.xyz", "a.pts", "a.txt.gz", "a.xyz.gz", "A.PTS"):
        (tmp_path / name).write_bytes(gzip.compress(body) if name.endswith(".gz") else body)
        assert text_line_of_row(tmp_path / name, 1) == 4, name


def test_unicode_python2_pickles_and_h5_errors(tmp_path):
    # SHORT_BINSTRING holding byte 0xe9, as Python 2 wrote str: decoded as latin-1, not refused
    assert safe_pickle_loads(b"U\x01\xe9.", "py2.pkl") == "\xe9"
    h5 = tmp_path / "g.h5"
    h5.write_bytes(b"not hdf5" * 64)
    with pytest.raises(DataFormatError, match=re.escape(f"{h5}: corrupt or truncated HDF5 file (OSError: ")):
        read_h5_arrays(h5, ["data"])


def test_longest_registered_suffix_wins(tmp_path):
    def read(path, n, seed):
        return np.ones((2, 3), np.float32)

    register_point_format(".ts", read=read, up_axis="y")
    try:
        assert point_format("a.pts").read is not read and point_format("a.ts") == (read, "y")
        assert point_format("a.PTS").up_axis is None
    finally:
        unregister_point_format(".ts", ".never-registered")  # an unknown extension is ignored
    assert point_format("a.ts") is None


def test_a_registered_extension_that_ends_in_another_one_wins_over_it(tmp_path):
    # ".ts" above is no suffix of ".pts" (the dot differs); here one extension really ends in another
    def read(path, n, seed):
        return np.full((2, 3), 5.0, np.float32)

    register_point_format(".labels.txt", ".gz", read=read, up_axis="x")
    try:
        assert point_format("scan.labels.txt") == (read, "x") and point_format("scan.txt").read is not read
        assert point_format("A.PCD.GZ").up_axis == "z" and point_format("a.gz") == (read, "x")
        (tmp_path / "s.labels.txt").write_text("1 2 3\n")
        np.testing.assert_array_equal(read_point_cloud(tmp_path / "s.labels.txt"), np.full((2, 3), 5.0))
    finally:
        unregister_point_format(".labels.txt", ".gz")


def test_unsupported_extension_lists_every_known_one(tmp_path):
    (tmp_path / "a.stl").write_text("solid")
    with pytest.raises(DataFormatError) as info:
        read_point_cloud(tmp_path / "a.stl")
    assert str(info.value) == (f"{tmp_path / 'a.stl'}: unsupported point-cloud extension '.stl'; supported: "
                               + ", ".join(point_cloud_extensions()))  # fmt: skip
    assert point_cloud_extensions()[:4] == (".pcd", ".pcd.gz", ".ply", ".off")


def test_obj_face_index_zero_is_refused_even_when_vertices_follow(tmp_path):
    # OBJ indices start at 1: a 0 is no vertex, not "the next one defined" (it used to read as a face on vertex 3)
    (tmp_path / "z.obj").write_text("v 0 0 0\nv 1 0 0\nf 0 1 2\nv 0 1 0\n")
    with pytest.raises(DataFormatError) as info:
        read_obj(tmp_path / "z.obj")
    assert str(info.value) == f"{tmp_path / 'z.obj'}: OBJ face refers to a vertex outside 1..3"
    # negative indices count back from the vertices defined so far, not from the end of the file
    (tmp_path / "r.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf -3 -2 -1\nv 5 5 5\nf -1 1 2 3\n")
    v, t = read_obj(tmp_path / "r.obj")
    assert len(v) == 4 and t.tolist() == [[0, 1, 2], [3, 0, 1], [3, 1, 2]]


def test_open3d_files_without_points_or_without_open3d_say_so(tmp_path, monkeypatch):
    empty = tmp_path / "e.ply"
    empty.write_text("ply\nformat ascii 1.0\nelement vertex 0\nproperty float x\nproperty float y\n"
                     "property float z\nend_header\n")  # fmt: skip
    packed = tmp_path / "c.pcd"
    packed.write_bytes(_pcd(n=3, mode="binary_compressed").encode() + b"garbage!" * 3)
    from pointclora.datasets.io import read_ply

    with monkeypatch.context() as m:
        m.setitem(sys.modules, "open3d", None)  # `import open3d` fails as if it were not installed
        with pytest.raises(DataFormatError) as info:
            read_pcd(packed)
        assert str(info.value) == f"{packed}: reading this file needs Open3D (pip install open3d-cpu)"
        with pytest.raises(DataFormatError) as info:
            read_ply(empty)
        assert str(info.value) == f"{empty}: reading PLY needs Open3D (pip install open3d-cpu)"
    pytest.importorskip("open3d")
    for path in (empty, packed):
        with pytest.raises(DataFormatError) as info:
            read_point_cloud(path)
        assert str(info.value) == f"{path}: Open3D read 0 points (unsupported or corrupt file)"


def test_obj_vertex_lines_with_fewer_than_three_coordinates_are_refused(tmp_path):
    # three 2-D vertices used to be read as two 3-D ones (six numbers reshaped to (2, 3)): a silently wrong mesh;
    # one short vertex among full ones was numpy's bare "inhomogeneous shape" ValueError
    for name, content, line in (("flat.obj", "v 0 0\nv 1 0\nv 0 1\nf 1 2 3\n", "v 0 0"),
                                ("one.obj", "v 0 0 0\nv 1 0\nv 0 1 0\nf 1 2 3\n", "v 1 0")):  # fmt: skip
        path = tmp_path / name
        path.write_text(content)
        for read in (read_obj, read_point_cloud):
            with pytest.raises(DataFormatError) as info:
                read(path)
            assert str(info.value) == f"{path}: malformed OBJ record (vertex line {line!r} holds 2 coordinates, not 3)"


def test_a_compressed_pcd_with_a_nan_point_names_the_file(tmp_path):
    o3d = pytest.importorskip("open3d")
    cloud = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.array([[0.0, 0, 0], [np.nan, 1, 2], [1, 1, 1]])))
    path = tmp_path / "n.pcd"
    o3d.io.write_point_cloud(str(path), cloud, compressed=True)
    assert b"DATA binary_compressed" in path.read_bytes()
    for read in (read_pcd, read_point_cloud):
        with pytest.raises(DataFormatError) as info:
            read(path)
        assert str(info.value) == (f"{path}: 1 row(s) with NaN/Inf coordinates (first at row 1); clean the file or "
                                   "drop those points")
