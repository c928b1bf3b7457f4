import json

import pytest

from pointclora.cli import count_params
from pointclora.models import create_model

KEYS = {"adapter_params", "trainable_params", "trainable_params_without_head", "total_params", "gflops_frozen",
        "gflops_unmerged", "gflops_merged", "gflops_frozen_with_attention"}


def test_count_params_json_alone_on_stdout(capsys):
    assert count_params.main(["--model", "point_mae_s", "--num-classes", "15", "--npoints", "2048", "--peft", "clora",
                              "--json"]) == 0
    out, err = capsys.readouterr()
    result = json.loads(out)  # the whole of stdout is one JSON document
    assert out.count("\n") == 1 and KEYS <= set(result)
    assert (result["adapter_params"], result["trainable_params"], result["trainable_params_without_head"]) == (
        165888, 434191, 166656)
    assert result["num_groups"] == 128 and result["gflops_merged"] == result["gflops_frozen"]
    assert result["gflops_unmerged"] > result["gflops_frozen"]


@pytest.mark.parametrize("method, extra", [("lora", ["--r", "4"]), ("linear", []), ("full", [])])
def test_count_params_methods_tiny(capsys, method, extra):
    argv = ["--model", "point_mae_tiny", "--num-classes", "5", "--npoints", "256", "--peft", method, "--json"]
    assert count_params.main(argv + extra) == 0
    result = json.loads(capsys.readouterr().out)
    head = sum(p.numel() for p in create_model("point_mae_tiny", num_classes=5).cls_head_finetune.parameters())
    expected = {"lora": (8 * 4 * 64 + 4 * 4 * 160, 8 * 4 * 64 + 4 * 4 * 160 + 64 + head), "linear": (0, head),
                "full": (0, result["total_params"])}[method]
    assert (result["adapter_params"], result["trainable_params"]) == expected
    assert result["num_groups"] == 16 and result["gflops_merged"] == result["gflops_frozen"]


def test_count_params_table_and_errors(capsys):
    count_params.main(["--model", "point_mae_tiny", "--num-classes", "5", "--npoints", "256", "--no-flops"])
    assert "trainable_params_without_head" in capsys.readouterr().out
    # Through run_cli: one line `error: ...`, exit 2.
    assert count_params.main(["--peft", "lora", "--num-bases", "2", "--model", "point_mae_tiny"]) == 2
    assert capsys.readouterr().err == "error: --num-bases does not apply to --peft 'lora'\n"
    assert count_params.main(["--peft", "linear", "--r", "2", "--model", "point_mae_tiny"]) == 2
    assert capsys.readouterr().err == "error: --r does not apply to --peft 'linear'\n"


def test_count_params_from_experiment_config(capsys):
    # scanobjectnn.yaml: point_mae_s, 15 classes, 2048 points / 128 groups, CLoRA defaults -> CLORA.md's counts.
    assert count_params.main(["--cfg", "scanobjectnn.yaml", "--no-flops", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["model"], result["num_classes"], result["npoints"], result["num_groups"]) == (
        "point_mae_s", 15, 2048, 128
    )
    assert (result["adapter_params"], result["trainable_params"]) == (165_888, 434_191)
    # Command-line arguments win over the config; --set edits it.
    assert count_params.main(["--cfg", "scanobjectnn.yaml", "--peft", "lora", "--no-flops", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["adapter_params"] == 663_552
    assert count_params.main(["--cfg", "scanobjectnn.yaml", "--set", "peft.r=4", "--no-flops", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["peft"]["r"] == 4
