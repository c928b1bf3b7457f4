"""Wrap a model's Linear layers with adapters in place, freeze the rest, keep frozen BatchNorm in eval mode, merge.

BatchNorm follows freezing. After :func:`inject_adapters`, every BatchNorm layer whose parameters are frozen (the
mini-PointNet ``encoder`` under CLoRA/LoRA/linear probing; all of them under ``none``) stays in eval mode even when the
caller runs ``model.train()``: its running statistics remain those of the pre-trained checkpoint. The PEFT peers
(DAPT, PPT, PointLoRA, ...) call ``model.train()`` on the whole network and so let these statistics drift with the
fine-tuning data; we do not. BatchNorm in trainable modules (the classification head; every layer under ``full``)
trains normally. The mechanism: such a BN instance's class is swapped for a subclass whose ``train()`` always
switches to eval (same ``state_dict``, still an ``isinstance`` of the original class); :func:`merge_and_unload`
swaps it back.
"""

from __future__ import annotations

import logging
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from torch import nn

from .base import AdapterLinear
from .config import PeftConfig, PeftConfigError, make_peft_config, peft_config_from_dict
from .registry import PeftMethod, get_peft_method, match_name, model_head_modules, under

__all__ = [
    "inject_adapters",
    "merge_adapters",
    "unmerge_adapters",
    "merge_and_unload",
    "adapter_layers",
    "adapter_named_parameters",
    "adapter_parameter_groups",
    "trainable_parameter_summary",
    "format_parameter_summary",
    "match_name",
]

logger = logging.getLogger(__name__)


# --- BatchNorm that stays in eval mode ------------------------------------------------------------------------------
class _EvalModeBN:
    """Mixin: ``train(mode)`` always sets eval mode (frozen statistics). Put first in the MRO."""

    def train(self, mode: bool = True):  # noqa: D401 - nn.Module API
        return super().train(False)


class FrozenStatsBatchNorm1d(_EvalModeBN, nn.BatchNorm1d):
    pass


class FrozenStatsBatchNorm2d(_EvalModeBN, nn.BatchNorm2d):
    pass


class FrozenStatsBatchNorm3d(_EvalModeBN, nn.BatchNorm3d):
    pass


class FrozenStatsSyncBatchNorm(_EvalModeBN, nn.SyncBatchNorm):
    pass


_FROZEN_BN = {
    nn.BatchNorm1d: FrozenStatsBatchNorm1d,
    nn.BatchNorm2d: FrozenStatsBatchNorm2d,
    nn.BatchNorm3d: FrozenStatsBatchNorm3d,
    nn.SyncBatchNorm: FrozenStatsSyncBatchNorm,
}
_ORIGINAL_BN = {v: k for k, v in _FROZEN_BN.items()}


def _force_eval_pre_hook(module: nn.Module, args: Any) -> None:
    """Fallback for BN subclasses we have no frozen twin for: eval mode at every forward."""
    module.training = False


def _lock_frozen_batchnorm(model: nn.Module, trained_modules: Sequence[str]) -> List[str]:
    """Swap BN layers that do not train to their eval-locked twin; returns their names."""
    locked = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.modules.batchnorm._BatchNorm):
            continue
        params = list(module.parameters(recurse=False))
        if params:
            trains = any(p.requires_grad for p in params)
        else:  # affine=False: trains when it sits inside a trained module
            trains = under(name, trained_modules)
        # already locked (a twin, or hooked): multi.set_adapter locks again on every switch, one hook is enough
        if trains or isinstance(module, _EvalModeBN) or getattr(module, "_peft_forced_eval", False):
            continue
        twin = _FROZEN_BN.get(type(module))
        if twin is not None:
            module.__class__ = twin
        else:
            module.register_forward_pre_hook(_force_eval_pre_hook)
            module._peft_forced_eval = True
        module.train(False)
        locked.append(name)
    return locked


def _unlock_batchnorm(model: nn.Module) -> None:
    for module in model.modules():
        original = _ORIGINAL_BN.get(type(module))
        if original is not None:
            module.__class__ = original
        if getattr(module, "_peft_forced_eval", False):
            for key, hook in list(module._forward_pre_hooks.items()):
                if hook is _force_eval_pre_hook:
                    del module._forward_pre_hooks[key]
            del module._peft_forced_eval


