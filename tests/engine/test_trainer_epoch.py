"""What one Trainer epoch records and says, checked against the steps it ran: the lr of the epoch, the training
accuracy from the steps' own counts, the TensorBoard scalars of every logged step and of every validation, the epoch
line of log.txt, the progress bar's label and postfix (on a terminal only), the default logging interval, an epoch
of a single sample, and a loss that is not finite."""

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from task_configs import run_folder_line, task_cfg  # noqa: E402

from pointclora.engine.logging import RunLogger  # noqa: E402
from pointclora.engine.optim import cosine_lr  # noqa: E402
from pointclora.engine.trainer import Trainer  # noqa: E402


def test_epoch_records_and_tensorboard_scalars_follow_the_steps(tmp_path, monkeypatch):
    cfg = task_cfg("classification", tmp_path, epochs=2)
    cfg["optim"]["lr"] = 0.004
    cfg["schedule"].update(warmup_epochs=1, warmup_lr_init=1e-4, lr_min=1e-5)
    cfg["train"]["log_every"] = 3  # 3 steps an epoch: steps 3 and 6 are logged, the others not
    cfg["data"]["batch_size"] = 8
    trainer = Trainer(cfg, output=tmp_path / "run", quiet=True)
    steps, scalars, labels = [], [], []
    real_step = trainer.task.training_step

    def training_step(model, batch, device):
        out = real_step(model, batch, device)
        steps.append((float(out["loss"].detach()), out["count"], out["stats"]["correct"]))
        # a task's own statistic (a sum over the batch, as "correct"): recorded as its mean per sample
        out["stats"]["loss_sum"] = float(out["loss"].detach()) * out["count"]
        return out

    monkeypatch.setattr(trainer.task, "training_step", training_step)
    monkeypatch.setattr(RunLogger, "scalars", lambda self, values, step: scalars.append((dict(values), step)))
    monkeypatch.setattr(trainer, "_progress", lambda it, desc: (labels.append(desc), it)[1])
    trainer.fit()

    assert labels == ["epoch 1/2", "epoch 2/2"]
    history = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert len(steps) == 6
    for e, h in enumerate(history):
        mine = steps[3 * e: 3 * e + 3]
        assert h["epoch"] == e + 1
        assert h["lr"] == pytest.approx(cosine_lr(e, 0.004, 2, 1, 1e-4, 1e-5), rel=1e-12)
        assert h["train_acc"] == pytest.approx(100.0 * sum(c for _, _, c in mine) / sum(n for _, n, _ in mine))
        assert h["train_loss"] == pytest.approx(sum(v * n for v, n, _ in mine) / sum(n for _, n, _ in mine))
        assert h["train_loss_sum"] == pytest.approx(h["train_loss"], rel=1e-9)
    assert len({h["lr"] for h in history}) == 2 and 0 < history[0]["train_acc"] < 100
    # per step (every log_every-th global step): the step's task loss, the auxiliary loss and the lr it stepped with
    logged = [(v, s) for v, s in scalars if "train/loss" in v]
    assert [s for _, s in logged] == [3, 6]
    for (values, step), lr in zip(logged, (history[0]["lr"], history[1]["lr"])):
        assert values["train/loss"] == pytest.approx(steps[step - 1][0], rel=1e-6)
        assert values["train/lr"] == lr and values["train/aux_loss"] >= 0.0
    # per validation: every scalar of the record under val/ at the epoch's number
    val = [(v, s) for v, s in scalars if "train/loss" not in v]
    assert [s for _, s in val] == [1, 2]
    for (values, _), h in zip(val, history):
        assert values == {"val/loss": h["val_loss"], "val/acc": h["val_acc"],
                          "val/mean_class_acc": h["val_mean_class_acc"]}  # fmt: skip
    lines = [ln for ln in (tmp_path / "run" / "log.txt").read_text().splitlines() if ln.startswith("epoch ")]
    assert lines == [f"epoch {h['epoch']}/2: lr {h['lr']:.2e} loss {h['train_loss']:.4f} | train {h['train_acc']:.2f}% "
                     f"| val {h['val_acc']:.2f}% (mAcc {h['val_mean_class_acc']:.2f}%) ({h['time_s']:.1f}s)"
                     for h in history]  # fmt: skip


