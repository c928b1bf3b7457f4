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

import difflib
import logging
import re
from typing import Any, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from .base import AdapterLinear
from .clora import CLoRABank, CLoRALinear
from .config import (
    DEFAULT_TRAIN_MODULES,
    CLoRAConfig,
    FullConfig,
    LoRAConfig,
    PeftConfig,
    PeftConfigError,
    make_peft_config,
    peft_config_from_dict,
)
from .lora import LoRALinear

__all__ = [
    "inject_adapters",
    "merge_adapters",
    "unmerge_adapters",
    "merge_and_unload",
    "adapter_layers",
    "adapter_parameter_groups",
    "trainable_parameter_summary",
    "format_parameter_summary",
    "match_name",
    "BANKS_ATTR",
    "HEAD_MODULES",
]

logger = logging.getLogger(__name__)

#: Attribute of the model root that owns the CLoRA banks (``model.clora_banks[key].A / .B``).
BANKS_ATTR = "clora_banks"
#: Modules counted as "the head" by :func:`trainable_parameter_summary`.
HEAD_MODULES: Tuple[str, ...] = ("cls_head_finetune",)


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


# --- name matching --------------------------------------------------------------------------------------------------
def match_name(name: str, entry: str) -> bool:
    """Exact (``name == entry``), suffix (``name`` ends with ``"." + entry``) or ``"re:<pattern>"`` full match."""
    if entry.startswith("re:"):
        return re.fullmatch(entry[3:], name) is not None
    return name == entry or name.endswith("." + entry)


def _closest(entry: str, names: Sequence[str], n: int = 3) -> List[str]:
    candidates = set(names)
    for name in names:  # let "attn.qkvv" find "attn.qkv" as well as the full "blocks.0.attn.qkv"
        parts = name.split(".")
        candidates.update(".".join(parts[i:]) for i in range(1, len(parts)))
    return difflib.get_close_matches(entry.replace("re:", ""), sorted(candidates), n=n, cutoff=0.5)


def _nothing_matched(kind: str, entry: str, names: Sequence[str]) -> PeftConfigError:
    close = _closest(entry, names)
    hint = f" Closest names: {', '.join(repr(c) for c in close)}." if close else ""
    return PeftConfigError(f"{kind} entry {entry!r} matches no module of the model.{hint}")


def _set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


_BLOCK_RE = re.compile(r"(?:^|\.)blocks\.(\d+)(?:\.|$)")


def _bank_key(name: str, in_features: int, out_features: int, share: str) -> str:
    key = f"{in_features}x{out_features}"
    if share == "block":
        found = _BLOCK_RE.search(name)
        if found:  # ModuleDict keys cannot contain dots
            key = f"block{found.group(1)}_{key}"
    return key


# --- injection ------------------------------------------------------------------------------------------------------
def _coerce_config(config: Union[PeftConfig, str, Mapping[str, Any], None]) -> PeftConfig:
    if config is None:
        return CLoRAConfig()
    if isinstance(config, PeftConfig):
        return config
    if isinstance(config, str):
        return make_peft_config(config)
    if isinstance(config, Mapping):
        return peft_config_from_dict(config)
    raise TypeError(f"config must be a PeftConfig, a method name or a dict, got {type(config).__name__}")


def _find_targets(model: nn.Module, config: Union[CLoRAConfig, LoRAConfig]) -> List[Tuple[str, nn.Linear]]:
    names = [n for n, _ in model.named_modules() if n]
    modules = dict(model.named_modules())
    hits: Dict[str, nn.Linear] = {}
    for entry in config.target_modules:
        matched = [n for n in names if match_name(n, entry)]
        if not matched:
            raise _nothing_matched("target_modules", entry, names)
        for n in matched:
            module = modules[n]
            if isinstance(module, AdapterLinear):
                raise PeftConfigError(f"{n!r} already carries an adapter; inject_adapters was called twice")
            if not isinstance(module, nn.Linear):
                raise PeftConfigError(
                    f"target_modules entry {entry!r} matched {n!r}, a {type(module).__name__}; only nn.Linear layers "
                    "can be adapted (target the Linear inside it, e.g. with a suffix like 'mlp.fc1')"
                )
            hits[n] = module
    excluded = [n for n in hits if any(match_name(n, e) for e in config.exclude_modules)]
    for e in config.exclude_modules:
        if not any(match_name(n, e) for n in names):
            raise _nothing_matched("exclude_modules", e, names)
    for n in excluded:
        del hits[n]
    if not hits:
        raise PeftConfigError(
            f"exclude_modules {list(config.exclude_modules)!r} removed every target of {list(config.target_modules)!r}"
        )
    return [(n, hits[n]) for n in names if n in hits]  # model order, for a deterministic bank creation order