# --- injection ------------------------------------------------------------------------------------------------------
def _coerce_config(config: Union[PeftConfig, str, Mapping[str, Any], None]) -> PeftConfig:
    if config is None:
        return make_peft_config()
    if isinstance(config, PeftConfig):
        return config
    if isinstance(config, str):
        return make_peft_config(config)
    if isinstance(config, Mapping):
        return peft_config_from_dict(config)
    raise TypeError(f"config must be a PeftConfig, a method name or a dict, got {type(config).__name__}")


def inject_adapters(model: nn.Module, config: Union[PeftConfig, str, Mapping[str, Any], None] = None) -> nn.Module:
    """Prepare ``model`` for parameter-efficient fine-tuning with a registered method, in place; returns it.

    - ``clora`` / ``lora`` (any :class:`~pointclora.peft.registry.AdapterMethod`): wraps every target ``nn.Linear``
      (``target_modules``, default the model's ``default_adapter_targets``), creating shared state (CLoRA banks on
      ``model.clora_banks``); freezes everything except the adapters and ``train_modules`` (default the model's
      ``default_train_modules``: a classifier's head, ``cls_token``, ``cls_pos``; the segmentation head).
    - ``full``: everything trains (BN included). ``linear``: only the model's ``head_modules`` train. ``none``:
      everything frozen.
    - BN layers that end up frozen stay in eval mode under ``model.train()`` (module docstring).
    - Records the config, with the model's defaults filled in, as ``model.peft_config``.

    Raises :class:`~pointclora.peft.config.PeftConfigError` when a target matches nothing (naming the closest module
    names), matches a non-Linear, or the model already carries adapters.
    """
    config = _coerce_config(config)
    if getattr(model, "peft_config", None) is not None:
        raise PeftConfigError(
            f"model already prepared with method {model.peft_config.method!r}; build a fresh model (or "
            "merge_and_unload it) before injecting again"
        )
    config = get_peft_method(config).resolve(model)
    method = get_peft_method(config)
    trained = method.apply(model)
    _lock_frozen_batchnorm(model, trained)
    model.peft_config = config
    return model


def _method(model: nn.Module) -> Optional[PeftMethod]:
    return get_peft_method(model) if getattr(model, "peft_config", None) is not None else None


def adapter_layers(model: nn.Module) -> List[AdapterLinear]:
    return [m for m in model.modules() if isinstance(m, AdapterLinear)]


def adapter_named_parameters(model: nn.Module) -> List[tuple]:
    """``(name, parameter)`` of every adapter tensor (shared state, each layer's own), each once."""
    method = _method(model)
    return method.adapter_named_parameters(model) if method is not None else []


# --- merging ----------------------------------------------------------------------------------------------------------
def merge_adapters(model: nn.Module, check_finite: bool = True) -> nn.Module:
    """Fold every adapter's ``s·ΔW`` into its base weight; the wrappers stay (``unmerge_adapters`` undoes it).

    With ``check_finite`` a non-finite update raises :class:`~pointclora.peft.base.PeftMergeError` before that layer's
    weights are touched (layers merged before it stay merged; call ``unmerge_adapters`` to roll back).
    """
    method = _method(model)
    if method is not None:
        method.merge(model, check_finite=check_finite)
    return model


def unmerge_adapters(model: nn.Module) -> nn.Module:
    """Subtract every merged update again (base weights restored to float rounding)."""
    method = _method(model)
    if method is not None:
        method.unmerge(model)
    return model


def merge_and_unload(model: nn.Module, check_finite: bool = True) -> nn.Module:
    """Merge, then replace every wrapper by its ``base_layer``, drop shared state (``clora_banks``), restore BN
    classes and ``requires_grad=True`` everywhere: the result is the plain backbone (same class, same ``state_dict``
    keys as ``create_model(...)``), with exactly the frozen model's FLOPs. In place; returns ``model``.

    Raises ``ValueError`` for a method that cannot merge (its update is not a weight delta), and for a model that
    holds several named adapters (they share the frozen base weights: merging one in place would change the others;
    merge ``copy.deepcopy(model)`` after ``set_adapter``)."""
    from .multi import list_adapters  # multi builds on this module

    loaded = list_adapters(model)
    if len(loaded) > 1:
        raise ValueError(f"this model holds {len(loaded)} adapters {loaded} on one shared backbone: merging in "
                         "place would change every one of them; merge copy.deepcopy(model) after set_adapter(name)")
    method = _method(model)
    if method is not None:
        if adapter_layers(model) and not method.mergeable:
            raise ValueError(f"PEFT method {method.name!r} does not merge into the base weights")
        method.merge(model, check_finite=check_finite)
        method.unload(model)
    _unlock_batchnorm(model)
    for p in model.parameters():
        p.requires_grad_(True)
    if "peft_config" in model.__dict__:
        del model.__dict__["peft_config"]
    return model