def test_the_bar_shows_each_steps_loss_and_lr_and_tensorboard_gets_every_tenth_step_by_default(tmp_path, monkeypatch):
    """The progress bar's postfix at every optimizer step (the step's task loss and lr), and the default
    ``train.log_every`` (10) for a config that does not set it, on a model whose trainable tensors are all 1-D
    (norm tuning: AdamW then has a single, no-decay, param group, so the lr is read from the first group)."""
    cfg = task_cfg("classification", tmp_path, epochs=1, method="linear")
    cfg["peft"]["train_modules"] = ["norm"]
    cfg["schedule"].update(warmup_epochs=1, warmup_lr_init=3e-4)  # epoch 0 runs at 3e-4, not the base lr
    cfg["data"]["batch_size"] = 2  # 12 steps: only step 10 is logged
    del cfg["train"]["log_every"]
    trainer = Trainer(cfg, output=tmp_path / "run", quiet=True)
    losses, scalars, bars = [], [], []
    real_step = trainer.task.training_step

    def training_step(model, batch, device):
        out = real_step(model, batch, device)
        losses.append(float(out["loss"].detach()))
        return out

    class Bar:  # what tqdm gives on a terminal, reduced to what the Trainer uses
        def __init__(self, iterable):
            self.iterable, self.postfix = iterable, []

        def __iter__(self):
            return iter(self.iterable)

        def set_postfix(self, **values):
            self.postfix.append(values)

    monkeypatch.setattr(trainer.task, "training_step", training_step)
    monkeypatch.setattr(RunLogger, "scalars", lambda self, values, step: scalars.append((dict(values), step)))
    monkeypatch.setattr(trainer, "_progress", lambda it, desc: bars.append(Bar(it)) or bars[-1])
    trainer.fit()

    assert len(trainer.optimizer.param_groups) == 1 and len(losses) == 12
    lr = json.loads((tmp_path / "run" / "history.jsonl").read_text())["lr"]
    assert lr == pytest.approx(3e-4, rel=1e-12)
    assert len(bars) == 1 and bars[0].postfix == [{"loss": f"{v:.3f}", "lr": f"{lr:.2e}"} for v in losses]
    logged = [(v, s) for v, s in scalars if "train/loss" in v]
    assert logged == [({"train/loss": losses[9], "train/aux_loss": 0.0, "train/lr": lr}, 10)]


def test_an_epoch_of_one_sample_records_that_samples_loss_and_accuracy(tmp_path, monkeypatch):
    """The epoch's means divide by the samples seen, also when that is one (a 1-sample training set, batch 1)."""
    from torch.utils.data import Subset

    from pointclora.engine.data import TaskData

    cfg = task_cfg("classification", tmp_path, epochs=1, method="linear")
    cfg["peft"]["train_modules"] = ["norm"]  # the head's BatchNorm stays frozen: a batch of one cannot train it
    cfg["data"]["batch_size"] = 1
    trainer = Trainer(cfg, output=tmp_path / "run", quiet=True)
    full = trainer.task.build_data(trainer.data_root)
    trainer.prebuilt = TaskData(Subset(full.train, [0]), full.val, full.test, full.val_source, full.meta)
    steps = []
    real_step = trainer.task.training_step

    def training_step(model, batch, device):
        out = real_step(model, batch, device)
        steps.append((float(out["loss"].detach()), out["stats"]["correct"]))
        return out

    monkeypatch.setattr(trainer.task, "training_step", training_step)
    trainer.fit()
    (record,) = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    assert len(steps) == 1
    assert record["train_loss"] == pytest.approx(steps[0][0], rel=1e-12)
    assert record["train_acc"] == 100.0 * steps[0][1]


