"""maybe_compile: opt-in, in place (names and checkpoints unchanged), same outputs and gradients as eager."""

import warnings

import pytest
import torch

from pointclora.models import create_model
from pointclora.peft import CLoRAConfig, inject_adapters, sade_loss
from pointclora.utils import compile as compile_mod
from pointclora.utils.compile import maybe_compile


def _model():
    torch.manual_seed(0)
    model = create_model("point_mae_tiny", num_classes=5, num_groups=16, group_size=16, head_dropout=0.0)
    model = inject_adapters(model, CLoRAConfig(r=4, num_bases=2))
    with torch.no_grad():
        for bank in model.clora_banks.values():
            bank.B.normal_(std=0.1)
    return model.train()


def _step(model, points, labels):
    model.zero_grad(set_to_none=True)
    logits = model(points)
    (torch.nn.functional.cross_entropy(logits, labels) + 0.1 * sade_loss(model)).backward()
    return logits.detach(), {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


def test_disabled_is_a_no_op():
    model = _model()
    assert maybe_compile(model, False) is model
    assert model._compiled_call_impl is None


@pytest.mark.slow
def test_compiled_step_equals_eager_and_keeps_names():
    points, labels = torch.rand(2, 256, 3) * 2 - 1, torch.tensor([0, 3])
    eager, compiled = _model(), _model()
    keys = list(compiled.state_dict())
    # aot_eager traces forward and backward like inductor but skips code generation (minutes on a small CPU).
    assert maybe_compile(compiled, True, backend="aot_eager") is compiled
    assert compiled._compiled_call_impl is not None and list(compiled.state_dict()) == keys
    want_out, want = _step(eager, points, labels)
    got_out, got = _step(compiled, points, labels)
    assert torch.allclose(got_out, want_out, atol=1e-5)
    assert got.keys() == want.keys()
    for name in want:
        assert torch.allclose(got[name], want[name], atol=1e-5), name


def test_unavailable_compiler_warns_and_runs_eager(monkeypatch):
    monkeypatch.setattr(compile_mod.shutil, "which", lambda name: None)
    model = _model()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert maybe_compile(model, True) is model
    assert model._compiled_call_impl is None
    assert any("no C++ compiler" in str(w.message) for w in caught)
