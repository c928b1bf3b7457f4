"""The one Trainer, for every task: outputs, exact resume after a kill, torn writes, AMP + accumulation, refused
resumes, the run-folder lock, and a failed start that leaves nothing behind."""

import json
import os
import re
import sys
import time
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from task_configs import TASKS, run_folder_line, task_cfg, write_tiny_backbone  # noqa: E402

import pointclora  # noqa: E402
from pointclora.engine import trainer as trainer_mod  # noqa: E402
from pointclora.engine.logging import RunLogger  # noqa: E402
from pointclora.engine.runlock import RunLockedError  # noqa: E402
from pointclora.engine.trainer import ResumeError, Trainer  # noqa: E402
from pointclora.utils import atomic  # noqa: E402

MONITOR = {"classification": "acc", "part_segmentation": "instance_miou", "mae_pretraining": "loss"}


def _state(run: Path):
    return torch.load(run / "checkpoints" / "last.pth", weights_only=True)


def _history(run: Path):
    return [{k: v for k, v in json.loads(ln).items() if k != "time_s"}
            for ln in (run / "history.jsonl").read_text().splitlines()]  # fmt: skip


def _metrics(run: Path):
    return {k: v for k, v in json.loads((run / "metrics.json").read_text()).items() if k != "wall_time_s"}


def _assert_same_run(a: Path, b: Path):
    sa, sb = _state(a), _state(b)
    assert sa["model"].keys() == sb["model"].keys()
    for k in sa["model"]:
        assert torch.equal(sa["model"][k], sb["model"][k]), k
    assert _metrics(a) == _metrics(b)
    assert _history(a) == _history(b)


def _killed_after_epoch(cfg, run: Path, epoch: int, monkeypatch) -> None:
    """Train ``cfg`` into ``run`` and die right after epoch ``epoch``'s checkpoint is written."""
    real_save = trainer_mod.atomic_save

    def save_then_die(obj, path):
        real_save(obj, path)
        if Path(path).name == "last.pth" and obj["epoch"] == epoch:
            raise KeyboardInterrupt(f"simulated kill right after epoch {epoch}'s checkpoint")

    monkeypatch.setattr(trainer_mod, "atomic_save", save_then_die)
    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg, output=run, quiet=True).fit()
    monkeypatch.setattr(trainer_mod, "atomic_save", real_save)


@pytest.mark.parametrize("task", TASKS)
def test_outputs_of_every_task(task, tmp_path, monkeypatch):
    run = tmp_path / "run"
    cfg = task_cfg(task, tmp_path)
    del cfg["protocol"]  # a config without the key: "ours"
    cfg["train"]["eval_test"] = task == "mae_pretraining"  # pre-training has no test split: nothing more is scored
    trainer = Trainer(cfg, output=run, quiet=True)
    finals, real_final = [], trainer.task.final_metrics

    def final_metrics(model, loaders, device, autocast, meta):
        out = real_final(model, loaders, device, autocast, meta)
        finals.append((model is trainer.model, loaders == {"val": trainer.val_loader, "test": trainer.test_loader},
                       meta is trainer.data.meta, out))  # fmt: skip
        return out

    monkeypatch.setattr(trainer.task, "final_metrics", final_metrics)
    m = trainer.fit()
    # the final numbers: the selected model's (rebuilt from best/); pre-training (no test split) also scores the last
    # epoch's model with them, kept under last_
    last_too = [(True, True, True)] if trainer.test_loader is None else []
    assert [f[:3] for f in finals] == [*last_too, (False, True, True)] and (task == "mae_pretraining") == bool(last_too)
    assert all(m[k] == v for k, v in finals[-1][3].items())
    if trainer.test_loader is None:
        assert m["last_val_loss"] == finals[0][3]["val_loss"] == pytest.approx(_history(run)[-1]["val_loss"])
    assert isinstance(m["wall_time_s"], float) and m["wall_time_s"] == round(m["wall_time_s"], 1)
    # the run's first lines: where, what, how many processes, which device and seed; the model and the data
    data = trainer.data
    lines = (run / "log.txt").read_text().splitlines()
    assert f"run {run}: {task}, world size 1 (one process), device cpu, seed 0" in lines
    test_part = f" / {len(data.test)} test" if data.test is not None else ""
    assert (f"{task} [protocol ours]: point_mae_tiny + {m['method']}: {m['trainable_params']:,} trainable of "
            f"{m['total_params']:,} parameters; {len(data.train)} train / {len(data.val)} val [{data.val_source}]"
            f"{test_part} samples") in lines  # fmt: skip
    for rel in ("config.yaml", "log.txt", "history.jsonl", "metrics.json", "results.md", "checkpoints/last.pth",
                "best/manifest.json", "best/weights.safetensors", "last/manifest.json"):  # fmt: skip
        assert (run / rel).is_file(), rel
    assert list((run / "tb").iterdir()), "TensorBoard events"
    assert [h["epoch"] for h in _history(run)] == [1, 2]  # epochs count from 1, as the log lines
    assert m["task"] == task and m["method"] == ("full" if task == "mae_pretraining" else "clora")
    assert (m["seed"], m["epochs"], m["world_size"], m["device"], m["protocol"], m["config"]) == (
        0, 2, 1, "cpu", "ours", f"tiny_{task}")
    # the kept epoch, from the run's own history: the last one where the validation set is too small to choose on
    # (the tiny classification and segmentation sets), else the best validation score (pre-training: the lowest loss)
    scores = [h[f"val_{MONITOR[task]}"] for h in _history(run)]
    best = 2 if m["selection"] == "last_epoch" else scores.index(min(scores)) + 1
    assert m["selection"] == ("best_on_val" if task == "mae_pretraining" else "last_epoch")
    warning = (f"warning: the validation set is too small to choose an epoch on ({trainer.select_reason}): the result "
               "is the last epoch's model (--set train.select=best to choose on it anyway)")  # fmt: skip
    said = [ln for ln in (run / "log.txt").read_text().splitlines() if ln.startswith("warning:")]
    small = task != "mae_pretraining"  # the tiny classification and segmentation validation sets
    assert said == ([warning] if small else []) and ("under 100" in warning) == small
    assert m["best_epoch"] == best and m[f"best_val_{MONITOR[task]}"] == scores[best - 1]
    assert "loaded" in (run / "log.txt").read_text() or task == "mae_pretraining" or "trainable" in (
        run / "log.txt").read_text()
    manifest = json.loads((run / "best" / "manifest.json").read_text())
    assert manifest["task"] == task and manifest["epoch"] == m["best_epoch"]
    assert "best_test_epoch" not in m and f"best_test_{MONITOR[task]}" not in m  # the test split was not scored
    state = _state(run)  # the resume point: what it is, of which run, and the kept epoch
    assert (state["kind"], state["version"], state["task"], state["epoch"]) == (
        "training_state", pointclora.__version__, task, 2)  # fmt: skip
    assert state["config"] == (run / "config.yaml").read_text() and len(state["rng"]) == 1
    assert state["best"]["epoch"] == m["best_epoch"] and state["best_test"] == {}
    assert not (run / ".lock").exists()  # released
    if task == "mae_pretraining":  # the exported encoders, each with the epoch it is from
        assert torch.load(run / "encoder-best.pth", weights_only=True)["epoch"] == m["best_epoch"]
        assert torch.load(run / "encoder-last.pth", weights_only=True)["epoch"] == 2


