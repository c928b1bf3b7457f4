"""Part segmentation mapped back to the scan (issue 19 item 4): a label for EVERY point of a real cattle scan, in the
file's order, written as a per-point file and drawn; points the model saw keep their own prediction."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
from task_configs import cattle_like, task_cfg  # noqa: E402

from pointclora.api import load_weights  # noqa: E402
from pointclora.cli.predict import main, predict_files  # noqa: E402
from pointclora.engine.trainer import Trainer  # noqa: E402
from pointclora.tasks.scan_labels import labels_for_every_point, write_point_labels  # noqa: E402

SCAN = "cattle_parts/shapenetcore_partanno_segmentation_benchmark_v0_normal/05896765/cattle_1.txt"


@pytest.fixture(scope="module")
def seg_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("seg")
    cattle_like(tmp / "cattle")
    cfg = task_cfg("part_segmentation", tmp, method="linear", epochs=1)
    Trainer(cfg, output=tmp / "run", quiet=True).fit()
    return tmp / "run"


def test_every_point_of_a_real_scan_gets_a_label_in_input_order(seg_run, real_data, tmp_path):
    scan = real_data / SCAN
    rows = np.loadtxt(scan)
    (res,) = predict_files([str(scan)], str(seg_run), device="cpu", views=3)
    labels = np.asarray(res["labels"])
    assert len(labels) == len(rows) > 2000  # every input point, not the model's 96
    assert set(labels.tolist()) <= {50, 51, 52, 53} and res["model_points"] == 96
    assert np.allclose(np.asarray(res["input_points"]), rows[:, :3], atol=1e-6)  # input order kept
    out = tmp_path / "labels"
    assert main([str(scan), "--weights", str(seg_run), "--device", "cpu", "--labels-out", str(out)]) == 0
    written = np.loadtxt(out / "cattle_1.labels.txt")
    assert written.shape == (len(rows), 4)
    assert np.allclose(written[:, :3], rows[:, :3], atol=1e-6)
    assert (written[:, 3].astype(int) == predict_files([str(scan)], str(seg_run), device="cpu")[0]["labels"]).all()
    assert main([str(scan), "--weights", str(seg_run), "--device", "cpu", "--labels-out", str(out), "--format",
                 "ply"]) == 0  # fmt: skip
    ply = (out / "cattle_1.labels.ply").read_text().splitlines()
    assert f"element vertex {len(rows)}" in ply and "property int label" in ply


def test_sampled_points_keep_the_model_prediction(seg_run, real_data):
    from pointclora.datasets.base import pc_normalize

    run = load_weights(str(seg_run), device="cpu")
    xyz = torch.from_numpy(pc_normalize(np.loadtxt(real_data / SCAN)[:, :3]).astype(np.float32))
    parts = run.task.meta["category_parts"]["Cattle"]
    res = labels_for_every_point(run.model, xyz, 0, parts, num_points=96, views=1)
    seen = res["sampled"][0]
    direct = run.task.predict(run.model, xyz[seen], category="Cattle")["labels"]
    assert res["labels"][seen].tolist() == direct  # 3-NN of a sampled point is itself at distance 0


def test_png_of_the_whole_scan(seg_run, real_data, tmp_path):
    png = tmp_path / "parts.png"
    pytest.importorskip("matplotlib")
    assert main([str(real_data / SCAN), "--weights", str(seg_run), "--device", "cpu", "--png", str(png)]) == 0
    assert png.stat().st_size > 5000


def test_write_point_labels_refuses_bad_input(tmp_path):
    with pytest.raises(ValueError, match="3 points but 2 labels"):
        write_point_labels(tmp_path / "x.txt", np.zeros((3, 3)), np.zeros(2))
    with pytest.raises(ValueError, match=r"\.txt or \.ply"):
        write_point_labels(tmp_path / "x.csv", np.zeros((3, 3)), np.zeros(3))
