"""tools/visualize.py and tools/plot_runs.py end to end (main(argv)), headless, into tmp_path."""

import json

import numpy as np
import pytest
from viz_helpers import assert_nontrivial, color_mask, load_png, sphere

from pointclora.cli import plot_runs, visualize
from pointclora.viz.colors import ERROR_RED

pytest.importorskip("pointclora.datasets.io")  # the file reader the CLI uses

SMALL = ["--width", "200", "--height", "160", "--backend", "matplotlib"]


@pytest.fixture
def cloud_file(tmp_path):
    path = tmp_path / "ball.npy"
    np.save(path, sphere(800))
    return path


@pytest.fixture
def parts_file(tmp_path):
    """A ``x y z label`` text file like cattle_parts, labels 50/51 by height."""
    pts = sphere(800)
    lab = 50 + (pts[:, 1] > 0)
    path = tmp_path / "parts.txt"
    np.savetxt(path, np.column_stack([pts, lab]), fmt=["%.5f"] * 3 + ["%d"])
    return path, lab


def test_cloud(cloud_file, tmp_path, capsys):
    out = tmp_path / "a.png"
    assert visualize.main([str(cloud_file), "--out", str(out), *SMALL]) == 0
    assert "renderer: matplotlib" in capsys.readouterr().out
    assert_nontrivial(load_png(out))


def test_cloud_with_auto_backend(cloud_file, tmp_path, capsys):
    out = tmp_path / "auto.png"
    assert visualize.main([str(cloud_file), "--out", str(out), "--width", "160", "--height", "120"]) == 0
    assert "renderer: " in capsys.readouterr().out
    assert_nontrivial(load_png(out))


def test_patches(cloud_file, tmp_path):
    out = tmp_path / "p.png"
    args = [str(cloud_file), "--patches", "--num-groups", "8", "--group-size", "64", "--out", str(out), *SMALL]
    assert visualize.main(args) == 0
    img = load_png(out)
    assert_nontrivial(img, min_colors=20)
    assert img.shape[1] == 400  # cloud | patches


def test_labels_and_prediction(parts_file, tmp_path):
    path, lab = parts_file
    pred = lab.copy()
    pred[:100] = 52
    np.save(tmp_path / "pred.npy", pred)
    out = tmp_path / "s.png"
    args = [str(path), "--labels", "--prediction", str(tmp_path / "pred.npy"), "--out", str(out), *SMALL]
    assert visualize.main(args) == 0
    img = load_png(out)
    assert img.shape[1] == 600
    assert color_mask(img[:, 400:], ERROR_RED, tol=30).sum() > 20


def test_classification_from_json(cloud_file, tmp_path):
    probs = tmp_path / "probs.json"
    probs.write_text(json.dumps({"topk": [["ball", 0.8], ["cup", 0.15], ["box", 0.05]]}))
    out = tmp_path / "c.png"
    args = [str(cloud_file), "--prediction", str(probs), "--true-label", "ball", "--out", str(out), *SMALL]
    assert visualize.main(args) == 0
    img = load_png(out)
    assert_nontrivial(img, min_colors=20)
    assert color_mask(img, (0x2C / 255, 0xA0 / 255, 0x2C / 255), tol=8).sum() > 50


def test_subsample_keeps_labels_aligned(parts_file, tmp_path, capsys):
    path, _ = parts_file
    out = tmp_path / "sub.png"
    assert visualize.main([str(path), "--labels", "--num-points", "300", "--out", str(out), *SMALL]) == 0
    assert "300 points" in capsys.readouterr().out


@pytest.mark.parametrize(
    "extra, match",
    [
        ([], "nothing to do: give --out"),
        (["--labels", "--out", "x.png"], "has only 3 columns (x y z); --labels needs a column of part ids"),
        (["--camera", "1,2,3,4", "--out", "x.png"], "--camera '1,2,3,4'"),
        (["--index", "3", "--out", "x.png"], "--index applies to a dataset config"),
        (["--colormap", "virdis", "--out", "x.png"], "unknown colormap 'virdis'"),
    ],
)
def test_errors_name_the_value(cloud_file, extra, match, capsys):
    assert visualize.main([str(cloud_file), *extra, *SMALL]) == 2
    assert match in capsys.readouterr().err


