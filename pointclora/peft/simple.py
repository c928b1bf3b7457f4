"""The methods that add no layers, only choose what trains: ``full``, ``linear``, ``none``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import List, Tuple

from torch import nn

from .config import PeftConfig, PeftConfigError
from .registry import PeftMethod, model_head_modules, register_peft_method

__all__ = ["FullConfig", "LinearConfig", "NoneConfig", "FullMethod", "LinearMethod", "NoneMethod"]


@dataclass
class FullConfig(PeftConfig):
    """Full fine-tuning: every parameter trains and every BatchNorm updates its statistics. ``train_modules`` is
    ignored (kept for a uniform interface)."""


@dataclass
class LinearConfig(PeftConfig):
    """Linear probing: only the model's head (``head_modules``: ``cls_head_finetune``) trains; ``cls_token``/
    ``cls_pos`` and the whole backbone stay frozen, BN in the frozen backbone stays in eval mode."""


@dataclass
class NoneConfig(PeftConfig):
    """Everything frozen (inference); BatchNorm everywhere in eval mode even under ``model.train()``."""



@register_peft_method
class FullMethod(PeftMethod):
    """Full fine-tuning: every tensor trains, every BatchNorm updates its statistics; saves every tensor."""

    name = "full"
    config_class = FullConfig
    keeps_base_frozen = False  # its file is a whole backbone: it cannot share one with other adapters
    description = "full fine-tuning"
    saves_every_tensor = True

    def default_train_modules(self, model: nn.Module) -> Tuple[str, ...]:
        return ()  # everything trains anyway

    def apply(self, model: nn.Module) -> List[str]:
        for p in model.parameters():
            p.requires_grad_(True)
        return [n for n, _ in model.named_modules() if n]

    def saved_state_names(self, model: nn.Module) -> List[str]:
        return list(model.state_dict())


@register_peft_method
class LinearMethod(PeftMethod):
    """Linear probing: only the model's head (``head_modules``) trains; ``cls_token``/``cls_pos`` stay frozen."""

    name = "linear"
    config_class = LinearConfig
    description = "linear probing (the head only)"

    def default_train_modules(self, model: nn.Module) -> Tuple[str, ...]:
        heads = model_head_modules(model)
        if not heads:
            raise PeftConfigError(
                f"linear probing: {type(model).__name__} declares no head_modules; pass train_modules=[...]"
            )
        return heads


@register_peft_method
class NoneMethod(PeftMethod):
    """Everything frozen (inference); BatchNorm everywhere in eval mode even under ``model.train()``."""

    name = "none"
    config_class = NoneConfig
    description = "everything frozen"

    def default_train_modules(self, model: nn.Module) -> Tuple[str, ...]:
        return ()
