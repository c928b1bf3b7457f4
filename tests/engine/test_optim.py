"""The recipe's optimizer groups and the per-epoch cosine schedule with warm-up (timm CosineLRScheduler values)."""

import math

import pytest
import torch

from pointclora.engine.optim import CosineWarmupScheduler, build_optimizer, cosine_lr, param_groups
from pointclora.models import create_model


def test_cosine_with_warmup_matches_timm_formula():
    base, E, W = 5e-4, 300, 10
    assert cosine_lr(0, base, E, W) == pytest.approx(1e-6)
    assert cosine_lr(5, base, E, W) == pytest.approx(1e-6 + 5 * (base - 1e-6) / 10)
    # after warm-up the cosine is measured from epoch 0 (timm warmup_prefix=False)
    assert cosine_lr(10, base, E, W) == pytest.approx(1e-6 + 0.5 * (base - 1e-6) * (1 + math.cos(math.pi * 10 / 300)))
    assert cosine_lr(150, base, E, W) == pytest.approx(1e-6 + 0.5 * (base - 1e-6))
    assert cosine_lr(300, base, E, W) == pytest.approx(1e-6)
    lrs = [cosine_lr(e, base, E, W) for e in range(10, 300)]
    assert all(a >= b for a, b in zip(lrs, lrs[1:]))


def test_no_weight_decay_on_norms_biases_and_tokens():
    model = create_model("point_mae_tiny", num_classes=3)
    groups = param_groups(model, 0.05)
    names = {id(p): n for n, p in model.named_parameters()}
    decay = {names[id(p)] for p in groups[0]["params"]}
    no_decay = {names[id(p)] for p in groups[1]["params"]}
    assert groups[0]["weight_decay"] == 0.05 and groups[1]["weight_decay"] == 0.0
    assert {"cls_token", "cls_pos", "norm.weight", "blocks.0.attn.proj.bias"} <= no_decay
    assert "blocks.0.attn.qkv.weight" in decay and "cls_head_finetune.0.weight" in decay
    assert not any(n.endswith(".bias") for n in decay)
    assert len(decay) + len(no_decay) == sum(1 for _ in model.parameters())


def test_scheduler_sets_lr_per_epoch_and_round_trips():
    model = torch.nn.Linear(2, 2)
    opt = build_optimizer(model, lr=1e-3, weight_decay=0.05)
    sched = CosineWarmupScheduler(opt, epochs=10, warmup_epochs=2)
    sched.step(0)
    assert opt.param_groups[0]["lr"] == pytest.approx(1e-6)
    sched.step(4)
    expected = cosine_lr(4, 1e-3, 10, 2)
    assert sched.get_last_lr() == [pytest.approx(expected)] * len(opt.param_groups)
    other = CosineWarmupScheduler(build_optimizer(model, lr=0.5), epochs=1, warmup_epochs=0)
    other.load_state_dict(sched.state_dict())
    assert other.base_lrs == sched.base_lrs and other.last_epoch == 4 and other.epochs == 10


def test_distinct_warmup_start_and_floor_and_one_base_lr_per_group():
    # warmup_lr_init != lr_min (the defaults are both 1e-6, so a swap of the two would pass with them)
    base, E, W, init, floor = 0.1, 20, 4, 0.02, 0.005
    assert cosine_lr(0, base, E, W, init, floor) == pytest.approx(init)
    assert cosine_lr(3, base, E, W, init, floor) == pytest.approx(init + 3 * (base - init) / W)
    after = floor + 0.5 * (base - floor) * (1 + math.cos(math.pi * 4 / E))
    assert cosine_lr(4, base, E, W, init, floor) == pytest.approx(after)
    assert cosine_lr(20, base, E, W, init, floor) == floor and cosine_lr(25, base, E, W, init, floor) == floor
    assert cosine_lr(2.5, base, E, 0, init, floor) == pytest.approx(
        floor + 0.5 * (base - floor) * (1 + math.cos(math.pi * 2.5 / E)))  # no warm-up; a fractional epoch
    w = torch.nn.Parameter(torch.zeros(2, 2))
    b = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.SGD([{"params": [w], "lr": 0.1}, {"params": [b], "lr": 0.4}])
    sched = CosineWarmupScheduler(opt, epochs=E, warmup_epochs=W, warmup_lr_init=init, lr_min=floor)
    sched.step(6)
    assert sched.get_last_lr() == [pytest.approx(cosine_lr(6, lr, E, W, init, floor)) for lr in (0.1, 0.4)]
    state = sched.state_dict()
    assert state == {"epochs": E, "warmup_epochs": W, "warmup_lr_init": init, "lr_min": floor,
                     "base_lrs": [0.1, 0.4], "last_epoch": 6}  # fmt: skip
    other = CosineWarmupScheduler(torch.optim.SGD([w, b], lr=1.0), epochs=1, warmup_epochs=0)
    other.load_state_dict(state)
    assert other.state_dict() == state
    assert other.lr_at(6, 0.4) == pytest.approx(cosine_lr(6, 0.4, E, W, init, floor))


