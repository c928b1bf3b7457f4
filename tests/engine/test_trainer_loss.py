"""What the Trainer back-propagates: the task loss plus the PEFT method's weighted auxiliary loss (SADE for CLoRA),
divided by the accumulation steps, checked against the values computed by hand at each step, not against itself;
the gradient norm the optimizer steps with (clipped); when validation runs."""

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from task_configs import task_cfg  # noqa: E402

from pointclora.engine.trainer import Trainer  # noqa: E402
from pointclora.peft.clora import sade_loss_naive  # noqa: E402


@pytest.mark.parametrize("accum", [1, 3])  # 3: an off-by-one in the micro-batch count shows (2 hides i±1)
def test_backpropagated_loss_is_task_loss_plus_weighted_sade(tmp_path, monkeypatch, accum):
    weight = 0.25  # not 1: a dropped or doubled weight shows
    cfg = task_cfg("classification", tmp_path, epochs=1)
    cfg["peft"]["sade_weight"] = weight
    cfg["optim"]["accumulation_steps"] = accum
    cfg["schedule"]["warmup_epochs"] = 0  # a warm-up epoch would run at lr 0 and keep B (and SADE) at 0
    size = {1: 4, 3: 6}[accum]  # 24 samples: 6 steps of one batch of 4, or 4 steps of 3 micro-batches of 2, so
    cfg["data"]["batch_size"] = size  # B moves off 0 and SADE becomes non-zero
    trainer = Trainer(cfg, output=tmp_path / "run", quiet=True)

    task_losses, seen, fresh = [], [], []
    real_step = trainer.task.training_step

    def training_step(model, batch, device):
        fresh.append(all(p.grad is None for p in trainer.trainable))  # no gradient held before this micro-batch
        out = real_step(model, batch, device)
        task_losses.append(out["loss"].detach().clone())
        return out

    real_scale = torch.amp.GradScaler.scale

    def scale(self, outputs):
        # Called with the loss about to be back-propagated, before backward: the adapters are the step's own.
        want = (task_losses[-1] + weight * sade_loss_naive(trainer.model).detach()) / accum
        seen.append((outputs.detach().clone(), want, task_losses[-1] / accum))
        return real_scale(self, outputs)

    real_step_opt = torch.amp.GradScaler.step
    stepped_after = []  # how many micro-batches had been back-propagated at each optimizer step

    def step(self, optimizer, *args, **kwargs):
        stepped_after.append(len(seen))
        return real_step_opt(self, optimizer, *args, **kwargs)

    monkeypatch.setattr(trainer.task, "training_step", training_step)
    monkeypatch.setattr(torch.amp.GradScaler, "scale", scale)
    monkeypatch.setattr(torch.amp.GradScaler, "step", step)
    trainer.fit()

    steps = 24 // size
    assert len(seen) == steps * accum  # the loader splits each batch into `accum` micro-batches
    for got, want, _ in seen:
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-7)
    # The check has teeth only where SADE is not 0 (B starts at 0): most steps must have a visible auxiliary term.
    # (values 4e-5..4e-4 here against a loss of ~0.8: a subtracted term misses the tolerance by 10x or more)
    assert sum(float(w - t) > 1e-5 for _, w, t in seen) >= len(seen) // 2
    history = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    aux_mean = sum(float(w - t) * accum for _, w, t in seen) / len(seen)  # the micro-batches are all of one size
    assert history[0]["train_aux_loss"] == pytest.approx(aux_mean, rel=1e-4, abs=1e-9)
    # one optimizer step per `accum` micro-batches, after the last of them; the logged loss is the task loss's mean
    assert stepped_after == [accum * (k + 1) for k in range(steps)]
    # the gradient accumulates over the micro-batches of a step; the step then frees it (set to None, not zeroed:
    # memory, and a tensor without a gradient in the next step is left alone by AdamW)
    assert fresh == [i % accum == 0 for i in range(len(seen))]
    assert history[0]["train_loss"] == pytest.approx(float(torch.stack(task_losses).mean()), rel=1e-5)


class _SmallScale(torch.amp.GradScaler):
    """A float16 GradScaler starting at 128: the default 65536 overflows the tiny model's float16 gradients on the
    CPU, and every step of a short run would be skipped."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **{**kwargs, "init_scale": 128.0})


@pytest.mark.parametrize("clip,amp", [(0.05, False), (0.05, True), (0.0, False), (None, False)])
def test_the_gradient_stepped_is_clipped_to_optim_grad_clip(tmp_path, monkeypatch, clip, amp):
    """The norm of the gradient AdamW steps with: the clip whenever the raw norm is above it (the default clip, 10,
    never engages on the tiny model; 0.05 always does), also under a float16 GradScaler (the gradient is unscaled
    before it is clipped); ``grad_clip: 0`` or ``null`` disables clipping (the raw norms, all above 0.05 here)."""
    cfg = task_cfg("classification", tmp_path, epochs=1, amp=amp, amp_dtype="float16")
    cfg["optim"]["grad_clip"] = clip
    monkeypatch.setattr(torch.amp, "GradScaler", _SmallScale)
    trainer = Trainer(cfg, output=tmp_path / "run", quiet=True)
    norms = []
    real_setup = Trainer._setup_optimization

    def setup(self):
        real_setup(self)
        real_step = self.optimizer.step

        def step(*args, **kwargs):  # AdamW's own step: after the GradScaler has unscaled (or skipped)
            grads = [p.grad for p in self.trainable if p.grad is not None]
            norms.append(float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads]))))
            return real_step(*args, **kwargs)

        self.optimizer.step = step

    monkeypatch.setattr(Trainer, "_setup_optimization", setup)
    clips, real_clip = [], torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(torch.nn.utils, "clip_grad_norm_", lambda p, max_norm, **k: clips.append(max_norm) or
                        real_clip(p, max_norm, **k))  # fmt: skip
    trainer.fit()
    assert trainer.scaler.is_enabled() == amp and len(norms) == 3
    if clip:
        assert all(n == pytest.approx(clip, rel=1e-4) for n in norms) and clips == [clip] * 3
    else:
        assert all(n > 0.05 for n in norms) and clips == []


def test_validation_runs_every_eval_every_epochs_and_on_the_last(tmp_path):
    cfg = task_cfg("classification", tmp_path, epochs=4)
    cfg["train"]["eval_every"] = 3  # not 2: an epoch count off by two (e - 1, e + 2) keeps the parity of 2
    Trainer(cfg, output=tmp_path / "run", quiet=True).fit()
    history = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert [("val_acc" in h) for h in history] == [False, False, True, True]
