"""Fine-tuning a point-cloud classifier: ``run_finetune(cfg) -> metrics``. Read it top to bottom.

The loop is the reference recipe (DATA_FORMATS.md §4.2): AdamW with a no-decay group, per-epoch cosine with
warm-up, grad-norm clip, validation every epoch. Around it: PEFT adapters (``pointclora.peft``), SADE, AMP, gradient
accumulation, DDP under torchrun, atomic checkpoints and exact resume.

Run directory (``output``)::

    config.yaml              the resolved config (also inside every checkpoint)
    history.jsonl            one JSON object per epoch (lr, train/val/test loss and accuracy)
    metrics.json             final metrics (acc, mean_class_acc, num_classes, trainable_params, gflops, ...)
    results.md               the final Markdown table
    tb/                      TensorBoard event files
    checkpoints/last.pth     full training state for --resume (model, optimizer, scheduler, scaler, RNG, epoch, best)
    checkpoints/best.pth     the selected model: trainable tensors + buffers (PEFT) or every tensor (full), config,
                             class names; loads on top of the backbone checkpoint named in the config
    best_adapter/, last_adapter/   PEFT methods only: ``save_adapter`` folders (+ config.yaml, classes.json)

Exact resume: the sampler order and every sample's augmentation depend only on (seed, epoch, index), and the global
RNG state (dropout, drop-path) is saved with each epoch's checkpoint, so a run killed at any point and resumed with
``--resume`` ends with the same weights and metrics as an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import random
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from .. import __version__
from ..config import dump_config, get_key
from ..models import create_model, load_pretrained
from ..utils.device import resolve_device
from . import distributed as du
from .checkpoint import atomic_save, atomic_write_json, atomic_write_text, get_rng_state, load_checkpoint, set_rng_state
from .evaluation import evaluate
from .logging import RunLogger, results_table
from .optim import CosineWarmupScheduler, build_optimizer

__all__ = [
    "run_finetune",
    "build_model",
    "build_datasets",
    "resolve_checkpoint_path",
    "ensure_backbone",
    "seed_everything",
    "SeededDataset",
    "autocast_context",
    "default_run_dir",
]

EpochCallback = Callable[[int, Dict[str, Any]], None]


# --------------------------------------------------------------------------------------------------- helpers
def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class SeededDataset(Dataset):
    """Wraps a dataset so that sample ``i`` in epoch ``e`` draws its random transforms from seed ``(seed, e, i)``.

    Augmentation then no longer depends on which process or worker loads the sample, or on what ran before: the
    same global batch gets the same augmentation with 1 or 2 processes, and a resumed run sees the same data.
    """

    def __init__(self, dataset: Dataset, seed: int) -> None:
        self.dataset, self.seed, self.epoch = dataset, int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Dict[str, Any]:
        sample_seed = (self.seed * 1_000_003 + self.epoch) * 10_000_019 + int(index)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(sample_seed % 2**63)
            return self.dataset[index]


class CachedDataset(Dataset):
    """Keeps each sample after its first load. For evaluation splits only: their transforms are deterministic
    (FPS, no augmentation), and re-running FPS on every sample every epoch dominates small runs on a CPU."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset
        self.cache: Dict[int, Any] = {}

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int) -> Any:
        if index not in self.cache:
            self.cache[index] = self.dataset[index]
        return self.cache[index]


def autocast_context(device: torch.device, enabled: bool, dtype_name: str = "auto") -> Tuple[Callable, torch.dtype]:
    """``--amp``: bf16 on CPU; fp16 on CUDA (with a GradScaler) unless ``train.amp_dtype`` asks for bf16."""
    if dtype_name == "auto":
        dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    elif dtype_name in ("bfloat16", "bf16"):
        dtype = torch.bfloat16
    elif dtype_name in ("float16", "fp16", "half"):
        dtype = torch.float16
    else:
        raise ValueError(f"train.amp_dtype must be auto, bfloat16 or float16, got {dtype_name!r}")
    if not enabled:
        return contextlib.nullcontext, torch.float32
    return (lambda: torch.autocast(device_type=device.type, dtype=dtype)), dtype