def test_normals_are_not_taken_for_labels(tmp_path, capsys):
    pts = sphere(200)
    np.save(tmp_path / "normals.npy", np.column_stack([pts, pts]))  # x y z nx ny nz, like ModelNet40 txt
    assert visualize.main([str(tmp_path / "normals.npy"), "--labels", "--out", "x.png", *SMALL]) == 2
    assert "column -1 holds non-integer values" in capsys.readouterr().err


def test_missing_file_is_named(tmp_path, capsys):
    assert visualize.main([str(tmp_path / "nope.pcd"), "--out", str(tmp_path / "x.png"), *SMALL]) == 2
    assert "nope.pcd" in capsys.readouterr().err


def test_show_without_display_says_so(cloud_file, monkeypatch, capsys):
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    assert visualize.main([str(cloud_file), "--show"]) == 2
    assert "--show needs a display" in capsys.readouterr().err


def test_dataset_sample_by_index(tmp_path, capsys):
    """INPUT may be a dataset config (bare names are found in datasets/); the sample's labels are used."""
    pytest.importorskip("pointclora.datasets")
    out = tmp_path / "parts.png"
    args = ["synthetic_parts.yaml", "--index", "0", "--labels", "--out", str(out), *SMALL]
    assert visualize.main(args) == 0
    assert "part labels" in capsys.readouterr().out
    assert_nontrivial(load_png(out))
    out = tmp_path / "cls.png"
    assert visualize.main(["synthetic.yaml", "--index", "1", "--out", str(out), *SMALL]) == 0
    assert_nontrivial(load_png(out))
    assert visualize.main(["synthetic.yaml", "--index", "100000", "--out", str(out), *SMALL]) == 2
    assert "--index 100000 out of range" in capsys.readouterr().err
    assert visualize.main(["synthetic.yaml", "--labels", "--index", "0", "--out", str(out), *SMALL]) == 2
    assert "no per-point 'seg' labels" in capsys.readouterr().err


def _run_dir(path, n, acc0):
    path.mkdir(parents=True)
    with open(path / "history.jsonl", "w") as f:
        for e in range(n):
            f.write(json.dumps({"epoch": e, "lr": 0.001, "train_loss": 1.0 / (e + 1), "val_acc": acc0 + e}) + "\n")
    return path


def test_plot_runs_curves(tmp_path, capsys):
    a, b = _run_dir(tmp_path / "a", 5, 50), _run_dir(tmp_path / "b", 3, 40)
    out = tmp_path / "runs.png"
    assert plot_runs.main([str(a), str(b), "--out", str(out), "--width", "900", "--height", "300"]) == 0
    assert "curves of 2 run(s), 8 epochs" in capsys.readouterr().out
    assert_nontrivial(load_png(out), min_size=(300, 900), min_colors=20)


def test_plot_runs_fewshot_and_miou_json(tmp_path):
    fs = tmp_path / "fewshot.json"
    fs.write_text(json.dumps({"results": {"5way10shot": {"mean": 96.3, "std": 2.1, "accs": [95, 97.6]},
                                          "10way10shot": [90.1, 92.4, 91.0]}}))
    assert plot_runs.main(["--fewshot", str(fs), "--out", str(tmp_path / "fs.png")]) == 0
    assert_nontrivial(load_png(tmp_path / "fs.png"), min_colors=10)
    mi = tmp_path / "miou.json"
    mi.write_text(json.dumps({"class_miou": 0.8, "per_category": {"cap": 0.85, "cattle": 0.75}}))
    assert plot_runs.main(["--miou", str(mi), "--out", str(tmp_path / "mi.png")]) == 0
    assert_nontrivial(load_png(tmp_path / "mi.png"), min_colors=10)


def test_plot_runs_errors(tmp_path, capsys):
    assert plot_runs.main(["--out", str(tmp_path / "x.png")]) == 2
    assert "give exactly one of" in capsys.readouterr().err
    assert plot_runs.main([str(tmp_path / "missing_run"), "--out", str(tmp_path / "x.png")]) == 2
    assert "missing_run" in capsys.readouterr().err


@pytest.mark.realdata
def test_real_modelnet_shape_with_patches(real_data, tmp_path):
    path = real_data / "modelnet40_normal_resampled" / "airplane" / "airplane_0001.txt.gz"
    if not path.exists():
        pytest.skip(f"{path} not found")
    out = tmp_path / "airplane.png"
    args = [str(path), "--patches", "--num-points", "1024", "--out", str(out), *SMALL]
    assert visualize.main(args) == 0
    assert_nontrivial(load_png(out), min_colors=30)
