"""Up axes (issue 19 item 7): the exact quarter turns between axes, and the axis every dataset declares."""

import itertools

import numpy as np
import pytest
import torch

from pointclora.datasets.up_axis import ToUpAxis, dataset_up_axis, rotation_between

E = {"x": np.array([1.0, 0, 0]), "y": np.array([0, 1.0, 0]), "z": np.array([0, 0, 1.0])}


@pytest.mark.parametrize("src,dst", list(itertools.permutations("xyz", 2)))
def test_rotation_sends_up_to_up_and_is_proper(src, dst):
    R = rotation_between(src, dst)
    assert np.array_equal(R @ E[src], E[dst])  # exact: entries are 0 / ±1
    assert np.array_equal(R @ R.T, np.eye(3)) and round(np.linalg.det(R)) == 1
    assert np.array_equal(rotation_between(dst, src) @ R, np.eye(3))


def test_y_up_to_z_up_on_points_and_normals():
    pts = torch.tensor([[1.0, 2.0, 3.0, 0.0, 1.0, 0.0]])  # a point and an up-pointing normal in a y-up file
    out = ToUpAxis("y", "z")({"points": pts, "label": 4})
    assert out["points"].tolist() == [[1.0, -3.0, 2.0, 0.0, 0.0, 1.0]] and out["label"] == 4
    assert pts.tolist() == [[1.0, 2.0, 3.0, 0.0, 1.0, 0.0]]  # the input sample is left as it was


def test_every_dataset_declares_its_files_up_axis():
    assert dataset_up_axis({"name": "folder"}) == "z"  # ModelNet meshes / PCDs, most scanners
    assert dataset_up_axis({"name": "folder", "up_axis": "y"}) == "y"
    for name in ("modelnet40", "modelnet_fewshot", "scanobjectnn", "shapenetpart", "shapenet55"):
        assert dataset_up_axis({"name": name}) == "y", name
    assert dataset_up_axis({"name": "synthetic"}) is None  # generated: no up
    with pytest.raises(ValueError, match="dataset.up_axis must be x, y or z"):
        dataset_up_axis({"name": "folder", "up_axis": "up"})


def test_real_modelnet_files_differ_in_up_axis(real_data):
    """The premise, on the real files: a chair is tallest along its up axis; ModelNet10 PCDs put that along z, the
    ModelNet40-resampled text files along y. Turning the latter y -> z puts their height along z too."""
    from pointclora.datasets.io import read_point_cloud

    pcds = sorted((real_data / "modelnet10_pcd" / "chair" / "train").glob("*.pcd"))[:3]
    txts = sorted((real_data / "modelnet40_normal_resampled" / "chair").glob("*.txt.gz"))[:3]
    for pcd, txt in zip(pcds, txts):
        assert np.argmax(np.ptp(read_point_cloud(pcd)[:, :3], 0)) == 2, pcd
        xyz = np.loadtxt(txt, delimiter=",")[:, :3]
        assert np.argmax(np.ptp(xyz, 0)) == 1, txt
        turned = ToUpAxis("y", "z")({"points": torch.from_numpy(xyz).float()})["points"].numpy()
        assert np.argmax(np.ptp(turned, 0)) == 2
        assert np.allclose(np.ptp(turned, 0), np.ptp(xyz, 0)[[0, 2, 1]], atol=1e-5)