@pytest.mark.parametrize("task", TASKS)
def test_kill_then_resume_equals_uninterrupted(task, tmp_path, monkeypatch):
    full, killed = tmp_path / "full", tmp_path / "killed"
    Trainer(task_cfg(task, tmp_path, epochs=3), output=full, quiet=True).fit()
    _killed_after_epoch(task_cfg(task, tmp_path, epochs=3), killed, 1, monkeypatch)
    assert _state(killed)["epoch"] == 1 and not (killed / "metrics.json").exists()
    torch.manual_seed(1234)  # the resumed process starts from another RNG state: the checkpoint must fix it
    Trainer(task_cfg(task, tmp_path, epochs=3), output=killed, resume=True, quiet=True).fit()
    _assert_same_run(full, killed)
    assert f"resumed {killed / 'checkpoints' / 'last.pth'} after epoch 1/3\n" in (killed / "log.txt").read_text()


def test_a_resume_takes_rank_0s_random_streams_and_goes_on_with_the_wall_time(tmp_path, monkeypatch):
    """A checkpoint holds one RNG state per process: one process resuming takes rank 0's (drop-path draws from it,
    and the loader's generator, which gives loader workers their seeds), and the run's wall time goes on from the
    checkpoint's ``elapsed_s``."""
    import copy

    cfg = task_cfg("classification", tmp_path, epochs=2)
    full, killed = tmp_path / "full", tmp_path / "killed"
    loader_states = {full: [], killed: []}  # the loader's generator as each epoch starts (workers' base seeds)
    real_epoch = Trainer._train_epoch

    def train_epoch(self, epoch):
        loader_states[self.run_dir].append((epoch, self.loader_gen.get_state()))
        return real_epoch(self, epoch)

    monkeypatch.setattr(Trainer, "_train_epoch", train_epoch)
    Trainer(cfg, output=full, quiet=True).fit()
    _killed_after_epoch(cfg, killed, 1, monkeypatch)
    state = _state(killed)
    other = copy.deepcopy(state["rng"][0])  # another process's streams
    other["torch"] = torch.Generator().manual_seed(99).get_state()
    other["generators"]["loader"] = torch.Generator().manual_seed(98).get_state()
    state.update(rng=[state["rng"][0], other], elapsed_s=1000.0)
    torch.save(state, killed / "checkpoints" / "last.pth")
    Trainer(cfg, output=killed, resume=True, quiet=True).fit()
    _assert_same_run(full, killed)
    (e0, first), (e1, second) = loader_states[full]
    assert (e0, e1) == (0, 1) and not torch.equal(first, second)  # each epoch's loader draws from it
    assert [(e, torch.equal(g, second)) for e, g in loader_states[killed]] == [(0, False), (1, True)]
    assert 1000.0 < _state(killed)["elapsed_s"] < 1600.0
    assert 1000.0 < json.loads((killed / "metrics.json").read_text())["wall_time_s"] < 1600.0


def test_a_float16_amp_run_resumes_exactly_with_its_grad_scale(tmp_path, monkeypatch):
    """``train.amp`` with float16 (a GradScaler; on the CPU too): the scale moves while training (overflowing steps
    halve it and are skipped), and a resumed run continues from the saved scale."""
    cfg = task_cfg("classification", tmp_path, epochs=2, amp=True, amp_dtype="float16")
    full, killed = tmp_path / "full", tmp_path / "killed"
    trainer = Trainer(cfg, output=full, quiet=True)
    trainer.fit()
    assert trainer.scaler.is_enabled() and trainer.scaler.get_scale() != 65536.0  # the default start: it moved
    _killed_after_epoch(cfg, killed, 1, monkeypatch)
    Trainer(cfg, output=killed, resume=True, quiet=True).fit()
    _assert_same_run(full, killed)
    assert _state(killed)["scaler"] == _state(full)["scaler"]


