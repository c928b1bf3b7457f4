"""Tasks for the one Trainer: classification, part segmentation, Point-MAE pre-training (few-shot drives
classification). ``get_task(name)`` / ``list_tasks()``; a new task is one file that calls ``register_task``."""

from .base import StepResult, Task, get_task, list_tasks, register_task, unregister_task
from .classification import ClassificationTask
from .mae_pretraining import MAEPretrainingTask
from .part_segmentation import PartSegmentationTask

__all__ = [
    "Task",
    "StepResult",
    "register_task",
    "unregister_task",
    "get_task",
    "list_tasks",
    "ClassificationTask",
    "PartSegmentationTask",
    "MAEPretrainingTask",
]
