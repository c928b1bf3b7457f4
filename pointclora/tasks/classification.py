"""Shape classification (ModelNet40, ScanObjectNN, few-shot episodes, folders): the reference fine-tuning recipe.

Batches are ``{"points": B N 3, "label": B}``; the loss is cross-entropy (``optim.label_smoothing``); the best epoch
is the one with the highest validation overall accuracy; the final report scores the selected model on the test
split, with ``train.vote`` views of voting when asked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from ..config import get_key
from ..engine.data import TaskData, split_with_validation
from ..engine.evaluation import evaluate as evaluate_classifier
from ..engine.logging import results_table
from .base import Log, StepResult, Task, register_task
from .common import build_adapted_model, try_split

__all__ = ["ClassificationTask", "build_classification_data"]


def build_classification_data(cfg: Mapping[str, Any], data_root: Optional[str] = None) -> TaskData:
    """Train / val / test with the training and evaluation transforms of ``cfg['data']``; ``meta['classes']``
    (``num_points``: :attr:`ClassificationTask.num_points`)."""
    from ..datasets import build_dataset
    from ..datasets.transforms import eval_transforms, train_transforms, vote_eval_transforms

    dcfg, data = dict(cfg["dataset"]), cfg["data"]
    n, skip = ClassificationTask(cfg).num_points, bool(data.get("fps_skip_near_origin", False))
    from .up_frame import resolve_frame, rotation_note, with_up_axis

    frame, files = resolve_frame(cfg, dcfg)  # the backbone's up axis; the files are turned into it (#19)
    transforms = {True: with_up_axis(train_transforms(n, augmentation=data["augmentation"], skip_near_origin=skip),
                                     frame, files),
                  False: with_up_axis(eval_transforms(n, skip_near_origin=skip), frame, files)}  # fmt: skip
    # Voting re-draws num_points of the point_all FPS points per view, so the test split keeps point_all of them;
    # plain passes use their first num_points (the FPS to num_points).
    voting = int(get_key(cfg, "train.vote", 0)) > 0
    test_tf = with_up_axis(vote_eval_transforms(n, skip_near_origin=skip), frame, files) if voting \
        else transforms[False]  # fmt: skip

    def build(split: str, train: bool):
        tf = test_tf if split == "test" else transforms[train]
        if split == "val":
            return try_split(lambda: build_dataset(dict(dcfg), split, transform=tf, root=data_root))
        return build_dataset(dict(dcfg), split, transform=tf, root=data_root)

    out = split_with_validation(build, data)
    out.meta["classes"] = list(out.test.classes)
    out.meta["up_axis_note"] = rotation_note(frame, files)
    return out


@register_task
class ClassificationTask(Task):
    name = "classification"
    monitor = "acc"
    monitor_mode = "max"
    protocol_name = "classification"
    summary_metrics = ("mean_class_acc", "vote_acc")

    def build_data(self, data_root: Optional[str] = None) -> TaskData:
        return build_classification_data(self.cfg, data_root)

    def build_model(self, meta: Mapping[str, Any], backbone: Optional[Path], log: Log) -> nn.Module:
        name = self.cfg["model"]["name"]
        return build_adapted_model(self.cfg, name, backbone, log, num_classes=len(meta["classes"]))

    def training_step(self, model: nn.Module, batch: Mapping[str, Any], device: torch.device) -> StepResult:
        points = batch["points"].to(device, non_blocking=True)
        labels = batch["label"].to(device, non_blocking=True).long().view(-1)
        logits = model(points)
        smoothing = float(get_key(self.cfg, "optim.label_smoothing", 0.0))
        loss = F.cross_entropy(logits.float(), labels, label_smoothing=smoothing)
        correct = float((logits.detach().argmax(-1) == labels).sum())
        return StepResult(loss=loss, stats={"correct": correct}, count=labels.numel())

    @torch.no_grad()
    def evaluate(self, model: nn.Module, loader: DataLoader, device: torch.device,
                 autocast: Callable) -> Dict[str, Any]:  # fmt: skip
        return evaluate_classifier(model, loader, len(self.meta["classes"]), device, autocast=autocast,
                                   num_points=self.num_points)  # fmt: skip

    def final_metrics(self, model: nn.Module, loaders: Mapping[str, DataLoader], device: torch.device,
                      autocast: Callable, meta: Mapping[str, Any]) -> Dict[str, Any]:  # fmt: skip
        from ..engine.evaluation import vote_max_over_repeats

        vote = int(get_key(self.cfg, "train.vote", 0))
        seed, n = int(get_key(self.cfg, "train.seed", 0)), self.num_points
        res = evaluate_classifier(model, loaders["test"], len(meta["classes"]), device, vote=vote, vote_seed=seed,
                                  autocast=autocast, num_points=n)  # fmt: skip
        res["per_class_acc"] = dict(zip(meta["classes"], res["per_class_acc"]))
        res.pop("vote_per_class_acc", None)
        res.pop("vote_confusion", None)
        if vote and get_key(self.cfg, "train.vote_mode", "single") == "max_over_repeats":
            best = vote_max_over_repeats(model, loaders["test"], len(meta["classes"]), device, n, views=vote,
                                         repeats=int(get_key(self.cfg, "train.vote_repeats", 299)), seed=seed,
                                         autocast=autocast)  # fmt: skip
            res.update(vote_max_acc=best["vote_max_acc"], vote_mean_acc=best["vote_mean_acc"],
                       vote_repeats=best["repeats"], vote_max_label=best["protocol"])  # fmt: skip
        return res

    def results_table(self, metrics: Mapping[str, Any]) -> str:
        return results_table(metrics)

    def eval_dataset(self, split: str, data_root: Optional[str] = None, dataset_cfg: Optional[Mapping] = None,
                     vote: bool = False):  # fmt: skip
        """``split`` of the run's dataset (or ``dataset_cfg``) with evaluation transforms (point_all FPS points for
        voting), relabelled by class name into the model's class order (never by folder order)."""
        from ..datasets import build_dataset
        from ..datasets.transforms import eval_transforms, vote_eval_transforms
        from ..datasets.up_axis import dataset_up_axis
        from .up_frame import with_up_axis

        dcfg = dict(dataset_cfg or self.cfg["dataset"])
        n, skip = self.num_points, bool(self.cfg["data"].get("fps_skip_near_origin", False))
        tf = vote_eval_transforms(n, skip_near_origin=skip) if vote else eval_transforms(n, skip_near_origin=skip)
        frame, files = self.cfg["data"].get("up_axis"), dataset_up_axis(dcfg)  # the run's recorded frame
        tf = with_up_axis(tf, frame, files)
        from ..engine.data import carved_test_for_evaluation

        train_tf = with_up_axis(eval_transforms(n, skip_near_origin=skip), frame, files)  # as read in training
        ds = carved_test_for_evaluation(self.cfg["data"], split, dataset_cfg is None,
                                        lambda: build_dataset(dict(dcfg), "train", transform=train_tf, root=data_root))
        if ds is None:
            ds = build_dataset(dcfg, split, transform=tf, root=data_root)
        names = [str(c) for c in getattr(ds, "classes", self.meta["classes"])]
        if self.meta.get("classes_are_indices") or names == list(self.meta["classes"]):
            return ds
        return RemapLabels(ds, names, self.meta["classes"])

    def evaluate_split(self, model: nn.Module, loader: DataLoader, device: torch.device, vote: int = 0,
                       seed: int = 0) -> Dict[str, Any]:  # fmt: skip
        """OA, mAcc, per-class accuracy (by class name) and the confusion matrix; ``vote`` views of voting too."""
        classes = list(self.meta["classes"])
        res = evaluate_classifier(model, loader, len(classes), device, vote=vote, vote_seed=seed,
                                  num_points=self.num_points)  # fmt: skip
        res["per_class_acc"] = dict(zip(classes, res["per_class_acc"]))
        if vote:
            res["vote_per_class_acc"] = dict(zip(classes, res["vote_per_class_acc"]))
        res["classes"] = classes
        return res

    @classmethod
    def evaluation_report(cls, res: Mapping[str, Any]) -> str:
        from ..engine.evaluation import format_confusion
        from ..engine.logging import markdown_table

        rows: List[List[Any]] = [["no voting", f"{res['acc']:.2f}", f"{res['mean_class_acc']:.2f}"]]
        if res.get("vote_views"):
            rows.append([f"{res['vote_views']}-view vote", f"{res['vote_acc']:.2f}",
                         f"{res['vote_mean_class_acc']:.2f}"])  # fmt: skip
        out = [markdown_table(["evaluation", "OA (%)", "mAcc (%)"], rows), "\nper-class accuracy (%):\n"]
        per = [[c, "-" if v is None else f"{v:.2f}"] for c, v in res["per_class_acc"].items()]
        out.append(markdown_table(["class", "no voting"], per))
        out.append("\nconfusion matrix (rows: true class, columns: predicted):\n")
        out.append(format_confusion(res["confusion"], res["classes"]))
        return "\n".join(out)

    @classmethod
    def predict_report(cls, r: Mapping[str, Any]) -> str:
        return f"{r['file']}: " + ", ".join(f"{p['label']} {100 * p['prob']:.1f}%" for p in r["predictions"])

    @torch.no_grad()
    def predict(self, model: nn.Module, points: torch.Tensor, topk: int = 5, **_options: Any) -> Dict[str, Any]:
        """``points (N, 3)`` already normalised and sampled -> the top-k labels with probabilities."""
        probs = torch.softmax(model(points[None]).float(), dim=-1)[0]
        values, idx = probs.topk(max(1, min(topk, len(self.meta["classes"]))))
        return {"predictions": [{"label": self.meta["classes"][int(i)], "index": int(i), "prob": float(v)}
                                for v, i in zip(values, idx)]}  # fmt: skip

    def gflops(self, model: nn.Module, num_points: int) -> Dict[str, Any]:
        """GFLOPs at batch 1 (Linear + Conv multiply-adds): as trained, and deployed (adapters merged into a copy)."""
        return classifier_gflops(model, num_points)

    def epoch_line(self, record: Mapping[str, Any]) -> str:
        parts = [f"train {record['train_acc']:.2f}%"] if "train_acc" in record else []
        if "val_acc" in record:
            parts.append(f"val {record['val_acc']:.2f}% (mAcc {record['val_mean_class_acc']:.2f}%)")
        if "test_acc" in record:
            parts.append(f"test {record['test_acc']:.2f}%")
        return " | ".join(parts)



