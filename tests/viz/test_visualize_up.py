"""visualize draws each input with its dataset's up axis by default (ModelNet10 meshes/PCDs are z-up)."""

import numpy as np
from viz_helpers import sphere

from pointclora.cli import visualize
from pointclora.datasets import ModelNet40, ShapeNetPart

SMALL = ["--width", "160", "--height", "120", "--backend", "matplotlib"]


def test_default_up_by_dataset_and_format():
    assert ModelNet40.up_axis == "y" and ShapeNetPart.up_axis == "y"
    assert visualize.default_up("chair_0001.pcd") == "z" and visualize.default_up("a.OFF") == "z"
    assert visualize.default_up("airplane_0001.txt.gz") == "y" and visualize.default_up("x.npy") == "y"

    class _Z:
        up_axis = "z"

    assert visualize.default_up("anything.txt", _Z()) == "z"


def _write_pcd(path, pts):
    header = ("# .PCD v0.7\nVERSION 0.7\nFIELDS x y z\nSIZE 4 4 4\nTYPE F F F\nCOUNT 1 1 1\n"
              f"WIDTH {len(pts)}\nHEIGHT 1\nVIEWPOINT 0 0 0 1 0 0 0\nPOINTS {len(pts)}\nDATA ascii\n")  # fmt: skip
    path.write_text(header + "\n".join(" ".join(f"{v:.5f}" for v in p) for p in pts) + "\n")


def test_pcd_file_and_folder_dataset_default_to_z(tmp_path, capsys):
    pcd = tmp_path / "chair_0001.pcd"
    _write_pcd(pcd, sphere(300))
    assert visualize.main([str(pcd), "--out", str(tmp_path / "a.png"), *SMALL]) == 0
    assert "up axis z (default for this input; --up to change)" in capsys.readouterr().out
    assert visualize.main([str(pcd), "--up", "y", "--out", str(tmp_path / "b.png"), *SMALL]) == 0
    out = capsys.readouterr().out
    assert "up axis y," in out and "default for this input" not in out
    root = tmp_path / "mn10"
    for c in ("bed", "chair"):
        (root / c / "test").mkdir(parents=True)
        _write_pcd(root / c / "test" / f"{c}_1.pcd", sphere(200))
    cfg = tmp_path / "mn10.yaml"
    cfg.write_text(f"name: folder\nroot: {root}\nnum_points: 128\n")
    assert visualize.main([str(cfg), "--index", "0", "--out", str(tmp_path / "c.png"), *SMALL]) == 0
    assert "up axis z (default" in capsys.readouterr().out


def test_text_cloud_defaults_to_y(tmp_path, capsys):
    p = tmp_path / "airplane_0001.txt"
    np.savetxt(p, np.column_stack([sphere(300), sphere(300)]), delimiter=",", fmt="%.5f")
    assert visualize.main([str(p), "--out", str(tmp_path / "d.png"), *SMALL]) == 0
    assert "up axis y (default" in capsys.readouterr().out
