"""--protocol point-mae: the lr per epoch exactly as the official loop steps timm's CosineLRScheduler."""

import math

import pytest
import torch

from pointclora.engine.optim import OfficialEpochScheduler, cosine_lr, official_epoch_lrs, timm_cosine_lr


class _TimmCosineAsBuilt:
    """timm 0.4.5 CosineLRScheduler as Point-MAE's builder makes it (t_initial=epochs, lr_min=1e-6,
    warmup_lr_init=1e-6, warmup_t=10, cycle_limit=1, t_in_epochs=True), restated from its formula: at
    construction the groups get warmup_lr_init; step(epoch) sets _get_lr(epoch)."""

    def __init__(self, optimizer, t_initial, warmup_t=10, warmup_lr_init=1e-6, lr_min=1e-6):
        self.opt, self.T, self.W, self.init, self.min = optimizer, t_initial, warmup_t, warmup_lr_init, lr_min
        self.base = [g["lr"] for g in optimizer.param_groups]
        self.warmup_steps = [(v - warmup_lr_init) / warmup_t for v in self.base]
        for g in optimizer.param_groups:
            g["lr"] = warmup_lr_init

    def _get_lr(self, t):
        if t < self.W:
            return [self.init + t * s for s in self.warmup_steps]
        i = t // self.T
        t_curr = t - self.T * i
        if i < 1:  # cycle_limit = 1
            return [self.min + 0.5 * (v - self.min) * (1 + math.cos(math.pi * t_curr / self.T)) for v in self.base]
        return [self.min for _ in self.base]

    def step(self, epoch):
        for g, v in zip(self.opt.param_groups, self._get_lr(epoch)):
            g["lr"] = v


def _official_loop_lrs(base_lr, max_epoch, final_epoch=True):
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=base_lr)
    sched = _TimmCosineAsBuilt(opt, max_epoch)
    seen = []
    for epoch in range(0, max_epoch + (1 if final_epoch else 0)):  # runner_finetune: range(start, max_epoch + 1)
        seen.append(opt.param_groups[0]["lr"])  # the lr every step of this epoch uses
        sched.step(epoch)  # after the epoch
    return seen


def test_official_lr_per_epoch_table():
    lrs = official_epoch_lrs(5e-4, epochs=300)
    assert len(lrs) == 301
    table = {  # epoch -> lr, from timm's formula: epoch e >= 1 trains at _get_lr(e - 1)
        0: 1e-6,
        1: 1e-6,
        2: 5.09e-05,
        10: 4.501e-04,
        11: 4.986332128943842e-04,
        151: 2.505e-04,
        300: 1.0136802433047203e-06,
    }
    for epoch, value in table.items():
        assert lrs[epoch] == pytest.approx(value, rel=1e-12, abs=1e-18), epoch
    assert lrs == pytest.approx(_official_loop_lrs(5e-4, 300), rel=1e-12, abs=1e-18)


@pytest.mark.parametrize("base,epochs,final", [(1e-3, 300, True), (2e-4, 300, False), (5e-4, 150, True)])
def test_official_lr_matches_the_loop_for_pretrain_seg_and_fewshot(base, epochs, final):
    assert official_epoch_lrs(base, epochs, final_epoch=final) == pytest.approx(
        _official_loop_lrs(base, epochs, final), rel=1e-12, abs=1e-18
    )


def test_difference_to_our_default_is_one_epoch_of_delay():
    base, peak = 5e-4, 5e-4
    official = official_epoch_lrs(base, 300)
    ours = [cosine_lr(e, base, 300) for e in range(300)]
    assert official[1:] == pytest.approx(ours, rel=1e-12)  # the same values, one epoch later
    gap = max(abs(a - b) for a, b in zip(official, ours))
    assert 0.09 * peak < gap <= 0.1 * peak  # up to 10 % of the peak apart in an epoch (the warm-up steps)
    assert sum(official) == pytest.approx(sum(ours) + 1e-6, rel=1e-12)  # equal in sum, plus the extra epoch


def test_scheduler_sets_the_official_values_and_resumes():
    opt = torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=5e-4)
    sched = OfficialEpochScheduler(opt, epochs=300)
    assert sched.num_epochs == 301
    expected = official_epoch_lrs(5e-4, 300)
    for epoch in (0, 1, 2, 11, 300):
        sched.step(epoch)
        assert opt.param_groups[0]["lr"] == pytest.approx(expected[epoch], rel=1e-12)
    state = sched.state_dict()
    other = OfficialEpochScheduler(torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], lr=1.0), epochs=10)
    other.load_state_dict(state)
    other.step(11)
    assert other.optimizer.param_groups[0]["lr"] == pytest.approx(expected[11], rel=1e-12)
    assert timm_cosine_lr(300, 5e-4, 300) == 1e-6  # past the single cycle: lr_min