def test_the_progress_bar_is_shown_on_a_terminal_only(tmp_path, monkeypatch):
    from tqdm.auto import tqdm

    trainer = Trainer(task_cfg("classification", tmp_path), output=tmp_path / "run", quiet=False)
    trainer.main = True
    items = [1, 2, 3]
    monkeypatch.setattr(sys.stderr, "isatty", lambda: True)
    bar = trainer._progress(items, "epoch 1/2")
    assert isinstance(bar, tqdm) and bar.desc == "epoch 1/2" and list(bar) == items
    # cleared when the epoch ends (its line says the same once) and as wide as the terminal, also after a resize
    assert bar.leave is False and callable(bar.dynamic_ncols)
    bar.close()
    trainer.quiet = True
    assert trainer._progress(items, "x") is items
    trainer.quiet, trainer.main = False, False
    assert trainer._progress(items, "x") is items
    trainer.main = True
    monkeypatch.setattr(sys.stderr, "isatty", lambda: False)  # redirected to a file: no bar
    assert trainer._progress(items, "x") is items


def test_a_loss_that_is_not_finite_stops_the_run_naming_the_step(tmp_path, monkeypatch):
    cfg = task_cfg("classification", tmp_path, epochs=1)
    trainer = Trainer(cfg, output=tmp_path / "run", quiet=True)
    real_step = trainer.task.training_step
    calls = []

    def training_step(model, batch, device):
        out = real_step(model, batch, device)
        calls.append(1)
        if len(calls) == 2:
            out["loss"] = out["loss"] * torch.tensor(float("nan"))
        return out

    monkeypatch.setattr(trainer.task, "training_step", training_step)
    with pytest.raises(FloatingPointError) as err:
        trainer.fit()
    assert str(err.value) == "epoch 1 step 2: loss is nan; lower optim.lr"


@pytest.mark.parametrize("clip,used", [(0.0, 10.0), (0.05, 0.05)])
def test_the_official_double_step_takes_the_place_of_the_step(tmp_path, monkeypatch, clip, used):
    """``optim.seg_double_step`` (--protocol point-mae, segmentation): the official update replaces the plain one at
    every optimizer step, with the run's trainable tensors and its clip (10, the official value, when none is set)."""
    from pointclora.engine import protocol

    cfg = task_cfg("classification", tmp_path, epochs=1)
    cfg["optim"].update(seg_double_step=True, grad_clip=clip)
    trainer = Trainer(cfg, output=tmp_path / "run", quiet=True)
    calls, plain = [], []
    real = protocol.official_seg_step

    def official(optimizer, params, max_norm, scaler):
        calls.append((optimizer is trainer.optimizer, [id(p) for p in params], max_norm, scaler is trainer.scaler))
        return real(optimizer, params, max_norm, scaler)

    monkeypatch.setattr(protocol, "official_seg_step", official)
    monkeypatch.setattr(torch.amp.GradScaler, "step", lambda *a, **k: plain.append(1))
    trainer.fit()
    trainable = [id(p) for p in trainer.model.parameters() if p.requires_grad]
    assert calls == [(True, trainable, used, True)] * 3 and plain == []
    assert torch.load(tmp_path / "run" / "checkpoints" / "last.pth", weights_only=True)["global_step"] == 3