def resolve_checkpoint_path(path: os.PathLike | str) -> Path:
    """A relative checkpoint path is looked up in the current directory, then in the repository / install root
    (so ``pointclora/assets/demo_backbone.pth`` finds the package data wherever the package lives)."""
    p = Path(os.path.expanduser(os.fspath(path)))
    if p.is_absolute():
        return p
    for root in (Path.cwd(), Path(__file__).resolve().parents[2]):
        if (root / p).exists():
            return root / p
    return Path.cwd() / p


def default_run_dir(cfg: Mapping[str, Any], seed: Optional[int] = None) -> Path:
    stamp = time.strftime("%Y%m%d-%H%M%S")
    method = get_key(cfg, "peft.method", "clora")
    seed = get_key(cfg, "train.seed", 0) if seed is None else seed
    return Path("runs") / str(cfg.get("name") or "run") / f"{method}-seed{seed}-{stamp}"


def ensure_backbone(cfg: Mapping[str, Any], log: Callable[[str], None] = print) -> Optional[Path]:
    """The pre-trained backbone file named by ``model.checkpoint``; when it is missing and the config has a
    ``pretrain`` section (the demo), pre-train it first with ``pointclora.cli.pretrain.run_pretrain``."""
    ckpt = get_key(cfg, "model.checkpoint")
    if not ckpt:
        return None
    path = resolve_checkpoint_path(ckpt)
    if path.is_file():
        return path
    pcfg = cfg.get("pretrain")
    if not pcfg:
        raise FileNotFoundError(
            f"model.checkpoint={ckpt!r} not found (looked in {Path.cwd()} and the repository root). Download the "
            "pre-trained weights (see models/README.md), pass --ckpt PATH, or --set model.checkpoint=null to train "
            "from scratch."
        )
    try:
        from ..cli.pretrain import run_pretrain  # issue 6: Point-MAE pre-training
    except ImportError as err:
        raise FileNotFoundError(
            f"model.checkpoint={ckpt!r} is missing and pre-training is unavailable ({err}); run tools/pretrain.py "
            "first or pass --ckpt"
        ) from None
    target = path
    if not os.access(_existing_parent(target), os.W_OK):  # installed read-only: cache beside the user's files
        target = Path.home() / ".cache" / "pointclora" / path.name
        if target.is_file():
            return target
    log(f"pre-trained backbone {ckpt} not found: pre-training it first (the demo's first step) -> {target}")
    pretrain_cfg = dict(pcfg)
    pretrain_cfg["output_checkpoint"] = str(target)
    produced = Path(run_pretrain(pretrain_cfg))
    if produced.resolve() != target.resolve():
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_save(load_checkpoint(produced), target)
    return target


def _existing_parent(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


# --------------------------------------------------------------------------------------------------- data
def build_datasets(
    cfg: Mapping[str, Any], data_root: Optional[str] = None, splits: Sequence[str] = ("train", "val", "test")
) -> Dict[str, Any]:
    """``{"train", "val", "test", "classes", "val_source"}`` from ``cfg['dataset']`` and ``cfg['data']``.

    Validation: the dataset's own ``val`` split when it has one (``val_split: auto``); otherwise ``val_fraction`` of
    train carved off with ``val_seed`` (the same carve for every training seed); ``val_split: test`` selects on the
    test split, the field's protocol, labelled so in every report.
    """
    from ..datasets import build_dataset
    from ..datasets.transforms import eval_transforms, train_transforms

    dcfg = dict(cfg["dataset"])
    data = cfg["data"]
    n = int(data["num_points"])
    train_tf = train_transforms(n, augmentation=data["augmentation"])
    eval_tf = eval_transforms(n)
    out: Dict[str, Any] = {}
    test = build_dataset(dcfg, "test", transform=eval_tf, root=data_root)
    out["test"] = test
    out["classes"] = list(test.classes)
    if "train" not in splits:
        return out
    train = build_dataset(dcfg, "train", transform=train_tf, root=data_root)
    mode = data["val_split"]
    if mode not in ("auto", "carve", "test"):
        raise ValueError(f"data.val_split must be auto, carve or test, got {mode!r}")
    val = None
    if mode == "auto":
        val = _try_val_split(dcfg, eval_tf, data_root)
        out["val_source"] = "val split"
    if mode == "test":
        val, out["val_source"] = test, "test (field protocol)"
    if val is None:
        frac = float(data["val_fraction"])
        if not 0 < frac < 1:
            raise ValueError(f"data.val_fraction must be in (0, 1), got {frac}")
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(int(data["val_seed"]))).tolist()
        n_val = max(1, int(round(frac * len(train))))
        train_eval = build_dataset(dcfg, "train", transform=eval_tf, root=data_root)
        val = Subset(train_eval, sorted(order[:n_val]))
        train = Subset(train, sorted(order[n_val:]))
        out["val_source"] = f"{frac:.0%} of train (val_seed {int(data['val_seed'])})"
    out["train"], out["val"] = train, val
    return out


