"""``tools/pretrain.py --cfg pretrain_shapenet.yaml``: Point-MAE masked-autoencoder pre-training on any dataset.

Builds the ``train`` split of ``cfg["dataset"]`` (any classification dataset works, ``PointCloudFolder`` included:
labels are ignored), holds out a validation part (the dataset's ``val`` split when it has one, else
``data.val_fraction`` of train with ``data.val_seed``), trains :class:`~pointclora.pretrain.PointMAEPretrain` whose
encoder has the shapes of ``model.name``, and exports the encoder of the epoch with the lowest validation Chamfer
loss as a checkpoint that ``tools/finetune.py --ckpt`` (``load_pretrained``) reads.

Config sections used: ``dataset``, ``model`` (``name`` + encoder overrides), ``data`` (``num_points``,
``augmentation``, ``batch_size``, ``eval_batch_size``, ``num_workers``, ``val_fraction``, ``val_seed``), ``optim``
(``lr``, ``weight_decay``, ``betas``, ``eps``, ``grad_clip``), ``schedule`` (``epochs``, ``warmup_epochs``,
``warmup_lr_init``, ``lr_min``), ``train`` (``seed``, ``device``), and ``pretrain`` (:data:`PRETRAIN_DEFAULTS`).
The run directory holds ``config.yaml``, ``history.jsonl``, ``ckpt-last.pth`` (resumable), ``encoder-best.pth``,
``encoder-last.pth`` and ``metrics.json``.
"""

from __future__ import annotations

import argparse
import copy
import difflib
import json
import math
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

__all__ = ["PRETRAIN_DEFAULTS", "run_pretrain", "main", "split_train_val", "build_parser", "normalize_pretrain_config"]

#: Keys of the ``pretrain`` config section and their defaults.
PRETRAIN_DEFAULTS: Dict[str, Any] = {
    "mask_ratio": 0.6,  # fraction of patches hidden per cloud (Point-MAE)
    "decoder_depth": 4,
    "decoder_num_heads": None,  # default: the encoder's
    "decoder_drop_path_rate": 0.1,
    "layout": "ours",  # exported encoder: "ours" ({'model': ...}) or "point_mae" (official pretrain.pth layout)
    "output": None,  # where the selected encoder goes (default <run_dir>/encoder-best.pth)
    "run_dir": None,  # default runs/pretrain/<cfg name>
    "max_train_samples": None,  # cap the training set (quick runs)
    "max_val_samples": None,
}

#: Model-section keys that are not encoder constructor arguments.
_MODEL_META_KEYS = ("name", "checkpoint", "checkpoint_prefix")


def _log(msg: str) -> None:
    print(msg, flush=True)


def _section(cfg: Mapping[str, Any], name: str) -> Dict[str, Any]:
    value = cfg.get(name) or {}
    if not isinstance(value, Mapping):
        raise ValueError(f"config section {name!r} must be a mapping, got {value!r}")
    return dict(value)


def pretrain_options(cfg: Mapping[str, Any]) -> Dict[str, Any]:
    """``PRETRAIN_DEFAULTS`` updated by ``cfg["pretrain"]``; unknown keys raise with a suggestion."""
    given = _section(cfg, "pretrain")
    unknown = [k for k in given if k not in PRETRAIN_DEFAULTS]
    if unknown:
        k = unknown[0]
        close = difflib.get_close_matches(k, PRETRAIN_DEFAULTS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown key 'pretrain.{k}'{hint} Valid keys: {', '.join(PRETRAIN_DEFAULTS)}")
    if given.get("layout", "ours") not in ("ours", "point_mae"):
        raise ValueError(f"pretrain.layout must be 'ours' or 'point_mae', got {given['layout']!r}")
    return {**PRETRAIN_DEFAULTS, **given}


def normalize_pretrain_config(cfg: Mapping[str, Any]) -> Dict[str, Any]:
    """A full config from either entry point.

    ``tools/pretrain.py`` passes what :func:`pointclora.config.load_config` returned; the fine-tuning tool's demo path
    (``engine.trainer.ensure_backbone``) passes the free-form ``pretrain`` section of a fine-tuning config (a whole
    pre-training config, ``_base_`` already expanded) plus ``output_checkpoint``. Defaults are filled in and unknown
    keys rejected (naming the key and the closest valid one) in both cases.
    """
    from ..config import DEFAULTS, merge, validate_config

    cfg = copy.deepcopy(dict(cfg))
    out = cfg.pop("output_checkpoint", None)
    validate_config(cfg, source="pre-training config")
    cfg = merge(DEFAULTS, cfg)
    if out is not None:
        cfg["output_checkpoint"] = out
    return cfg


def split_train_val(n: int, val_fraction: float, seed: int) -> Tuple[List[int], List[int]]:
    """Deterministic random hold-out: ``(train indices, val indices)``, val = ``round(n · val_fraction)`` (>= 1 when
    ``0 < val_fraction`` and ``n >= 2``). The same seed always gives the same split, whatever the training seed."""
    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"data.val_fraction must lie in [0, 1), got {val_fraction}")
    n_val = int(round(n * val_fraction))
    if val_fraction > 0 and n >= 2:
        n_val = max(1, min(n - 1, n_val))
    perm = np.random.default_rng(seed).permutation(n).tolist()
    return sorted(perm[n_val:]), sorted(perm[:n_val])