def test_the_end_writes_the_table_prints_it_under_quiet_and_survives_a_failed_flop_count(tmp_path, monkeypatch,
                                                                                           capsys):  # fmt: skip
    """After the last epoch: results.md is the task's table of metrics.json, --quiet still prints it with the run
    folder, an external log gets it instead of the console, a FLOP count that fails is said and left out; every
    epoch's record goes to ``on_epoch_end`` once its checkpoint is written."""
    cfg = task_cfg("classification", tmp_path, epochs=2, method="linear")
    cfg["peft"]["train_modules"] = ["norm"]
    del cfg["train"]["eval_every"]  # the default: every epoch
    cfg["train"]["select"] = "last"  # asked for: the last epoch, without the small-validation warning
    run = tmp_path / "run"
    seen = []

    def on_epoch_end(epoch, record):
        seen.append((epoch, torch.load(run / "checkpoints" / "last.pth", weights_only=True)["epoch"], record))

    trainer = Trainer(cfg, output=run, quiet=True, on_epoch_end=on_epoch_end)

    def gflops(model, num_points):
        raise RuntimeError(f"no counter for {num_points} points")

    monkeypatch.setattr(trainer.task, "gflops", gflops)
    monkeypatch.setattr(trainer.task, "epoch_line", lambda record: "")  # a task with nothing to add to the line
    metrics = trainer.fit()
    assert "gflops" not in metrics and json.loads((run / "metrics.json").read_text()) == metrics
    table = trainer.task.results_table(metrics)
    assert (run / "results.md").read_text() == table + "\n"
    summary = f"{table}\n\n{run_folder_line(run)}"
    assert capsys.readouterr().out == summary + "\n"  # quiet: nothing else
    log = (run / "log.txt").read_text()
    assert "GFLOPs not counted: no counter for 64 points\n" in log and log.endswith("\n" + summary + "\n")
    history = [json.loads(line) for line in (run / "history.jsonl").read_text().splitlines()]
    assert [(e, saved) for e, saved, _ in seen] == [(0, 1), (1, 2)] and [r for *_, r in seen] == history
    assert all("val_acc" in h for h in history) and "warning:" not in log
    assert (metrics["selection"], metrics["selection_label"], metrics["best_epoch"]) == (
        "last_epoch", "last epoch (train.select: last)", 2)  # fmt: skip
    assert all(isinstance(h["time_s"], float) and 0 < h["time_s"] == round(h["time_s"], 3) < 60 for h in history)
    assert [ln for ln in log.splitlines() if ln.startswith("epoch ")] == [
        f"epoch {h['epoch']}/2: lr {h['lr']:.2e} loss {h['train_loss']:.4f} ({h['time_s']:.1f}s)" for h in history]

    lines, run = [], tmp_path / "run2"  # with an external log (the API's log=): the summary goes there, not to print
    metrics = Trainer(cfg, output=run, quiet=True, log=lines.append).fit()
    assert metrics["gflops"] > 0 and capsys.readouterr().out == ""
    assert lines[-1] == f"\n{trainer.task.results_table(metrics)}\n\n{run_folder_line(run)}"


class _RecordingConsole:
    """A stand-in for sys.stdout that records each write and each flush, in order."""

    def __init__(self):
        self.events = []

    def write(self, text):
        self.events.append(("write", text))

    def flush(self):
        self.events.append(("flush",))


@pytest.mark.parametrize("table", ["  OA 91.2 (an indented table)", "X-OA 91.2"])
def test_quiet_prints_the_tasks_table_as_it_is_and_flushes_it(tmp_path, monkeypatch, table):
    """--quiet: the summary reaches the console verbatim (only the blank line that leads it in log.txt is dropped)
    and at once (flushed: under a pipe or a batch system its lines are not held back behind the stderr ones)."""
    cfg = task_cfg("classification", tmp_path, epochs=1, method="linear")
    run = tmp_path / "run"
    trainer = Trainer(cfg, output=run, quiet=True)
    monkeypatch.setattr(trainer.task, "results_table", lambda metrics: table)
    console = _RecordingConsole()
    monkeypatch.setattr(sys, "stdout", console)
    trainer.fit()
    written = "".join(e[1] for e in console.events if e[0] == "write")
    assert written == f"{table}\n\n{run_folder_line(run)}\n"
    assert console.events[-1] == ("flush",)


def test_each_log_line_is_flushed_and_log_txt_is_utf8_under_any_locale(tmp_path, monkeypatch):
    """A console line is flushed as it is said (a pipe or a batch log sees it when it happens), and log.txt is UTF-8
    also where the locale's encoding is not (simulated: ``open`` without an encoding gets ASCII, as under LANG=C
    without Python's UTF-8 coercion)."""
    import builtins

    from pointclora.engine import trainer as trainer_mod

    def ascii_locale_open(file, mode="r", *args, encoding=None, **kwargs):
        return builtins.open(file, mode, *args, encoding=encoding or "ascii", **kwargs)

    monkeypatch.setattr(trainer_mod, "open", ascii_locale_open, raising=False)
    trainer = Trainer(task_cfg("classification", tmp_path), output=tmp_path / "run", quiet=False)
    trainer.main = True
    (tmp_path / "run").mkdir()
    console = _RecordingConsole()
    monkeypatch.setattr(sys, "stdout", console)
    trainer.log("OA 91.2 ± 0.4 on 32 × 32 patches")
    assert console.events == [("write", "OA 91.2 ± 0.4 on 32 × 32 patches"), ("write", "\n"), ("flush",)]
    assert (tmp_path / "run" / "log.txt").read_bytes() == "OA 91.2 ± 0.4 on 32 × 32 patches\n".encode()


