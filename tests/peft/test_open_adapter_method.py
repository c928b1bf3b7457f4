"""Openness: an adapter method defined and registered in this file alone (no library edit) — an IA³-style
per-channel scaling of a Linear's output — goes through every tool: ``tools/finetune.py`` trains it, the weights
folder keeps what the method declares, ``tools/evaluate.py`` scores it, ``tools/merge_adapter.py`` folds it into the
backbone (it is mergeable) and ``tools/predict.py`` answers the same with the adapted and the merged weights."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Iterator

import numpy as np
import pytest
import torch
from torch import nn

from pointclora.api import load_weights
from pointclora.cli import evaluate, finetune, merge_adapter, predict
from pointclora.peft import AdapterConfig, AdapterLinear, AdapterMethod, register_peft_method, unregister_peft_method

NAME = "ia3_toy"


@dataclass
class IA3ToyConfig(AdapterConfig):
    """``init``: the starting scale (1: the adapted model starts as the frozen one)."""

    init: float = 1.0


class IA3Linear(AdapterLinear):
    """``y = l ⊙ (W x) + b``, ``l (n·out,)`` learnt: ``ΔW = (l - 1) ⊙ W`` row-wise, so merging is exact."""

    def __init__(self, base_layer: nn.Linear, n_splits: int, init: float) -> None:
        super().__init__(base_layer, n_splits, scaling=1.0, dropout=0.0)
        w = base_layer.weight
        self.ia3_l = nn.Parameter(torch.full((w.shape[0],), float(init), dtype=w.dtype, device=w.device))

    def adapter_delta(self, x: torch.Tensor) -> torch.Tensor:  # (..., in) -> (..., n·out)
        return nn.functional.linear(x, self.base_layer.weight) * (self.ia3_l - 1.0)

    def delta_weight(self) -> torch.Tensor:
        return (self.ia3_l - 1.0)[:, None] * self.base_layer.weight

    @torch.no_grad()
    def unmerge(self) -> None:  # W' = l ⊙ W: divide back (the generic subtraction would use W')
        if self.merged:
            self.base_layer.weight.div_(self.ia3_l[:, None])
            self.merged = False

    def adapter_parameters(self) -> Iterator[nn.Parameter]:
        yield self.ia3_l

    def adapter_flops_per_token(self) -> int:
        return 0 if self.merged else self.n_splits * self.out_features


class IA3ToyMethod(AdapterMethod):
    name = NAME
    config_class = IA3ToyConfig
    description = "IA3-style output scaling (test plug-in)"

    def make_layer(self, model: nn.Module, name: str, base_layer: nn.Linear, n_splits: int) -> AdapterLinear:
        return IA3Linear(base_layer, n_splits, self.config.init)


@pytest.fixture
def ia3():
    register_peft_method(IA3ToyMethod)
    yield NAME
    unregister_peft_method(NAME)


def _config(tmp_path):
    cfg = {"name": "ia3", "dataset": {"name": "synthetic", "num_samples": 24, "num_points": 96, "num_classes": 4},
           "model": {"name": "point_mae_tiny"}, "peft": {"method": NAME, "init": 1.0},
           "data": {"num_points": 64, "batch_size": 8, "eval_batch_size": 16},
           "optim": {"lr": 0.05}, "schedule": {"epochs": 2, "warmup_epochs": 0},
           "train": {"device": "cpu"}}  # fmt: skip
    path = tmp_path / "ia3.yaml"
    path.write_text(json.dumps(cfg))  # JSON is YAML
    return path


def _predict_json(capsys, argv):
    assert predict.main(argv + ["--json", "--device", "cpu"]) == 0
    return [json.loads(line) for line in capsys.readouterr().out.splitlines()]


def test_new_method_through_every_tool(tmp_path, ia3, capsys):
    run = tmp_path / "run"
    assert finetune.main(["--cfg", str(_config(tmp_path)), "--output", str(run), "--quiet"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["method"] == NAME
    # The adapter is the only thing trained besides the head; it is all that differs from the random backbone.
    manifest = json.loads((run / "best" / "manifest.json").read_text())
    assert manifest["method"] == NAME and any(t.endswith(".ia3_l") for t in manifest["tensors"])
    assert (run / "best" / "adapter_config.json").is_file()  # AdapterMethod declares it writes adapter files
    model = load_weights(run).model  # counting knows the new method too: its adapter tensors, each once
    scales = [p.detach() for n, p in model.named_parameters() if n.endswith(".ia3_l")]
    assert metrics["adapter_params"] == sum(p.numel() for p in scales) > 0
    assert max(float((p - 1).abs().max()) for p in scales) > 1e-3  # it trained: merging has something to fold

    capsys.readouterr()
    assert evaluate.main([str(run), "--device", "cpu", "--output", str(tmp_path / "eval.json"), "--quiet"]) == 0
    scored = json.loads((tmp_path / "eval.json").read_text())
    assert scored["method"] == NAME and scored["acc"] == pytest.approx(metrics["acc"])

    merged = tmp_path / "merged"
    assert merge_adapter.main([str(run), "--output", str(merged)]) == 0
    assert json.loads((merged / "manifest.json").read_text())["method"] == "full"  # a plain model: every tensor
    assert not any(".ia3_l" in t for t in json.loads((merged / "manifest.json").read_text())["tensors"])
    assert evaluate.main([str(merged), "--device", "cpu", "--output", str(tmp_path / "m.json"), "--quiet"]) == 0
    assert json.loads((tmp_path / "m.json").read_text())["acc"] == pytest.approx(scored["acc"])

    cloud = tmp_path / "cloud.npy"
    np.save(cloud, np.random.default_rng(0).normal(size=(300, 3)).astype(np.float32))
    capsys.readouterr()
    adapted = _predict_json(capsys, [str(cloud), "--weights", str(run), "--topk", "2"])
    plain = _predict_json(capsys, [str(cloud), "--weights", str(merged), "--topk", "2"])
    assert [p["label"] for p in adapted[0]["predictions"]] == [p["label"] for p in plain[0]["predictions"]]
    assert adapted[0]["predictions"][0]["prob"] == pytest.approx(plain[0]["predictions"][0]["prob"], abs=1e-4)