def _build(dataset_cfg: Mapping[str, Any], split: str, transform: Callable) -> Dataset:
    from ..datasets import build_dataset

    return build_dataset(dict(dataset_cfg), split, transform)


def _has_split(dataset_cfg: Mapping[str, Any], split: str) -> bool:
    try:
        ds = _build(dataset_cfg, split, None)
    except (FileNotFoundError, ValueError, KeyError):
        return False
    return len(ds) > 0


def build_pretrain_data(cfg: Mapping[str, Any], opts: Mapping[str, Any]) -> Tuple[Dataset, Dataset, str]:
    """Train and validation datasets (with transforms) and a sentence saying where the validation came from."""
    from ..datasets.transforms import eval_transforms, train_transforms

    data = _section(cfg, "data")
    dataset_cfg = _section(cfg, "dataset")
    if not dataset_cfg:
        raise ValueError("config has no 'dataset' section: say which point clouds to pre-train on")
    num_points = int(data.get("num_points", 1024))
    train_tf = train_transforms(num_points, data.get("augmentation", "scale_translate"))
    eval_tf = eval_transforms(num_points)
    train = _build(dataset_cfg, "train", train_tf)
    if data.get("val_split", "auto") in ("auto", "val") and _has_split(dataset_cfg, "val"):
        val = _build(dataset_cfg, "val", eval_tf)
        where = "the dataset's val split"
    else:
        frac, seed = float(data.get("val_fraction", 0.1)), int(data.get("val_seed", 0))
        tr_idx, va_idx = split_train_val(len(train), frac, seed)
        val = Subset(_build(dataset_cfg, "train", eval_tf), va_idx)
        train = Subset(train, tr_idx)
        where = f"{len(va_idx)} shapes held out of train (val_fraction={frac}, val_seed={seed})"
    # Caps take a seeded random subset: the first N indices of a class-folder dataset would be a few classes only.
    cap_rng = np.random.default_rng(int(data.get("val_seed", 0)) + 1)
    if opts.get("max_train_samples") and len(train) > int(opts["max_train_samples"]):
        train = Subset(train, sorted(cap_rng.permutation(len(train))[: int(opts["max_train_samples"])].tolist()))
    if opts.get("max_val_samples") and len(val) > int(opts["max_val_samples"]):
        val = Subset(val, sorted(cap_rng.permutation(len(val))[: int(opts["max_val_samples"])].tolist()))
    if len(train) == 0:
        raise ValueError(
            f"dataset {dataset_cfg.get('name')!r} (root {dataset_cfg.get('root')!r}) has no training shapes"
        )
    return train, val, where


def _points(batch: Any) -> torch.Tensor:
    pts = batch["points"] if isinstance(batch, Mapping) else batch[0]
    return pts[..., :3].float()


@torch.no_grad()
def evaluate_pretrain(model, loader: DataLoader, device: torch.device, seed: int = 0) -> float:
    """Mean Chamfer-L2 over ``loader`` with masks drawn from a fixed generator (comparable across epochs)."""
    from ..models.mae import random_patch_mask

    model.eval()
    g = torch.Generator().manual_seed(seed)
    total, count = 0.0, 0
    G = model.MAE_encoder.num_groups
    for batch in loader:
        pts = _points(batch).to(device)
        mask = random_patch_mask(pts.shape[0], G, model.mask_ratio, device=device, generator=g)
        total += float(model(pts, mask=mask).loss) * pts.shape[0]
        count += pts.shape[0]
    return total / max(1, count)