@pytest.mark.parametrize("warmup", [0, 1, 3])
def test_official_scheduler_with_its_own_values_and_groups_equals_the_table(warmup):
    # Non-default warm-up start and floor, two groups with base lrs of their own (not the optimizer's), few epochs:
    # the defaults (1e-6 twice, one group, warm-up 10) hide a swapped or dropped argument.
    E, init, floor, bases = 6, 0.02, 0.004, (0.1, 0.3)
    w, b = torch.nn.Parameter(torch.zeros(2)), torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([{"params": [w], "lr": 9.0}, {"params": [b], "lr": 9.0}])
    sched = OfficialEpochScheduler(opt, E, warmup, init, floor, base_lrs=bases, final_epoch=False)
    assert sched.num_epochs == E
    tables = [official_epoch_lrs(base, E, warmup, init, floor, final_epoch=False) for base in bases]
    assert len(tables[0]) == E
    # epoch 0 trains at warmup_lr_init, or at the base lr when there is no warm-up (timm: the optimizer's lr)
    assert [t[0] for t in tables] == ([init, init] if warmup else list(bases))
    for epoch in range(E + 3):  # past the end: the last value stays
        sched.step(epoch)
        assert sched.get_last_lr() == [t[min(epoch, E - 1)] for t in tables], epoch
    assert tables[0][E - 1] != floor  # so staying at the last value differs from falling to the floor
    state = sched.state_dict()
    assert state["final_epoch"] is False and state["official"] is True and state["base_lrs"] == list(bases)
    other = OfficialEpochScheduler(torch.optim.SGD([w, b], lr=1.0), epochs=50)
    other.load_state_dict(state)
    assert other.num_epochs == E and other.state_dict() == state
    older = {k: v for k, v in state.items() if k != "final_epoch"}  # a state saved before final_epoch existed
    other.load_state_dict(older)
    assert other.final_epoch is True and other.num_epochs == E + 1


def test_official_lrs_are_exact_where_the_floor_is_close_to_the_base():
    # lr_min + (base - lr_min) is not base in floating point for every pair: epoch 1 must take timm's value.
    base, floor = 1.5411228950648246e-06, 5.308160680461963e-07
    lrs = official_epoch_lrs(base, 4, 0, 1e-6, floor, final_epoch=False)
    assert lrs[0] == base and lrs[1] == timm_cosine_lr(0, base, 4, 0, 1e-6, floor) != base
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=base)
    sched = OfficialEpochScheduler(opt, 4, 0, 1e-6, floor, final_epoch=False)
    for epoch in range(4):
        sched.step(epoch)
        assert opt.param_groups[0]["lr"] == lrs[epoch]


def test_timm_cosine_defaults_and_later_cycles():
    base = 5e-4
    assert official_epoch_lrs(base) == official_epoch_lrs(base, 300, 10, 1e-6, 1e-6, True)  # the builder's values
    assert [timm_cosine_lr(t, base, 300) for t in (0, 5, 10, 200, 300)] == [
        timm_cosine_lr(t, base, 300, 10, 1e-6, 1e-6, 1, 1.0) for t in (0, 5, 10, 200, 300)]
    assert timm_cosine_lr(5, base, 300) == pytest.approx(1e-6 + 5 * (base - 1e-6) / 10, rel=1e-12)
    # cycle_limit > 1 (timm's restarts, not used by the official builder): cycle i runs from decay_rate**i times the
    # floor and the base, measured from the cycle's start
    T, floor, d = 8, 0.01, 0.1
    for t, i in ((3, 0), (8 + 3, 1), (16 + 5, 2)):
        lo, hi = floor * d**i, base * d**i
        want = lo + 0.5 * (hi - lo) * (1 + math.cos(math.pi * (t - T * i) / T))
        assert timm_cosine_lr(t, base, T, 2, 1e-6, floor, cycle_limit=3, decay_rate=d) == pytest.approx(want, rel=1e-12)
    assert timm_cosine_lr(8 + 3, base, T, 2, 1e-6, floor, cycle_limit=2) == pytest.approx(
        floor + 0.5 * (base - floor) * (1 + math.cos(math.pi * 3 / T)), rel=1e-12)  # decay_rate 1: the same cycle
    assert timm_cosine_lr(16 + 3, base, T, 2, 1e-6, floor, cycle_limit=2, decay_rate=d) == floor  # past the limit
    assert timm_cosine_lr(40, base, T, 2, 1e-6, floor, cycle_limit=0, decay_rate=d) == pytest.approx(
        floor * d**5 + 0.5 * (base - floor) * d**5 * 2, rel=1e-12)  # 0: no limit