def _n_splits(name: str, layer: nn.Linear, config: Union[CLoRAConfig, LoRAConfig]) -> int:
    if config.split_qkv and name.rsplit(".", 1)[-1] == "qkv":
        if layer.out_features % 3 != 0:
            raise PeftConfigError(
                f"split_qkv=true but {name!r} has out_features={layer.out_features}, not divisible by 3; "
                "set split_qkv=false or exclude it"
            )
        return 3
    return 1


def _mark_train_modules(model: nn.Module, entries: Sequence[str], defaults_optional: bool) -> List[str]:
    """Unfreeze the parameters of every module/parameter matching ``entries``; returns the matched module names."""
    module_names = [n for n, _ in model.named_modules() if n]
    param_names = [n for n, _ in model.named_parameters()]
    trained_modules: List[str] = []
    for entry in entries:
        mods = [n for n in module_names if match_name(n, entry)]
        params = [n for n in param_names if match_name(n, entry)]
        if not mods and not params:
            if defaults_optional and entry in DEFAULT_TRAIN_MODULES:
                # A segmentation model has no cls_token/cls_head_finetune: the defaults apply where they exist.
                logger.debug("train_modules default %r not present in the model; skipped", entry)
                continue
            raise _nothing_matched("train_modules", entry, module_names + param_names)
        for n in mods:
            for p in model.get_submodule(n).parameters():
                p.requires_grad_(True)
            trained_modules.append(n)
        for n in params:
            model.get_parameter(n).requires_grad_(True)
    return trained_modules


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
            trains = any(name == m or name.startswith(m + ".") for m in trained_modules)
        if trains or isinstance(module, _EvalModeBN):
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


def inject_adapters(model: nn.Module, config: Union[PeftConfig, str, Mapping[str, Any], None] = None) -> nn.Module:
    """Prepare ``model`` for parameter-efficient fine-tuning, in place; returns it.

    - ``clora`` / ``lora``: wraps every target ``nn.Linear`` (see :class:`~pointclora.peft.CLoRAConfig`), creating the
      CLoRA banks on ``model.clora_banks``; freezes everything except the adapters and ``train_modules`` (default:
      ``cls_head_finetune``, ``cls_token``, ``cls_pos``; defaults missing from the model are skipped, entries you
      name yourself must match).
    - ``full``: everything trains (BN included). ``linear``: only ``train_modules`` (default the head) trains — linear
      probing keeps ``cls_token``/``cls_pos`` frozen. ``none``: everything frozen.
    - BN layers that end up frozen stay in eval mode under ``model.train()`` (module docstring).
    - Records the config as ``model.peft_config``.

    Raises :class:`~pointclora.peft.config.PeftConfigError` when a target matches nothing (naming the closest module
    names), matches a non-Linear, or the model already carries adapters.
    """
    config = _coerce_config(config)
    if getattr(model, "peft_config", None) is not None:
        raise PeftConfigError(
            f"model already prepared with method {model.peft_config.method!r}; build a fresh model (or "
            "merge_and_unload it) before injecting again"
        )
    if isinstance(config, FullConfig):
        for p in model.parameters():
            p.requires_grad_(True)
        model.peft_config = config
        return model

    for p in model.parameters():
        p.requires_grad_(False)
    if isinstance(config, (CLoRAConfig, LoRAConfig)):
        targets = _find_targets(model, config)
        banks: Optional[nn.ModuleDict] = None
        if isinstance(config, CLoRAConfig):
            if hasattr(model, BANKS_ATTR):
                raise PeftConfigError(f"model already has an attribute {BANKS_ATTR!r}")
            banks = nn.ModuleDict()
            setattr(model, BANKS_ATTR, banks)
        for name, layer in targets:
            n = _n_splits(name, layer, config)
            out = layer.out_features // n
            if isinstance(config, CLoRAConfig):
                key = _bank_key(name, layer.in_features, out, config.share)
                if key not in banks:
                    w = layer.weight
                    banks[key] = CLoRABank(
                        layer.in_features, out, config.r, config.num_bases, device=w.device,
                        dtype=w.dtype if w.dtype.is_floating_point else torch.float32,
                    )
                wrapper: AdapterLinear = CLoRALinear(layer, banks[key], key, n, config.scaling, config.dropout)
            else:
                wrapper = LoRALinear(layer, config.r, n, config.scaling, config.dropout)
            wrapper.train(layer.training)
            _set_submodule(model, name, wrapper)
        for layer in adapter_layers(model):
            for p in layer.adapter_parameters():
                p.requires_grad_(True)
        if banks is not None:
            for p in banks.parameters():
                p.requires_grad_(True)
    trained = _mark_train_modules(
        model, config.train_modules, defaults_optional=tuple(config.train_modules) == type(config)().train_modules
    )
    _lock_frozen_batchnorm(model, trained)
    model.peft_config = config
    return model


