"""Training and evaluation machinery: the fine-tuning loop, metrics, checkpoints, logging, distributed helpers."""

from .checkpoint import atomic_save, atomic_write_text, load_checkpoint
from .evaluation import evaluate, mean_class_accuracy, scale_translate
from .optim import CosineWarmupScheduler, build_optimizer, cosine_lr, param_groups

__all__ = [
    "atomic_save",
    "atomic_write_text",
    "load_checkpoint",
    "evaluate",
    "mean_class_accuracy",
    "scale_translate",
    "CosineWarmupScheduler",
    "build_optimizer",
    "cosine_lr",
    "param_groups",
    "run_finetune",
]


def __getattr__(name):  # run_finetune pulls in datasets/peft; import it lazily so `pointclora.engine` stays light
    if name == "run_finetune":
        from .trainer import run_finetune

        return run_finetune
    raise AttributeError(name)
