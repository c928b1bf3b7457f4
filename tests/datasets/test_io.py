import gzip
import os
import pickle
import re

import numpy as np
import pytest

from pointclora.datasets.io import (
    DataFormatError,
    UnsafePickleError,
    read_off,
    read_pcd,
    read_point_cloud,
    safe_pickle_load,
    safe_pickle_loads,
    sample_mesh,
)


def _pcd_header(fields, n, mode, size=None, types=None):
    k = len(fields)
    return (
        f"# .PCD v0.7\nVERSION 0.7\nFIELDS {' '.join(fields)}\nSIZE {' '.join(size or ['4'] * k)}\n"
        f"TYPE {' '.join(types or ['F'] * k)}\nCOUNT {' '.join(['1'] * k)}\nWIDTH {n}\nHEIGHT 1\n"
        f"VIEWPOINT 0 0 0 1 0 0 0\nPOINTS {n}\nDATA {mode}\n"
    )


def test_pcd_binary_ascii_gz_agree(tmp_path):
    rng = np.random.default_rng(0)
    xyz = rng.normal(size=(10, 3)).astype(np.float32)
    (tmp_path / "b.pcd").write_bytes(_pcd_header("x y z".split(), 10, "binary").encode() + xyz.tobytes())
    (tmp_path / "a.pcd").write_text(
        _pcd_header("x y z".split(), 10, "ascii") + "\n".join(" ".join(f"{v:.9g}" for v in r) for r in xyz) + "\n"
    )
    (tmp_path / "a.pcd.gz").write_bytes(gzip.compress((tmp_path / "a.pcd").read_bytes()))
    for name in ("b.pcd", "a.pcd", "a.pcd.gz"):
        out = read_point_cloud(tmp_path / name)
        assert out.dtype == np.float32 and out.shape == (10, 3)
        np.testing.assert_allclose(out, xyz, rtol=1e-6)


def test_pcd_binary_mixed_types_drops_rgb_and_moves_normals_after_xyz(tmp_path):
    n = 5
    dt = np.dtype(
        [
            ("rgb", "<f4"),
            ("x", "<f4"),
            ("y", "<f4"),
            ("z", "<f4"),
            ("normal_x", "<f4"),
            ("normal_y", "<f4"),
            ("normal_z", "<f4"),
            ("label", "<u2"),
        ]
    )
    rec = np.zeros(n, dt)
    for i, f in enumerate(["x", "y", "z", "normal_x", "normal_y", "normal_z"]):
        rec[f] = np.arange(n) + 10 * i
    rec["label"] = 7
    rec["rgb"] = 1e-38
    head = _pcd_header(list(dt.names), n, "binary", size=["4"] * 7 + ["2"], types=["F"] * 7 + ["U"])
    (tmp_path / "m.pcd").write_bytes(head.encode() + rec.tobytes())
    out = read_point_cloud(tmp_path / "m.pcd")
    assert out.shape == (5, 7)
    np.testing.assert_array_equal(out[:, 0], np.arange(5))
    np.testing.assert_array_equal(out[:, 5], np.arange(5) + 50)
    np.testing.assert_array_equal(out[:, 6], 7)


def test_text_comma_space_gz(tmp_path):
    a = np.arange(12, dtype=np.float32).reshape(4, 3)
    np.savetxt(tmp_path / "c.txt", a, delimiter=",")
    np.savetxt(tmp_path / "s.xyz", a, delimiter=" ")
    (tmp_path / "g.txt.gz").write_bytes(gzip.compress((tmp_path / "c.txt").read_bytes()))
    np.save(tmp_path / "n.npy", a.astype(np.float64))
    for name in ("c.txt", "s.xyz", "g.txt.gz", "n.npy"):
        out = read_point_cloud(tmp_path / name)
        assert out.dtype == np.float32
        np.testing.assert_array_equal(out, a)