def adapter_layers(model: nn.Module) -> List[AdapterLinear]:
    return [m for m in model.modules() if isinstance(m, AdapterLinear)]


def adapter_named_parameters(model: nn.Module) -> List[Tuple[str, nn.Parameter]]:
    """``(name, parameter)`` of every adapter tensor (banks, ``Q``, ``lora_A``/``lora_B``), each once."""
    ids = {id(p) for layer in adapter_layers(model) for p in layer.adapter_parameters()}
    banks = getattr(model, BANKS_ATTR, None)
    if isinstance(banks, nn.Module):
        ids.update(id(p) for p in banks.parameters())
    return [(n, p) for n, p in model.named_parameters() if id(p) in ids]


# --- merging ----------------------------------------------------------------------------------------------------------
def merge_adapters(model: nn.Module, check_finite: bool = True) -> nn.Module:
    """Fold every adapter's ``s·ΔW`` into its base weight; the wrappers stay (``unmerge_adapters`` undoes it).

    With ``check_finite`` a non-finite update raises :class:`~pointclora.peft.base.PeftMergeError` before that layer's
    weights are touched (layers merged before it stay merged; call ``unmerge_adapters`` to roll back).
    """
    for layer in adapter_layers(model):
        layer.merge(check_finite=check_finite)
    return model


def unmerge_adapters(model: nn.Module) -> nn.Module:
    """Subtract every merged update again (base weights restored to float rounding)."""
    for layer in adapter_layers(model):
        layer.unmerge()
    return model


def merge_and_unload(model: nn.Module, check_finite: bool = True) -> nn.Module:
    """Merge, then replace every wrapper by its ``base_layer``, drop ``clora_banks``, restore BN classes and
    ``requires_grad=True`` everywhere: the result is the plain backbone (same class, same ``state_dict`` keys as
    ``create_model(...)``), with exactly the frozen model's FLOPs. In place; returns ``model``."""
    merge_adapters(model, check_finite=check_finite)
    for name, module in list(model.named_modules()):
        if isinstance(module, AdapterLinear):
            _set_submodule(model, name, module.base_layer)
    if hasattr(model, BANKS_ATTR):
        delattr(model, BANKS_ATTR)
    _unlock_batchnorm(model)
    for p in model.parameters():
        p.requires_grad_(True)
    if "peft_config" in model.__dict__:
        del model.__dict__["peft_config"]
    return model


# --- counting ---------------------------------------------------------------------------------------------------------
def _under(name: str, prefixes: Iterable[str]) -> bool:
    return any(name == p or name.startswith(p + ".") for p in prefixes)


def adapter_parameter_groups(model: nn.Module) -> Dict[str, Dict[str, Any]]:
    """Per shape group: ``{key: {in, out, lrms, shared_params, per_lrm_params, params}}``.

    CLoRA groups are the banks (``shared_params = p·r·(in+out)``, ``per_lrm_params = m_g·p·r²``); LoRA groups are the
    LRM shapes (``shared_params = 0``, ``per_lrm_params = m_g·r·(in+out)``).
    """
    groups: Dict[str, Dict[str, Any]] = {}
    banks = getattr(model, BANKS_ATTR, None)
    for layer in adapter_layers(model):
        key = layer.bank_key if isinstance(layer, CLoRALinear) else f"{layer.in_features}x{layer.out_features}"
        g = groups.setdefault(
            key,
            {"in": layer.in_features, "out": layer.out_features, "lrms": 0, "shared_params": 0, "per_lrm_params": 0},
        )
        g["lrms"] += layer.n_splits
        g["per_lrm_params"] += sum(p.numel() for p in layer.adapter_parameters())
    if isinstance(banks, nn.ModuleDict):
        for key, bank in banks.items():
            groups[key]["shared_params"] = sum(p.numel() for p in bank.parameters())
    for g in groups.values():
        g["params"] = g["shared_params"] + g["per_lrm_params"]
    return groups


def trainable_parameter_summary(model: nn.Module, head_modules: Sequence[str] = HEAD_MODULES) -> Dict[str, int]:
    """Counts as CLORA.md's "How we count" (each tensor once, shared banks once).

    Returns ``adapter_params`` (banks + Q, or LoRA A/B), ``trainable_params`` (every tensor with ``requires_grad``),
    ``trainable_params_without_head`` (the same without ``head_modules``), ``total_params`` (all parameters of the
    model as it stands, frozen base + adapters) and ``frozen_params``.
    """
    named = list(model.named_parameters())  # named_parameters() already yields a shared tensor once
    trainable = sum(p.numel() for _, p in named if p.requires_grad)
    head = sum(p.numel() for n, p in named if p.requires_grad and _under(n, head_modules))
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
