"""Part segmentation (ShapeNetPart layout) with Point-MAE's segmentation head and any PEFT method.

Recipe (Point-MAE ``segmentation/main.py``): AdamW lr 2e-4, weight decay 0.05, cosine with warm-up, batch 16, 2048
points, 128 groups; isotropic scale U(0.8, 1.25) + shift U(-0.1, 0.1); cross-entropy over all part logits.

Evaluation is the standard one (:mod:`pointclora.tasks.segmentation_metrics`): predictions restricted to the object
category's parts, class mIoU and instance mIoU, a per-category table. Categories and part ids come from the dataset
(``categories`` / ``category_parts``), never from constants, so one category with parts 50-53 (the cattle scans) and
ShapeNetPart's 16 categories / 50 parts use the same code. The best epoch has the highest validation instance mIoU.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from ..engine.data import TaskData, split_with_validation
from .base import Log, StepResult, Task, register_task
from .common import build_adapted_model, try_split

__all__ = ["PartSegmentationTask", "SegmentationAugment", "seg_variant", "evaluate_segmentation"]


class SegmentationAugment:
    """One isotropic scale U(low, high) per cloud, then a shift U(-shift, shift) per axis; labels stay aligned."""

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


def seg_variant(name: str) -> str:
    """``point_mae_s`` -> ``point_mae_s_seg`` (same encoder shapes), so a config can reuse
    ``models/point_mae_s.yaml``."""
    from ..models import list_models

    names = list_models()
    if name.endswith("_seg") and name in names:
        return name
    if f"{name}_seg" in names:
        return f"{name}_seg"
    raise ValueError(f"model.name={name!r} has no segmentation variant; available: "
                     f"{', '.join(n for n in names if n.endswith('_seg'))}")  # fmt: skip


def _augmentation(name: str) -> Optional[SegmentationAugment]:
    if name == "none":
        return None
    if name == "scale_translate":
        return SegmentationAugment()
    raise ValueError(f"data.augmentation={name!r} is not available for part segmentation; use scale_translate or none")


def build_segmentation_data(cfg: Mapping[str, Any], data_root: Optional[str] = None) -> TaskData:
    """Train / val / test and ``meta = {categories, category_parts, num_parts}`` from the dataset itself.

    ``dataset.train_split`` (default ``train``; ShapeNetPart's reference trains on ``trainval`` and selects on test).
    """
    from ..datasets import build_dataset

    data = cfg["data"]
    dcfg = dict(cfg["dataset"])
    train_split = dcfg.pop("train_split", "train")
    dcfg["num_points"] = PartSegmentationTask(cfg).num_points  # segmentation readers sample the points themselves
    from .up_frame import resolve_frame, rotation_note, with_up_axis

    frame, files = resolve_frame(cfg, dcfg)  # the backbone's up axis; the files are turned into it (#19)
    train_tf = with_up_axis(_augmentation(str(data.get("augmentation", "scale_translate"))), frame, files)
    eval_tf = with_up_axis(None, frame, files)

    def build(split: str, train: bool):
        make = lambda: build_dataset(dict(dcfg), split, transform=train_tf if train else eval_tf, root=data_root)  # noqa: E731
        return try_split(make) if split == "val" else make()

    out = split_with_validation(build, data, train_split=train_split)
    out.meta["up_axis_note"] = rotation_note(frame, files)
    base = out.test
    categories = list(base.categories)
    out.meta.update(categories=categories, num_parts=int(base.num_parts),
                    category_parts={c: sorted(int(p) for p in v) for c, v in base.category_parts.items()})  # fmt: skip
    return out


def _parts_list(meta: Mapping[str, Any]) -> List[List[int]]:
    # Categories absent from this copy of the data keep an empty list: no shape will ask for them.
    return [list(meta["category_parts"].get(c, [])) for c in meta["categories"]]


@torch.no_grad()
def evaluate_segmentation(model: nn.Module, loader: DataLoader, meta: Mapping[str, Any], device: torch.device,
                          autocast: Callable = None) -> Dict[str, Any]:  # fmt: skip
    """Loss (mean over points) and class / instance mIoU, accuracy, per-category table over ``loader``."""
    import contextlib

    from .segmentation_metrics import SegmentationMeter

    autocast = autocast or contextlib.nullcontext
    was_training = model.training
    model.eval()
    meter = SegmentationMeter(_parts_list(meta), meta["categories"])
    loss_sum, count = 0.0, 0
    for batch in loader:
        pts, cls, seg = batch["points"].to(device), batch["cls"].to(device).long().view(-1), batch["seg"].to(device)
        with autocast():
            logits = model(pts, cls).float()
        flat = logits.reshape(-1, logits.shape[-1])
        loss_sum += float(F.cross_entropy(flat, seg.reshape(-1).long(), reduction="sum"))
        count += seg.numel()
        meter.update(logits, seg, cls)
    model.train(was_training)
    return {**meter.compute(), "loss": loss_sum / max(1, count)}


@register_task
class PartSegmentationTask(Task):
    name = "part_segmentation"
    monitor = "instance_miou"
    monitor_mode = "max"
    protocol_name = "segmentation"
    summary_metrics = ("class_miou",)
    #: the official segmentation script runs max_epoch epochs (its classification runner one more)
    official_extra_epoch = False
    default_num_points = 2048
    #: with one category the label branch's BatchNorm output is constant and some head parameters get no gradient
    ddp_find_unused_parameters = True

    def build_data(self, data_root: Optional[str] = None) -> TaskData:
        return build_segmentation_data(self.cfg, data_root)

    def build_model(self, meta: Mapping[str, Any], backbone: Optional[Path], log: Log) -> nn.Module:
        variant = seg_variant(self.cfg["model"].get("name") or "point_mae_s")
        return build_adapted_model(self.cfg, variant, backbone, log, num_classes=int(meta["num_parts"]),
                                   num_categories=len(meta["categories"]))  # fmt: skip

    def training_step(self, model: nn.Module, batch: Mapping[str, Any], device: torch.device) -> StepResult:
        pts, cls = batch["points"].to(device), batch["cls"].to(device).long().view(-1)
        seg = batch["seg"].to(device).long()
        logits = model(pts, cls)
        smoothing = float(self.cfg["optim"].get("label_smoothing", 0.0))
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), seg.reshape(-1), label_smoothing=smoothing)
        # The loss is a mean over points, so points (not shapes) weight the epoch averages.
        correct = float((logits.detach().argmax(-1) == seg).sum())
        return StepResult(loss=loss, stats={"correct": correct}, count=seg.numel())

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: DataLoader, device: torch.device,
                 autocast: Callable) -> Dict[str, Any]:  # fmt: skip
        return evaluate_segmentation(model, loader, self.meta, device, autocast)

    def final_metrics(self, model: nn.Module, loaders: Mapping[str, DataLoader], device: torch.device,
                      autocast: Callable, meta: Mapping[str, Any]) -> Dict[str, Any]:  # fmt: skip
        return evaluate_segmentation(model, loaders["test"], meta, device, autocast)

    def eval_dataset(self, split: str, data_root: Optional[str] = None, dataset_cfg: Optional[Mapping] = None,
                     vote: bool = False):  # fmt: skip
        from ..datasets import build_dataset
        from ..engine.data import carved_test_for_evaluation

        dcfg = dict(dataset_cfg or self.cfg["dataset"])
        train_split = dcfg.pop("train_split", "train")
        dcfg["num_points"] = self.num_points
        from ..datasets.up_axis import dataset_up_axis
        from .up_frame import with_up_axis

        tf = with_up_axis(None, self.cfg["data"].get("up_axis"), dataset_up_axis(dcfg))  # the run's recorded frame
        ds = carved_test_for_evaluation(self.cfg["data"], split, dataset_cfg is None,
                                        lambda: build_dataset(dict(dcfg), train_split, transform=tf, root=data_root))
        if ds is None:
            ds = build_dataset(dcfg, split, transform=tf, root=data_root)
        if list(ds.categories) != list(self.meta["categories"]):
            raise ValueError(f"the dataset's categories {list(ds.categories)} differ from the model's "
                             f"{self.meta['categories']}")  # fmt: skip
        return ds

    def resolve_category(self, category: Optional[str]) -> str:
        """``category``, or the model's only one; a one-line error otherwise."""
        cats = list(self.meta["categories"])
        if category is None and len(cats) > 1:
            raise ValueError(f"this model segments {len(cats)} categories; name one with --category "
                             f"({', '.join(cats)})")  # fmt: skip
        category = category or cats[0]
        if category not in cats:
            raise ValueError(f"--category {category!r} is not one of the model's categories: {', '.join(cats)}")
        return category

    @torch.no_grad()
    def predict(self, model: nn.Module, points: torch.Tensor, category: Optional[str] = None,
                **_options: Any) -> Dict[str, Any]:  # fmt: skip
        """``points (N, 3)`` of one object of ``category`` (needed when the model knows several) -> a part id per
        point, restricted to that category's parts as in the evaluation."""
        category = self.resolve_category(category)
        cats = list(self.meta["categories"])
        cls = torch.tensor([cats.index(category)], device=points.device)
        logits = model(points[None], cls)[0].float()  # N P
        parts = torch.tensor(self.meta["category_parts"][category], device=points.device, dtype=torch.long)
        labels = parts[logits[:, parts].argmax(-1)]
        return {"category": category, "labels": labels.cpu().tolist(),
                "counts": {int(p): int((labels == p).sum()) for p in parts.tolist()}}  # fmt: skip

    @classmethod
    def evaluation_report(cls, res: Mapping[str, Any]) -> str:
        from .segmentation_metrics import format_category_table

        return format_category_table(res) if "per_category" in res else str(res)

    @torch.no_grad()
    def predict_cloud(self, model: nn.Module, xyz: Any, num_points: int, device: torch.device,
                      category: Optional[str] = None, views: int = 1, **_options: Any) -> Dict[str, Any]:
        """A part label for EVERY point of the file, in its order: the model's probabilities on ``num_points``
        sub-samples (``views`` of them, averaged) carried to every point by 3-NN interpolation."""
        from .scan_labels import labels_for_every_point

        cat = self.resolve_category(category)
        parts = self.meta["category_parts"][cat]
        index = list(self.meta["categories"]).index(cat)
        res = labels_for_every_point(model, torch.from_numpy(xyz).to(device), index, parts, num_points, views=views)
        labels = res["labels"]
        return {"category": cat, "labels": labels.tolist(), "model_points": min(num_points, len(xyz)), "views": views,
                "counts": {int(p): int((labels == p).sum()) for p in parts}}  # fmt: skip

    @classmethod
    def predict_report(cls, r: Mapping[str, Any]) -> str:
        counts = ", ".join(f"part {p}: {c}" for p, c in r["counts"].items())
        return (f"{r['file']} [{r['category']}]: {len(r['labels'])} points labelled (every input point, input "
                f"order; model saw {r['model_points']} x {r['views']} view(s)); {counts}"
                + (f" -> {r['labels_file']}" if "labels_file" in r else ""))  # fmt: skip

    def gflops(self, model: nn.Module, num_points: int) -> Dict[str, Any]:
        from .classification import classifier_gflops

        return classifier_gflops(model, num_points, forward_model=_WithCategory)

    def results_table(self, metrics: Mapping[str, Any]) -> str:
        from .segmentation_metrics import format_category_table

        return format_category_table(metrics)

    def epoch_line(self, record: Mapping[str, Any]) -> str:
        parts = [f"point acc {record['train_acc']:.1f}%"] if "train_acc" in record else []
        for split in ("val", "test"):
            if f"{split}_instance_miou" in record:
                parts.append(f"{split} inst mIoU {record[f'{split}_instance_miou']:.2f} "
                             f"cls {record[f'{split}_class_miou']:.2f}")  # fmt: skip
        return " | ".join(parts)


class _WithCategory(nn.Module):
    """``forward(points)`` for FLOP counting: the segmentation model with every cloud in category 0."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        return self.model(points, torch.zeros(points.shape[0], dtype=torch.long, device=points.device))
