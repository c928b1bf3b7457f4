"""``tools/segment.py --cfg shapenetpart.yaml``: part segmentation with the Point-MAE head and any PEFT method.

Recipe (Point-MAE ``segmentation/main.py``): AdamW lr 2e-4, weight decay 0.05, cosine with warm-up, batch 16, 2048
points, 128 groups; isotropic scale U(0.8, 1.25) + shift U(-0.1, 0.1) augmentation; cross-entropy over all part
logits. One optimizer step per iteration (the reference calls ``optimizer.step()`` twice per iteration, once before
and once after clipping; we do not copy that).

Evaluation is the standard one (:mod:`pointclora.engine.segmentation_metrics`): predictions restricted to the
object category's parts, class mIoU and instance mIoU, a per-category table. The number of categories and the part
ids come from the dataset (``ShapeNetPart.categories`` / ``category_parts``), never from constants, so the cattle scans
(one category, parts 50–53) and ShapeNetPart (16 categories, 50 parts) use the same code.

Model selection: the epoch with the best *validation* instance mIoU (the dataset's ``val`` split, or
``data.val_fraction`` of the training shapes when it has none; ``data.val_split: test`` selects on test, the
reference's optimistic protocol, and is labelled so). The run directory holds ``config.yaml``, ``history.jsonl``,
``checkpoints/last.pth`` (resumable with ``--resume``), ``checkpoints/best.pth``, ``metrics.json`` and
``results.md``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

__all__ = [
    "SegmentationAugment",
    "build_seg_datasets",
    "build_seg_model",
    "evaluate_segmentation",
    "run_segmentation",
    "main",
]


class SegmentationAugment:
    """The reference's segmentation augmentation: one isotropic scale U(low, high) per cloud, then a shift
    U(-shift, shift) per axis. Only xyz changes; part labels stay aligned (no point is moved between indices)."""

    def __init__(self, scale_low: float = 0.8, scale_high: float = 1.25, shift: float = 0.1) -> None:
        if not 0 < scale_low <= scale_high:
            raise ValueError(f"need 0 < scale_low <= scale_high, got {scale_low}, {scale_high}")
        self.scale_low, self.scale_high, self.shift = float(scale_low), float(scale_high), float(shift)

    def __call__(self, sample: Dict[str, Any]) -> Dict[str, Any]:
        pts = sample["points"].clone()
        scale = torch.empty(1).uniform_(self.scale_low, self.scale_high)
        shift = torch.empty(1, 3).uniform_(-self.shift, self.shift)
        pts[:, :3] = pts[:, :3] * scale + shift
        return {**sample, "points": pts}

    def __repr__(self) -> str:
        return f"SegmentationAugment(scale=({self.scale_low}, {self.scale_high}), shift={self.shift})"


def _dataset_cfg(cfg: Mapping[str, Any]) -> Dict[str, Any]:
    dcfg = dict(cfg.get("dataset") or {})
    if not dcfg:
        raise ValueError("config has no 'dataset' section (e.g. dataset: {_base_: shapenetpart.yaml})")
    return dcfg


def _build(
    dcfg: Mapping[str, Any], split: str, transform: Optional[Callable], data_root: Optional[str], num_points: int
) -> Dataset:
    from ..datasets import build_dataset

    dcfg = dict(dcfg)
    dcfg["num_points"] = num_points  # data.num_points decides: segmentation datasets sample the points themselves
    return build_dataset(dcfg, split, transform=transform, root=data_root)


def _try_split(dcfg, split, data_root, num_points) -> Optional[Dataset]:
    try:
        ds = _build(dcfg, split, None, data_root, num_points)
    except (FileNotFoundError, ValueError, KeyError):
        return None
    return ds if len(ds) > 0 else None


def build_seg_datasets(cfg: Mapping[str, Any], data_root: Optional[str] = None) -> Dict[str, Any]:
    """``{"train", "val", "test", "categories", "category_parts", "num_parts", "val_source"}`` for segmentation.

    The training split is ``dataset.train_split`` (default ``train``; ShapeNetPart's reference trains on
    ``trainval`` and selects on test — say ``data.val_split: test`` and ``dataset.train_split: trainval`` for that).
    """
    data = cfg.get("data") or {}
    n = int(data.get("num_points", 2048))
    dcfg = _dataset_cfg(cfg)
    train_split = dcfg.pop("train_split", "train")
    aug = data.get("augmentation", "scale_translate")
    train_tf = SegmentationAugment() if aug != "none" else None
    test = _build(dcfg, "test", None, data_root, n)
    train = _build(dcfg, train_split, train_tf, data_root, n)
    mode = data.get("val_split", "auto")
    if mode not in ("auto", "carve", "test"):
        raise ValueError(f"data.val_split must be auto, carve or test, got {mode!r}")
    val, source = None, None
    if mode == "test":
        val, source = test, "test (field protocol)"
    elif mode == "auto" and train_split == "train":
        val = _try_split(dcfg, "val", data_root, n)
        source = "val split" if val is not None else None
    if val is None:
        frac, vseed = float(data.get("val_fraction", 0.1)), int(data.get("val_seed", 0))
        if not 0 < frac < 1:
            raise ValueError(f"data.val_fraction must be in (0, 1), got {frac}")
        order = torch.randperm(len(train), generator=torch.Generator().manual_seed(vseed)).tolist()
        n_val = max(1, int(round(frac * len(train))))
        if n_val >= len(train):
            raise ValueError(
                f"cannot carve a validation set out of {len(train)} training shapes; use data.val_split: test"
            )
        from ..engine.trainer import SeededDataset

        # Carved shapes come from the training reader, whose point draw is random: a fixed seed per index makes every
        # evaluation see the same points, as the deterministic val/test readers do.
        train_eval = SeededDataset(_build(dcfg, train_split, None, data_root, n), vseed)
        val = Subset(train_eval, sorted(order[:n_val]))
        train = Subset(train, sorted(order[n_val:]))
        source = f"{n_val} shapes carved from {train_split} (val_seed {vseed})"
    base = test
    categories = list(base.categories)
    return {
        "train": train,
        "val": val,
        "test": test,
        "categories": categories,
        "category_parts": {c: list(v) for c, v in base.category_parts.items()},
        "num_parts": int(base.num_parts),
        "num_categories": len(categories),
        "val_source": source,
    }


def _category_parts_list(info: Mapping[str, Any]) -> List[List[int]]:
    # Categories absent from this copy of the data keep an empty list: no shape will ask for them.
    return [sorted(int(p) for p in info["category_parts"].get(c, [])) for c in info["categories"]]


def seg_variant(name: str) -> str:
    """The segmentation variant for a model name: ``point_mae_s`` -> ``point_mae_s_seg`` (same encoder shapes), so
    a config can reuse ``models/point_mae_s.yaml`` (whose checkpoint is the shared pre-trained encoder)."""
    from ..models import list_models

    names = list_models()
    if name.endswith("_seg") and name in names:
        return name
    if f"{name}_seg" in names:
        return f"{name}_seg"
    raise ValueError(
        f"model.name={name!r} has no segmentation variant; available: "
        f"{', '.join(n for n in names if n.endswith('_seg'))}"
    )


def build_seg_model(
    cfg: Mapping[str, Any], info: Mapping[str, Any], backbone: Optional[Path] = None, log: Callable[[str], None] = print
) -> nn.Module:
    """``create_model(<seg variant>, num_classes=num_parts, num_categories=...)`` + backbone + adapters.

    Under CLoRA / LoRA / linear the segmentation head (:data:`~pointclora.segmentation.SEG_HEAD_MODULES`) trains
    beside the adapters unless ``peft.train_modules`` says otherwise.
    """
    from ..models import create_model, load_pretrained
    from ..peft import inject_adapters, make_peft_config
    from ..models.segmentation import SEG_HEAD_MODULES

    mcfg = dict(cfg.get("model") or {})
    name = seg_variant(mcfg.pop("name", None) or "point_mae_s_seg")
    mcfg.pop("checkpoint", None)
    prefix = mcfg.pop("checkpoint_prefix", None)
    model = create_model(name, num_classes=int(info["num_parts"]), num_categories=int(info["num_categories"]), **mcfg)
    if backbone is not None:
        res = load_pretrained(model, backbone, prefix=prefix, log=False)
        missing_backbone = [k for k in res.missing_keys if not k.startswith(SEG_HEAD_MODULES)]
        log(
            f"loaded {len(res.loaded_keys)} tensors from {backbone}; missing {len(res.missing_keys)} (the new head"
            f"{', and backbone keys ' + str(missing_backbone[:5]) if missing_backbone else ''}), "
            f"unexpected {len(res.unexpected_keys)}"
        )
    peft = dict(cfg.get("peft") or {"method": "clora"})
    method = str(peft.get("method", "clora")).lower()
    if method in ("clora", "lora", "linear") and "train_modules" not in peft:
        peft["train_modules"] = list(SEG_HEAD_MODULES)
    return inject_adapters(model, make_peft_config(**peft))


@torch.no_grad()
def evaluate_segmentation(
    model: nn.Module,
    loader: DataLoader,
    category_parts: Sequence[Sequence[int]],
    categories: Sequence[str],
    device: torch.device,
) -> Dict[str, Any]:
    """Loss and :class:`~pointclora.engine.segmentation_metrics.SegmentationMeter` metrics over ``loader``."""
    from ..engine.segmentation_metrics import SegmentationMeter

    was_training = model.training
    model.eval()
    meter = SegmentationMeter(category_parts, categories)
    loss_sum, count = 0.0, 0
    for batch in loader:
        pts, cls, seg = batch["points"].to(device), batch["cls"].to(device).long().view(-1), batch["seg"].to(device)
        logits = model(pts, cls)
        loss_sum += float(
            F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), seg.reshape(-1).long(), reduction="sum")
        )
        count += seg.numel()
        meter.update(logits, seg, cls)
    model.train(was_training)
    return {**meter.compute(), "loss": loss_sum / max(1, count)}


class _WithCategory(nn.Module):
    """``forward(points)`` for FLOP counting: the segmentation model with every cloud in category 0."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        return self.model(points, torch.zeros(points.shape[0], dtype=torch.long, device=points.device))