def test_build_optimizer_passes_betas_eps_and_both_groups():
    model = torch.nn.Linear(3, 2)
    opt = build_optimizer(model, lr=0.01, weight_decay=0.3, betas=(0.8, 0.95), eps=1e-6)
    assert isinstance(opt, torch.optim.AdamW)
    assert [(g["lr"], g["weight_decay"], g["betas"], g["eps"]) for g in opt.param_groups] == [
        (0.01, 0.3, (0.8, 0.95), 1e-6), (0.01, 0.0, (0.8, 0.95), 1e-6)]
    assert opt.param_groups[0]["params"][0] is model.weight and opt.param_groups[1]["params"][0] is model.bias
    frozen = torch.nn.Linear(3, 2).requires_grad_(False)
    with pytest.raises(ValueError) as err:
        build_optimizer(frozen, lr=0.01)
    assert str(err.value) == "the model has no trainable parameters (did the PEFT method freeze everything?)"
    only_bias = torch.nn.Linear(3, 2)
    only_bias.weight.requires_grad_(False)
    assert [g["weight_decay"] for g in param_groups(only_bias, 0.3)] == [0.0]  # an empty group is left out


def test_defaults_are_the_recipe():
    model = torch.nn.Linear(3, 2)
    opt = build_optimizer(model, lr=0.01)
    assert [(g["weight_decay"], g["betas"], g["eps"]) for g in opt.param_groups] == [
        (0.05, (0.9, 0.999), 1e-8), (0.0, (0.9, 0.999), 1e-8)]
    sched = CosineWarmupScheduler(opt, epochs=300)
    assert (sched.warmup_epochs, sched.warmup_lr_init, sched.lr_min, sched.base_lrs) == (10, 1e-6, 1e-6, [0.01, 0.01])
    sched.step(9)  # the last warm-up epoch
    assert sched.get_last_lr() == [pytest.approx(1e-6 + 9 * (0.01 - 1e-6) / 10, rel=1e-12)] * 2
    assert cosine_lr(9, 0.01, 300) == cosine_lr(9, 0.01, 300, 10, 1e-6, 1e-6)


def test_scheduler_with_base_lrs_of_its_own_and_before_its_first_step():
    w, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [w], "lr": 7.0}, {"params": [b], "lr": 7.0}])
    sched = CosineWarmupScheduler(opt, epochs=20, warmup_epochs=2, warmup_lr_init=0.01, lr_min=0.001,
                                  base_lrs=(0.2, 0.05))  # fmt: skip
    assert sched.state_dict()["last_epoch"] == -1 and sched.get_last_lr() == [7.0, 7.0]  # nothing set yet
    sched.step(5)
    assert sched.get_last_lr() == [cosine_lr(5, base, 20, 2, 0.01, 0.001) for base in (0.2, 0.05)]
    assert sched.base_lrs == [0.2, 0.05] and sched.last_epoch == 5


def test_no_decay_names_match_in_full_or_by_last_component_and_the_methods_own():
    from pointclora.peft import CLoRAConfig, inject_adapters

    class Toy(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = torch.nn.Module()
            self.inner.table = torch.nn.Parameter(torch.zeros(2, 2))  # named in full
            self.inner.gate = torch.nn.Parameter(torch.zeros(2, 2))  # its last component only: "gate" is not listed
            self.wrapped = torch.nn.Module()
            self.wrapped.token = torch.nn.Parameter(torch.zeros(1, 2))  # as a PEFT wrapper would rename "token"
            self.weight = torch.nn.Parameter(torch.zeros(2, 2))
            self.rel = torch.nn.Module()
            self.rel.bias = torch.nn.Parameter(torch.zeros(2, 3))  # a 2-D bias (a position-bias table): no decay

        def no_weight_decay(self):
            return {"inner.table", "token", "gate.x"}

    model = Toy()
    names = {id(p): n for n, p in model.named_parameters()}
    groups = param_groups(model, 0.1)
    assert [sorted(names[id(p)] for p in g["params"]) for g in groups] == [
        ["inner.gate", "weight"], ["inner.table", "rel.bias", "wrapped.token"]]
    # the PEFT method's own no-decay names: CLoRA's Q (3-D, initialised to the identity)
    clora = inject_adapters(create_model("point_mae_tiny", num_classes=3), CLoRAConfig(r=2, num_bases=2))
    names = {id(p): n for n, p in clora.named_parameters()}
    decay, no_decay = ({names[id(p)] for p in g["params"]} for g in param_groups(clora, 0.1))
    qs = {n for n in names.values() if n.endswith(".Q")}
    assert qs and qs <= no_decay and not qs & decay
    assert any(n.startswith("clora_banks.") for n in decay)