def _try_val_split(dcfg: Mapping[str, Any], transform: Any, data_root: Optional[str]) -> Optional[Dataset]:
    from ..datasets import build_dataset

    try:
        return build_dataset(dict(dcfg), "val", transform=transform, root=data_root)
    except FileNotFoundError:
        # The train and test splits were found, so what is missing is only a val split (e.g. a folder dataset with
        # train/ and test/ folders): carve one from train.
        return None
    except (ValueError, KeyError) as err:
        if "split" in str(err).lower():  # this dataset has no val split: carve one
            return None
        raise


# --------------------------------------------------------------------------------------------------- model
def build_model(
    cfg: Mapping[str, Any], num_classes: int, backbone: Optional[Path] = None, log: Callable[[str], None] = print
) -> nn.Module:
    """``create_model`` + pre-trained backbone + adapters (``inject_adapters`` freezes what the method freezes)."""
    from ..peft import inject_adapters, make_peft_config

    mcfg = dict(cfg["model"])
    name = mcfg.pop("name")
    mcfg.pop("checkpoint", None)
    prefix = mcfg.pop("checkpoint_prefix", None)
    model = create_model(name, num_classes=num_classes, **mcfg)
    if backbone is not None:
        result = load_pretrained(model, backbone, prefix=prefix, log=False)
        log(f"loaded {len(result.loaded_keys)} tensors from {backbone}; missing {len(result.missing_keys)} "
            f"(the new head), unexpected {len(result.unexpected_keys)}")  # fmt: skip
    peft_cfg = make_peft_config(**dict(cfg["peft"]))
    return inject_adapters(model, peft_cfg)


def model_payload(model: nn.Module, method: str, has_backbone: bool = True) -> Dict[str, torch.Tensor]:
    """What best.pth stores: trainable tensors + all buffers when the frozen weights can be reloaded from the backbone
    checkpoint (as with adapter files); every tensor for full fine-tuning or when there is no backbone file."""
    state = model.state_dict()
    if method == "full" or not has_backbone:
        return {k: v.detach().cpu().clone() for k, v in state.items()}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    buffers = {n for n, _ in model.named_buffers()}
    return {k: v.detach().cpu().clone() for k, v in state.items() if k in trainable or k in buffers}