def test_per_step_stepping_follows_the_cosine_through_each_epoch_and_resumes_exactly(tmp_path, monkeypatch):
    from pointclora.engine.optim import cosine_lr

    cfg = task_cfg("mae_pretraining", tmp_path, epochs=3)
    cfg["schedule"].update(stepping="per_step", warmup_epochs=1)
    seen, real_step = [], Trainer._optimizer_step

    def record(self, epoch, *args):
        seen.append((epoch, len(self.train_loader), self.optimizer.param_groups[0]["lr"]))
        return real_step(self, epoch, *args)

    monkeypatch.setattr(Trainer, "_optimizer_step", record)
    Trainer(cfg, output=tmp_path / "full", quiet=True).fit()
    steps = seen[0][1]
    assert steps >= 2 and len(seen) == 3 * steps
    expected = [cosine_lr(e + i / steps, 0.002, 3, 1, 1e-6, 1e-6) for e in range(3) for i in range(steps)]
    assert [lr for _, _, lr in seen] == pytest.approx(expected, rel=1e-12)
    assert len(set(lr for _, _, lr in seen)) == len(seen)  # every step its own lr, unlike before_epoch

    _killed_after_epoch(cfg, tmp_path / "killed", 2, monkeypatch)
    state = _state(tmp_path / "killed")
    del state["elapsed_s"]  # a checkpoint from before elapsed_s was kept: the wall time counts from the resume
    torch.save(state, tmp_path / "killed" / "checkpoints" / "last.pth")
    start = time.time()
    Trainer(cfg, output=tmp_path / "killed", resume=True, quiet=True).fit()
    took = time.time() - start
    _assert_same_run(tmp_path / "full", tmp_path / "killed")
    assert 0 < json.loads((tmp_path / "killed" / "metrics.json").read_text())["wall_time_s"] <= took + 0.05


def test_kill_during_checkpoint_write_keeps_the_previous_one(tmp_path, monkeypatch):
    full, killed = tmp_path / "full", tmp_path / "killed"
    cfg = task_cfg("classification", tmp_path)
    Trainer(cfg, output=full, quiet=True).fit()
    real_save = trainer_mod.atomic_save

    def torn_save(obj, path):
        if Path(path).name == "last.pth" and obj["epoch"] == 2:
            data = torch.save(obj, "/dev/null") or b"PK\x03\x04 half a checkpoint"

            def half_then_die(f):
                f.write(data)
                raise KeyboardInterrupt("simulated kill in the middle of writing last.pth")

            atomic._atomic_write(path, half_then_die)
        real_save(obj, path)

    monkeypatch.setattr(trainer_mod, "atomic_save", torn_save)
    with pytest.raises(KeyboardInterrupt):
        Trainer(cfg, output=killed, quiet=True).fit()
    monkeypatch.setattr(trainer_mod, "atomic_save", real_save)
    assert _state(killed)["epoch"] == 1  # still loads: epoch 1's checkpoint, intact
    assert [p.name for p in (killed / "checkpoints").iterdir()] == ["last.pth"]
    Trainer(cfg, output=killed, resume=True, quiet=True).fit()
    _assert_same_run(full, killed)  # history.jsonl's orphan epoch 2 was replaced, not duplicated


@pytest.mark.parametrize("task", TASKS)
def test_amp_and_accumulation_run_for_every_task(task, tmp_path):
    cfg = task_cfg(task, tmp_path, epochs=1, amp=True)
    cfg["optim"]["accumulation_steps"] = 2
    trainer = Trainer(cfg, output=tmp_path / "run", quiet=True)
    m = trainer.fit()
    assert m["epochs"] == 1 and (tmp_path / "run" / "best" / "manifest.json").is_file()
    assert not trainer.scaler.is_enabled()  # bfloat16 on the CPU: no GradScaler (float16 only)


def test_resume_with_a_changed_config_is_refused(tmp_path):
    run = tmp_path / "run"
    Trainer(task_cfg("classification", tmp_path, epochs=1), output=run, quiet=True).fit()
    with pytest.raises(ResumeError, match=r"schedule\.epochs: 1 -> 3"):
        Trainer(task_cfg("classification", tmp_path, epochs=3), output=run, resume=True, quiet=True).fit()
    # the whole message, naming the first six of seven changes
    cfg = task_cfg("classification", tmp_path, epochs=3)
    cfg["optim"].update(lr=0.1, weight_decay=0.5, eps=1e-6, grad_clip=1.0)
    cfg["schedule"].update(warmup_epochs=0, lr_min=0.0)
    with pytest.raises(ResumeError) as err:
        Trainer(cfg, output=run, resume=True, quiet=True).fit()
    changes = ["optim.eps: 1e-08 -> 1e-06", "optim.grad_clip: 10.0 -> 1.0", "optim.lr: 0.002 -> 0.1",
               "optim.weight_decay: 0.05 -> 0.5", "schedule.epochs: 1 -> 3", "schedule.lr_min: 1e-06 -> 0.0"]
    assert str(err.value) == (f"--resume: the config differs from the run in {run} ({'; '.join(changes)}); resume "
                              f"with the run's own config ({run / 'config.yaml'}) or start a new --output")  # fmt: skip
    with pytest.raises(ResumeError, match=r"peft\.method"):
        Trainer(task_cfg("classification", tmp_path, epochs=1, method="lora"), output=run, resume=True).fit()
    # Another sitting may have other cores: the thread count may change (it changes only float rounding).
    Trainer(task_cfg("classification", tmp_path, epochs=1, threads=1), output=run, resume=True, quiet=True).fit()


def test_a_second_writer_is_refused_with_the_holders_pid(tmp_path):
    import os
    import socket

    from pointclora.engine import runlock

    run = tmp_path / "run"
    run.mkdir()
    holder = os.getppid()  # a live process that is not this one: the "other writer"
    record = {"pid": holder, "host": socket.gethostname(), "proc_start": runlock._proc_start(holder), "command": "x"}
    (run / runlock.LOCK_NAME).write_text(json.dumps(record))
    with pytest.raises(RunLockedError, match=f"process {holder} "):
        Trainer(task_cfg("classification", tmp_path), output=run, quiet=True).fit()
    assert (run / runlock.LOCK_NAME).exists()  # the holder's lock is left alone


