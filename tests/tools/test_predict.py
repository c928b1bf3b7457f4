"""tools/predict.py: top-k labels with the checkpoint's class names for user files (.npy, .txt, .off mesh)."""

import json

import numpy as np
import pytest

from pointclora.cli.finetune import main as finetune
from pointclora.cli.predict import main, predict_files

TINY = """\
_base_: [adapters/clora.yaml]
dataset: {name: synthetic, num_samples: 16, num_points: 96, num_classes: 4}
model: {name: point_mae_tiny}
data: {num_points: 64, batch_size: 8, eval_batch_size: 16}
schedule: {epochs: 1, warmup_epochs: 0}
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("predict")
    (folder / "tiny.yaml").write_text(TINY)
    out = folder / "run"
    assert finetune(["--cfg", str(folder / "tiny.yaml"), "--output", str(out), "--device", "cpu", "--quiet"]) == 0
    return out


def test_topk_for_clouds_and_meshes(run, tmp_path, capsys):
    rng = np.random.default_rng(0)
    npy, txt, off = tmp_path / "a.npy", tmp_path / "b.txt", tmp_path / "c.off"
    np.save(npy, rng.normal(size=(300, 3)).astype(np.float32))
    np.savetxt(txt, rng.uniform(-1, 1, size=(50, 3)))  # fewer points than the model takes: repeated by FPS
    off.write_text("OFF\n4 4 0\n0 0 0\n1 0 0\n0 1 0\n0 0 1\n3 0 1 2\n3 0 1 3\n3 0 2 3\n3 1 2 3\n")
    assert main([str(npy), str(txt), str(off), "--weights", str(run), "--topk", "3", "--device", "cpu", "--json"]) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [r["file"] for r in lines] == [str(npy), str(txt), str(off)]
    classes = json.loads((run / "metrics.json").read_text())["classes"]
    for r in lines:
        probs = [p["prob"] for p in r["predictions"]]
        assert len(probs) == 3 and probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-6
        assert all(p["label"] == classes[p["index"]] for p in r["predictions"])
    # the same model gives the same answer twice, and through the Python API
    again = predict_files([str(npy)], str(run), topk=3, device="cpu")
    assert again[0]["predictions"] == lines[0]["predictions"]
    assert main([str(npy), "--weights", str(run), "--topk", "10", "--device", "cpu"]) == 0
    assert capsys.readouterr().out.count("%") == 4  # top-k is capped at the number of classes


def test_unreadable_file_is_a_clear_error(run, tmp_path, capsys):
    bad = tmp_path / "x.xyz123"
    bad.write_text("1 2 3\n")
    assert main([str(bad), "--weights", str(run), "--device", "cpu"]) == 2
    assert "x.xyz123" in capsys.readouterr().err


@pytest.fixture(scope="module")
def second_run(tmp_path_factory):
    """Another task (3 classes) trained on the same backbone as ``run`` (same seed: the same random backbone)."""
    folder = tmp_path_factory.mktemp("predict2")
    (folder / "tiny3.yaml").write_text(TINY.replace("num_classes: 4", "num_classes: 3").replace(
        "_base_: [adapters/clora.yaml]", "_base_: [adapters/lora.yaml]"))  # fmt: skip
    out = folder / "run"
    assert finetune(["--cfg", str(folder / "tiny3.yaml"), "--output", str(out), "--device", "cpu", "--quiet"]) == 0
    return out


def test_adapters_classify_the_same_files_with_each(run, second_run, tmp_path, capsys):
    rng = np.random.default_rng(1)
    files = []
    for i in range(2):
        files.append(tmp_path / f"s{i}.npy")
        np.save(files[-1], rng.normal(size=(200, 3)).astype(np.float32))
    args = [str(f) for f in files] + ["--adapters", str(run), str(second_run), "--device", "cpu", "--json"]
    assert main(args) == 0
    lines = [json.loads(x) for x in capsys.readouterr().out.splitlines()]
    assert [(r["adapter"], r["file"]) for r in lines] == [(str(d), str(f)) for d in (run, second_run) for f in files]
    # each adapter answers exactly as its run loaded alone
    for r in lines:
        alone = predict_files([r["file"]], r["adapter"], topk=5, device="cpu")[0]
        assert r["predictions"] == alone["predictions"], r["adapter"]
    assert {len(r["predictions"]) for r in lines if r["adapter"] == str(second_run)} == {3}
    assert main([str(files[0]), "--adapters", str(run), str(run), "--device", "cpu"]) == 2
    assert "twice" in capsys.readouterr().err
    from pointclora.api import merge_weights

    merged = merge_weights(run, tmp_path / "merged")
    assert main([str(files[0]), "--adapters", str(merged), str(second_run), "--device", "cpu"]) == 2
    assert "different pre-trained weights" in capsys.readouterr().err  # merged weights are another backbone
