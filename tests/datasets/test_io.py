import gzip
import os
import pickle

import numpy as np
import pytest

from pointclora.datasets.io import (
    DataFormatError,
    UnsafePickleError,
    read_off,
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