def test_a_dead_writers_lock_is_taken_over_and_said_in_one_line(tmp_path, capsys):
    """#19: the lock of a process that no longer runs (here: a live pid that now belongs to another process) is taken
    over with one line in log.txt, not a raw UserWarning."""
    import socket
    import warnings

    from pointclora.engine import runlock

    run = tmp_path / "run"
    run.mkdir()
    holder = os.getppid()
    record = {"pid": holder, "host": socket.gethostname(), "proc_start": "another process", "command": "x",
              "started": "2026-01-02 03:04:05"}  # fmt: skip
    (run / runlock.LOCK_NAME).write_text(json.dumps(record))
    cfg = task_cfg("classification", tmp_path)
    cfg["data"]["batch_size"] = 64  # the start fails right after the lock: nothing is trained
    with warnings.catch_warnings(record=True) as caught, pytest.raises(ValueError, match="fewer than data.batch_size"):
        warnings.simplefilter("always")
        Trainer(cfg, output=run).fit()  # not quiet (the default): the console gets the lines too
    assert not [w for w in caught if "lock" in str(w.message)]
    note = (f"note: took over the run-folder lock of process {holder} (started 2026-01-02 03:04:05), which no longer "
            "runs")
    assert (run / "log.txt").read_text().splitlines()[0] == note
    assert capsys.readouterr().out.splitlines()[0] == note
    assert not (run / runlock.LOCK_NAME).exists()  # released by the failed start; the folder (not its own) is kept


def test_a_fresh_start_on_a_run_and_a_resume_of_nothing_are_refused_whole(tmp_path):
    """Before anything is built: a run folder that holds a checkpoint is not overwritten without --resume (and is
    left as it was), and --resume of a folder without one says why; a folder the refused start created is removed."""
    cfg = task_cfg("classification", tmp_path, epochs=1)
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "checkpoints" / "last.pth").write_bytes(b"a checkpoint")
    with pytest.raises(FileExistsError) as err:
        Trainer(cfg, output=run, quiet=True).fit()
    assert str(err.value) == f"{run} already holds a run; pass --resume to continue it or choose another --output"
    assert sorted(p.name for p in run.iterdir()) == ["checkpoints"]  # as it was: no lock, no log
    assert (run / "checkpoints" / "last.pth").read_bytes() == b"a checkpoint"
    empty = tmp_path / "empty"
    with pytest.raises(FileNotFoundError) as err:
        Trainer(cfg, output=empty, resume=True, quiet=True).fit()
    assert str(err.value) == (f"--resume: no checkpoint at {empty / 'checkpoints' / 'last.pth'}: the run stopped "
                              "before its first epoch ended, so there is nothing to continue; start it again without "
                              "--resume (same --output)")  # fmt: skip
    assert not empty.exists()


def test_a_failed_start_leaves_no_run_folder(tmp_path):
    cfg = task_cfg("classification", tmp_path)
    cfg["data"]["batch_size"] = 64  # more than the 24 training samples
    with pytest.raises(ValueError, match="fewer than data.batch_size"):
        Trainer(cfg, output=tmp_path / "run", quiet=True).fit()
    assert not (tmp_path / "run").exists()


def test_train_compile_runs_the_compiled_model(tmp_path, monkeypatch):
    """``train.compile``: the Trainer compiles in place (the eager backend here: dynamo traces the model and
    generates nothing; aot_eager costs a third more, inductor minutes on a CPU) and the run's weights still save and
    reload under the eager names."""
    import functools

    from pointclora.api import load_weights
    from pointclora.utils import compile as compile_mod

    calls = []
    real = compile_mod.maybe_compile

    def traced(model, enabled, device="cpu", **kw):
        calls.append(enabled)
        return functools.partial(real, backend="eager")(model, enabled, device)

    monkeypatch.setattr(compile_mod, "maybe_compile", traced)
    cfg = task_cfg("classification", tmp_path, epochs=1, compile=True)
    m = Trainer(cfg, output=tmp_path / "run", quiet=True).fit()
    assert calls == [True] and m["epochs"] == 1
    assert load_weights(tmp_path / "run").manifest["method"] == "clora"


def _folder_dataset(root, rows=40):
    """A <class>/<split>/*.txt folder: two classes, four clouds each per split."""
    import numpy as np

    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        for c in ("box", "ball"):
            (root / c / split).mkdir(parents=True, exist_ok=True)
            for i in range(4):
                np.savetxt(root / c / split / f"{c}_{i}.txt", rng.normal(size=(rows, 3)), fmt="%.5f")
    return root


@pytest.mark.parametrize("case", ["defaults", "keys_absent", "validate_off", "workers_2", "val_is_test"])
def test_each_split_is_validated_once_with_the_runs_workers_unless_turned_off(tmp_path, monkeypatch, case):
    """Before the first step every distinct split is read once (``data.validate``, default on: a hand-made config
    without the key validates too), with ``data.num_workers`` readers; validation on the test split (the same
    object twice) reads it once."""
    import dataclasses

    from pointclora.datasets import validation

    cfg = task_cfg("classification", tmp_path, epochs=1)
    if case == "keys_absent":
        del cfg["data"]["validate"], cfg["data"]["num_workers"]
    cfg["data"].update({"validate_off": {"validate": False}, "workers_2": {"num_workers": 2}}.get(case, {}))
    trainer = Trainer(cfg, output=tmp_path / "run", quiet=True)
    trainer._setup_process()
    data = trainer.task.build_data(None)
    if case == "val_is_test":
        data = dataclasses.replace(data, val=data.test)
    calls = []
    monkeypatch.setattr(validation, "validate_dataset", lambda ds, num_workers: calls.append((ds, num_workers)))
    trainer._check_data(data)
    splits = [data.train, data.val] + ([] if case == "val_is_test" else [data.test])
    expected = [] if case == "validate_off" else [(ds, 2 if case == "workers_2" else 0) for ds in splits]
    assert [(id(ds), n) for ds, n in calls] == [(id(ds), n) for ds, n in expected]


