"""What a training loop asks of the PEFT method, without ever naming it.

    model = inject_adapters(create_model(...), make_peft_config(cfg["peft"]["method"], ...))
    optimizer = build_optimizer(model, lr)               # groups ask no_weight_decay_names(model)
    loss = task_loss + auxiliary_loss(model)             # or: aux = auxiliary_loss(model); None when there is none
    torch.save(adapter_state_dict(model), ...)           # exactly what the method saves (save_adapter for a folder)
    if can_merge(model): deployed = merge_and_unload(copy.deepcopy(model))

Every function reads the method of ``model.peft_config`` from the registry.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence, Set

import torch
from torch import nn

from .registry import AuxLoss, get_peft_method

__all__ = [
    "auxiliary_losses",
    "auxiliary_loss",
    "no_weight_decay_names",
    "adapter_state_names",
    "adapter_state_dict",
    "load_adapter_state_dict",
    "can_merge",
]


def _prepared(model: nn.Module) -> bool:
    return getattr(model, "peft_config", None) is not None


def auxiliary_losses(model: nn.Module) -> Dict[str, AuxLoss]:
    """Named auxiliary terms ``{name: AuxLoss(value, weight)}`` of the model's method (``{"sade": ...}`` for CLoRA
    with ``sade_weight > 0``; ``{}`` otherwise or for a plain model). Log ``value`` as ``train/<name>_loss``."""
    return get_peft_method(model).auxiliary_losses(model) if _prepared(model) else {}


def auxiliary_loss(model: nn.Module) -> Optional[torch.Tensor]:
    """``Σ weight · value`` over :func:`auxiliary_losses`: a 0-dim tensor to add to the task loss, or ``None``."""
    terms = auxiliary_losses(model)
    if not terms:
        return None
    values = [t.weight * t.value for t in terms.values()]
    return torch.stack(values).sum() if len(values) > 1 else values[0]


def no_weight_decay_names(model: nn.Module) -> Set[str]:
    """Parameter names (``model.named_parameters()``) the method keeps out of weight decay (CLoRA: every ``Q``)."""
    return get_peft_method(model).no_weight_decay(model) if _prepared(model) else set()


def adapter_state_names(model: nn.Module, include: Sequence[str] = ()) -> list:
    """``state_dict`` names the method saves (adapters + ``train_modules``, or everything for ``full``), plus the
    names in ``include`` (e.g. tensors the pre-trained checkpoint did not provide, so nothing is left to chance)."""
    names = get_peft_method(model).saved_state_names(model)
    extra = set(include) - set(names)
    if extra:
        state = model.state_dict(keep_vars=True)
        unknown = sorted(extra - set(state))
        if unknown:
            raise KeyError(f"include names tensors the model does not have: {unknown[:5]}")
        names = [n for n in state if n in set(names) | extra]
    return names


def adapter_state_dict(model: nn.Module, include: Sequence[str] = ()) -> Dict[str, torch.Tensor]:
    """What the method saves, as detached CPU copies under the prepared model's ``state_dict`` names."""
    state = model.state_dict()
    return {n: state[n].detach().to("cpu").clone() for n in adapter_state_names(model, include)}


def load_adapter_state_dict(model: nn.Module, state: Dict[str, torch.Tensor]) -> nn.Module:
    """Copy an :func:`adapter_state_dict` back into a model prepared with the same method (strict: every name the
    method saves must be present, nothing unknown, shapes equal)."""
    own = model.state_dict()
    expected = set(adapter_state_names(model))
    missing = sorted(expected - set(state))
    unknown = sorted(set(state) - set(own))
    wrong = sorted(n for n in state if n in own and tuple(own[n].shape) != tuple(state[n].shape))
    if missing or unknown or wrong:
        raise KeyError(
            f"adapter state does not fit this model: missing {missing[:5]}, unknown {unknown[:5]}, "
            f"shape mismatch {[(n, tuple(state[n].shape), tuple(own[n].shape)) for n in wrong[:5]]}"
        )
    with torch.no_grad():
        for n, t in state.items():
            own[n].copy_(t.to(own[n].dtype))
    return model


def can_merge(model: nn.Module) -> bool:
    """Whether the model carries adapter layers its method can fold into the base weights."""
    if not _prepared(model):
        return False
    method = get_peft_method(model)
    return method.mergeable and bool(method.adapter_layers(model))


def method_name(model: nn.Module) -> str:
    """The name of the model's PEFT method; a model without one counts as fully trained (every tensor is its own)."""
    from .simple import FullMethod

    return get_peft_method(model).name if _prepared(model) else FullMethod.name


def saves_every_tensor(model: nn.Module) -> bool:
    """Whether a weights folder must keep every tensor of ``model`` (its method trains the backbone, or it has none)."""
    return get_peft_method(model).saves_every_tensor if _prepared(model) else True


def write_method_files(model: nn.Module, folder: Any) -> None:
    """The files the model's method adds to a weights folder (adapter files for peft-style tools), if any."""
    if _prepared(model) and get_peft_method(model).writes_adapter_files:
        from .io import save_adapter

        save_adapter(model, folder)