def test_off_malformed_header_and_area_weighted_sampling(tmp_path):
    # A 2x1 rectangle (two triangles) and a tiny far-away triangle: samples follow area.
    body = "OFF7 3 0\n0 0 0\n2 0 0\n2 1 0\n0 1 0\n10 10 10\n10.001 10 10\n10 10.001 10\n3 0 1 2\n3 0 2 3\n3 4 5 6\n"
    (tmp_path / "m.off").write_text(body)
    v, t = read_off(tmp_path / "m.off")
    assert v.shape == (7, 3) and t.shape == (3, 3)
    pts = read_point_cloud(tmp_path / "m.off", num_points=500)
    assert pts.shape == (500, 6)
    assert (pts[:, 0] < 5).all()  # the far triangle has ~1e-7 of the area
    assert np.allclose(np.abs(pts[:, 5]), 1)  # face normals of the z=0 plane
    np.testing.assert_array_equal(pts, read_point_cloud(tmp_path / "m.off", num_points=500))  # fixed seed
    # a quad face is fan-triangulated, the normal header works too
    (tmp_path / "q.off").write_text("OFF\n4 1 0\n0 0 0\n1 0 0\n1 1 0\n0 1 0\n4 0 1 2 3\n")
    q = read_point_cloud(tmp_path / "q.off", num_points=2000)
    assert 0.4 < q[:, 0].mean() < 0.6 and 0.4 < q[:, 1].mean() < 0.6


def test_obj_and_ply(tmp_path):
    (tmp_path / "t.obj").write_text("v 0 0 0\nv 1 0 0\nv 0 1 0\nf 1 2 3\n")
    o = read_point_cloud(tmp_path / "t.obj", num_points=100)
    assert o.shape == (100, 6) and (o[:, 0] + o[:, 1] <= 1 + 1e-6).all()
    o3d = pytest.importorskip("open3d")
    pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(np.eye(3)))
    o3d.io.write_point_cloud(str(tmp_path / "c.ply"), pc)
    np.testing.assert_allclose(read_point_cloud(tmp_path / "c.ply"), np.eye(3))
    mesh = o3d.geometry.TriangleMesh.create_box()
    o3d.io.write_triangle_mesh(str(tmp_path / "box.ply"), mesh)
    b = read_point_cloud(tmp_path / "box.ply", num_points=300)
    assert b.shape == (300, 6) and b[:, :3].min() >= -1e-6 and b[:, :3].max() <= 1 + 1e-6


def test_read_ply_cloud_with_normals_is_float32_xyz_then_normals(tmp_path):
    o3d = pytest.importorskip("open3d")
    from pointclora.datasets.io import read_ply

    xyz = np.array([[0.1, 0.2, 0.3], [1.0, 2.0, 3.0]])
    nrm = np.array([[0.1, 0.7, 0.3], [0.0, 0.0, 1.0]])  # 0.1, 0.7, 0.3 are not float32 values: kept at float32
    pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(xyz))
    pc.normals = o3d.utility.Vector3dVector(nrm)
    o3d.io.write_point_cloud(str(tmp_path / "n.ply"), pc)
    out = read_ply(tmp_path / "n.ply")  # the reader itself, as a user may call it, not only read_point_cloud
    assert out.dtype == np.float32 and out.flags.c_contiguous
    np.testing.assert_array_equal(out, np.hstack([xyz, nrm]).astype(np.float32))


def test_sample_mesh_zero_area_is_an_error():
    with pytest.raises(DataFormatError, match="zero surface area"):
        sample_mesh(np.zeros((3, 3)), np.array([[0, 1, 2]]), 10)


def test_safe_pickle_roundtrip_plain_data(tmp_path):
    obj = [
        [np.zeros((4, 6), np.float32), np.arange(3)],
        [np.array([5], np.int32)],
        {"a": (1, 2.5, "s", None, True)},
        np.float32(3.0),
        np.dtype("int64"),
    ]
    for proto in (2, 4, 5):
        p = tmp_path / f"p{proto}.pkl"
        p.write_bytes(pickle.dumps(obj, protocol=proto))
        out = safe_pickle_load(p)
        np.testing.assert_array_equal(out[0][0], obj[0][0])
        assert out[1][0].dtype == np.int32 and out[2] == obj[2] and out[4] == np.dtype("int64")


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_safe_pickle_refuses_code_execution(tmp_path):
    marker = tmp_path / "pwned"
    p = tmp_path / "evil.dat"
    p.write_bytes(pickle.dumps([[_Evil(marker)], [np.zeros(1)]]))
    with pytest.raises(UnsafePickleError, match=r"evil\.dat.*refusing to unpickle global '(posix|os|nt)\.system'"):
        safe_pickle_load(p)
    assert not marker.exists()
    # sanity: the plain unpickler would have run it, so the test above can fail
    pickle.loads(p.read_bytes())
    assert marker.exists()