@pytest.mark.parametrize("section", ["absent", "empty", "relative_root"])
def test_the_data_root_reaches_the_tasks_data_and_its_up_axis_note_is_logged(tmp_path, monkeypatch, section):
    """``data_root`` goes to ``task.build_data`` also for a task whose config has no (or an empty) ``dataset``
    section (then the Trainer records nothing and passes it as given), and the data's up-axis note is said once
    in log.txt."""
    cfg = task_cfg("classification", tmp_path, epochs=1)
    data = Trainer(cfg, output=tmp_path / "probe").task.build_data(None)
    data.meta["up_axis_note"] = "data.up_axis: the files are y-up; turned z-up for this backbone"
    given = None if section == "relative_root" else "my/data"
    if section == "absent":
        del cfg["dataset"]
    else:  # a root in the config is made absolute, recorded, and is the one the data is read from
        cfg["dataset"] = {} if section == "empty" else {"name": "synthetic", "root": "rel/dir"}
    trainer = Trainer(cfg, output=tmp_path / "run", quiet=True, data_root=given)
    seen = []
    monkeypatch.setattr(trainer.task, "build_data", lambda data_root: seen.append(data_root) or data)
    trainer._setup_process()
    (tmp_path / "run").mkdir()
    trainer._setup_data()
    if section == "relative_root":
        assert seen == [os.path.abspath("rel/dir")] and trainer.cfg["dataset"]["root"] == seen[0]
    else:
        assert seen == ["my/data"] and trainer.cfg.get("dataset") == cfg.get("dataset")
    assert trainer.data is data
    log = (tmp_path / "run" / "log.txt").read_text().splitlines()
    assert log.count("data.up_axis: the files are y-up; turned z-up for this backbone") == 1


@pytest.mark.parametrize("workers", [1, None])
def test_the_loaders_follow_the_seed_the_rank_and_the_workers(tmp_path, workers):
    """The training order is the global permutation of ``train.seed`` (rank 1 of 2 takes the second half of each
    global batch), the loader's own generator is seeded ``seed + rank`` (the workers' seeds), and every loader runs
    ``data.num_workers`` readers (0 when the key is absent), each started with one thread and seeded numpy; memory
    is pinned only for a GPU; evaluation reads are cached unless ``data.cache_eval: false`` (cached without the key)."""
    from pointclora.engine.data import CachedDataset
    from pointclora.engine.distributed import DistInfo
    from pointclora.utils.threads import worker_init

    cfg = task_cfg("classification", tmp_path, epochs=1, seed=5)
    if workers is None:
        del cfg["data"]["num_workers"], cfg["data"]["cache_eval"]
    else:
        cfg["data"].update(num_workers=workers, cache_eval=False)
    trainer = Trainer(cfg, output=tmp_path / "run", quiet=True)
    trainer._setup_process()
    trainer.dist = DistInfo(rank=1, world_size=2)
    trainer._setup_data()
    perm = torch.randperm(24, generator=torch.Generator().manual_seed(5)).tolist()
    assert list(trainer.train_loader.batch_sampler) == [perm[4:8], perm[12:16], perm[20:24]]
    assert trainer.loader_gen.initial_seed() == 6
    for loader in (trainer.train_loader, trainer.val_loader, trainer.test_loader):
        assert loader.num_workers == (workers or 0)
        assert loader.worker_init_fn is (worker_init if workers else None) and loader.pin_memory is False  # CPU
    for loader in (trainer.val_loader, trainer.test_loader):
        assert isinstance(loader.dataset, CachedDataset) is (workers is None) and loader.batch_size == 16


