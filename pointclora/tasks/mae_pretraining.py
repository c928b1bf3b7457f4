"""Point-MAE masked-autoencoder pre-training on any point-cloud dataset (labels are ignored).

The model is :class:`~pointclora.models.mae.PointMAEPretrain` whose encoder has the shapes of ``model.name``; the
loss is the Chamfer-L2 of the masked patches; the best epoch has the lowest validation Chamfer-L2 (masks drawn from a
fixed generator, so epochs are comparable). Every new best epoch exports the encoder to ``<run>/encoder-best.pth``
(or ``pretrain.output``), the checkpoint ``tools/finetune.py --ckpt`` loads; ``encoder-last.pth`` follows the last
epoch.

Config section ``pretrain`` (checked against :data:`PRETRAIN_KEYS` and ``build_pretrain_model``'s signature):
``mask_ratio``, ``decoder_depth``, ``decoder_num_heads``, ``decoder_drop_path_rate``, ``layout`` (``ours`` |
``point_mae``: the exported file's layout), ``output``, ``max_train_samples``, ``max_val_samples``.
"""

from __future__ import annotations

import copy
import difflib
import inspect
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Subset

from ..engine.data import TaskData, split_with_validation
from .base import Log, StepResult, Task, register_task
from .common import MODEL_META_KEYS, try_split

__all__ = ["MAEPretrainingTask", "PRETRAIN_KEYS", "pretrain_options", "pretrain_backbone"]

#: ``pretrain`` keys that are not model constructor arguments, with their defaults.
PRETRAIN_KEYS: Dict[str, Any] = {
    "mask_ratio": 0.6,
    "decoder_depth": 4,
    "layout": "ours",
    "output": None,
    "max_train_samples": None,
    "max_val_samples": None,
    # Every N epochs (0: never) a linear probe of the frozen encoder on the labelled validation shapes (never
    # pre-trained on): fit on half, scored on the other half, printed and logged beside a random encoder's.
    "probe_every": 0,
}


def _model_keys() -> list:
    from ..models.mae import PointMAEPretrain

    return [p for p in inspect.signature(PointMAEPretrain.__init__).parameters if p not in ("self", "encoder_kwargs")]


def pretrain_options(cfg: Mapping[str, Any]) -> Dict[str, Any]:
    """``PRETRAIN_KEYS`` updated by ``cfg['pretrain']``; an unknown key names the closest valid one."""
    given = dict(cfg.get("pretrain") or {})
    valid = sorted(set(PRETRAIN_KEYS) | set(_model_keys()))
    for k in given:
        if k not in valid:
            close = difflib.get_close_matches(k, valid, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"unknown key 'pretrain.{k}'{hint} Valid keys: {', '.join(valid)}")
    if given.get("layout", "ours") not in ("ours", "point_mae"):
        raise ValueError(f"pretrain.layout must be 'ours' or 'point_mae', got {given['layout']!r}")
    return {**PRETRAIN_KEYS, **given}


def _cap(ds, limit: Optional[int], seed: int):
    # A seeded random subset: the first N indices of a class-folder dataset would be a few classes only.
    if not limit or len(ds) <= int(limit):
        return ds
    return Subset(ds, sorted(np.random.default_rng(seed).permutation(len(ds))[: int(limit)].tolist()))


