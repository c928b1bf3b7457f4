"""CLoRA's ``q_fixed`` ablation: every ``Q`` stays the identity, so each layer's update is the bank's own ``s·B A``."""

import pytest
import torch
import torch.nn.functional as F
from peft_helpers import tiny

from pointclora.engine.optim import build_optimizer
from pointclora.peft import CLoRAConfig, PeftConfigError, inject_adapters, trainable_parameter_summary
from pointclora.peft.clora import clora_layers


def _train_steps(model, steps: int = 3):
    optimizer = build_optimizer(model, lr=0.05, weight_decay=0.0)
    gen = torch.Generator().manual_seed(0)
    points = torch.rand(4, 256, 3, generator=gen) * 2 - 1
    labels = torch.tensor([0, 1, 2, 3])
    model.train()
    for _ in range(steps):
        F.cross_entropy(model(points), labels).backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)


def test_q_fixed_is_off_by_default_and_validated():
    assert CLoRAConfig().q_fixed is False
    with pytest.raises(PeftConfigError, match="q_fixed must be true or false, got 'yes'"):
        CLoRAConfig(q_fixed="yes")


def test_q_fixed_freezes_q_and_counts_it_out():
    trained = inject_adapters(tiny(), CLoRAConfig(r=4, num_bases=2))
    fixed = inject_adapters(tiny(), CLoRAConfig(r=4, num_bases=2, q_fixed=True))
    layers = clora_layers(fixed)
    q_numel = sum(layer.Q.numel() for layer in layers)
    assert q_numel > 0 and all(not layer.Q.requires_grad for layer in layers)
    assert all(layer.Q.requires_grad for layer in clora_layers(trained))
    a, b = trainable_parameter_summary(trained), trainable_parameter_summary(fixed)
    assert a["trainable_params"] - b["trainable_params"] == q_numel
    assert a["trainable_params_without_head"] - b["trainable_params_without_head"] == q_numel


def test_q_fixed_training_moves_the_banks_only_and_every_delta_is_s_b_a():
    model = inject_adapters(tiny(), CLoRAConfig(r=4, num_bases=2, alpha=8, q_fixed=True))
    _train_steps(model)
    layers = clora_layers(model)
    for layer in layers:
        torch.testing.assert_close(layer.Q.detach(), torch.eye(4).expand_as(layer.Q))
    assert any(layer.bank.B.abs().sum() > 0 for layer in layers)  # the banks did learn
    for layer in layers:  # with Q = I every LRM of a shape group gets the same ΔW = s · B A (naive reference)
        bank = layer.bank
        expected = (bank.B @ bank.A * layer.scaling).repeat(layer.n_splits, 1)
        torch.testing.assert_close(layer.delta_weight().detach(), expected.detach())
