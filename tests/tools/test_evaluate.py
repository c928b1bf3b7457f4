"""tools/evaluate.py: every method's saved weights give back the run's own final numbers, in a fresh process; another
backbone is refused; classes are mapped by name; segmentation runs score the same way."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
from task_configs import task_cfg, write_tiny_backbone  # noqa: E402

from pointclora.api import WeightsError, load_weights  # noqa: E402
from pointclora.cli.evaluate import main  # noqa: E402
from pointclora.engine.trainer import Trainer  # noqa: E402
from pointclora.models import create_model  # noqa: E402
from pointclora.tasks.classification import RemapLabels  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    """A 'pre-trained' backbone file: a seeded random point_mae_tiny encoder (no cls tokens, as Point-MAE's)."""
    return write_tiny_backbone(tmp_path_factory.mktemp("bb") / "backbone.pth")


def _fresh_process_eval(run: Path, out: Path, *extra: str) -> dict:
    cmd = [sys.executable, "-m", "pointclora.cli.evaluate", str(run), "--device", "cpu", "--quiet", "--output",
           str(out), *extra]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=ROOT,
                          env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"})  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("method", ["clora", "lora", "linear", "full"])
def test_every_method_reproduces_its_final_accuracy_in_a_fresh_process(method, backbone, tmp_path):
    cfg = task_cfg("classification", tmp_path, method=method)
    cfg["model"]["checkpoint"] = str(backbone)
    run = tmp_path / "run"
    metrics = Trainer(cfg, output=run, quiet=True).fit()
    res = _fresh_process_eval(run, tmp_path / "eval.json")
    assert res["acc"] == metrics["acc"] and res["mean_class_acc"] == metrics["mean_class_acc"]
    assert res["confusion"] == metrics["confusion"] and res["epoch"] == metrics["best_epoch"]
    last = _fresh_process_eval(run, tmp_path / "last.json", "--which", "last")
    assert last["acc"] == metrics["last_acc"]
    if method == "linear":  # frozen random cls tokens travel with the weights (Point-MAE files have none)
        saved = json.loads((run / "best" / "manifest.json").read_text())["tensors"]
        assert "cls_token" in saved and "cls_pos" in saved


def test_another_backbone_is_refused(backbone, tmp_path, capsys):
    cfg = task_cfg("classification", tmp_path, epochs=1)
    cfg["model"]["checkpoint"] = str(backbone)
    run = tmp_path / "run"
    Trainer(cfg, output=run, quiet=True).fit()
    other = tmp_path / "other.pth"
    state = torch.load(backbone, weights_only=True)
    state["model"]["norm.weight"] = state["model"]["norm.weight"] + 1
    torch.save(state, other)
    with pytest.raises(WeightsError, match="another backbone"):
        load_weights(run, backbone=other)
    assert main([str(run), "--ckpt", str(other), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "another backbone" in err and "Traceback" not in err


def test_voting_and_segmentation_runs(tmp_path, capsys):
    run = tmp_path / "cls"
    Trainer(task_cfg("classification", tmp_path, epochs=1), output=run, quiet=True).fit()
    assert main([str(run), "--vote", "3", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "3-view vote" in out and "confusion matrix" in out
    seg = tmp_path / "seg"
    metrics = Trainer(task_cfg("part_segmentation", tmp_path, epochs=1), output=seg, quiet=True).fit()
    assert main([str(seg), "--device", "cpu", "--quiet", "--output", str(tmp_path / "s.json")]) == 0
    res = json.loads((tmp_path / "s.json").read_text())
    assert res["instance_miou"] == metrics["instance_miou"] and res["task"] == "part_segmentation"


def test_labels_are_mapped_by_class_name():
    data = [{"points": None, "label": i} for i in range(3)]
    remapped = RemapLabels(data, ["c", "a", "b"], ["a", "b", "c"])
    assert [remapped[i]["label"] for i in range(3)] == [2, 0, 1]
    with pytest.raises(ValueError, match="not trained on"):
        RemapLabels(data, ["a", "z"], ["a", "b"])


def test_missing_or_foreign_folder_is_a_clear_error(tmp_path, capsys):
    assert main([str(tmp_path / "nope"), "--device", "cpu"]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty"), "--device", "cpu"]) == 2
    assert "neither a weights folder" in capsys.readouterr().err


def test_merged_weights_score_like_the_run_and_carry_no_adapters(backbone, tmp_path, capsys):
    from pointclora.cli.merge_adapter import main as merge

    cfg = task_cfg("classification", tmp_path, epochs=1)
    cfg["model"]["checkpoint"] = str(backbone)
    run = tmp_path / "run"
    metrics = Trainer(cfg, output=run, quiet=True).fit()
    assert merge([str(run), "--output", str(tmp_path / "merged"), "--plain", str(tmp_path / "plain.pth")]) == 0
    merged = load_weights(tmp_path / "merged")
    assert not any("base_layer" in k or k.endswith(".Q") or "clora" in k for k in merged.model.state_dict())
    original = load_weights(run)
    pts = torch.randn(4, 64, 3)
    with torch.no_grad():
        assert torch.allclose(merged.model(pts), original.model(pts), atol=1e-5)
    assert main([str(tmp_path / "merged"), "--device", "cpu", "--quiet", "--output", str(tmp_path / "m.json")]) == 0
    assert json.loads((tmp_path / "m.json").read_text())["acc"] == metrics["acc"]
    plain = create_model("point_mae_tiny", num_classes=4)
    plain.load_state_dict(torch.load(tmp_path / "plain.pth", weights_only=True)["model"], strict=True)


def test_a_library_save_adapter_folder_is_usable(backbone, tmp_path, capsys):
    """``save_adapter`` output from the library: predict and evaluate rebuild it with --ckpt (labels are indices)."""
    import numpy as np

    from pointclora.cli.predict import main as predict
    from pointclora.models import load_pretrained
    from pointclora.peft import inject_adapters, save_adapter

    model = create_model("point_mae_tiny", num_classes=4)
    load_pretrained(model, backbone, log=False)
    inject_adapters(model, "clora")
    save_adapter(model, tmp_path / "adapter")
    np.save(tmp_path / "x.npy", np.random.default_rng(0).normal(size=(100, 3)).astype(np.float32))
    assert predict([str(tmp_path / "x.npy"), "--weights", str(tmp_path / "adapter"), "--ckpt", str(backbone),
                    "--device", "cpu", "--num-points", "64", "--json"]) == 0  # fmt: skip
    assert json.loads(capsys.readouterr().out)["predictions"][0]["label"] in {"0", "1", "2", "3"}
    assert main([str(tmp_path / "adapter"), "--ckpt", str(backbone), "--device", "cpu"]) == 2
    assert "pass --dataset" in capsys.readouterr().err
    (tmp_path / "syn.yaml").write_text("name: synthetic\nnum_samples: 8\nnum_points: 96\nnum_classes: 4\n")
    assert main([str(tmp_path / "adapter"), "--ckpt", str(backbone), "--device", "cpu", "--dataset",
                 str(tmp_path / "syn.yaml"), "--quiet", "--output", str(tmp_path / "e.json")]) == 0  # fmt: skip
    assert json.loads((tmp_path / "e.json").read_text())["num_samples"] == 8