# --------------------------------------------------------------------------------------------------- the run
def run_finetune(
    cfg: Mapping[str, Any],
    output: Optional[os.PathLike | str] = None,
    resume: bool = False,
    data_root: Optional[str] = None,
    datasets: Optional[Mapping[str, Any]] = None,
    quiet: bool = False,
    on_epoch_end: Optional[EpochCallback] = None,
) -> Dict[str, Any]:
    """Fine-tune the model ``cfg`` describes; returns the metrics also written to ``<output>/metrics.json``.

    Args:
        cfg: a resolved config (:func:`pointclora.config.load_config`).
        output: run directory (default ``runs/<name>/<method>-seed<seed>-<time>``).
        resume: continue from ``<output>/checkpoints/last.pth`` (exactly; see the module docstring).
        data_root: overrides the dataset's ``root``.
        datasets: pre-built ``{"train", "val", "test", "classes"}`` (the few-shot tool passes episodes); when absent
            they are built from ``cfg``.
        quiet: no progress bars or per-epoch lines (logging to files is unchanged).
        on_epoch_end: ``fn(epoch, record)`` after each epoch's checkpoint is written (tests use it to simulate a kill).
    """
    cfg = json.loads(json.dumps(cfg))  # a private plain copy: nothing below mutates the caller's dict
    t_start = time.time()
    device = resolve_device(get_key(cfg, "train.device", "auto"))
    dist_info = du.init_distributed(device)
    if dist_info.enabled and device.type == "cuda":
        device = torch.device("cuda", dist_info.local_rank)
    main = dist_info.is_main
    say: Callable[[str], None] = print if (main and not quiet) else (lambda *_: None)
    seed = int(cfg["train"]["seed"])
    if cfg["train"].get("deterministic"):
        torch.use_deterministic_algorithms(True, warn_only=True)

    run_dir = Path(output) if output is not None else default_run_dir(cfg)
    ckpt_dir = run_dir / "checkpoints"
    last_path = ckpt_dir / "last.pth"
    if main:
        if not resume and last_path.exists():
            raise FileExistsError(f"{run_dir} already holds a run; pass --resume to continue it or --output elsewhere")
        if resume and not last_path.exists():
            raise FileNotFoundError(f"--resume: no checkpoint at {last_path}")
        ckpt_dir.mkdir(parents=True, exist_ok=True)
    du.barrier()

    # ---- data
    data = dict(datasets) if datasets is not None else build_datasets(cfg, data_root=data_root)
    classes: List[str] = list(data["classes"])
    num_classes = len(classes)
    val_source = data.get("val_source") or ("test (field protocol)" if data["val"] is data["test"] else "val split")
    selection = "best_on_test" if val_source.startswith("test") else "best_on_val"
    selection_label = (
        "best on test (field protocol, optimistic)" if selection == "best_on_test" else f"best on val [{val_source}]"
    )
    dcfg, ocfg, scfg, tcfg = cfg["data"], cfg["optim"], cfg["schedule"], cfg["train"]
    accum = int(ocfg["accumulation_steps"])
    train_set = SeededDataset(data["train"], seed)
    sampler = du.GlobalBatchSampler(
        len(train_set), int(dcfg["batch_size"]), dist_info.world_size, dist_info.rank, accum, shuffle=True, seed=seed
    )
    loader_gen = torch.Generator().manual_seed(seed + dist_info.rank)
    workers = int(dcfg["num_workers"])
    train_loader = DataLoader(train_set, batch_sampler=sampler, num_workers=workers, generator=loader_gen,
                              pin_memory=device.type == "cuda")  # fmt: skip

    same_val_test = data["val"] is data["test"]
    val_data = CachedDataset(data["val"]) if dcfg["cache_eval"] else data["val"]
    test_data = val_data if same_val_test else (CachedDataset(data["test"]) if dcfg["cache_eval"] else data["test"])

    def eval_loader(ds: Dataset) -> DataLoader:
        return DataLoader(ds, batch_size=int(dcfg["eval_batch_size"]), shuffle=False, num_workers=workers)

    val_loader, test_loader = eval_loader(val_data), eval_loader(test_data)

    # ---- model: built from `seed` on every rank (DDP also broadcasts rank 0's weights)
    seed_everything(seed)
    backbone = ensure_backbone(cfg, log=say) if main else None
    du.barrier()
    if not main and get_key(cfg, "model.checkpoint"):
        backbone = ensure_backbone(cfg, log=say)
    model = build_model(cfg, num_classes, backbone, log=say).to(device)
    method = str(cfg["peft"].get("method", "clora"))
    # The built config knows the default (0.1) when the YAML leaves sade_weight out; non-CLoRA methods have none.
    sade_weight = float(getattr(getattr(model, "peft_config", None), "sade_weight", 0.0))
    from ..peft import sade_loss, save_adapter, trainable_parameter_summary

    params = trainable_parameter_summary(model)
    say(f"model {cfg['model']['name']} + {method}: {params['trainable_params']:,} trainable of "
        f"{params['total_params']:,} parameters; {len(data['train'])} train / {len(data['val'])} val "
        f"[{val_source}] / {len(data['test'])} test samples, {num_classes} classes")  # fmt: skip
    ddp_model: nn.Module = model
    if dist_info.enabled:
        ddp_model = nn.parallel.DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None
        )

    # ---- optimizer, schedule, mixed precision
    optimizer = build_optimizer(
        model, float(ocfg["lr"]), float(ocfg["weight_decay"]), ocfg["betas"], float(ocfg["eps"])
    )
    epochs = int(scfg["epochs"])
    scheduler = CosineWarmupScheduler(
        optimizer, epochs, int(scfg["warmup_epochs"]), float(scfg["warmup_lr_init"]), float(scfg["lr_min"])
    )
    autocast, amp_dtype = autocast_context(device, bool(tcfg["amp"]), str(tcfg["amp_dtype"]))
    scaler = torch.amp.GradScaler(device.type, enabled=bool(tcfg["amp"]) and amp_dtype == torch.float16)
    grad_clip = float(ocfg["grad_clip"] or 0.0)
    trainable = [p for p in model.parameters() if p.requires_grad]

    # ---- state carried across epochs (and across a resume)
    start_epoch, global_step = 0, 0
    best: Dict[str, Any] = {}
    best_test: Dict[str, Any] = {}
    seed_everything(seed + dist_info.rank)  # dropout / drop-path: per process
    logger = RunLogger(run_dir, enabled=main)
    if resume:
        state = load_checkpoint(last_path, map_location="cpu")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start_epoch, global_step = int(state["epoch"]) + 1, int(state["global_step"])
        best, best_test = dict(state["best"]), dict(state["best_test"])
        rng_states = state["rng"]
        set_rng_state(rng_states[min(dist_info.rank, len(rng_states) - 1)], {"loader": loader_gen})
        logger.truncate_history(int(state["epoch"]))
        say(f"resumed {last_path} at epoch {start_epoch}/{epochs}")
    if main:
        atomic_write_text(dump_config(cfg), run_dir / "config.yaml")

    # ---- the loop
    for epoch in range(start_epoch, epochs):
        t_epoch = time.time()
        scheduler.step(epoch)
        lr = optimizer.param_groups[0]["lr"]
        sampler.set_epoch(epoch)
        train_set.set_epoch(epoch)
        ddp_model.train()  # inject_adapters keeps frozen BatchNorm in eval mode under train()
        sums = {"loss": 0.0, "sade": 0.0, "correct": 0.0, "count": 0.0, "steps": 0.0}
        bar = _progress(train_loader, f"epoch {epoch + 1}/{epochs}", enabled=main and not quiet)
        for i, batch in enumerate(bar):
            points = batch["points"].to(device, non_blocking=True)
            labels = batch["label"].to(device, non_blocking=True).long().view(-1)
            last_micro = (i + 1) % accum == 0
            # Under accumulation DDP must only all-reduce on the last micro-batch of each optimizer step.
            sync = ddp_model.no_sync() if (dist_info.enabled and not last_micro) else contextlib.nullcontext()
            with sync:
                with autocast():
                    logits = ddp_model(points)
                task = F.cross_entropy(logits.float(), labels, label_smoothing=float(ocfg["label_smoothing"]))
                sade = sade_loss(model) if sade_weight > 0 else torch.zeros((), device=device)
                loss = task + sade_weight * sade
                scaler.scale(loss / accum).backward()
            task, sade = task.detach(), sade.detach()
            sums["loss"] += float(task) * labels.numel()
            sums["sade"] += float(sade) * labels.numel()
            sums["correct"] += float((logits.argmax(-1) == labels).sum())
            sums["count"] += labels.numel()
            if not last_micro:
                continue
            if grad_clip > 0:
                scaler.unscale_(optimizer)
                torch.nn.utils.clip_grad_norm_(trainable, grad_clip)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            global_step += 1
            if not math.isfinite(float(task)):
                raise FloatingPointError(f"epoch {epoch} step {global_step}: loss is {float(task)}; lower optim.lr")
            if main and global_step % int(tcfg["log_every"]) == 0:
                logger.scalars({"train/loss": float(task), "train/sade_loss": float(sade), "train/lr": lr}, global_step)
            if hasattr(bar, "set_postfix"):
                bar.set_postfix(loss=f"{float(task):.3f}", lr=f"{lr:.2e}")
        loss_sum, sade_sum, correct, count = du.all_reduce_sum(
            [sums["loss"], sums["sade"], sums["correct"], sums["count"]], device
        )
        record: Dict[str, Any] = {
            "epoch": epoch,
            "lr": lr,
            "train_loss": loss_sum / max(count, 1),
            "train_sade_loss": sade_sum / max(count, 1),
            "train_acc": 100.0 * correct / max(count, 1),
        }

        # ---- validation (main process only: the unwrapped model on the full split; the others wait)
        if main and ((epoch + 1) % int(tcfg["eval_every"]) == 0 or epoch == epochs - 1):
            val = evaluate(model, val_loader, num_classes, device, autocast=autocast)
            test = val if same_val_test else evaluate(model, test_loader, num_classes, device, autocast=autocast)
            record.update(val_loss=val["loss"], val_acc=val["acc"], val_mean_class_acc=val["mean_class_acc"])
            record.update(test_loss=test["loss"], test_acc=test["acc"], test_mean_class_acc=test["mean_class_acc"])
            summary = {"epoch": epoch, "val_acc": val["acc"], "val_mean_class_acc": val["mean_class_acc"],
                       "test_acc": test["acc"], "test_mean_class_acc": test["mean_class_acc"]}  # fmt: skip
            if not best or val["acc"] > best["val_acc"]:
                best = summary
                _save_model(model, method, ckpt_dir / "best.pth", run_dir / "best_adapter", cfg, classes, epoch,
                            summary, save_adapter)  # fmt: skip
            if not best_test or test["acc"] > best_test["test_acc"]:
                best_test = summary
            logger.scalars({"train/acc": record["train_acc"], "train/epoch_loss": record["train_loss"],
                            "val/acc": val["acc"], "val/mean_class_acc": val["mean_class_acc"], "val/loss": val["loss"],
                            "test/acc": test["acc"], "test/mean_class_acc": test["mean_class_acc"]}, epoch)  # fmt: skip
        record["time_s"] = round(time.time() - t_epoch, 3)
        if main:
            logger.epoch(record)
            if method != "full":
                _save_adapter_dir(model, run_dir / "last_adapter", cfg, classes, epoch, save_adapter)
        # ---- the resume point: everything the next epoch depends on
        rng = _gather_rng(get_rng_state({"loader": loader_gen}), dist_info)
        if main:
            atomic_save(
                {
                    "kind": "training_state",
                    "version": __version__,
                    "config": dump_config(cfg),
                    "classes": classes,
                    "epoch": epoch,
                    "global_step": global_step,
                    "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "scaler": scaler.state_dict(),
                    "best": best,
                    "best_test": best_test,
                    "rng": rng,
                },
                last_path,
            )
            msg = (f"epoch {epoch + 1}/{epochs}: lr {lr:.2e} loss {record['train_loss']:.4f} "
                   f"train {record['train_acc']:.2f}%")  # fmt: skip
            if "val_acc" in record:
                msg += f" | val {record['val_acc']:.2f}% (mAcc {record['val_mean_class_acc']:.2f}%)"
                if not same_val_test:
                    msg += f" test {record['test_acc']:.2f}%"
            say(msg)
        du.barrier()
        if on_epoch_end is not None:
            on_epoch_end(epoch, record)

    # ---- final metrics: the selected model on the test split (+ voting), per-class accuracy, confusion matrix
    metrics: Dict[str, Any] = {}
    if main:
        last = _last_record(run_dir)
        final_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        best_file = load_checkpoint(ckpt_dir / "best.pth")
        model.load_state_dict(best_file["model"], strict=False)
        vote = int(tcfg["vote"])
        test = evaluate(model, test_loader, num_classes, device, vote=vote, vote_seed=seed, autocast=autocast)
        model.load_state_dict(final_state)
        metrics = {
            "config": cfg.get("name"),
            "method": method,
            "seed": seed,
            "acc": test["acc"],
            "mean_class_acc": test["mean_class_acc"],
            "selection": selection,
            "selection_label": selection_label,
            "val_source": val_source,
            "best_epoch": best.get("epoch"),
            "best_val_acc": best.get("val_acc"),
            "best_val_mean_class_acc": best.get("val_mean_class_acc"),
            "last_acc": last.get("test_acc"),
            "last_mean_class_acc": last.get("test_mean_class_acc"),
            "last_val_acc": last.get("val_acc"),
            "best_test_acc": best_test.get("test_acc"),
            "best_test_mean_class_acc": best_test.get("test_mean_class_acc"),
            "best_test_epoch": best_test.get("epoch"),
            "num_classes": num_classes,
            "classes": classes,
            "per_class_acc": dict(zip(classes, test["per_class_acc"])),
            "confusion": test["confusion"],
            "trainable_params": int(params["trainable_params"]),
            "trainable_params_without_head": int(params.get("trainable_params_without_head", 0)),
            "adapter_params": int(params.get("adapter_params", 0)),
            "total_params": int(params["total_params"]),
            "epochs": epochs,
            "num_points": int(dcfg["num_points"]),
            "world_size": dist_info.world_size,
            "device": str(device),
            "wall_time_s": round(time.time() - t_start, 1),
        }
        if vote > 0:
            metrics.update(vote_views=vote, vote_acc=test["vote_acc"], vote_mean_class_acc=test["vote_mean_class_acc"])
        metrics.update(_gflops(model, int(dcfg["num_points"]), method))
        atomic_write_json(metrics, run_dir / "metrics.json")
        table = results_table(metrics)
        atomic_write_text(table + "\n", run_dir / "results.md")
        if not quiet:
            print("\n" + table + f"\n\nrun directory: {run_dir}")
    logger.close()
    du.barrier()
    return metrics