def test_a_config_without_seg_double_step_takes_the_plain_step(tmp_path, monkeypatch):
    """A hand-made config may lack ``optim.seg_double_step`` and ``optim.accumulation_steps``: the plain step then,
    one per batch of the whole batch size (no micro-batches)."""
    from pointclora.engine import protocol

    cfg = task_cfg("classification", tmp_path, epochs=1, method="linear")
    del cfg["optim"]["seg_double_step"], cfg["optim"]["accumulation_steps"]
    official = []
    monkeypatch.setattr(protocol, "official_seg_step", lambda *args: official.append(args))
    trainer = Trainer(cfg, output=tmp_path / "run", quiet=True)
    real_step, sizes = trainer.task.training_step, []

    def training_step(model, batch, device):
        sizes.append(len(batch["label"]))
        return real_step(model, batch, device)

    monkeypatch.setattr(trainer.task, "training_step", training_step)
    trainer.fit()
    steps = {int(s["step"]) for s in trainer.optimizer.state_dict()["state"].values()}
    assert official == [] and steps == {3} and trainer.global_step == 3  # 24 samples, batch 8
    assert sizes == [8, 8, 8]


@pytest.mark.parametrize("no_decay,stepping", [("ours", "before_epoch"), ("point-mae", "official")])
def test_the_optimizer_and_schedule_are_the_configs(tmp_path, no_decay, stepping):
    """AdamW with the config's lr, betas, eps and weight decay in the chosen parameter groups (ours: decay first;
    point-mae's ``add_weight_decay``: no-decay first, tokens exempt), and the chosen schedule: the official one
    steps one epoch late and runs one epoch more (classification's ``range(max_epoch + 1)``)."""
    from pointclora.engine.optim import official_epoch_lrs, param_groups
    from pointclora.engine.protocol import official_param_groups

    cfg = task_cfg("classification", tmp_path, epochs=2, method="linear")
    cfg["optim"].update(lr=0.003, weight_decay=0.1, betas=[0.8, 0.9], eps=1e-7, no_decay=no_decay)
    cfg["schedule"].update(stepping=stepping, warmup_epochs=1, warmup_lr_init=1e-4, lr_min=1e-5)
    cfg["protocol"] = "point-mae" if no_decay == "point-mae" else "ours"  # the label every output carries
    trainer = Trainer(cfg, output=tmp_path / "run", quiet=True)
    metrics = trainer.fit()
    assert metrics["protocol"] == cfg["protocol"]
    assert f"classification [protocol {cfg['protocol']}]: point_mae_tiny + linear: " in (
        tmp_path / "run" / "log.txt").read_text()
    groups = trainer.optimizer.param_groups
    want = (official_param_groups if no_decay == "point-mae" else param_groups)(trainer.model, 0.1)
    assert [[id(p) for p in g["params"]] for g in groups] == [[id(p) for p in g["params"]] for g in want]
    assert [g["weight_decay"] for g in groups] == ([0.0, 0.1] if no_decay == "point-mae" else [0.1, 0.0])
    assert all(g["betas"] == (0.8, 0.9) and g["eps"] == 1e-7 for g in groups)
    assert trainer.scheduler.base_lrs == [0.003, 0.003]
    history = [json.loads(line) for line in (tmp_path / "run" / "history.jsonl").read_text().splitlines()]
    lrs = (official_epoch_lrs(0.003, 2, 1, 1e-4, 1e-5, final_epoch=True) if stepping == "official"
           else [cosine_lr(e, 0.003, 2, 1, 1e-4, 1e-5) for e in range(2)])  # fmt: skip
    assert [h["lr"] for h in history] == pytest.approx(lrs, rel=1e-12)
    assert metrics["epochs"] == trainer.epochs == len(lrs)