def run_pretrain(
    cfg: Mapping[str, Any],
    run_dir: Optional[os.PathLike] = None,
    output: Optional[os.PathLike] = None,
    resume: bool = True,
    log: Callable[[str], None] = _log,
) -> str:
    """Pre-train and export the encoder; returns the path of the exported (best-validation) encoder checkpoint.

    Args:
        cfg: a resolved config (see the module docstring for the sections read).
        run_dir: run directory (default ``pretrain.run_dir`` or ``runs/pretrain/<cfg name>``).
        output: exported encoder path (default ``pretrain.output`` or ``<run_dir>/encoder-best.pth``).
        resume: continue from ``<run_dir>/ckpt-last.pth`` when it exists.
    """
    from .. import __version__
    from ..config import dump_config
    from ..engine.checkpoint import atomic_save, atomic_write_json, atomic_write_text, get_rng_state, set_rng_state
    from ..engine.logging import RunLogger
    from ..engine.optim import CosineWarmupScheduler, build_optimizer
    from ..models.checkpoint import safe_torch_load
    from ..models.mae import build_pretrain_model, export_encoder_state
    from ..utils.device import resolve_device

    cfg = normalize_pretrain_config(cfg)
    output = output or cfg.pop("output_checkpoint", None)
    opts = pretrain_options(cfg)
    model_cfg, data, optim, sched, train_cfg = (
        _section(cfg, k) for k in ("model", "data", "optim", "schedule", "train")
    )
    variant = model_cfg.get("name") or "point_mae_s"
    run_dir = Path(run_dir or opts["run_dir"] or Path("runs") / "pretrain" / str(cfg.get("name") or "pretrain"))
    run_dir.mkdir(parents=True, exist_ok=True)
    output = Path(output or opts["output"] or run_dir / "encoder-best.pth")
    seed = int(train_cfg.get("seed", 0))
    torch.manual_seed(seed)
    np.random.seed(seed)
    device = resolve_device(train_cfg.get("device", "auto"))

    train_ds, val_ds, val_where = build_pretrain_data(cfg, opts)
    batch_size = int(data.get("batch_size", 32))
    g = torch.Generator().manual_seed(seed)
    workers = int(data.get("num_workers", 0))
    train_loader = DataLoader(
        train_ds,
        batch_size=batch_size,
        shuffle=True,
        drop_last=len(train_ds) > batch_size,
        num_workers=workers,
        generator=g,
    )
    val_loader = DataLoader(val_ds, batch_size=int(data.get("eval_batch_size", 64)), num_workers=workers)

    overrides = {k: v for k, v in model_cfg.items() if k not in _MODEL_META_KEYS}
    model = build_pretrain_model(
        variant,
        mask_ratio=float(opts["mask_ratio"]),
        decoder_depth=int(opts["decoder_depth"]),
        decoder_num_heads=opts["decoder_num_heads"],
        decoder_drop_path_rate=float(opts["decoder_drop_path_rate"]),
        **overrides,
    ).to(device)
    optimizer = build_optimizer(
        model,
        lr=float(optim.get("lr", 1e-3)),
        weight_decay=float(optim.get("weight_decay", 0.05)),
        betas=optim.get("betas", (0.9, 0.999)),
        eps=float(optim.get("eps", 1e-8)),
    )
    epochs = int(sched.get("epochs", 300))
    scheduler = CosineWarmupScheduler(
        optimizer,
        epochs,
        int(sched.get("warmup_epochs", 10)),
        float(sched.get("warmup_lr_init", 1e-6)),
        float(sched.get("lr_min", 1e-6)),
    )
    grad_clip = optim.get("grad_clip", 10.0)
    n_params = sum(p.numel() for p in model.MAE_encoder.parameters())
    log(
        f"[pretrain] {variant} encoder ({n_params:,} params), mask {opts['mask_ratio']}, {len(train_ds)} train / "
        f"{len(val_ds)} val shapes (val: {val_where}), {epochs} epochs, batch {batch_size}, device {device}"
    )

    atomic_write_text(dump_config(cfg), run_dir / "config.yaml")
    logger = RunLogger(run_dir, tensorboard=False)
    start_epoch, best = 0, {"val_loss": math.inf, "epoch": -1}
    last_path = run_dir / "ckpt-last.pth"
    if resume and last_path.exists():
        ckpt = safe_torch_load(last_path)
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        set_rng_state(ckpt["rng"], {"loader": g})
        start_epoch = int(ckpt["epoch"]) + 1
        best = {"val_loss": float(ckpt["best_val_loss"]), "epoch": int(ckpt["best_epoch"])}
        logger.truncate_history(start_epoch - 1)
        log(f"[pretrain] resumed from {last_path} at epoch {start_epoch}")

    meta = {"variant": variant, "config": {"model": model_cfg, "pretrain": opts}}
    t0 = time.time()
    for epoch in range(start_epoch, epochs):
        scheduler.step(epoch)
        model.train()
        losses, te = [], time.time()
        for batch in train_loader:
            loss = model(_points(batch).to(device)).loss
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), float(grad_clip))
            optimizer.step()  # exactly one step per iteration
            losses.append(float(loss.detach()))
        train_loss = float(np.mean(losses)) if losses else float("nan")
        val_loss = (
            evaluate_pretrain(model, val_loader, device, seed=int(data.get("val_seed", 0)))
            if len(val_ds)
            else train_loss
        )
        record = {
            "epoch": epoch,
            "lr": optimizer.param_groups[0]["lr"],
            "train_loss": train_loss,
            "val_loss": val_loss,
            "epoch_time_s": time.time() - te,
        }
        logger.epoch(record)
        improved = val_loss < best["val_loss"]
        if improved:
            best = {"val_loss": val_loss, "epoch": epoch}
            export_encoder_state(
                model,
                str(output),
                layout=opts["layout"],
                variant=variant,
                config=meta["config"],
                extra={"epoch": epoch, "val_loss": val_loss, "version": __version__},
            )
        atomic_save(
            {
                "model": model.state_dict(),
                "optimizer": optimizer.state_dict(),
                "epoch": epoch,
                "best_val_loss": best["val_loss"],
                "best_epoch": best["epoch"],
                "rng": get_rng_state({"loader": g}),
                "config": dump_config(cfg),
                "version": __version__,
            },
            last_path,
        )
        log(
            f"[pretrain] epoch {epoch + 1}/{epochs} lr {record['lr']:.2e} train {train_loss:.5f} val {val_loss:.5f}"
            f"{' *' if improved else ''} ({record['epoch_time_s']:.1f}s)"
        )
    logger.close()
    if not output.exists():  # zero epochs to run and nothing exported yet: export what we have
        export_encoder_state(model, str(output), layout=opts["layout"], variant=variant, config=meta["config"])
    export_encoder_state(
        model,
        str(run_dir / "encoder-last.pth"),
        layout=opts["layout"],
        variant=variant,
        config=meta["config"],
        extra={"epoch": epochs - 1},
    )
    metrics = {
        "variant": variant,
        "best_epoch": best["epoch"],
        "best_val_loss": best["val_loss"],
        "train_shapes": len(train_ds),
        "val_shapes": len(val_ds),
        "val_source": val_where,
        "encoder_params": n_params,
        "wall_time_s": time.time() - t0,
        "checkpoint": str(output),
    }
    atomic_write_json(metrics, run_dir / "metrics.json")
    log(f"[pretrain] best val Chamfer-L2 {best['val_loss']:.5f} at epoch {best['epoch'] + 1}; encoder -> {output}")
    return str(output)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pointclora-pretrain",
        description="Point-MAE masked-autoencoder pre-training; writes an encoder checkpoint for finetune --ckpt.",
    )
    p.add_argument("--cfg", required=True, help="config file or bare name in configs/ (e.g. pretrain_shapenet.yaml)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dotted override, repeatable: --set schedule.epochs=5 --set pretrain.mask_ratio=0.6",
    )
    p.add_argument("--data-root", help="shortcut for --set dataset.root=PATH")
    p.add_argument("--epochs", type=int, help="shortcut for --set schedule.epochs=N")
    p.add_argument("--run-dir", help="run directory (default runs/pretrain/<config name>)")
    p.add_argument("--output", help="exported encoder path (default <run-dir>/encoder-best.pth)")
    p.add_argument("--layout", choices=["ours", "point_mae"], help="exported checkpoint layout")
    p.add_argument("--no-resume", action="store_true", help="start over even if <run-dir>/ckpt-last.pth exists")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    from ..config import ConfigError, load_config

    args = build_parser().parse_args(argv)
    overrides = list(args.overrides)
    if args.data_root:
        overrides.append(f"dataset.root={args.data_root}")
    if args.epochs is not None:
        overrides.append(f"schedule.epochs={args.epochs}")
    if args.layout:
        overrides.append(f"pretrain.layout={args.layout}")
    try:
        cfg = load_config(args.cfg, overrides)
        path = run_pretrain(cfg, run_dir=args.run_dir, output=args.output, resume=not args.no_resume)
    except (ConfigError, ValueError, KeyError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps({"checkpoint": path}))
    return 0