@pytest.mark.parametrize("device", ["cpu", None])
def test_the_configs_device_is_used_and_auto_takes_a_present_gpu(tmp_path, monkeypatch, device):
    """``train.device: cpu`` stays on the CPU on a machine with a GPU; without the key the run takes the GPU."""
    cfg = task_cfg("classification", tmp_path, epochs=1)
    if device is None:
        del cfg["train"]["device"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # a GPU machine, as far as the choice goes
    trainer = Trainer(cfg, output=tmp_path / "run", quiet=True)
    trainer._setup_process()
    assert trainer.device == torch.device("cpu" if device else "cuda") and trainer.main


@pytest.mark.parametrize("threads,workers", [(3, 1), (None, None)])
def test_the_run_takes_the_configs_threads_beside_its_loader_workers(tmp_path, monkeypatch, threads, workers):
    """``train.threads`` sets this process's threads (over $OMP_NUM_THREADS, which the suite may set to 1) and each
    ``data.num_workers`` reader gets one; without the keys: no workers and the threads computed (or the env's).
    What was set is recorded for metrics.json. ``train.deterministic`` turns on deterministic algorithms."""
    cfg = task_cfg("classification", tmp_path, epochs=1, threads=threads)
    if workers is None:
        del cfg["data"]["num_workers"], cfg["train"]["threads"], cfg["train"]["deterministic"]
    else:
        cfg["data"]["num_workers"] = workers
        cfg["train"]["deterministic"] = True
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    before = torch.get_num_threads()
    trainer = Trainer(cfg, output=tmp_path / "run", quiet=True)
    try:
        trainer._setup_process()
        main_threads = torch.get_num_threads()
        deterministic = (torch.are_deterministic_algorithms_enabled(),
                         torch.is_deterministic_algorithms_warn_only_enabled())  # fmt: skip
    finally:
        torch.set_num_threads(before)
        torch.use_deterministic_algorithms(False)
    assert main_threads == (threads or 1)
    assert deterministic == ((True, True) if workers else (False, False))  # train.deterministic: warn, not fail
    assert trainer.threads["main_threads"] == main_threads and trainer.threads["worker_threads"] == (workers or 0)


def test_the_first_log_line_names_a_torchrun_world_and_only_the_main_process_holds_the_lock(tmp_path):
    """Under torchrun (faked here: 2 processes, no process group, so the barrier is a no-op) the run's first line
    says so; a process other than the main one takes no lock and writes nothing."""
    from pointclora.engine.distributed import DistInfo

    run = tmp_path / "run"
    trainer = Trainer(task_cfg("classification", tmp_path, epochs=1), output=run, quiet=True)
    trainer._setup_process()
    trainer.dist, trainer.main = DistInfo(rank=1, world_size=2), False
    assert trainer._claim_run_dir() is None and not run.exists()
    trainer.dist, trainer.main = DistInfo(rank=0, world_size=2), True
    lock = trainer._claim_run_dir()
    try:
        first = (run / "log.txt").read_text().splitlines()[0]
        assert first == f"run {run}: classification, world size 2 (torchrun), device cpu, seed 0"
        assert (run / "checkpoints").is_dir()
    finally:
        lock.release()


@pytest.mark.parametrize("val_is_test", [False, True])
def test_without_eval_test_and_select_keys_the_run_selects_as_auto_and_skips_per_epoch_test(tmp_path, val_is_test):
    """A hand-made config without ``train.eval_test`` / ``train.select``: no per-epoch test pass, and the automatic
    selection (24 validation samples: the last epoch; on the test split, by choice: the best epoch). Validation on
    the test split evaluates through one loader."""
    import dataclasses

    cfg = task_cfg("classification", tmp_path, epochs=1)
    del cfg["train"]["eval_test"], cfg["train"]["select"]
    data = Trainer(cfg, output=tmp_path / "probe").task.build_data(None)
    data = dataclasses.replace(data, val=data.test) if val_is_test else data
    trainer = Trainer(cfg, output=tmp_path / "run", quiet=True, data=data)
    trainer._setup_process()
    trainer._setup_data()
    assert trainer.eval_test is False
    assert (trainer.test_loader is trainer.val_loader) is val_is_test
    expected = (False, None) if val_is_test else (True, "24 validation samples, under 100")
    assert (trainer.select_last, trainer.select_reason) == expected


def test_one_failing_split_raises_its_own_error_and_several_are_merged(tmp_path, monkeypatch):
    from pointclora.datasets import validation
    from pointclora.engine.data_errors import merge_validation_errors

    trainer = Trainer(task_cfg("classification", tmp_path, epochs=1), output=tmp_path / "run", quiet=True)
    trainer._setup_process()
    data = trainer.task.build_data(None)
    errors = {id(data.val): validation.DatasetValidationError("val: row 3 of a.txt is not x y z", [(3, "a.txt", "x")]),
              id(data.test): validation.DatasetValidationError("test: b.txt is empty", [(0, "b.txt", "empty")])}

    def validate_dataset(ds, num_workers):
        if id(ds) in errors and id(ds) in failing:
            raise errors[id(ds)]

    monkeypatch.setattr(validation, "validate_dataset", validate_dataset)
    failing = {id(data.val)}
    with pytest.raises(validation.DatasetValidationError) as one:
        trainer._check_data(data)
    assert one.value is errors[id(data.val)]
    failing = set(errors)
    with pytest.raises(validation.DatasetValidationError) as both:
        trainer._check_data(data)
    assert str(both.value) == str(merge_validation_errors(list(errors.values())))
    assert both.value.problems == [(3, "a.txt", "x"), (0, "b.txt", "empty")]


def _folder_cfg(tmp_path, root):
    cfg = task_cfg("classification", tmp_path, epochs=1)
    cfg["dataset"] = {"name": "folder", "root": str(root)}
    cfg["data"].update(batch_size=4, num_points=32, val_split="carve", val_fraction=0.25)
    return cfg


def test_a_malformed_row_is_reported_before_the_first_step(tmp_path, monkeypatch):
    from pointclora.datasets.validation import DatasetValidationError

    monkeypatch.setenv("POINTCLORA_CACHE", str(tmp_path / "cache"))
    root = _folder_dataset(tmp_path / "data")
    bad = root / "ball" / "train" / "ball_2.txt"
    lines = bad.read_text().splitlines()
    lines[6] = "0.1 oops 0.3"
    bad.write_text("\n".join(lines) + "\n")
    steps = []
    monkeypatch.setattr(trainer_mod.Trainer, "_optimizer_step", lambda self, *a: steps.append(1))
    with pytest.raises(DatasetValidationError, match=r"ball_2\.txt: line 7"):
        Trainer(_folder_cfg(tmp_path, root), output=tmp_path / "run", quiet=True).fit()
    assert steps == [] and not (tmp_path / "run").exists()


def test_an_empty_class_folder_is_refused_before_the_first_step(tmp_path, monkeypatch):
    monkeypatch.setenv("POINTCLORA_CACHE", str(tmp_path / "cache"))
    root = _folder_dataset(tmp_path / "data")
    (root / "cone" / "train").mkdir(parents=True)
    (root / "cone" / "test").mkdir(parents=True)
    with pytest.raises(ValueError, match="cone"):
        Trainer(_folder_cfg(tmp_path, root), output=tmp_path / "run", quiet=True).fit()
    assert not (tmp_path / "run").exists()


def test_pretraining_probes_its_features_beside_a_random_encoder(tmp_path, monkeypatch):
    cfg = task_cfg("mae_pretraining", tmp_path, epochs=2)
    cfg["dataset"]["num_samples"] = 96
    cfg["pretrain"]["probe_every"] = 2
    cfg["data"]["val_fraction"] = 0.5
    trainer = Trainer(cfg, output=tmp_path / "run", quiet=True)
    calls, scalars = [], []
    real_extra = trainer.task.extra_metrics

    def extra_metrics(model, val, epoch, device):
        calls.append((model is trainer.model, val is trainer.data.val, epoch))
        return real_extra(model, val, epoch, device)

    monkeypatch.setattr(trainer.task, "extra_metrics", extra_metrics)
    monkeypatch.setattr(RunLogger, "scalars", lambda self, values, step: scalars.append((dict(values), step)))
    trainer.fit()
    history = _history(tmp_path / "run")
    assert calls == [(True, True, 1), (True, True, 2)]  # after every validation, epochs counted from 1
    # TensorBoard: the probe's keys (already paths) as they are, at the epoch's number
    logged = {k: v for values, step in scalars if step == 2 and "val/loss" in values for k, v in values.items()}
    assert logged["probe/mean_max/all/oa"] == history[1]["probe/mean_max/all/oa"] and logged["val/loss"] > 0
    assert "probe/mean_max/all/oa" not in history[0]  # every 2 epochs
    probe = history[1]
    assert 0 <= probe["probe/mean_max/all/oa"] <= 100 and "probe_random/mean_max/all/oa" in probe
    assert probe["probe/gain/mean_max/all/oa"] == pytest.approx(
        probe["probe/mean_max/all/oa"] - probe["probe_random/mean_max/all/oa"])
    assert "all probe" in (tmp_path / "run" / "log.txt").read_text()


def test_sweep_chooses_on_validation_and_resumes(tmp_path, capsys):
    from pointclora.cli.finetune import main
    from pointclora.config import dump_config

    (tmp_path / "c.yaml").write_text(dump_config(task_cfg("classification", tmp_path, epochs=1)))
    argv = ["--cfg", str(tmp_path / "c.yaml"), "--output", str(tmp_path / "sweep"), "--quiet",
            "--sweep", "optim.lr=1e-3,4e-3"]  # fmt: skip
    assert main(argv) == 0
    table = capsys.readouterr().out
    assert "optim.lr" in table and "best_val_acc" in table
    result = json.loads((tmp_path / "sweep" / "sweep.json").read_text())
    vals = [r["best_val_acc"] for r in result["rows"]]
    assert len(vals) == 2 and result["best"]["best_val_acc"] == max(vals)
    first = sorted(p.name for p in (tmp_path / "sweep").iterdir())
    assert main(argv) == 0  # finished points are kept, not rerun
    assert sorted(p.name for p in (tmp_path / "sweep").iterdir()) == first


def test_a_shipped_backbone_loads_by_name(tmp_path):
    cfg = task_cfg("classification", tmp_path, epochs=1, method="linear")
    cfg["model"] = {"name": "point_mae_mn10", "checkpoint": "point_mae_mn10"}  # as --ckpt point_mae_mn10
    Trainer(cfg, output=tmp_path / "run", quiet=True).fit()
    log = (tmp_path / "run" / "log.txt").read_text()
    assert "assets/point_mae_mn10.pth" in log and "loaded" in log


def test_a_backbone_provider_is_called_once_with_the_runs_log(tmp_path):
    """``backbone=provide``: the API layer's provider (it may pre-train the backbone first, and says so) is called
    once, on the main process, with the run's log; the file it returns is the one loaded."""
    cfg = task_cfg("classification", tmp_path, epochs=1, method="linear")
    calls = []

    def provide(log):
        calls.append(log)
        log("pre-trained the backbone for this run")
        return write_tiny_backbone(tmp_path / "provided.pth")

    trainer = Trainer(cfg, output=tmp_path / "run", quiet=True, backbone=provide)
    trainer.fit()
    log = (tmp_path / "run" / "log.txt").read_text()
    assert len(calls) == 1 and "pre-trained the backbone for this run\n" in log
    assert f" tensors from {tmp_path / 'provided.pth'}; " in log  # "loaded N tensors from <file>; ..."
    # another process (torchrun rank > 0, faked: no process group, so the barrier is a no-op) asks once, after the
    # main one, with a log that says nothing (the main process said it), and its fit() returns no metrics
    other = Trainer(cfg, output=tmp_path / "run2", quiet=True, backbone=provide)
    other._setup_process()
    other._setup_data()
    other.main, calls[:] = False, []
    other._setup_model()
    assert len(calls) == 1 and calls[0] != other.log and calls[0]("anything") is None
    assert not (tmp_path / "run2").exists() and other._finish() == {}


def test_config_changes_names_every_changed_key_but_a_new_key_at_its_default():
    """What refuses a resume (``key: old -> new``): a changed key (also one changed back to its default), a key the
    run had and the new config lacks, a key the schema did not have when the run started unless it is at its
    default; never the keys a resume may change (device, threads, workers, log interval, name)."""
    from pointclora.config import DEFAULTS, merge

    old = merge(DEFAULTS, {"name": "a", "optim": {"lr": 0.01}, "schedule": {"epochs": 3},
                           "dataset": {"name": "folder", "extra": 1},
                           "train": {"device": "cpu", "threads": 2}})  # fmt: skip
    new = json.loads(json.dumps(old))
    del old["optim"]["grad_clip"], old["optim"]["seg_double_step"]  # a run from before these keys existed
    new["optim"]["lr"] = DEFAULTS["optim"]["lr"]  # back to the default: still a change
    new["optim"]["seg_double_step"] = True  # a new key, not at its default
    new["schedule"]["epochs"] = 4
    del new["dataset"]["extra"]
    new["model"]["extra"] = [1, 2]  # not in the schema at all
    new.update(name="b", train={**new["train"], "device": "cuda", "threads": None, "log_every": 1},
               data={**new["data"], "num_workers": 4})  # fmt: skip
    assert trainer_mod.config_changes(old, new) == [
        "dataset.extra: 1 -> None", "model.extra: None -> [1, 2]", "optim.lr: 0.01 -> 0.0005",
        "optim.seg_double_step: None -> True", "schedule.epochs: 3 -> 4"]  # fmt: skip
    assert trainer_mod.config_changes(old, old) == []


def test_trainer_of_a_config_builds_its_task_with_the_registered_resolver(tmp_path, monkeypatch):
    """``Trainer(cfg)`` (a config in place of a task): the resolver registered with ``set_task_resolver`` builds the
    task and names its backbone; with none registered the Trainer says how to build one."""
    cfg = task_cfg("classification", tmp_path)
    task = type("Task", (), {"run_label": lambda self: "toy"})()
    seen = []

    def resolve(c):  # as the API layer's: a task bound to the config, and its backbone
        seen.append(c)
        task.cfg = c
        return task, "backbone.pth"

    monkeypatch.setattr(trainer_mod, "_TASK_RESOLVER", trainer_mod._TASK_RESOLVER)  # restored after the test
    trainer_mod.set_task_resolver(resolve)
    trainer = Trainer(cfg, tmp_path / "run")  # the old positional output
    assert seen == [cfg] and trainer.task is task and trainer.backbone == "backbone.pth"
    assert trainer.run_dir == tmp_path / "run" and task.cfg is trainer.cfg and trainer.cfg == cfg
    assert Trainer(cfg, output=tmp_path / "r2", backbone="mine.pth").backbone == "mine.pth"
    # a task object: its own config, or the one given; either way the Trainer keeps a private copy the task reads
    other = {**cfg, "name": "other"}
    direct = Trainer(task, output=tmp_path / "r4")
    assert direct.cfg == cfg and direct.cfg is not cfg and task.cfg is direct.cfg and direct.backbone is None
    given = Trainer(task, other, output=tmp_path / "r5")
    assert given.cfg == other and given.cfg is not other and task.cfg is given.cfg
    other["name"] = "changed later"
    assert given.cfg["name"] == "other"
    # no output: runs/<name>/<the task's run label>-seed<seed>-<time>; not resumed, not quiet
    default = Trainer(task)
    assert default.run_dir.parent == Path("runs") / "other"  # the task's config is the last one given
    assert re.fullmatch(r"toy-seed0-\d{8}-\d{6}", default.run_dir.name) and not default.run_dir.exists()
    assert (default.resume, default.quiet, default.last_path) == (False, False,
                                                                  default.run_dir / "checkpoints" / "last.pth")
    trainer_mod.set_task_resolver(None)
    with pytest.raises(TypeError, match=r"Trainer needs a task object; build it from a config with "
                                        r"pointclora\.api\.make_trainer\(cfg, \.\.\.\)"):  # fmt: skip
        Trainer(cfg, output=tmp_path / "r3")


def test_run_finetune_trains_a_dict_of_datasets_and_prints_its_epochs(tmp_path, capsys):
    """The old one-call entry: ``datasets`` as a dict (validation on the test split when ``val`` is ``test``), a new
    run (not a resume) that prints its epoch lines unless told to be quiet."""
    cfg = task_cfg("classification", tmp_path, epochs=1, method="linear")
    cfg["peft"]["train_modules"] = ["norm"]
    data = trainer_mod.Trainer(cfg, output=tmp_path / "unused").task.build_data(None)
    datasets = {"train": data.train, "val": data.test, "test": data.test, "classes": tuple(data.meta["classes"])}
    metrics = trainer_mod.run_finetune(cfg, output=tmp_path / "run", datasets=datasets)
    assert metrics["val_source"] == "test" and metrics["selection"] == "best_on_test"
    assert metrics["classes"] == list(data.meta["classes"]) and metrics["num_samples"] == len(data.test)
    out = capsys.readouterr().out
    assert "epoch 1/1: lr " in out and not (tmp_path / "unused").exists()
    table = (tmp_path / "run" / "results.md").read_text().strip()
    assert out.count("run folder: ") == 1 and out.endswith(f"{table}\n\n{run_folder_line(tmp_path / 'run')}\n")
    as_given = trainer_mod.as_task_data(data)
    assert as_given is data and trainer_mod.as_task_data({**datasets, "val": data.val}).val_source == "val split"


def test_the_run_records_its_absolute_data_folder_and_a_resume_reads_it(tmp_path, monkeypatch):
    """#19: config.yaml (and every saved manifest) holds the absolute folder the run read, and ``--resume`` without
    ``--data-root`` reads that folder even from another working directory; ``--data-root`` overrides the config."""
    from pointclora.config import config_from_string

    monkeypatch.setenv("POINTCLORA_CACHE", str(tmp_path / "cache"))
    root = _folder_dataset(tmp_path / "data").resolve()
    monkeypatch.chdir(tmp_path)
    cfg = _folder_cfg(tmp_path, "data")  # relative to the working directory
    cfg["schedule"]["epochs"] = 2
    run = tmp_path / "run"
    _killed_after_epoch(cfg, run, 1, monkeypatch)
    assert config_from_string((run / "config.yaml").read_text())["dataset"]["root"] == str(root)
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")  # "data" is not here
    trainer = Trainer(cfg, output=run, resume=True, quiet=True)
    assert trainer.data_root == str(root) and trainer.cfg["dataset"]["root"] == str(root)
    metrics = trainer.fit()
    assert json.loads((run / "best" / "manifest.json").read_text())["config"]["dataset"]["root"] == str(root)
    assert metrics["split_check"] == {"train/val": "disjoint", "train/test": "disjoint", "val/test": "disjoint"}
    moved = tmp_path / "moved"
    root.rename(moved)
    other = Trainer(_folder_cfg(tmp_path, "nowhere"), output=tmp_path / "run2", data_root=str(moved), quiet=True)
    assert other.data_root == str(moved) and other.cfg["dataset"]["root"] == str(moved)