# --------------------------------------------------------------------------------------------------- pieces
def _progress(iterable: Any, desc: str, enabled: bool) -> Any:
    if not enabled:
        return iterable
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, leave=False, dynamic_ncols=True)


def _write_adapter_meta(folder: Path, cfg: Mapping[str, Any], classes: Sequence[str], epoch: int) -> None:
    """Beside the adapter files: the run config and class names, so an adapter folder is evaluable on its own."""
    atomic_write_text(dump_config(cfg), folder / "config.yaml")
    atomic_write_json({"classes": list(classes), "epoch": epoch, "version": __version__}, folder / "classes.json")


def _save_model(
    model: nn.Module,
    method: str,
    path: Path,
    adapter_dir: Path,
    cfg: Mapping[str, Any],
    classes: Sequence[str],
    epoch: int,
    summary: Mapping[str, Any],
    save_adapter: Callable,
) -> None:
    atomic_save(
        {
            "kind": "model",
            "version": __version__,
            "config": dump_config(cfg),
            "classes": list(classes),
            "method": method,
            "epoch": epoch,
            "metrics": dict(summary),
            "model": model_payload(model, method, has_backbone=bool(get_key(cfg, "model.checkpoint"))),
        },
        path,
    )
    if method != "full":
        _save_adapter_dir(model, adapter_dir, cfg, classes, epoch, save_adapter)


