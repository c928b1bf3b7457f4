"""Openness: a new point-file format is registered in ONE place (this file, no library edit) and is then read by
``read_point_cloud``, by a folder dataset, and by ``tools/visualize.py`` (with the up axis the format declares)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from pointclora.datasets import PointCloudFolder
from pointclora.datasets.io import (
    DataFormatError,
    point_cloud_extensions,
    read_point_cloud,
    register_point_format,
    unregister_point_format,
)

EXT = ".f32pts"  # a toy binary format: a little-endian uint32 count, then count x 3 float32 coordinates


def _write(path: Path, points: np.ndarray) -> None:
    pts = np.ascontiguousarray(points, dtype="<f4")
    path.write_bytes(np.uint32(len(pts)).astype("<u4").tobytes() + pts.tobytes())


def _read(path: Path, _num_points: int, _seed: int) -> np.ndarray:
    raw = path.read_bytes()
    n = int(np.frombuffer(raw[:4], dtype="<u4")[0])
    if len(raw) != 4 + 12 * n:
        raise DataFormatError(f"{path}: header says {n} points, the file holds {(len(raw) - 4) / 12:g}")
    return np.frombuffer(raw[4:], dtype="<f4").reshape(n, 3).copy()


@pytest.fixture
def toy_format():
    register_point_format(EXT, read=_read, up_axis="x")
    yield EXT
    unregister_point_format(EXT)


def _cloud(seed: int, n: int = 300) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(n, 3)) * [1.0, 0.5, 0.25]).astype(np.float32)


def test_unregistered_extension_is_refused_naming_the_known_ones(tmp_path):
    path = tmp_path / f"a{EXT}"
    _write(path, _cloud(0))
    with pytest.raises(DataFormatError, match=r"unsupported point-cloud extension '\.f32pts'; supported: \.pcd"):
        read_point_cloud(path)


def test_registered_format_is_read_by_reader_and_folder_dataset(tmp_path, toy_format):
    assert toy_format in point_cloud_extensions()
    clouds = {}
    for c, cls in enumerate(("cone", "cube")):
        for split in ("train", "test"):
            for i in range(2):
                pts = _cloud(10 * c + 3 * (split == "test") + i)
                folder = tmp_path / "data" / cls / split
                folder.mkdir(parents=True, exist_ok=True)
                _write(folder / f"{cls}_{i}{EXT.upper()}", pts)  # extensions match case-insensitively
                clouds[(cls, split, i)] = pts
    one = tmp_path / "data" / "cone" / "train" / f"cone_0{EXT.upper()}"
    np.testing.assert_array_equal(read_point_cloud(one), clouds[("cone", "train", 0)])
    ds = PointCloudFolder(tmp_path / "data", split="train", normalize=False)
    assert ds.classes == ["cone", "cube"] and len(ds) == 4
    samples = [ds[i] for i in range(4)]
    got = sorted((int(s["label"]), np.asarray(s["points"])[:, :3].round(5).tobytes()) for s in samples)
    want = sorted((c, clouds[(cls, "train", i)].round(5).tobytes()) for c, cls in enumerate(("cone", "cube"))
                  for i in range(2))  # fmt: skip
    assert got == want


def test_registered_format_is_drawn_by_visualize_with_its_up_axis(tmp_path, toy_format, capsys):
    pytest.importorskip("matplotlib")
    from pointclora.cli import visualize

    path = tmp_path / f"ball{EXT}"
    _write(path, _cloud(7, 500))
    out = tmp_path / "ball.png"
    assert visualize.main([str(path), "--out", str(out), "--width", "160", "--height", "120",
                           "--backend", "matplotlib"]) == 0  # fmt: skip
    printed = capsys.readouterr().out
    assert "500 points" in printed and "up axis x (default for this input" in printed
    assert out.is_file() and out.stat().st_size > 1000
    broken = tmp_path / f"broken{EXT}"
    broken.write_bytes(np.uint32(10).astype("<u4").tobytes() + b"\0" * 12)
    assert visualize.main([str(broken), "--out", str(tmp_path / "b.png")]) == 2
    assert capsys.readouterr().err.startswith(f"error: {broken}: header says 10 points")