@register_task
class MAEPretrainingTask(Task):
    name = "mae_pretraining"
    monitor = "loss"
    monitor_mode = "min"
    small_val_selects_last = False  # the Chamfer loss of even 100 clouds averages thousands of patches
    protocol_name = "pretrain"

    def run_label(self) -> str:
        return "mae"

    def __init__(self, cfg: Mapping[str, Any]) -> None:
        super().__init__(cfg)
        self.options = pretrain_options(cfg)

    def build_data(self, data_root: Optional[str] = None) -> TaskData:
        from ..datasets import build_dataset
        from ..datasets.transforms import eval_transforms, train_transforms

        dcfg, data = dict(self.cfg.get("dataset") or {}), self.cfg["data"]
        if not dcfg:
            raise ValueError("config has no 'dataset' section: say which point clouds to pre-train on")
        n, skip = self.num_points, bool(data.get("fps_skip_near_origin", False))
        from .up_frame import resolve_frame, with_up_axis

        frame, files = resolve_frame(self.cfg, dcfg)  # recorded in the exported encoder (#19)
        tfs = {True: with_up_axis(train_transforms(n, data.get("augmentation", "scale_translate"),
                                                   skip_near_origin=skip), frame, files),
               False: with_up_axis(eval_transforms(n, skip_near_origin=skip), frame, files)}  # fmt: skip

        def build(split: str, train: bool):
            make = lambda: build_dataset(dict(dcfg), split, transform=tfs[train], root=data_root)  # noqa: E731
            return try_split(make) if split == "val" else make()

        out = split_with_validation(build, data, need_test=False)
        seed = int(data.get("val_seed", 0)) + 1
        out.train = _cap(out.train, self.options["max_train_samples"], seed)
        out.val = _cap(out.val, self.options["max_val_samples"], seed)
        return out

    def build_model(self, meta: Mapping[str, Any], backbone: Optional[Path], log: Log) -> nn.Module:
        from ..models.mae import build_pretrain_model

        overrides = {k: v for k, v in self.cfg["model"].items() if k not in MODEL_META_KEYS}
        model_opts = {k: v for k, v in self.options.items() if k in _model_keys()}
        model = build_pretrain_model(self.cfg["model"]["name"], **model_opts, **overrides)
        model.backbone_info = {"path": None, "fingerprint": None, "keys": []}
        return model

    def training_step(self, model: nn.Module, batch: Mapping[str, Any], device: torch.device) -> StepResult:
        points = batch["points"][..., :3].float().to(device, non_blocking=True)
        loss = model(points).loss
        return StepResult(loss=loss, stats={}, count=points.shape[0])

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: DataLoader, device: torch.device,
                 autocast: Callable) -> Dict[str, Any]:  # fmt: skip
        from ..models.mae import random_patch_mask

        was_training = model.training
        model.eval()
        g = torch.Generator().manual_seed(int(self.cfg["data"].get("val_seed", 0)))
        total, count = 0.0, 0
        groups = model.MAE_encoder.num_groups
        for batch in loader:
            pts = batch["points"][..., :3].float().to(device)
            mask = random_patch_mask(pts.shape[0], groups, model.mask_ratio, device=device, generator=g)
            with autocast():
                total += float(model(pts, mask=mask).loss) * pts.shape[0]
            count += pts.shape[0]
        model.train(was_training)
        return {"loss": total / max(1, count)}

    def extra_metrics(self, model: nn.Module, val: Any, epoch: int, device: torch.device) -> Dict[str, float]:
        """The probe of ``pretrain.probe_every`` (see :data:`PRETRAIN_KEYS`); {} on other epochs."""
        every = int(self.options.get("probe_every") or 0)
        if every <= 0 or epoch % every:
            return {}
        if getattr(self, "_probe", None) is None:
            self._probe = _probe_on_validation(val, int(self.cfg["data"].get("val_seed", 0)), device)
        return self._probe(model) if self._probe is not None else {}

    def final_metrics(self, model, loaders, device, autocast, meta) -> Dict[str, Any]:
        return {"val_loss": self.evaluate(model, loaders["val"], device, autocast)["loss"],
                "encoder_params": sum(p.numel() for p in model.MAE_encoder.parameters())}  # fmt: skip

    def _export(self, model: nn.Module, path: Path, epoch: int) -> None:
        from ..models.mae import export_encoder_state

        # The frame the encoder learned in travels with it: fine-tuning turns other datasets into it (#19).
        config = {"model": dict(self.cfg["model"]), "pretrain": dict(self.options),
                  "data": {"num_points": self.num_points,
                           "up_axis": self.cfg["data"].get("up_axis")}}  # fmt: skip
        export_encoder_state(model, str(path), layout=self.options["layout"], variant=self.cfg["model"]["name"],
                             config=config, extra={"epoch": epoch})  # fmt: skip

    def encoder_path(self, run_dir: Path) -> Path:
        return Path(self.options["output"]) if self.options["output"] else Path(run_dir) / "encoder-best.pth"

    def on_best(self, model: nn.Module, run_dir: Path, epoch: int) -> None:
        self._export(model, self.encoder_path(run_dir), epoch)

    def on_epoch_saved(self, model: nn.Module, run_dir: Path, epoch: int) -> None:
        self._export(model, Path(run_dir) / "encoder-last.pth", epoch)

    def results_table(self, metrics: Mapping[str, Any]) -> str:
        return (f"| model | encoder params | best epoch | best val Chamfer-L2 |\n|---|---:|---:|---:|\n"
                f"| {self.cfg['model']['name']} | {metrics.get('encoder_params', 0):,} | {metrics.get('best_epoch')} "
                f"| {metrics.get('best_val_loss', float('nan')):.5f} |")  # fmt: skip

    def epoch_line(self, record: Mapping[str, Any]) -> str:
        line = f"val Chamfer-L2 {record['val_loss']:.5f}" if "val_loss" in record else ""
        for key in ("probe/mean_max/all/oa", "probe/mean_max/10pc/oa"):
            if key in record:
                rnd = record.get(key.replace("probe/", "probe_random/", 1))
                line += f" | {key.split('/')[2]} probe {record[key]:.1f}%" + (f" (random {rnd:.1f}%)" if rnd else "")
        return line


