"""tools/evaluate.py on a run directory, its checkpoints, its adapter folder and a merged checkpoint."""

import json

import pytest
import torch

from pointclora.cli.evaluate import RemapLabels, main
from pointclora.cli.finetune import main as finetune

TINY = """\
_base_: [adapters/clora.yaml]
dataset: {name: synthetic, num_samples: 24, num_points: 96, num_classes: 4}
model: {name: point_mae_tiny}
data: {num_points: 64, batch_size: 8, eval_batch_size: 16}
optim: {lr: 0.002}
schedule: {epochs: 2, warmup_epochs: 1}
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from pointclora.models import create_model

    folder = tmp_path_factory.mktemp("eval")
    torch.manual_seed(7)  # a stand-in "pre-trained" backbone file, as a user's would be
    torch.save({"model": create_model("point_mae_tiny", num_classes=4).state_dict()}, folder / "backbone.pth")
    (folder / "tiny.yaml").write_text(TINY.replace("{name: point_mae_tiny}", "{name: point_mae_tiny, checkpoint: %s}"
                                                   % (folder / "backbone.pth")))
    out = folder / "run"
    assert finetune(["--cfg", str(folder / "tiny.yaml"), "--output", str(out), "--device", "cpu", "--quiet"]) == 0
    return out


def test_run_directory_with_and_without_voting(run, capsys):
    assert main([str(run), "--vote", "3", "--device", "cpu"]) == 0
    out = capsys.readouterr().out
    assert "no voting" in out and "3-view vote" in out and "confusion matrix" in out and "sphere" in out
    res = json.loads((run / "eval_test_vote3.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    assert res["acc"] == pytest.approx(metrics["acc"])  # the same best checkpoint, the same test split
    assert res["confusion"] == metrics["confusion"]
    assert res["vote_views"] == 3 and 0 <= res["vote_acc"] <= 100
    assert sum(map(sum, res["vote_confusion"])) == res["num_samples"] == 24
    assert set(res["per_class_acc"]) == {"sphere", "box", "cylinder", "cone"}
    assert main([str(run), "--vote", "3", "--device", "cpu", "--quiet", "--output", str(run / "again.json")]) == 0
    assert json.loads((run / "again.json").read_text())["vote_acc"] == res["vote_acc"]  # one reproducible pass


def test_every_artifact_gives_the_same_numbers(run, tmp_path):
    def score(target, *extra):
        out = tmp_path / "r.json"
        assert main([str(target), "--device", "cpu", "--quiet", "--output", str(out), *extra]) == 0
        return json.loads(out.read_text())

    best = score(run)
    assert "model.checkpoint" not in str(best)
    # best.pth of a PEFT run holds only what trained; the frozen weights come from the backbone file
    stored = torch.load(run / "checkpoints" / "best.pth", weights_only=True)["model"]
    assert not any(k.endswith("base_layer.weight") for k in stored)
    assert score(run / "checkpoints" / "best.pth")["confusion"] == best["confusion"]
    assert score(run / "best_adapter")["confusion"] == best["confusion"]
    last = score(run, "--which", "last", "--split", "val")
    assert last["split"] == "val" and last["num_samples"] == 24

    # a merged checkpoint: adapters folded into plain weights, config and class names recorded
    from pointclora.engine.inference import load_classifier
    from pointclora.peft import merge_and_unload

    loaded = load_classifier(str(run))
    merged = merge_and_unload(loaded.model)
    path = tmp_path / "merged.pth"
    torch.save({"model": merged.state_dict(), "config": (run / "config.yaml").read_text(),
                "classes": loaded.classes}, path)  # fmt: skip
    assert score(path)["acc"] == pytest.approx(best["acc"])


def test_labels_are_mapped_by_class_name():
    ds = [{"points": torch.zeros(4, 3), "label": 0}, {"points": torch.zeros(4, 3), "label": 1}]
    remapped = RemapLabels(ds, ["box", "sphere"], ["sphere", "box", "cone"])
    assert [remapped[i]["label"] for i in range(2)] == [1, 0]
    with pytest.raises(ValueError, match="not trained on.*torus"):
        RemapLabels(ds, ["box", "torus"], ["sphere", "box"])


def test_missing_checkpoint_is_a_clear_error(tmp_path, capsys):
    assert main([str(tmp_path / "nope"), "--device", "cpu"]) == 2
    assert "nope" in capsys.readouterr().err
