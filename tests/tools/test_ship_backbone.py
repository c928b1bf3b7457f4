"""bench/ship_backbone.py: packages a pre-training run's best encoder unchanged, with its recipe beside it."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

from pointclora.models import create_model, load_pretrained, model_defaults
from pointclora.models.mae import PointMAEPretrain, export_encoder_state

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ship():
    spec = importlib.util.spec_from_file_location("ship_backbone", REPO_ROOT / "bench" / "ship_backbone.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _run(tmp_path: Path, config: str) -> Path:
    run = tmp_path / "run"
    run.mkdir()
    torch.manual_seed(0)
    export_encoder_state(PointMAEPretrain(decoder_depth=1, **model_defaults("point_mae_tiny")), str(run /
                         "encoder-best.pth"), variant="point_mae_tiny")  # fmt: skip
    (run / "metrics.json").write_text(json.dumps({"config": config, "best_epoch": 7, "wall_time_s": 120.0}))
    (run / "config.yaml").write_text(f"name: {config}\n")
    return run


def test_the_shipped_file_holds_the_runs_tensors_and_its_own_recipe(ship, tmp_path):
    run = _run(tmp_path, "pretrain_tiny_x")
    out = tmp_path / "shipped.pth"
    assert ship.main(["--run", str(run), "--out", str(out)]) == 0
    shipped, best = torch.load(out, weights_only=True), torch.load(run / "encoder-best.pth", weights_only=True)
    assert shipped["model"].keys() == best["model"].keys()
    assert all(torch.equal(shipped["model"][k], best["model"][k]) for k in best["model"])
    # the default command names the run's own config, not the small backbone's
    assert shipped["recipe"].startswith("python tools/pretrain.py --cfg pretrain_tiny_x.yaml --output RUN (name:")
    assert (shipped["epoch"], shipped["train_cpu_min"]) == (7, 2.0) and "non-commercial" in shipped["licence"]
    model = create_model("point_mae_tiny", num_classes=4)
    load_pretrained(model, str(out), log=False)
    assert torch.equal(model.blocks[1].attn.qkv.weight, best["model"]["blocks.1.attn.qkv.weight"])


def test_a_run_that_has_not_finished_is_refused(ship, tmp_path, capsys):
    run = _run(tmp_path, "pretrain_tiny_x")
    (run / "encoder-best.pth").unlink()
    with pytest.raises(SystemExit) as exit_:
        ship.main(["--run", str(run), "--out", str(tmp_path / "x.pth")])
    assert exit_.value.code == 2 and "encoder-best.pth not found" in capsys.readouterr().err
    assert not (tmp_path / "x.pth").exists()


def test_a_run_whose_metrics_name_no_config_needs_the_command(ship, tmp_path, capsys):
    run = _run(tmp_path, "pretrain_tiny_x")
    (run / "metrics.json").write_text(json.dumps({"config": None, "best_epoch": 7, "wall_time_s": 120.0}))
    with pytest.raises(SystemExit) as exit_:
        ship.main(["--run", str(run), "--out", str(tmp_path / "x.pth")])
    assert exit_.value.code == 2 and "names no config" in capsys.readouterr().err
    assert not (tmp_path / "x.pth").exists()
    out = tmp_path / "y.pth"
    command = "python tools/pretrain.py --cfg mine.yaml"
    assert ship.main(["--run", str(run), "--out", str(out), "--command", command]) == 0
    assert torch.load(out, weights_only=True)["recipe"].startswith("python tools/pretrain.py --cfg mine.yaml (name:")