def _save_adapter_dir(model: nn.Module, folder: Path, cfg: Mapping[str, Any], classes: Sequence[str], epoch: int,
                      save_adapter: Callable) -> None:  # fmt: skip
    """save_adapter into a fresh folder, then swap it in: a kill leaves the previous folder (or ``.old``) whole."""
    import shutil

    tmp, old = folder.with_name(folder.name + ".tmp"), folder.with_name(folder.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    save_adapter(model, tmp)
    _write_adapter_meta(tmp, cfg, classes, epoch)
    shutil.rmtree(old, ignore_errors=True)
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)


def _gather_rng(state: Dict[str, Any], dist_info: du.DistInfo) -> List[Dict[str, Any]]:
    """Every process's RNG state, so a resumed DDP run continues each process's stream."""
    if not dist_info.enabled:
        return [state]
    gathered: List[Any] = [None] * dist_info.world_size
    torch.distributed.all_gather_object(gathered, state)
    return gathered


def _last_record(run_dir: Path) -> Dict[str, Any]:
    path = run_dir / "history.jsonl"
    records = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()] if path.exists() else []
    with_eval = [r for r in records if "test_acc" in r]
    return with_eval[-1] if with_eval else {}


def _gflops(model: nn.Module, num_points: int, method: str) -> Dict[str, Any]:
    """GFLOPs at batch 1 (multiply-adds, Linear + Conv): the deployed model (adapters merged) and as trained."""
    import copy

    from ..models.flops import count_gflops

    out: Dict[str, Any] = {"gflops_unmerged": count_gflops(model, num_points)}
    if method in ("clora", "lora"):
        from ..peft import merge_and_unload

        merged = merge_and_unload(copy.deepcopy(model))
        out["gflops"] = count_gflops(merged, num_points)
    else:
        out["gflops"] = out["gflops_unmerged"]
    return out
