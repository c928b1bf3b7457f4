"""One Trainer for every task: ``Trainer(task, cfg, backbone=...).fit() -> metrics``. Read it top to bottom.

The Trainer is *given* a task object (see :class:`pointclora.tasks.Task`, whose class declares every hook called here)
that says what the data, model, loss and metrics are; the engine imports no task and names none. Turning a config into
a task and providing its backbone file is the API layer's job (:func:`pointclora.api.make_trainer`). The Trainer owns
everything around the task, for every task alike: AdamW with
a no-decay group, per-epoch cosine with warm-up, grad-norm clipping, AMP (bf16 on CPU, fp16 + GradScaler on CUDA),
gradient accumulation, DDP under torchrun, the PEFT method's auxiliary loss (SADE for CLoRA), validation every
``train.eval_every`` epochs, selection of the best epoch, atomic checkpoints with exact resume, a run-folder lock, and
logging (tqdm, TensorBoard, ``history.jsonl``, ``metrics.json``, ``results.md``, ``log.txt``).

Run directory (``output``)::

    config.yaml              the resolved config
    log.txt                  every line the run printed (also under --quiet: e.g. which backbone tensors loaded)
    history.jsonl            one JSON object per epoch (epochs count from 1)
    metrics.json, results.md the final metrics and the pasteable table
    tb/                      TensorBoard event files
    best/, last/             saved weights (pointclora.engine.weights): weights.safetensors + manifest.json
    checkpoints/last.pth     full training state for --resume (model, optimizer, scheduler, scaler, RNG, best)

Exact resume: the sampler order and every sample's augmentation depend only on (seed, epoch, index), and the RNG
state (dropout, drop-path) is saved with each epoch's checkpoint, so a run killed at any point and resumed ends with
the same weights and metrics as an uninterrupted run. A resume whose config differs from the run's is refused.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Tuple, Union

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .. import __version__
from ..config import config_from_string, dump_config, get_key
from ..utils.atomic import atomic_save, atomic_write_json, atomic_write_text
from ..utils.device import resolve_device
from . import distributed as du
from .checkpoint import get_rng_state, load_checkpoint, set_rng_state
from .data import CachedDataset, SeededDataset, TaskData, autocast_context, seed_everything
from .logging import RunLogger
from .optim import CosineWarmupScheduler, build_optimizer
from .weights import save_weights

__all__ = ["Trainer", "run_finetune", "default_run_dir", "ResumeError", "RESUME_MAY_CHANGE", "set_task_resolver"]

EpochCallback = Callable[[int, Dict[str, Any]], None]
Log = Callable[[str], None]
#: The backbone file, or how to get it: ``provide(log) -> path or None`` runs on the main process first (it may
#: pre-train), then on the others once it is there.
Backbone = Union[None, str, os.PathLike, Callable[[Log], Optional[Path]]]
#: ``resolve(cfg) -> (task, backbone)``: how ``Trainer(cfg)`` (a config instead of a task, the old signature) finds
#: its task. The API layer registers it (:mod:`pointclora.api`); the engine itself knows no task.
_TASK_RESOLVER: Optional[Callable[[Mapping[str, Any]], Tuple[Any, Backbone]]] = None


def set_task_resolver(resolve: Optional[Callable[[Mapping[str, Any]], Tuple[Any, Backbone]]]) -> None:
    """Let ``Trainer(cfg, ...)`` (a config in place of a task) build its task and backbone with ``resolve``."""
    global _TASK_RESOLVER
    _TASK_RESOLVER = resolve

#: Config keys a resumed run may change: they do not change what the run computes (the device and the thread count
#: change only float rounding; with ``train.threads: null`` the count already follows the cores free at start).
RESUME_MAY_CHANGE = ("train.device", "train.threads", "data.num_workers", "train.log_every", "name")


class ResumeError(ValueError):
    """``--resume`` cannot continue this run as asked."""


def default_run_dir(cfg: Mapping[str, Any], label: str, seed: Optional[int] = None) -> Path:
    """``runs/<name>/<label>-seed<seed>-<time>`` (``label``: the task's :meth:`~pointclora.tasks.Task.run_label`)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    seed = get_key(cfg, "train.seed", 0) if seed is None else seed
    return Path("runs") / str(cfg.get("name") or "run") / f"{label}-seed{seed}-{stamp}"


def _flatten(node: Any, prefix: str = "") -> Dict[str, Any]:
    if not isinstance(node, Mapping):
        return {prefix: node}
    out: Dict[str, Any] = {}
    for k, v in node.items():
        out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
    return out


def config_changes(old: Mapping[str, Any], new: Mapping[str, Any]) -> List[str]:
    """``key: old -> new`` for every key that differs (ignoring :data:`RESUME_MAY_CHANGE`)."""
    a, b = _flatten(json.loads(json.dumps(old))), _flatten(json.loads(json.dumps(new)))
    from ..config import DEFAULTS

    # A key added to the schema after the run started, at its default, changes nothing the run computes.
    defaults = _flatten(json.loads(json.dumps(DEFAULTS)))
    keys = sorted(k for k in set(a) | set(b) if a.get(k) != b.get(k)
                  and not (k not in a and k in defaults and b.get(k) == defaults[k]))  # fmt: skip
    return [f"{k}: {a.get(k)!r} -> {b.get(k)!r}" for k in keys if not k.startswith(RESUME_MAY_CHANGE)]


class Trainer:
    """Trains ``task`` as ``cfg`` says; :meth:`fit` returns the metrics written to ``metrics.json``.

    Args:
        task: a task object (:class:`pointclora.tasks.Task`) bound to ``cfg``. A config in its place (the old
            ``Trainer(cfg)``) is turned into a task by the resolver the API layer registers.
        cfg: a resolved config (:func:`pointclora.config.load_config`); default ``task.cfg``.
        backbone: the backbone file (a path), ``provide(log) -> path`` (called on the main process first: it may
            pre-train), or None: then ``model.checkpoint`` names it (a shipped name or a file; see
            :func:`pointclora.models.registry.find_backbone`).
        output: run directory (default ``runs/<name>/<method>-seed<seed>-<time>``).
        resume: continue from ``<output>/checkpoints/last.pth`` (exactly; see the module docstring).
        data_root: overrides the dataset's ``root``.
        data: pre-built :class:`~pointclora.engine.data.TaskData` (the few-shot driver passes episodes).
        quiet: no progress bars or per-epoch lines on the console (``log.txt`` still gets every line).
        on_epoch_end: ``fn(epoch, record)`` after each epoch's checkpoint is written (tests simulate a kill with it).
    """

    def __init__(self, task: Any, cfg: Optional[Mapping[str, Any]] = None, output: Optional[os.PathLike | str] = None,
                 resume: bool = False, data_root: Optional[str] = None, data: Optional[TaskData] = None,
                 quiet: bool = False, on_epoch_end: Optional[EpochCallback] = None, log: Optional[Log] = None,
                 backbone: Backbone = None) -> None:  # fmt: skip
        if isinstance(task, Mapping):  # the old Trainer(cfg, ...): the API layer's resolver builds the task
            if cfg is not None and not isinstance(cfg, Mapping):  # Trainer(cfg, "runs/x") positionally
                output, cfg = cfg, None
            if _TASK_RESOLVER is None:
                raise TypeError("Trainer needs a task object; build it from a config with pointclora.api.make_trainer("
                                "cfg, ...) (or import pointclora.api so Trainer(cfg) can)")  # fmt: skip
            task, provided = _TASK_RESOLVER(task)
            backbone = provided if backbone is None else backbone
        self.cfg: Dict[str, Any] = json.loads(json.dumps(task.cfg if cfg is None else cfg))  # a private plain copy
        # The task reads the run's own config, and what it settles there (e.g. the data's up axis) is what
        # config.yaml and every saved manifest record.
        task.cfg = self.cfg
        self.task = task
        self.backbone = backbone
        self.run_dir = Path(output) if output is not None else default_run_dir(self.cfg, task.run_label())
        data_root = self._record_data_root(data_root, resume)
        self.resume, self.data_root, self.prebuilt, self.quiet = resume, data_root, data, quiet
        self.on_epoch_end, self.external_log = on_epoch_end, log
        self.last_path = self.run_dir / "checkpoints" / "last.pth"

    def _record_data_root(self, data_root: Optional[str], resume: bool) -> Optional[str]:
        """The absolute data folder this run reads goes into its config (config.yaml, every saved manifest), so
        ``evaluate RUN`` and ``--resume`` without ``--data-root`` read the files the run trained on (#19)."""
        from .data import resolve_data_root

        dcfg = self.cfg.get("dataset")
        if not isinstance(dcfg, dict) or not dcfg:
            return data_root
        if resume and data_root is None and (self.run_dir / "config.yaml").is_file():
            recorded = (config_from_string((self.run_dir / "config.yaml").read_text()).get("dataset") or {}).get("root")
            if recorded is not None:  # as recorded (a run from before #19 kept the config's relative root)
                dcfg["root"] = recorded
                return recorded
        root = resolve_data_root(dcfg, data_root)
        if root is not None:
            dcfg["root"] = root
        return root if root is not None else data_root

    # ------------------------------------------------------------------------------------------- public entry
    def fit(self) -> Dict[str, Any]:
        self._setup_process()
        lock = self._claim_run_dir()
        try:
            self._setup_data()
            self._setup_model()
            self._setup_optimization()
            self._restore_or_start()
        except BaseException:
            self._abandon(lock)
            raise
        if lock is not None:
            lock.mark_started()  # from here a failure keeps the folder: its log and checkpoints explain it
        try:
            for epoch in range(self.start_epoch, self.epochs):
                self._run_epoch(epoch)
            return self._finish()
        finally:
            self.logger.close()
            if lock is not None:
                lock.release()
            du.barrier()

    # ------------------------------------------------------------------------------------------- setup
    def _setup_process(self) -> None:
        tcfg = self.cfg["train"]
        device = resolve_device(tcfg.get("device", "auto"))
        self.dist = du.init_distributed(device)
        if self.dist.enabled and device.type == "cuda":
            device = torch.device("cuda", self.dist.local_rank)
        self.device, self.main = device, self.dist.is_main
        self.seed = int(tcfg["seed"])
        from ..utils.threads import configure_threads

        # One thread per loader worker and the rest for this process: 2 workers + 2 OpenMP threads on 2 cores ran
        # epochs 3-6x slower than this.
        self.threads = configure_threads(int(self.cfg["data"].get("num_workers", 0)), tcfg.get("threads"))
        if tcfg.get("deterministic"):
            torch.use_deterministic_algorithms(True, warn_only=True)
        self.t_start = time.time()

    def log(self, msg: str) -> None:
        """Print (unless quiet) and append to ``<run>/log.txt``; main process only."""
        if not self.main:
            return
        if self.external_log is not None:
            self.external_log(msg)
        elif not self.quiet:
            print(msg, flush=True)
        if self.run_dir.is_dir():
            with open(self.run_dir / "log.txt", "a", encoding="utf-8") as f:
                f.write(msg + "\n")

    def _claim_run_dir(self):
        """The main process locks the run folder (creating it when new; a second writer is refused), then checks
        that it holds a run exactly when resuming."""
        from .runlock import RunLock

        lock = None
        if self.main:
            import warnings

            with warnings.catch_warnings(record=True):  # a dead writer's lock: said in one line below, not a raw
                warnings.simplefilter("always")         # UserWarning with its source line (#19)
                lock = RunLock(self.run_dir).acquire()
            try:
                if not self.resume and self.last_path.exists():
                    raise FileExistsError(f"{self.run_dir} already holds a run; pass --resume to continue it or "
                                          "choose another --output")  # fmt: skip
                if self.resume and not self.last_path.exists():
                    raise FileNotFoundError(f"--resume: no checkpoint at {self.last_path}: the run stopped before "
                                            "its first epoch ended, so there is nothing to continue; start it again "
                                            "without --resume (same --output)")  # fmt: skip
                if lock.took_over:
                    rec = lock.took_over
                    self.log(f"note: took over the run-folder lock of process {rec.get('pid')} (started "
                             f"{rec.get('started', '?')}), which no longer runs")  # fmt: skip
            except BaseException:
                self._abandon(lock)
                raise
            self.last_path.parent.mkdir(parents=True, exist_ok=True)
        du.barrier()
        self.log(f"run {self.run_dir}: {self.task.name}, world size {self.dist.world_size} "
                 f"({'torchrun' if self.dist.enabled else 'one process'}), device {self.device}, seed {self.seed}")
        return lock

    @staticmethod
    def _abandon(lock) -> None:
        """A failed start: release the lock, and remove the run folder if this start created it."""
        if lock is not None:
            lock.release()
            lock.remove_if_failed_start()

    def _setup_data(self) -> None:
        data = self.prebuilt if self.prebuilt is not None else self.task.build_data(self.data_root)
        self.data, self.task.meta = data, data.meta
        if data.meta.get("up_axis_note"):
            self.log(data.meta["up_axis_note"])  # said once per run (#19)
        self._check_data(data)
        dcfg, ocfg = self.cfg["data"], self.cfg["optim"]
        self.accum = int(ocfg.get("accumulation_steps", 1))
        self.train_set = SeededDataset(data.train, self.seed)
        self.sampler = du.GlobalBatchSampler(len(self.train_set), int(dcfg["batch_size"]), self.dist.world_size,
                                             self.dist.rank, self.accum, shuffle=True, seed=self.seed)  # fmt: skip
        self.loader_gen = torch.Generator().manual_seed(self.seed + self.dist.rank)
        workers = int(dcfg.get("num_workers", 0))
        from ..utils.threads import make_worker_init

        init = make_worker_init() if workers > 0 else None
        self.train_loader = DataLoader(self.train_set, batch_sampler=self.sampler, num_workers=workers,
                                       generator=self.loader_gen, pin_memory=self.device.type == "cuda",
                                       worker_init_fn=init)  # fmt: skip
        cache = bool(dcfg.get("cache_eval", True))

        def eval_loader(ds: Optional[Dataset]) -> Optional[DataLoader]:
            if ds is None:
                return None
            ds = CachedDataset(ds) if cache else ds
            return DataLoader(ds, batch_size=int(dcfg["eval_batch_size"]), shuffle=False, num_workers=workers,
                              worker_init_fn=init)  # fmt: skip

        self.val_loader = eval_loader(data.val)
        self.test_loader = self.val_loader if data.val_is_test else eval_loader(data.test)
        self.eval_test = bool(get_key(self.cfg, "train.eval_test", False)) and data.test is not None
        from .selection import choose_selection

        small_rule = bool(self.task.small_val_selects_last)
        self.select_last, self.select_reason = choose_selection(str(get_key(self.cfg, "train.select", "auto")), data,
                                                                small_rule)  # fmt: skip
        if self.select_last and self.select_reason and not self.select_reason.startswith("train.select"):
            self.log(f"warning: the validation set is too small to choose an epoch on ({self.select_reason}): the "
                     "result is the last epoch's model (--set train.select=best to choose on it anyway)")  # fmt: skip

    def _check_data(self, data: TaskData) -> None:
        """Before the first step: train and test share no sample (a wrong split is corruption), and every file reads
        (shape, finite values, parseable rows; the fingerprint is cached so unchanged data is read once)."""
        from ..datasets.validation import check_disjoint_splits, validate_dataset

        splits = {"train": data.train, "val": data.val}
        if data.test is not None:
            splits["test"] = data.test
        self.split_check = check_disjoint_splits(splits)
        if not self.main or not bool(self.cfg["data"].get("validate", True)):
            return
        from ..datasets.validation import DatasetValidationError

        seen: List[int] = []
        failed: List[DatasetValidationError] = []
        for ds in splits.values():
            if id(ds) not in seen:
                seen.append(id(ds))
                try:
                    validate_dataset(ds, num_workers=int(self.cfg["data"].get("num_workers", 0)))
                except DatasetValidationError as err:  # check every split: all bad files in one error, not one a run
                    failed.append(err)
        if len(failed) == 1:
            raise failed[0]
        if failed:
            from .data_errors import merge_validation_errors

            raise merge_validation_errors(failed)

    def _backbone_file(self, log: Log) -> Optional[Path]:
        if callable(self.backbone):
            return self.backbone(log)
        if self.backbone is not None:
            return Path(self.backbone)
        from ..models.registry import find_backbone

        return find_backbone(get_key(self.cfg, "model.checkpoint"))

    def _setup_model(self) -> None:
        from ..peft import method_name, trainable_parameter_summary

        seed_everything(self.seed)  # the same initial weights on every rank (DDP also broadcasts rank 0's)
        # The main process provides the file first (it may pre-train it); the others then find it in place.
        backbone = self._backbone_file(self.log) if self.main else None
        du.barrier()
        if not self.main:
            backbone = self._backbone_file(lambda *_: None)
        seed_everything(self.seed)
        self.model = self.task.build_model(self.data.meta, backbone, self.log).to(self.device)
        self.method = method_name(self.model)
        if self.cfg["train"].get("compile"):
            from ..utils.compile import maybe_compile

            # In place: state_dict keys, adapter lookups and checkpoints stay those of the eager model.
            self.model = maybe_compile(self.model, enabled=True, device=str(self.device))
        self.ddp_model: nn.Module = self.model
        if self.dist.enabled:
            from .sync_batchnorm import use_global_batchnorm

            # BatchNorm that trains must see the global batch, or N processes train another model than one (#19)
            synced = use_global_batchnorm(self.model)
            if synced:
                self.log(f"BatchNorm over the global batch ({self.dist.world_size} processes): {', '.join(synced)}")
            ids = [self.device.index] if self.device.type == "cuda" else None
            unused = bool(self.task.ddp_find_unused_parameters)
            self.ddp_model = nn.parallel.DistributedDataParallel(self.model, device_ids=ids,
                                                                 find_unused_parameters=unused)  # fmt: skip
        self.params = trainable_parameter_summary(self.model)  # head: the model's declared one
        self.log(f"{self.task.name} [protocol {self.cfg.get('protocol', 'ours')}]: {self.cfg['model']['name']} + "
                 f"{self.method}: {self.params['trainable_params']:,} "
                 f"trainable of {self.params['total_params']:,} parameters; {len(self.data.train)} train / "
                 f"{len(self.data.val)} val [{self.data.val_source}]"
                 + (f" / {len(self.data.test)} test" if self.data.test is not None else "") + " samples")  # fmt: skip

    def _setup_optimization(self) -> None:
        ocfg, scfg, tcfg = self.cfg["optim"], self.cfg["schedule"], self.cfg["train"]
        lr, wd = float(ocfg["lr"]), float(ocfg["weight_decay"])
        if ocfg.get("no_decay", "ours") == "point-mae":
            from .protocol import official_param_groups

            self.optimizer = torch.optim.AdamW(official_param_groups(self.model, wd), lr=lr, betas=tuple(ocfg["betas"]),
                                               eps=float(ocfg["eps"]))  # fmt: skip
        else:
            self.optimizer = build_optimizer(self.model, lr, wd, ocfg["betas"], float(ocfg["eps"]))
        sched_args = (self.optimizer, int(scfg["epochs"]), int(scfg["warmup_epochs"]), float(scfg["warmup_lr_init"]),
                      float(scfg["lr_min"]))  # fmt: skip
        if scfg.get("stepping", "before_epoch") == "official":
            from .optim import OfficialEpochScheduler

            # Classification and pre-training run max_epoch + 1 epochs there; segmentation runs max_epoch.
            self.scheduler = OfficialEpochScheduler(*sched_args, final_epoch=self.task.official_extra_epoch)
            self.epochs = self.scheduler.num_epochs
        else:
            self.scheduler = CosineWarmupScheduler(*sched_args)
            self.epochs = int(scfg["epochs"])
        self.double_step = bool(ocfg.get("seg_double_step", False))
        self.autocast, amp_dtype = autocast_context(self.device, bool(tcfg["amp"]), str(tcfg["amp_dtype"]))
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=bool(tcfg["amp"]) and amp_dtype == torch.float16)
        self.grad_clip = float(ocfg.get("grad_clip") or 0.0)
        self.trainable = [p for p in self.model.parameters() if p.requires_grad]

    def _restore_or_start(self) -> None:
        self.start_epoch, self.global_step, self.elapsed_before = 0, 0, 0.0
        self.best: Dict[str, Any] = {}
        self.best_test: Dict[str, Any] = {}
        seed_everything(self.seed + self.dist.rank)  # dropout / drop-path: per process
        self.logger = RunLogger(self.run_dir, enabled=self.main)
        if self.resume:
            state = load_checkpoint(self.last_path, map_location="cpu")
            changes = config_changes(config_from_string(state["config"]), self.cfg)
            if changes:
                raise ResumeError(f"--resume: the config differs from the run in {self.run_dir} ("
                                  + "; ".join(changes[:6]) + "); resume with the run's own config "
                                  f"({self.run_dir / 'config.yaml'}) or start a new --output")  # fmt: skip
            self.model.load_state_dict(state["model"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state["scaler"])
            self.start_epoch, self.global_step = int(state["epoch"]), int(state["global_step"])
            self.best, self.best_test = dict(state["best"]), dict(state["best_test"])
            self.elapsed_before = float(state.get("elapsed_s", 0.0))
            rngs = state["rng"]
            set_rng_state(rngs[min(self.dist.rank, len(rngs) - 1)], {"loader": self.loader_gen})
            self.logger.truncate_history(self.start_epoch)
            self.log(f"resumed {self.last_path} after epoch {self.start_epoch}/{self.epochs}")
        if self.main:
            atomic_write_text(dump_config(self.cfg), self.run_dir / "config.yaml")

    # ------------------------------------------------------------------------------------------- one epoch
    def _run_epoch(self, epoch: int) -> None:
        t_epoch = time.time()
        record = self._train_epoch(epoch)
        every = int(self.cfg["train"].get("eval_every", 1))
        if self.main and ((epoch + 1) % every == 0 or epoch == self.epochs - 1):
            record.update(self._validate(epoch))
        record["time_s"] = round(time.time() - t_epoch, 3)
        if self.main:
            self.logger.epoch(record)
            self._save_last_weights(epoch)
        self._save_state(epoch)
        if self.main:
            line = self.task.epoch_line(record)
            self.log(f"epoch {epoch + 1}/{self.epochs}: lr {record['lr']:.2e} loss {record['train_loss']:.4f}"
                     + (f" | {line}" if line else "") + f" ({record['time_s']:.1f}s)")  # fmt: skip
        du.barrier()
        if self.on_epoch_end is not None:
            self.on_epoch_end(epoch, record)

    def _train_epoch(self, epoch: int) -> Dict[str, Any]:
        self.scheduler.step(epoch)
        lr = self.optimizer.param_groups[0]["lr"]
        self.sampler.set_epoch(epoch)
        self.train_set.set_epoch(epoch)
        self.ddp_model.train()  # inject_adapters keeps frozen BatchNorm in eval mode under train()
        sums: Dict[str, float] = {"loss": 0.0, "aux": 0.0, "count": 0.0}
        bar = self._progress(self.train_loader, f"epoch {epoch + 1}/{self.epochs}")
        per_step = self.cfg["schedule"].get("stepping") == "per_step"
        for i, batch in enumerate(bar):
            if per_step and i % self.accum == 0:
                # timm's t_in_epochs=False: the lr follows the curve through the epoch, not in one jump per epoch
                self.scheduler.step(epoch + i / len(self.train_loader))
            last_micro = (i + 1) % self.accum == 0
            # Under accumulation DDP must only all-reduce on the last micro-batch of each optimizer step.
            sync = self.ddp_model.no_sync() if (self.dist.enabled and not last_micro) else contextlib.nullcontext()
            with sync:
                with self.autocast():
                    step = self.task.training_step(self.ddp_model, batch, self.device)
                aux = self._aux_loss()  # the PEFT method's own regulariser (SADE for CLoRA), already weighted
                loss = step["loss"] + aux
                self.scaler.scale(loss / self.accum).backward()
            n = float(step["count"])
            sums["loss"] += float(step["loss"].detach()) * n
            sums["aux"] += float(aux.detach()) * n
            sums["count"] += n
            for k, v in step["stats"].items():
                sums[k] = sums.get(k, 0.0) + float(v)
            if last_micro:
                self._optimizer_step(epoch, float(step["loss"].detach()), float(aux.detach()), bar)
        keys = sorted(sums)
        totals = dict(zip(keys, du.all_reduce_sum([sums[k] for k in keys], self.device)))
        count = max(totals.pop("count"), 1.0)
        record: Dict[str, Any] = {"epoch": epoch + 1, "lr": lr, "train_loss": totals.pop("loss") / count,
                                  "train_aux_loss": totals.pop("aux") / count}  # fmt: skip
        if "correct" in totals:
            record["train_acc"] = 100.0 * totals.pop("correct") / count
        record.update({f"train_{k}": v / count for k, v in totals.items()})
        return record

    def _aux_loss(self) -> torch.Tensor:
        if getattr(self.model, "peft_config", None) is None:
            return torch.zeros((), device=self.device)
        from ..peft import auxiliary_loss

        aux = auxiliary_loss(self.model)
        return torch.zeros((), device=self.device) if aux is None else aux

    def _optimizer_step(self, epoch: int, task_loss: float, aux: float, bar: Any) -> None:
        lr = self.optimizer.param_groups[0]["lr"]  # the step's own lr (it moves within an epoch when per_step)
        if self.double_step:  # --protocol point-mae, segmentation: step, clip, step again (official main.py)
            from .protocol import official_seg_step

            official_seg_step(self.optimizer, self.trainable, self.grad_clip or 10.0, self.scaler)
            self.global_step += 1
            return
        if self.grad_clip > 0:
            self.scaler.unscale_(self.optimizer)
            torch.nn.utils.clip_grad_norm_(self.trainable, self.grad_clip)
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.optimizer.zero_grad(set_to_none=True)
        self.global_step += 1
        if not math.isfinite(task_loss):
            raise FloatingPointError(f"epoch {epoch + 1} step {self.global_step}: loss is {task_loss}; lower optim.lr")
        if self.main and self.global_step % int(self.cfg["train"].get("log_every", 10)) == 0:
            self.logger.scalars({"train/loss": task_loss, "train/aux_loss": aux, "train/lr": lr}, self.global_step)
        if hasattr(bar, "set_postfix"):
            bar.set_postfix(loss=f"{task_loss:.3f}", lr=f"{lr:.2e}")

    def _progress(self, iterable: Any, desc: str) -> Any:
        import sys

        # A bar only on a terminal: redirected to a file every redraw is kept (198 KB of bars for one demo, #19);
        # the per-epoch line says the same once.
        if not self.main or self.quiet or not sys.stderr.isatty():
            return iterable
        from tqdm.auto import tqdm

        return tqdm(iterable, desc=desc, leave=False, dynamic_ncols=True)

    # ------------------------------------------------------------------------------------------- evaluation
    def _scalars(self, prefix: str, result: Mapping[str, Any]) -> Dict[str, float]:
        return {f"{prefix}_{k}": float(v) for k, v in result.items() if isinstance(v, (int, float))
                and not isinstance(v, bool) and k != "num_samples"}  # fmt: skip

    def _validate(self, epoch: int) -> Dict[str, Any]:
        """Score val (and test when ``train.eval_test``), keep the best epoch's weights, log to TensorBoard."""
        monitor = self.task.monitor
        val = self.task.evaluate(self.model, self.val_loader, self.device, self.autocast)
        out = self._scalars("val", val)
        test = None
        if self.data.val_is_test:
            test = val
        elif self.eval_test:
            test = self.task.evaluate(self.model, self.test_loader, self.device, self.autocast)
        if test is not None:
            out.update(self._scalars("test", test))
        summary = {"epoch": epoch + 1, f"val_{monitor}": val[monitor]}
        if test is not None:
            summary[f"test_{monitor}"] = test[monitor]
        if self.select_last or self.task.better(val[monitor], self.best.get(f"val_{monitor}")):
            self.best = summary
            save_weights(self.model, self.run_dir / "best", task=self.task.name, config=self.cfg,
                         meta=self.task.manifest_meta(self.data.meta), epoch=epoch + 1, metrics=summary)  # fmt: skip
            self.task.on_best(self.model, self.run_dir, epoch + 1)
        if test is not None and self.task.better(test[monitor], self.best_test.get(f"test_{monitor}")):
            self.best_test = summary
        out.update(self.task.extra_metrics(self.model, self.data.val, epoch + 1, self.device))  # e.g. a probe
        self.logger.scalars({k if "/" in k else k.replace("_", "/", 1): v for k, v in out.items()}, epoch + 1)
        return out

    # ------------------------------------------------------------------------------------------- saving
    def _save_last_weights(self, epoch: int) -> None:
        save_weights(self.model, self.run_dir / "last", task=self.task.name, config=self.cfg,
                     meta=self.task.manifest_meta(self.data.meta), epoch=epoch + 1)  # fmt: skip
        self.task.on_epoch_saved(self.model, self.run_dir, epoch + 1)

    def _save_state(self, epoch: int) -> None:
        """The resume point: everything the next epoch depends on (every rank's RNG streams included)."""
        state = get_rng_state({"loader": self.loader_gen})
        rngs: List[Any] = [state]
        if self.dist.enabled:
            rngs = [None] * self.dist.world_size
            torch.distributed.all_gather_object(rngs, state)
        if not self.main:
            return
        atomic_save({
            "kind": "training_state", "version": __version__, "task": self.task.name,
            "config": dump_config(self.cfg), "epoch": epoch + 1, "global_step": self.global_step,
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "scaler": self.scaler.state_dict(), "best": self.best, "best_test": self.best_test, "rng": rngs,
            "elapsed_s": self.elapsed_before + time.time() - self.t_start,
        }, self.last_path)  # fmt: skip

    # ------------------------------------------------------------------------------------------- the end
    def _finish(self) -> Dict[str, Any]:
        metrics: Dict[str, Any] = {}
        if self.main:
            metrics = self._final_metrics()
            atomic_write_json(metrics, self.run_dir / "metrics.json")
            table = self.task.results_table(metrics)
            atomic_write_text(table + "\n", self.run_dir / "results.md")
            summary = ("\n" + table + f"\n\nrun folder: {self.run_dir}  (weights: best/, last/; TensorBoard: "
                       f"tensorboard --logdir {self.run_dir / 'tb'})")  # fmt: skip
            self.log(summary)
            if self.quiet and self.external_log is None:
                print(summary.lstrip("\n"), flush=True)  # --quiet drops the per-epoch lines, never the result
        return metrics

    def _final_metrics(self) -> Dict[str, Any]:
        from .weights import read_manifest, rebuild_model

        loaders = {"val": self.val_loader, "test": self.test_loader}
        # The last epoch's plain test score: voting (up to 299 x 10 passes under the protocol) is for the selected
        # model only, below.
        if self.test_loader is not None:
            last = self.task.evaluate(self.model, self.test_loader, self.device, self.autocast)
        else:
            last = self.task.final_metrics(self.model, loaders, self.device, self.autocast, self.data.meta)
        # The selected model exactly as saved: rebuilt from best/ the way `evaluate` will rebuild it.
        best = self.run_dir / "best"
        selected = rebuild_model(self.task, best, read_manifest(best), device=self.device)
        final = self.task.final_metrics(selected, loaders, self.device, self.autocast, self.data.meta)
        monitor = self.task.monitor
        on_test = self.data.val_is_test
        metrics: Dict[str, Any] = {
            "task": self.task.name, "protocol": self.cfg.get("protocol", "ours"), "config": self.cfg.get("name"),
            "method": self.method, "seed": self.seed, **final, **self.task.manifest_meta(self.data.meta),
            "selection": "last_epoch" if self.select_last else ("best_on_test" if on_test else "best_on_val"),
            "selection_label": (f"last epoch ({self.select_reason})" if self.select_last
                                else "best on test (papers' protocol, optimistic)" if on_test
                                else f"best on val [{self.data.val_source}]"),
            "test_source": self.data.meta.get("test_source"),
            "val_source": self.data.val_source, "best_epoch": self.best.get("epoch"),
            f"best_val_{monitor}": self.best.get(f"val_{monitor}"),
            **{f"last_{k}": v for k, v in last.items() if isinstance(v, (int, float))},
            "epochs": self.epochs, "num_points": self.task.num_points,
            "world_size": self.dist.world_size, "device": str(self.device), "threads": self.threads,
            "split_check": self.split_check,
            "wall_time_s": round(self.elapsed_before + time.time() - self.t_start, 1),
            **{k: int(v) for k, v in self.params.items()},
        }  # fmt: skip
        if self.best_test:
            metrics[f"best_test_{monitor}"] = self.best_test.get(f"test_{monitor}")
            metrics["best_test_epoch"] = self.best_test.get("epoch")
        metrics.update(self._gflops(selected))
        return metrics

    def _gflops(self, model: nn.Module) -> Dict[str, Any]:
        try:
            return self.task.gflops(model, self.task.num_points)
        except Exception as err:  # counting is informative; never fail a finished run over it
            self.log(f"GFLOPs not counted: {err}")
            return {}


def run_finetune(cfg: Mapping[str, Any], output: Optional[os.PathLike | str] = None, resume: bool = False,
                 data_root: Optional[str] = None, datasets: Optional[Any] = None, quiet: bool = False,
                 on_epoch_end: Optional[EpochCallback] = None,
                 log: Optional[Callable[[str], None]] = None) -> Dict[str, Any]:  # fmt: skip
    """``Trainer(cfg, ...).fit()`` — the old one-call entry, kept for existing callers (it needs the API layer's
    resolver: :func:`pointclora.api.run_finetune` is the same call from above). ``datasets`` is a
    :class:`TaskData` or a dict ``{"train", "val", "test", "classes"}``."""
    return Trainer(cfg, output=output, resume=resume, data_root=data_root, data=as_task_data(datasets), quiet=quiet,
                   on_epoch_end=on_epoch_end, log=log).fit()  # fmt: skip


def as_task_data(datasets: Optional[Any]) -> Optional[TaskData]:
    """A :class:`TaskData`, or one made from a dict ``{"train", "val", "test", "classes"[, "val_source"]}``."""
    if not isinstance(datasets, Mapping):
        return datasets
    return TaskData(datasets["train"], datasets["val"], datasets["test"],
                    datasets.get("val_source") or ("test" if datasets["val"] is datasets["test"] else "val split"),
                    {"classes": list(datasets["classes"])})  # fmt: skip