def _seg_gflops(model: nn.Module, num_points: int) -> Dict[str, Optional[float]]:
    """GFLOPs at batch 1 with :func:`pointclora.flops.count_flops` (Linear + Conv multiply-adds, CLORA.md's rule):
    ``gflops`` for the deployed model (adapters merged: they add nothing) and ``gflops_unmerged`` as trained."""
    from ..models.flops import count_flops

    try:
        count = count_flops(_WithCategory(model), num_points)
    except Exception as err:  # counting is informative; never fail a finished run over it
        print(f"[segment] GFLOPs not counted: {err}", file=sys.stderr)
        return {"gflops": None, "gflops_unmerged": None}
    return {"gflops": count.linear_conv / 1e9, "gflops_unmerged": (count.linear_conv + count.adapters) / 1e9}


def run_segmentation(
    cfg: Mapping[str, Any],
    output: Optional[str] = None,
    resume: bool = False,
    data_root: Optional[str] = None,
    quiet: bool = False,
) -> Dict[str, Any]:
    """Train + evaluate; returns the metrics written to ``<output>/metrics.json``."""
    from .. import __version__
    from ..config import dump_config, get_key
    from ..engine.checkpoint import (
        atomic_save,
        atomic_write_json,
        atomic_write_text,
        get_rng_state,
        load_checkpoint,
        set_rng_state,
    )
    from ..engine.logging import RunLogger, format_params
    from ..engine.optim import CosineWarmupScheduler, build_optimizer
    from ..engine.segmentation_metrics import format_category_table
    from ..engine.trainer import SeededDataset, ensure_backbone, seed_everything
    from ..peft import sade_loss, trainable_parameter_summary
    from ..utils.device import resolve_device

    cfg = json.loads(json.dumps(cfg))
    t0 = time.time()
    say: Callable[[str], None] = (lambda *_: None) if quiet else (lambda m: print(m, flush=True))
    device = resolve_device(get_key(cfg, "train.device", "auto"))
    seed = int(get_key(cfg, "train.seed", 0))
    dcfg, ocfg, scfg, tcfg = (cfg.get(k) or {} for k in ("data", "optim", "schedule", "train"))
    method = str(get_key(cfg, "peft.method", "clora")).lower()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    run_dir = (
        Path(output) if output else Path("runs") / str(cfg.get("name") or "segment") / f"{method}-seed{seed}-{stamp}"
    )
    ckpt_dir = run_dir / "checkpoints"
    last_path = ckpt_dir / "last.pth"
    if not resume and last_path.exists():
        raise FileExistsError(f"{run_dir} already holds a run; pass --resume to continue it or --output elsewhere")
    if resume and not last_path.exists():
        raise FileNotFoundError(f"--resume: no checkpoint at {last_path}")
    ckpt_dir.mkdir(parents=True, exist_ok=True)

    info = build_seg_datasets(cfg, data_root=data_root)
    parts = _category_parts_list(info)
    categories = info["categories"]
    num_points = int(dcfg.get("num_points", 2048))
    train_set = SeededDataset(info["train"], seed)
    loader_gen = torch.Generator().manual_seed(seed)
    bs = int(dcfg.get("batch_size", 16))
    workers = int(dcfg.get("num_workers", 0))
    # drop_last avoids a batch of one cloud, which BatchNorm in the head cannot normalise.
    train_loader = DataLoader(
        train_set,
        batch_size=bs,
        shuffle=True,
        drop_last=len(train_set) > bs and len(train_set) % bs == 1,
        num_workers=workers,
        generator=loader_gen,
    )
    ebs = int(dcfg.get("eval_batch_size", 32))
    val_loader = DataLoader(info["val"], batch_size=ebs, num_workers=workers)
    test_loader = DataLoader(info["test"], batch_size=ebs, num_workers=workers)
    same_val_test = info["val"] is info["test"]

    seed_everything(seed)
    backbone = ensure_backbone(cfg, log=say)
    model = build_seg_model(cfg, info, backbone, log=say).to(device)
    sade_weight = (
        float(get_key(cfg, "peft.sade_weight", 0.1 if method == "clora" else 0.0)) if method == "clora" else 0.0
    )
    from ..models.segmentation import SEG_HEAD_MODULES

    params = trainable_parameter_summary(model, head_modules=SEG_HEAD_MODULES)
    say(
        f"[segment] {get_key(cfg, 'model.name')} + {method}: {params['trainable_params']:,} trainable of "
        f"{params['total_params']:,}; {len(info['train'])} train / {len(info['val'])} val [{info['val_source']}] / "
        f"{len(info['test'])} test shapes; categories {categories}; {info['num_parts']} part logits"
    )

    optimizer = build_optimizer(
        model,
        float(ocfg.get("lr", 2e-4)),
        float(ocfg.get("weight_decay", 0.05)),
        ocfg.get("betas", (0.9, 0.999)),
        float(ocfg.get("eps", 1e-8)),
    )
    epochs = int(scfg.get("epochs", 300))
    scheduler = CosineWarmupScheduler(
        optimizer,
        epochs,
        int(scfg.get("warmup_epochs", 10)),
        float(scfg.get("warmup_lr_init", 1e-6)),
        float(scfg.get("lr_min", 1e-6)),
    )
    grad_clip = float(ocfg.get("grad_clip") or 0.0)
    trainable = [p for p in model.parameters() if p.requires_grad]
    start_epoch, best, best_test = 0, {}, {}
    seed_everything(seed)
    logger = RunLogger(run_dir, tensorboard=False)
    if resume:
        state = load_checkpoint(last_path)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        start_epoch = int(state["epoch"]) + 1
        best, best_test = dict(state["best"]), dict(state["best_test"])
        set_rng_state(state["rng"], {"loader": loader_gen})
        logger.truncate_history(int(state["epoch"]))
        say(f"[segment] resumed {last_path} at epoch {start_epoch}/{epochs}")
    atomic_write_text(dump_config(cfg), run_dir / "config.yaml")

    for epoch in range(start_epoch, epochs):
        te = time.time()
        scheduler.step(epoch)
        lr = optimizer.param_groups[0]["lr"]
        train_set.set_epoch(epoch)
        model.train()
        loss_sum, sade_sum, correct, count = 0.0, 0.0, 0, 0
        for batch in train_loader:
            pts, cls = batch["points"].to(device), batch["cls"].to(device).long().view(-1)
            seg = batch["seg"].to(device).long()
            logits = model(pts, cls)
            task = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), seg.reshape(-1))
            sade = sade_loss(model) if sade_weight > 0 else torch.zeros((), device=device)
            loss = task + sade_weight * sade
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if grad_clip > 0:
                torch.nn.utils.clip_grad_norm_(trainable, grad_clip)
            optimizer.step()  # once per iteration (the reference's second step is a bug)
            task_value = float(task.detach())
            if not math.isfinite(task_value):
                raise FloatingPointError(f"epoch {epoch}: loss is {task_value}; lower optim.lr")
            loss_sum += task_value * seg.numel()
            sade_sum += float(sade.detach()) * seg.numel()
            correct += int((logits.argmax(-1) == seg).sum())
            count += seg.numel()
        record: Dict[str, Any] = {
            "epoch": epoch,
            "lr": lr,
            "train_loss": loss_sum / max(1, count),
            "train_sade_loss": sade_sum / max(1, count),
            "train_acc": 100.0 * correct / max(1, count),
        }
        val = evaluate_segmentation(model, val_loader, parts, categories, device)
        test = val if same_val_test else evaluate_segmentation(model, test_loader, parts, categories, device)
        record.update(
            val_instance_miou=val["instance_miou"],
            val_class_miou=val["class_miou"],
            val_loss=val["loss"],
            test_instance_miou=test["instance_miou"],
            test_class_miou=test["class_miou"],
            time_s=round(time.time() - te, 2),
        )
        summary = {
            "epoch": epoch,
            "val_instance_miou": val["instance_miou"],
            "test_instance_miou": test["instance_miou"],
            "test_class_miou": test["class_miou"],
        }
        if not best or val["instance_miou"] > best["val_instance_miou"]:
            best = summary
            atomic_save(
                {
                    "kind": "segmentation_model",
                    "version": __version__,
                    "config": dump_config(cfg),
                    "categories": categories,
                    "category_parts": info["category_parts"],
                    "epoch": epoch,
                    "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                },
                ckpt_dir / "best.pth",
            )
        if not best_test or test["instance_miou"] > best_test["test_instance_miou"]:
            best_test = summary
        logger.epoch(record)
        atomic_save(
            {
                "kind": "training_state",
                "version": __version__,
                "config": dump_config(cfg),
                "epoch": epoch,
                "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "best": best,
                "best_test": best_test,
                "rng": get_rng_state({"loader": loader_gen}),
            },
            last_path,
        )
        say(
            f"[segment] epoch {epoch + 1}/{epochs} lr {lr:.2e} loss {record['train_loss']:.4f} "
            f"acc {record['train_acc']:.1f}% "
            f"| val inst mIoU {val['instance_miou']:.2f} | test inst {test['instance_miou']:.2f} "
            f"cls {test['class_miou']:.2f} ({record['time_s']:.0f}s)"
        )

    last_test = None
    if epochs > start_epoch or start_epoch > 0:
        last_test = evaluate_segmentation(model, test_loader, parts, categories, device)
    best_state = load_checkpoint(ckpt_dir / "best.pth")
    model.load_state_dict(best_state["model"])
    final = evaluate_segmentation(model, test_loader, parts, categories, device)
    metrics = {
        "config": cfg.get("name"),
        "method": method,
        "seed": seed,
        "instance_miou": final["instance_miou"],
        "class_miou": final["class_miou"],
        "accuracy": final["accuracy"],
        "per_category": final["per_category"],
        "num_shapes": final["num_shapes"],
        "selection": "best_on_test" if same_val_test else "best_on_val",
        "val_source": info["val_source"],
        "best_epoch": best.get("epoch"),
        "best_val_instance_miou": best.get("val_instance_miou"),
        "last_instance_miou": None if last_test is None else last_test["instance_miou"],
        "last_class_miou": None if last_test is None else last_test["class_miou"],
        "best_test_instance_miou": best_test.get("test_instance_miou"),
        "best_test_epoch": best_test.get("epoch"),
        "categories": categories,
        "num_parts": info["num_parts"],
        "trainable_params": int(params["trainable_params"]),
        "trainable_params_without_head": int(params["trainable_params_without_head"]),
        "adapter_params": int(params["adapter_params"]),
        "total_params": int(params["total_params"]),
        "epochs": epochs,
        "num_points": num_points,
        "device": str(device),
        "wall_time_s": round(time.time() - t0, 1),
    }
    metrics.update(_seg_gflops(model, num_points))
    atomic_write_json(metrics, run_dir / "metrics.json")
    table = (
        f"{cfg.get('name')} / {method}: {format_params(metrics['trainable_params'])} trainable, test split, model of "
        f"epoch {metrics['best_epoch']} ({'best on test, optimistic' if same_val_test else 'best on val'})\n\n"
        + format_category_table(final)
    )
    atomic_write_text(table + "\n", run_dir / "results.md")
    say("\n" + table + f"\n\nrun directory: {run_dir}")
    logger.close()
    return metrics


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="pointclora-segment", description="Part segmentation fine-tuning (Point-MAE head)."
    )
    p.add_argument("--cfg", required=True, help="config file or bare name in configs/ (e.g. shapenetpart.yaml)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="dotted override, repeatable (e.g. --set peft.method=lora --set schedule.epochs=5)",
    )
    p.add_argument("--ckpt", help="pre-trained backbone (shortcut for --set model.checkpoint=PATH)")
    p.add_argument(
        "--peft",
        "--method",
        dest="method",
        choices=["clora", "lora", "full", "linear", "none"],
        help="adapter method (replaces the config's peft section with configs/adapters/<method>.yaml)",
    )
    p.add_argument("--data-root", help="dataset root (overrides dataset.root)")
    p.add_argument("--epochs", type=int, help="shortcut for --set schedule.epochs=N")
    p.add_argument("--output", help="run directory (default runs/<config>/<method>-seed<seed>-<time>)")
    p.add_argument("--resume", action="store_true", help="continue <output>/checkpoints/last.pth")
    p.add_argument("--quiet", action="store_true")
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    from ..config import ConfigError
    from .finetune import load_cli_config

    args = build_parser().parse_args(argv)
    try:
        cfg = load_cli_config(args.cfg, args.overrides, method=args.method, ckpt=args.ckpt, epochs=args.epochs)
        metrics = run_segmentation(
            cfg, output=args.output, resume=args.resume, data_root=args.data_root, quiet=args.quiet
        )
    except (ConfigError, ValueError, KeyError, FileNotFoundError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(json.dumps({k: metrics[k] for k in ("instance_miou", "class_miou", "trainable_params", "gflops")}))
    return 0