def test_safe_pickle_refuses_builtins_eval():
    data = b"cbuiltins\neval\n(S'1+1'\ntR."
    with pytest.raises(UnsafePickleError, match="builtins.eval"):
        safe_pickle_loads(data, "x.pkl")


def test_pcd_header_defaults_counts_and_columns(tmp_path):
    # No POINTS (WIDTH x HEIGHT counts), no SIZE/TYPE/COUNT (4-byte floats, one value each), comments and blank lines
    # in the header, upper-case DATA mode: every default of the header is taken.
    xyz = np.arange(12, dtype=np.float32).reshape(4, 3) - 5
    head = "# .PCD v0.7\n\nFIELDS x y z\nWIDTH 2\nHEIGHT 2\nDATA BINARY\n"
    (tmp_path / "d.pcd").write_bytes(head.encode() + xyz.tobytes())
    np.testing.assert_array_equal(read_pcd(tmp_path / "d.pcd"), xyz)
    # A field with COUNT 3 keeps its three values, in order, after xyz; a lone normal_x is just another field;
    # doubles and signed ints are converted; padding '_' and rgba are dropped.
    n = 3
    dt = np.dtype([("z", "<f8"), ("feat", "<i2", (3,)), ("x", "<f8"), ("normal_x", "<f4"), ("_", "<u1"),
                   ("rgba", "<u4"), ("y", "<f8")])  # fmt: skip
    rec = np.zeros(n, dt)
    rec["x"], rec["y"], rec["z"] = np.arange(n) + 0.5, np.arange(n) + 10.25, -np.arange(n) - 1.0
    rec["feat"] = np.array([[1, -2, 3], [4, 5, -6], [7, 8, 9]])
    rec["normal_x"], rec["_"], rec["rgba"] = 0.75, 255, 123456
    head = _pcd_header(list(dt.names), n, "binary", size="8 2 8 4 1 4 8".split(), types="F I F F U U F".split())
    head = head.replace("COUNT 1 1 1 1 1 1 1", "COUNT 1 3 1 1 1 1 1")
    (tmp_path / "m.pcd").write_bytes(head.encode() + rec.tobytes())
    want = np.column_stack([rec["x"], rec["y"], rec["z"], rec["feat"], rec["normal_x"]]).astype(np.float32)
    np.testing.assert_array_equal(read_point_cloud(tmp_path / "m.pcd"), want)
    # the same table in ascii
    rows = "\n".join(" ".join(f"{v:g}" for v in (r["z"], *r["feat"], r["x"], r["normal_x"], r["_"], r["rgba"], r["y"]))
                     for r in rec)  # fmt: skip
    (tmp_path / "m_ascii.pcd").write_text(head.replace("DATA binary", "DATA ascii") + rows + "\n")
    np.testing.assert_array_equal(read_point_cloud(tmp_path / "m_ascii.pcd"), want)


def test_pcd_binary_compressed_goes_through_open3d(tmp_path):
    o3d = pytest.importorskip("open3d")
    pts = np.random.default_rng(1).normal(size=(20, 3))
    nrm = pts / np.linalg.norm(pts, axis=1, keepdims=True)
    pc = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(pts))
    pc.normals = o3d.utility.Vector3dVector(nrm)
    o3d.io.write_point_cloud(str(tmp_path / "c.pcd"), pc, compressed=True)
    assert b"DATA binary_compressed" in (tmp_path / "c.pcd").read_bytes()[:400]
    out = read_point_cloud(tmp_path / "c.pcd")
    assert out.dtype == np.float32 and out.shape == (20, 6)
    np.testing.assert_allclose(out, np.hstack([pts, nrm]), rtol=1e-6, atol=1e-6)