def pretrain_backbone(pcfg: Mapping[str, Any], run_dir: Path, export_to: Path, log: Log = print) -> Path:
    """Pre-train the backbone a fine-tuning config's ``pretrain`` section describes (the demo's first step) and copy
    the best encoder to ``export_to``. Resumes ``run_dir`` when an earlier call was interrupted."""
    from ..config import DEFAULTS, merge, validate_config
    from ..engine.trainer import Trainer
    from ..utils.atomic import atomic_write_bytes

    cfg = copy.deepcopy(dict(pcfg))
    validate_config(cfg, source="pretrain section")
    cfg = merge(DEFAULTS, cfg)
    cfg["task"] = MAEPretrainingTask.name
    resume = (Path(run_dir) / "checkpoints" / "last.pth").is_file()
    task = MAEPretrainingTask(cfg)
    Trainer(task, cfg, output=run_dir, resume=resume, log=log, backbone=None).fit()
    best = task.encoder_path(Path(run_dir))
    atomic_write_bytes(best.read_bytes(), export_to)
    return Path(export_to)


def _probe_on_validation(val: Any, seed: int,
                         device: torch.device) -> Optional[Callable[[nn.Module], Dict[str, float]]]:  # fmt: skip
    """A probe callback on the validation shapes: a stratified half to fit, the other half to score."""
    from ..models.probe import make_probe_callback

    labels = np.asarray([int(val[i]["label"]) for i in range(len(val))]) if len(val) else np.zeros(0)
    if labels.size < 4 or len(np.unique(labels)) < 2:
        return None  # unlabelled or too small: nothing to probe
    rng = np.random.default_rng(seed)
    fit, score = [], []
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        fit += idx[: (len(idx) + 1) // 2].tolist()
        score += idx[(len(idx) + 1) // 2 :].tolist()
    pts = torch.stack([torch.as_tensor(val[i]["points"])[..., :3].float() for i in range(len(val))])
    per_class = (None, 10) if min(np.bincount(labels[fit])[np.unique(labels)]) >= 10 else (None,)
    return make_probe_callback(pts[fit], labels[fit], pts[score], labels[score], per_class=per_class,
                               poolings=("mean_max",), device=device)  # fmt: skip
