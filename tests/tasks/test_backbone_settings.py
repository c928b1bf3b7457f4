"""`--ckpt point_mae_mn10` brings the shipped encoder's variant, tokenizer and point count into every tool's config;
a backbone file that records another variant is refused in one line naming the --set to add (issue 19 item 3)."""

import sys
from pathlib import Path

import pytest
import torch

from pointclora.cli.common import load_cli_config
from pointclora.models import create_model, pretrained_path
from pointclora.tasks.common import build_adapted_model

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
from task_configs import cattle_like  # noqa: E402


@pytest.mark.parametrize("config", ["shapenetpart.yaml", "fewshot.yaml", "modelnet40.yaml", "scanobjectnn.yaml"])
def test_shipped_name_switches_variant_tokenizer_and_points(config, capsys):
    cfg = load_cli_config(config, ckpt="point_mae_mn10")
    assert cfg["model"]["name"] == "point_mae_mn10" and cfg["data"]["num_points"] == 1024
    assert cfg["model"].get("num_groups", 32) == 32 and cfg["model"].get("group_size", 32) == 32  # the variant's
    assert "model.name: point_mae_s -> point_mae_mn10" in capsys.readouterr().err
    model = build_adapted_model(cfg, cfg["model"]["name"], pretrained_path("point_mae_mn10"), log=lambda *_: None,
                                num_classes=10)  # fmt: skip
    assert model.group_divider.num_groups == 32 and model.group_divider.group_size == 32
    encoder = torch.load(pretrained_path("point_mae_mn10"), weights_only=True)["model"]
    assert len(model.backbone_info["keys"]) == len(encoder)  # every encoder tensor loaded, none mismatched


def test_explicit_set_still_wins():
    cfg = load_cli_config("shapenetpart.yaml", ["data.num_points=2048", "model.num_groups=64"], ckpt="point_mae_mn10")
    assert cfg["data"]["num_points"] == 2048 and cfg["model"]["num_groups"] == 64


def test_segment_tool_runs_with_the_shipped_name(tmp_path):
    from pointclora.cli.segment import main

    root = cattle_like(tmp_path / "cattle", n_train=6, n_test=2)
    out = tmp_path / "run"
    rc = main(["--cfg", "shapenetpart.yaml", "--ckpt", "point_mae_mn10", "--data-root", str(root), "--epochs", "1",
               "--set", "data.batch_size=2", "data.eval_batch_size=2", "schedule.warmup_epochs=0",
               "dataset.category_parts=null",
               "--output", str(out), "--device", "cpu", "--quiet"])  # fmt: skip
    assert rc == 0
    assert "point_mae_mn10" in (out / "config.yaml").read_text()


def test_a_file_of_another_variant_is_refused_in_one_line(tmp_path, capsys):
    from pointclora.cli.finetune import main

    other = tmp_path / "mn10_encoder.pth"
    obj = torch.load(pretrained_path("point_mae_mn10"), weights_only=True)
    torch.save(obj, other)  # a copy under a path: not the shipped name, so nothing is switched
    cfg = load_cli_config("modelnet40.yaml", ckpt=str(other))
    with pytest.raises(ValueError, match=r"holds a point_mae_mn10 encoder.*add --set model.name=point_mae_mn10"):
        build_adapted_model(cfg, cfg["model"]["name"], other, log=lambda *_: None, num_classes=40)
    assert create_model("point_mae_mn10", num_classes=3) is not None
    tiny = tmp_path / "tiny.yaml"
    tiny.write_text("dataset: {name: synthetic, num_samples: 16, num_points: 64, num_classes: 2}\n"
                    "model: {name: point_mae_tiny}\ndata: {num_points: 64, batch_size: 8}\n")
    rc = main(["--cfg", str(tiny), "--ckpt", str(other), "--output", str(tmp_path / "r"), "--device", "cpu",
               "--quiet"])  # fmt: skip
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and err.startswith("error: "), err