# --- counting ---------------------------------------------------------------------------------------------------------
def adapter_parameter_groups(model: nn.Module) -> Dict[str, Dict[str, Any]]:
    """Per shape group: ``{key: {in, out, lrms, shared_params, per_lrm_params, params}}``.

    CLoRA groups are the banks (``shared_params = p·r·(in+out)``, ``per_lrm_params = m_g·p·r²``); LoRA groups are the
    LRM shapes (``shared_params = 0``, ``per_lrm_params = m_g·r·(in+out)``).
    """
    method = _method(model)
    if method is None:
        return {}
    groups: Dict[str, Dict[str, Any]] = {}
    for layer in method.adapter_layers(model):
        g = groups.setdefault(
            method.group_key(layer),
            {"in": layer.in_features, "out": layer.out_features, "lrms": 0, "shared_params": 0, "per_lrm_params": 0},
        )
        g["lrms"] += layer.n_splits
        g["per_lrm_params"] += sum(p.numel() for p in layer.adapter_parameters())
    for key, count in method.shared_parameter_counts(model).items():
        groups[key]["shared_params"] = count
    for g in groups.values():
        g["params"] = g["shared_params"] + g["per_lrm_params"]
    return groups


def trainable_parameter_summary(model: nn.Module, head_modules: Optional[Sequence[str]] = None) -> Dict[str, int]:
    """Counts as CLORA.md's "How we count" (each tensor once, shared banks once).

    Returns ``adapter_params`` (shared state + per-layer adapter tensors), ``trainable_params`` (every tensor with
    ``requires_grad``), ``trainable_params_without_head`` (the same without ``head_modules``, default the model's
    declared head), ``total_params`` (all parameters of the model as it stands, frozen base + adapters) and
    ``frozen_params``.
    """
    heads = tuple(model_head_modules(model) if head_modules is None else head_modules)
    named = list(model.named_parameters())  # named_parameters() already yields a shared tensor once
    trainable = sum(p.numel() for _, p in named if p.requires_grad)
    head = sum(p.numel() for n, p in named if p.requires_grad and under(n, heads))
    total = sum(p.numel() for _, p in named)
    adapters = sum(p.numel() for _, p in adapter_named_parameters(model))
    return {
        "adapter_params": adapters,
        "trainable_params": trainable,
        "trainable_params_without_head": trainable - head,
        "total_params": total,
        "frozen_params": total - trainable,
    }
def format_parameter_summary(model_or_summary: Union[nn.Module, Mapping[str, int]]) -> str:
    """A small aligned table of :func:`trainable_parameter_summary` (plus shape groups when given a model)."""
    groups: Dict[str, Dict[str, Any]] = {}
    if isinstance(model_or_summary, nn.Module):
        summary = trainable_parameter_summary(model_or_summary)
        groups = adapter_parameter_groups(model_or_summary)
    else:
        summary = dict(model_or_summary)
    lines = [f"{'parameters':<32}{'count':>14}{'M':>10}"]
    for key, value in summary.items():
        lines.append(f"{key:<32}{value:>14,}{value / 1e6:>10.3f}")
    if groups:
        lines.append(f"{'shape group':<22}{'in':>6}{'out':>6}{'LRMs':>6}{'shared':>10}{'per-LRM':>10}{'total':>10}")
        for key, g in groups.items():
            lines.append(
                f"{key:<22}{g['in']:>6}{g['out']:>6}{g['lrms']:>6}{g['shared_params']:>10,}"
                f"{g['per_lrm_params']:>10,}{g['params']:>10,}"
            )
    return "\n".join(lines)