def test_text_points_delimiter_columns_comments_and_line_numbers(tmp_path):
    from pointclora.datasets.io import check_finite, read_text_points, text_line_of_row

    path = tmp_path / "t.txt"
    path.write_text("# x;y;z;label\n1;2;3;7\n\n4;5;6;8  # a trailing comment\n")
    np.testing.assert_array_equal(read_text_points(path, delimiter=";"), [[1, 2, 3, 7], [4, 5, 6, 8]])
    np.testing.assert_array_equal(read_text_points(path, delimiter=";", usecols=(0, 3)), [[1, 7], [4, 8]])
    assert read_text_points(path, delimiter=";").dtype == np.float32
    # a bad cell in a column that is not read is no error; in one that is, the message names line and column
    path.write_text("1;2;3;x\n4;5;y;8\n")
    np.testing.assert_array_equal(read_text_points(path, ";", usecols=(0, 1)), [[1, 2], [4, 5]])
    with pytest.raises(DataFormatError, match=re.escape(f"{path}: line 2, column 3: 'y' is not a number ('4;5;y;8')")):
        read_text_points(path, ";", usecols=(0, 2))
    # data rows are counted past comments and blank lines; other files have no line numbers
    path.write_text("# head\n\n1 2 3\n# mid\n4 5 6\n\n7 8 9\n")
    assert [text_line_of_row(path, r) for r in range(4)] == [3, 5, 7, None]
    gz = tmp_path / "t.xyz.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    assert text_line_of_row(gz, 2) == 7 and text_line_of_row(tmp_path / "t.npy", 0) is None
    assert text_line_of_row(tmp_path / "absent.pts", 0) is None
    bad = np.array([[1.0, 2, 3], [4, 5, 6], [np.nan, 8, 9]])
    with pytest.raises(DataFormatError, match=re.escape(f"{path}: 1 row(s) with NaN/Inf normals (first at row 2, "
                                                        "line 7)")):  # fmt: skip
        check_finite(bad, path, "normals")
    with pytest.raises(DataFormatError, match=r"^cache\[3\]: 1 row\(s\) with NaN/Inf coordinates \(first at row 2\);"):
        check_finite(bad, "cache[3]")
    assert check_finite(np.zeros((0, 3)), path) .shape == (0, 3)


def test_sample_mesh_is_uniform_on_the_surface_with_unit_face_normals():
    # A triangle of area 2*sqrt(2) tilted about x and a unit square (area 1) in the plane x = 3: a share
    # 1 / (1 + 2 sqrt 2) of the samples on the square; points inside their face; unit face normals; seeded.
    v = np.array([[0, 0, 1], [2, 0, 1], [0, 2, 3], [3, 0, 0], [3, 1, 0], [3, 1, 1], [3, 0, 1]], dtype=np.float64)
    t = np.array([[0, 1, 2], [3, 4, 5], [3, 5, 6]])
    pts = sample_mesh(v, t, 6000, seed=3)
    assert pts.shape == (6000, 6) and pts.dtype == np.float32
    on_square = np.isclose(pts[:, 0], 3)
    assert abs(on_square.mean() - 1 / (1 + 2 * np.sqrt(2))) < 0.02
    tri, sq = pts[~on_square], pts[on_square]
    n_tri = np.cross(v[1] - v[0], v[2] - v[0])
    n_tri /= np.linalg.norm(n_tri)
    np.testing.assert_allclose(tri[:, 3:], np.broadcast_to(n_tri, tri[:, 3:].shape), atol=1e-6)
    np.testing.assert_allclose(sq[:, 3:], np.broadcast_to([1, 0, 0], sq[:, 3:].shape), atol=1e-6)
    np.testing.assert_allclose((tri[:, :3] - v[0]) @ n_tri, 0, atol=1e-5)  # in the triangle's plane
    assert (tri[:, 0] >= -1e-6).all() and (tri[:, 0] / 2 + (tri[:, 2] - 1) / 2 <= 1 + 1e-5).all()
    assert (sq[:, 1:3] >= -1e-6).all() and (sq[:, 1:3] <= 1 + 1e-6).all()
    # uniform: on the square each quarter gets a quarter; on the triangle the mean is the centroid
    assert abs((sq[:, 1] < 0.5).mean() - 0.5) < 0.04 and abs((sq[:, 2] < 0.5).mean() - 0.5) < 0.04
    np.testing.assert_allclose(tri[:, :3].mean(0), v[:3].mean(0), atol=0.05)
    np.testing.assert_array_equal(pts, sample_mesh(v, t, 6000, seed=3))
    assert not np.array_equal(pts, sample_mesh(v, t, 6000, seed=4))
    np.testing.assert_array_equal(sample_mesh(v, t, 50), sample_mesh(v, t, 50, seed=0))  # the default seed is 0


