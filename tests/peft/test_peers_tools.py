"""Every peer method end to end through the tools on tiny data: finetune, kill + resume (exact), evaluate (the run's
own numbers back from the saved weights), predict, count_params, fewshot. point_mae_tiny, Synthetic -- seconds."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from peer_helpers import TINY_OPTIONS, die_after_first_checkpoint

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
from task_configs import task_cfg, write_tiny_backbone  # noqa: E402

from pointclora.cli import count_params, evaluate, fewshot, predict  # noqa: E402
from pointclora.engine.trainer import Trainer  # noqa: E402

METHODS = sorted(TINY_OPTIONS)


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    """A seeded random point_mae_tiny encoder file standing in for a pre-trained one (no head, no cls tokens)."""
    return write_tiny_backbone(tmp_path_factory.mktemp("bb") / "backbone.pth")


def _cfg(method, tmp_path, backbone, epochs=3):
    cfg = task_cfg("classification", tmp_path, method=method, epochs=epochs)
    cfg["peft"].update(TINY_OPTIONS[method])
    cfg["model"]["checkpoint"] = str(backbone)
    return cfg


def _state(run):
    return torch.load(run / "checkpoints" / "last.pth", weights_only=True)


@pytest.mark.parametrize("method", METHODS)
def test_finetune_resume_evaluate_predict(method, backbone, tmp_path, monkeypatch, capsys):
    full, killed = tmp_path / "full", tmp_path / "killed"
    metrics = Trainer(_cfg(method, tmp_path, backbone), output=full, quiet=True).fit()
    assert metrics["method"] == method
    # killed right after epoch 1's checkpoint, resumed from another RNG state: the same run
    live_again = die_after_first_checkpoint(monkeypatch)
    with pytest.raises(KeyboardInterrupt):
        Trainer(_cfg(method, tmp_path, backbone), output=killed, quiet=True).fit()
    live_again()
    torch.manual_seed(1234)
    Trainer(_cfg(method, tmp_path, backbone), output=killed, resume=True, quiet=True).fit()
    a, b = _state(full)["model"], _state(killed)["model"]
    assert a.keys() == b.keys() and any(".extensions." in k or k.startswith("extensions.") for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((killed / "metrics.json").read_text())["acc"] == metrics["acc"]

    # the saved weights hold every tensor that moved, buffers of trained backbone modules too (PPT / PointLoRA train
    # encoder.first_conv: its BatchNorm statistics are not the backbone file's any more)
    from pointclora.api import load_weights

    rebuilt = load_weights(full, which="last").model.state_dict()
    assert all(torch.equal(rebuilt[k], v) for k, v in _state(full)["model"].items() if k in rebuilt)

    # the saved weights rebuild the model: evaluate gives the run's own numbers back
    out = tmp_path / "eval.json"
    assert evaluate.main([str(full), "--device", "cpu", "--quiet", "--output", str(out)]) == 0
    res = json.loads(out.read_text())
    assert res["acc"] == metrics["acc"] and res["confusion"] == metrics["confusion"]

    # nothing to fold into the backbone: the merge tool refuses in one line instead of writing a broken model
    from pointclora.cli import merge_adapter

    capsys.readouterr()
    assert merge_adapter.main([str(full), "--output", str(tmp_path / "merged")]) == 2
    assert "does not merge into the base weights" in capsys.readouterr().err

    npy = tmp_path / "a.npy"
    np.save(npy, np.random.default_rng(0).normal(size=(200, 3)).astype(np.float32))
    capsys.readouterr()
    assert predict.main([str(npy), "--weights", str(full), "--topk", "2", "--device", "cpu", "--json"]) == 0
    probs = [p["prob"] for p in json.loads(capsys.readouterr().out.splitlines()[-1])["predictions"]]
    assert len(probs) == 2 and probs == sorted(probs, reverse=True)


@pytest.mark.parametrize("method", METHODS)
def test_count_params_from_a_config(method, tmp_path, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({"model": {"name": "point_mae_tiny"}, "dataset": {"name": "synthetic",
                   "num_classes": 4}, "data": {"num_points": 64}, "peft": {"method": method, **TINY_OPTIONS[method]}}))
    assert count_params.main(["--cfg", str(cfg), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["peft"]["method"] == method and result["trainable_params"] > result["adapter_params"] > 0
    # the method's own modules are counted beside the frozen backbone, not inside it; nothing merges
    assert result["gflops_unmerged"] > result["gflops_frozen"] and result["gflops_merged"] == result["gflops_unmerged"]


@pytest.mark.parametrize("method", METHODS)
def test_fewshot_one_fold(method, tmp_path, capsys):
    cfg = tmp_path / "fs.yaml"
    cfg.write_text(yaml.safe_dump({"dataset": {"name": "synthetic", "num_samples": 200, "num_points": 64},
                                   "model": {"name": "point_mae_tiny", "checkpoint": None},
                                   "peft": {"method": method, **TINY_OPTIONS[method]},
                                   "data": {"num_points": 64, "batch_size": 4, "eval_batch_size": 16},
                                   "schedule": {"epochs": 1, "warmup_epochs": 0}, "train": {"device": "cpu"}}))
    out = tmp_path / "fs"
    assert fewshot.main(["--cfg", str(cfg), "--ways", "2", "--shots", "2", "--folds", "1", "--output", str(out)]) == 0
    result = json.loads((out / "2way2shot" / "fold0" / "result.json").read_text())
    assert 0.0 <= result["acc"] <= 100.0 and result["trainable_params"] > 0


def test_finetune_cli_swaps_in_the_method_and_reports_bad_options(tmp_path, capsys):
    from pointclora.cli import finetune

    cfg = tmp_path / "tiny.yaml"
    cfg.write_text("_base_: [adapters/clora.yaml]\n"
                   "dataset: {name: synthetic, num_samples: 24, num_points: 96, num_classes: 4}\n"
                   "model: {name: point_mae_tiny}\ndata: {num_points: 64, batch_size: 8, eval_batch_size: 16}\n"
                   "schedule: {epochs: 1, warmup_epochs: 0}\n")  # fmt: skip
    base = ["--cfg", str(cfg), "--device", "cpu", "--quiet"]
    assert finetune.main(base + ["--output", str(tmp_path / "a"), "--peft", "idpt",
                                 "--set", "peft.prompt_layer=1", "peft.k=4"]) == 0  # fmt: skip
    assert json.loads((tmp_path / "a" / "metrics.json").read_text())["method"] == "idpt"
    # configs/adapters/idpt.yaml holds the official defaults: block 11 does not exist in a 2-block model
    assert finetune.main(base + ["--output", str(tmp_path / "b"), "--peft", "idpt"]) == 2
    assert "prompt_layer must be < the model's 2 blocks, got 11" in capsys.readouterr().err


@pytest.mark.parametrize("method", METHODS)
def test_every_trainable_tensor_gets_a_gradient(method):
    """Distributed training (DDP without find_unused_parameters) needs every trainable tensor in the graph."""
    from peer_helpers import cloud, seeded_tiny

    from pointclora.peft import auxiliary_loss

    model = seeded_tiny(method).train()
    loss = torch.nn.functional.cross_entropy(model(cloud(batch=4)), torch.tensor([0, 1, 2, 3]))
    aux = auxiliary_loss(model)
    (loss if aux is None else loss + aux).backward()
    missing = [n for n, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert not missing, missing