def classifier_gflops(model: nn.Module, num_points: int, forward_model: Callable[[nn.Module], nn.Module] = None
                      ) -> Dict[str, Any]:  # fmt: skip
    """``gflops_unmerged`` (as trained) and ``gflops`` (deployed: ``merge_and_unload`` of a copy, a plain model)."""
    import copy

    from ..models.flops import count_gflops
    from ..peft import can_merge, merge_and_unload

    wrap = forward_model or (lambda m: m)
    out: Dict[str, Any] = {"gflops_unmerged": count_gflops(wrap(model), num_points)}
    if getattr(model, "peft_config", None) is not None and can_merge(model):
        out["gflops"] = count_gflops(wrap(merge_and_unload(copy.deepcopy(model))), num_points)
    else:
        out["gflops"] = out["gflops_unmerged"]
    return out


class RemapLabels(torch.utils.data.Dataset):
    """Relabel a dataset's samples into the model's class order, by class name."""

    def __init__(self, dataset: Any, dataset_classes, model_classes) -> None:
        index = {c: i for i, c in enumerate(model_classes)}
        unknown = [c for c in dataset_classes if c not in index]
        if unknown:
            raise ValueError(f"the dataset has classes the model was not trained on: {unknown[:10]}; model classes: "
                             f"{list(model_classes)}")  # fmt: skip
        self.dataset, self.mapping = dataset, [index[c] for c in dataset_classes]

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, i: int) -> Dict[str, Any]:
        sample = dict(self.dataset[i])
        sample["label"] = self.mapping[int(sample["label"])]
        return sample