def test_obj_faces_polygons_negative_and_slashed_indices(tmp_path):
    from pointclora.datasets.io import read_obj

    (tmp_path / "q.obj").write_text(
        "# a quad as 'v/vt/vn', then the same quad with negative (relative) indices\n"
        "v 0 0 0\nv 1 0 0\nv 1 1 0\nv 0 1 0\nvn 0 0 1\n\nf 1/1/1 2/2/1 3//1 4\nf -4 -3 -2 -1\n"
    )
    v, t = read_obj(tmp_path / "q.obj")
    np.testing.assert_array_equal(v, [[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]])
    assert t.tolist() == [[0, 1, 2], [0, 2, 3], [0, 1, 2], [0, 2, 3]]
    # an OFF pentagon is fan-triangulated from its first vertex; '#' comments and a colour after the indices are ok
    (tmp_path / "p.off").write_text("OFF # header\n5 1 0\n0 0 0\n1 0 0\n2 1 0\n1 2 0\n0 1 0\n5 0 1 2 3 4 255 0 0\n")
    v, t = read_off(tmp_path / "p.off")
    assert v.shape == (5, 3) and t.tolist() == [[0, 1, 2], [0, 2, 3], [0, 3, 4]]


def test_safe_pickle_allows_every_plain_type_and_numpy_scalar_types_only():
    from collections import OrderedDict

    obj = {
        "types": [np.float32, np.int64, np.uint8, np.bool_],
        "bytes": b"\x00\xffraw",
        "containers": (OrderedDict(a=1), {1, 2}, frozenset({3}), bytearray(b"ab"), range(2, 5), slice(1, 4)),
        "numbers": (1 + 2j, 2**70, -0.5, False),
        "arrays": [np.arange(4, dtype=np.uint16).reshape(2, 2), np.array(["ab", "c"]), np.float64(2.5)],
    }
    for proto in (2, 5):
        out = safe_pickle_loads(pickle.dumps(obj, protocol=proto), "ok.pkl")
        assert out["types"] == obj["types"] and out["bytes"] == obj["bytes"]
        assert out["containers"] == obj["containers"] and out["numbers"] == obj["numbers"]
        assert out["arrays"][0].dtype == np.uint16 and out["arrays"][0].tolist() == [[0, 1], [2, 3]]
        assert out["arrays"][1].tolist() == ["ab", "c"] and out["arrays"][2] == 2.5
    # protocol 2 names the builtins "__builtin__" (set, complex, xrange, ...) and numpy 2 names np.bool_ "numpy.bool":
    # both were refused as unsafe before; the Python 2 name of eval still is
    for module, name in (("numpy", "load"), ("numpy", "float128x"), ("collections", "Counter"), ("os", "getcwd"),
                         ("__builtin__", "eval"), ("__builtin__", "getattr")):  # fmt: skip
        with pytest.raises(UnsafePickleError, match=re.escape(f"bad.pkl: refusing to unpickle global '{module}.{name}'"
                                                              ": only plain containers, numbers, strings and numpy "
                                                              "arrays are allowed in dataset pickles")):  # fmt: skip
            safe_pickle_loads(f"c{module}\n{name}\n.".encode(), "bad.pkl")
