"""The PEFT method registry: one class per method, as peft's ``register_peft_method`` / ``BaseTuner``.

A method is a :class:`PeftMethod` subclass registered with :func:`register_peft_method`. It declares

- ``name`` and ``config_class`` (a :class:`~pointclora.peft.config.PeftConfig` dataclass; generated from
  ``config_base`` when the method declares none),
- how it prepares a model (:meth:`PeftMethod.apply`: freeze, wrap, unfreeze), and for layer-wrapping methods
  (:class:`AdapterMethod`) the layer (``make_layer``) and the state shared between layers (``create_shared_state``),
- its auxiliary losses (:meth:`PeftMethod.auxiliary_losses`, e.g. CLoRA's SADE with the weight from its config),
- whether it merges (``mergeable``), which tensors it saves (:meth:`PeftMethod.saved_state_names`) and which it
  keeps out of weight decay (:meth:`PeftMethod.no_weight_decay`).

Everything else (:func:`~pointclora.peft.inject_adapters`, counting, adapter files, merging, the optimizer's groups,
every CLI's ``--peft`` choices via :func:`list_peft_methods`) asks the method of ``model.peft_config`` through
:func:`get_peft_method`; no library code names a method. Which layers a method targets and which modules train beside
the adapters come from the model (:func:`model_adapter_targets`, :func:`model_train_modules`,
:func:`model_head_modules`) unless the config names them.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import re
from typing import Any, ClassVar, Dict, List, NamedTuple, Optional, Sequence, Set, Tuple, Type

import torch
from torch import nn

from .base import AdapterLinear
from .config import AdapterConfig, PeftConfig, PeftConfigError

__all__ = [
    "PeftMethod",
    "AdapterMethod",
    "AuxLoss",
    "register_peft_method",
    "unregister_peft_method",
    "get_peft_method",
    "get_method_class",
    "list_peft_methods",
    "match_name",
    "model_adapter_targets",
    "model_head_modules",
    "model_train_modules",
    "set_submodule",
]

logger = logging.getLogger(__name__)

_REGISTRY: Dict[str, Type[PeftMethod]] = {}


class AuxLoss(NamedTuple):
    """One auxiliary loss term: the trainer adds ``weight * value`` and logs ``value`` under ``name``."""

    value: torch.Tensor
    weight: float


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


def nothing_matched(kind: str, entry: str, names: Sequence[str]) -> PeftConfigError:
    close = _closest(entry, names)
    hint = f" Closest names: {', '.join(repr(c) for c in close)}." if close else ""
    return PeftConfigError(f"{kind} entry {entry!r} matches no module of the model.{hint}")


def set_submodule(model: nn.Module, name: str, module: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, module)


def under(name: str, prefixes: Sequence[str]) -> bool:
    """``name`` is one of ``prefixes`` or lies below one (``"head.1.weight"`` under ``"head"``)."""
    return any(name == p or name.startswith(p + ".") for p in prefixes)


# --- what the model declares ----------------------------------------------------------------------------------------
def _timm_classifier(model: nn.Module) -> Tuple[str, ...]:
    """timm models name their classifier in ``pretrained_cfg["classifier"]`` (``"head"`` for a ViT)."""
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None)
    head = cfg.get("classifier") if isinstance(cfg, dict) else None
    if isinstance(head, str):
        return (head,)
    if isinstance(head, (list, tuple)):
        return tuple(str(h) for h in head)
    return ()


def model_head_modules(model: nn.Module) -> Tuple[str, ...]:
    """The task head: ``model.head_modules`` (our models), else timm's ``pretrained_cfg['classifier']``, else ()."""
    declared = getattr(model, "head_modules", None)
    return tuple(declared) if declared is not None else _timm_classifier(model)


def model_train_modules(model: nn.Module) -> Tuple[str, ...]:
    """Trained beside the adapters by default: ``model.default_train_modules`` (e.g. the head + ``cls_token`` +
    ``cls_pos`` of a classifier), else the head (:func:`model_head_modules`)."""
    declared = getattr(model, "default_train_modules", None)
    return tuple(declared) if declared is not None else model_head_modules(model)


def model_adapter_targets(model: nn.Module) -> Tuple[str, ...]:
    """Default adapter targets: ``model.default_adapter_targets``; a model without them needs ``target_modules``."""
    declared = getattr(model, "default_adapter_targets", None)
    if not declared:
        raise PeftConfigError(
            f"{type(model).__name__} declares no default_adapter_targets; pass target_modules (names, suffixes or "
            "'re:' patterns of its nn.Linear layers, e.g. ['qkv', 'proj', 'fc1', 'fc2'] for a ViT)"
        )
    return tuple(declared)


# --- methods --------------------------------------------------------------------------------------------------------
class PeftMethod:
    """A PEFT method bound to its config. The base behaviour is "freeze everything, train ``train_modules``".

    Subclasses set ``name`` (and usually ``config_class``) and override the hooks they change. One instance is made
    per call from the config (``get_peft_method``); state that must live across calls lives on the model.
    """

    name: ClassVar[str] = ""
    #: The config dataclass; when a subclass leaves it unset, registration derives one from ``config_base``.
    config_class: ClassVar[Optional[Type[PeftConfig]]] = None
    config_base: ClassVar[Type[PeftConfig]] = PeftConfig
    #: Whether :meth:`merge` folds an update into the base weights (the deployed model then has the frozen FLOPs).
    mergeable: ClassVar[bool] = False
    #: Whether the backbone stays frozen (what the method saves is not the backbone): then several of its adapters
    #: can share one backbone (:mod:`pointclora.peft.multi`). False for ``full``.
    keeps_base_frozen: ClassVar[bool] = True
    description: ClassVar[str] = ""
    #: What a run's weights folder keeps for this method: every tensor of the model (``True``: the backbone was
    #: trained too), or only the tensors the backbone file did not provide (``False``).
    saves_every_tensor: ClassVar[bool] = False
    #: Whether a weights folder also carries peft-style adapter files (``adapter.safetensors`` +
    #: ``adapter_config.json``, :func:`pointclora.peft.save_adapter`) for other tools.
    writes_adapter_files: ClassVar[bool] = False

    def __init__(self, config: PeftConfig) -> None:
        self.config = config

    # -- config defaults that come from the model ---------------------------------------------------------------------
    def default_train_modules(self, model: nn.Module) -> Tuple[str, ...]:
        return model_train_modules(model)

    def resolve(self, model: nn.Module) -> PeftConfig:
        """The config with every ``None`` default filled from ``model`` (recorded as ``model.peft_config``)."""
        if self.config.train_modules is None:
            return dataclasses.replace(self.config, train_modules=self.default_train_modules(model))
        return self.config

    # -- preparing a model --------------------------------------------------------------------------------------------
    def apply(self, model: nn.Module) -> List[str]:
        """Freeze, inject, unfreeze; returns the names of the modules that train (BatchNorm follows them)."""
        for p in model.parameters():
            p.requires_grad_(False)
        self.inject(model)
        for _, p in self.adapter_named_parameters(model):
            p.requires_grad_(True)
        return self.mark_train_modules(model)

    def inject(self, model: nn.Module) -> None:
        """Add the method's layers / shared state (nothing for methods that only choose what trains)."""

    def mark_train_modules(self, model: nn.Module) -> List[str]:
        """Unfreeze every module/parameter matching ``config.train_modules``; returns the matched module names."""
        module_names = [n for n, _ in model.named_modules() if n]
        param_names = [n for n, _ in model.named_parameters()]
        trained: List[str] = []
        for entry in self.config.train_modules or ():
            mods = [n for n in module_names if match_name(n, entry)]
            params = [n for n in param_names if match_name(n, entry)]
            if not mods and not params:
                raise nothing_matched("train_modules", entry, module_names + param_names)
            for n in mods:
                for p in model.get_submodule(n).parameters():
                    p.requires_grad_(True)
                trained.append(n)
            for n in params:
                model.get_parameter(n).requires_grad_(True)
        return trained

    # -- what the method adds -----------------------------------------------------------------------------------------
    def adapter_layers(self, model: nn.Module) -> List[AdapterLinear]:
        return [m for m in model.modules() if isinstance(m, AdapterLinear)]

    def shared_state(self, model: nn.Module) -> Optional[nn.Module]:
        """The module holding tensors shared by several layers (owned once by the model), or ``None``."""
        return None

    def adapter_named_parameters(self, model: nn.Module) -> List[Tuple[str, nn.Parameter]]:
        """``(name, parameter)`` of every adapter tensor (shared state + each layer's own), each once."""
        ids = {id(p) for layer in self.adapter_layers(model) for p in layer.adapter_parameters()}
        shared = self.shared_state(model)
        if shared is not None:
            ids.update(id(p) for p in shared.parameters())
        return [(n, p) for n, p in model.named_parameters() if id(p) in ids]

    def group_key(self, layer: AdapterLinear) -> str:
        """Shape group of a layer for the parameter table."""
        return f"{layer.in_features}x{layer.out_features}"

    def shared_parameter_counts(self, model: nn.Module) -> Dict[str, int]:
        """Shared parameters per group key (CLoRA: the banks)."""
        return {}

    # -- training -----------------------------------------------------------------------------------------------------
    def auxiliary_losses(self, model: nn.Module) -> Dict[str, AuxLoss]:
        """Named loss terms the trainer adds to the task loss (weight from the config); ``{}`` when none."""
        return {}

    def no_weight_decay(self, model: nn.Module) -> Set[str]:
        """Parameter names the optimizer must not decay (beside 1-D tensors and ``model.no_weight_decay()``)."""
        return set()

    # -- saving -------------------------------------------------------------------------------------------------------
    def saved_state_names(self, model: nn.Module) -> List[str]:
        """``state_dict`` names an adapter file carries: the adapter tensors plus parameters *and* buffers of the
        ``train_modules`` (so a head's BatchNorm statistics travel too) and of the model's own task modules
        (:func:`model_train_modules`) even when frozen: a linear probe's ``cls_token``/``cls_pos`` come from no
        pre-trained checkpoint, so a reload must not draw them anew. Model order."""
        state = model.state_dict(keep_vars=True)
        names = {n for n, _ in self.adapter_named_parameters(model)}
        entries = tuple(self.config.train_modules or ()) + model_train_modules(model)
        for n in state:
            # an entry matches the tensor itself (cls_token) or one of its parent modules (the head)
            parts = n.split(".")
            prefixes = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
            if any(match_name(p, e) for p in prefixes for e in entries):
                names.add(n)
        return [n for n in state if n in names]

    # -- merging ------------------------------------------------------------------------------------------------------
    def merge(self, model: nn.Module, check_finite: bool = True) -> None:
        for layer in self.adapter_layers(model):
            layer.merge(check_finite=check_finite)

    def unmerge(self, model: nn.Module) -> None:
        for layer in self.adapter_layers(model):
            layer.unmerge()

    def unload(self, model: nn.Module) -> None:
        """After merging: put every ``base_layer`` back and drop shared state (the plain model remains)."""
        for name, module in list(model.named_modules()):
            if isinstance(module, AdapterLinear):
                set_submodule(model, name, module.base_layer)


class AdapterMethod(PeftMethod):
    """A method that wraps ``nn.Linear`` layers chosen by ``target_modules`` (config: :class:`AdapterConfig`).

    Subclasses set ``layer_class`` (called as ``layer_class(base_layer, n_splits, config)``) or override
    :meth:`make_layer`; methods with tensors shared across layers also override :meth:`create_shared_state` and
    :meth:`shared_state`.
    """

    config_base: ClassVar[Type[PeftConfig]] = AdapterConfig
    mergeable: ClassVar[bool] = True
    writes_adapter_files: ClassVar[bool] = True
    layer_class: ClassVar[Optional[type]] = None

    def resolve(self, model: nn.Module) -> PeftConfig:
        config = super().resolve(model)
        if config.target_modules is None:
            config = dataclasses.replace(config, target_modules=model_adapter_targets(model))
        return config

    def inject(self, model: nn.Module) -> None:
        targets = self.find_targets(model)
        self.create_shared_state(model, targets)
        for name, layer in targets:
            wrapper = self.make_layer(model, name, layer, self.n_splits(name, layer))
            wrapper.train(layer.training)
            set_submodule(model, name, wrapper)

    def create_shared_state(self, model: nn.Module, targets: List[Tuple[str, nn.Linear]]) -> None:
        """Create tensors shared by several layers on the model (once), before any layer is wrapped."""

    def make_layer(self, model: nn.Module, name: str, base_layer: nn.Linear, n_splits: int) -> AdapterLinear:
        if self.layer_class is None:
            raise NotImplementedError(f"PEFT method {self.name!r} sets no layer_class and does not override make_layer")
        return self.layer_class(base_layer, n_splits, self.config)

    def n_splits(self, name: str, layer: nn.Linear) -> int:
        """How many independent LRMs a layer holds: 3 for a fused ``qkv`` with ``split_qkv``, else 1."""
        if getattr(self.config, "split_qkv", False) and name.rsplit(".", 1)[-1] == "qkv":
            if layer.out_features % 3 != 0:
                raise PeftConfigError(
                    f"split_qkv=true but {name!r} has out_features={layer.out_features}, not divisible by 3; "
                    "set split_qkv=false or exclude it"
                )
            return 3
        return 1

    def find_targets(self, model: nn.Module) -> List[Tuple[str, nn.Linear]]:
        """``(name, nn.Linear)`` of every target in model order; loud errors for no match or a non-Linear match."""
        config = self.config
        names = [n for n, _ in model.named_modules() if n]
        modules = dict(model.named_modules())
        hits: Dict[str, nn.Linear] = {}
        for entry in config.target_modules:
            matched = [n for n in names if match_name(n, entry)]
            if not matched:
                raise nothing_matched("target_modules", entry, names)
            for n in matched:
                module = modules[n]
                if isinstance(module, AdapterLinear):
                    raise PeftConfigError(f"{n!r} already carries an adapter; inject_adapters was called twice")
                if not isinstance(module, nn.Linear):
                    raise PeftConfigError(
                        f"target_modules entry {entry!r} matched {n!r}, a {type(module).__name__}; only nn.Linear "
                        "layers can be adapted (target the Linear inside it, e.g. with a suffix like 'mlp.fc1')"
                    )
                hits[n] = module
        for e in config.exclude_modules:
            if not any(match_name(n, e) for n in names):
                raise nothing_matched("exclude_modules", e, names)
        for n in [n for n in hits if any(match_name(n, e) for e in config.exclude_modules)]:
            del hits[n]
        if not hits:
            raise PeftConfigError(
                f"exclude_modules {list(config.exclude_modules)!r} removed every target of "
                f"{list(config.target_modules)!r}"
            )
        return [(n, hits[n]) for n in names if n in hits]  # model order: deterministic shared-state creation


# --- the registry ---------------------------------------------------------------------------------------------------
def register_peft_method(cls: Type[PeftMethod]) -> Type[PeftMethod]:
    """Class decorator: make ``cls`` a PEFT method under ``cls.name``.

    Without a ``config_class`` one is derived from ``cls.config_base`` (no extra options). The config class's
    ``method`` is set to the name so ``make_peft_config(name)`` and saved configs round-trip. Registering a name
    twice is an error (``unregister_peft_method`` first).
    """
    name = getattr(cls, "name", "")
    if not isinstance(name, str) or not re.fullmatch(r"[a-z][a-z0-9_]*", name or ""):
        raise ValueError(f"{cls.__name__}.name must be a lower-case identifier, got {name!r}")
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(f"PEFT method {name!r} is already registered by {_REGISTRY[name].__name__}")
    config_class = cls.__dict__.get("config_class")
    if config_class is None:
        base = cls.config_base
        config_class = dataclasses.make_dataclass(
            f"{cls.__name__}Config", [], bases=(base,), namespace={"method": name, "__doc__": cls.__doc__}
        )
        cls.config_class = config_class
    if not (isinstance(config_class, type) and issubclass(config_class, PeftConfig)):
        raise TypeError(f"{cls.__name__}.config_class must be a PeftConfig subclass, got {config_class!r}")
    own = config_class.__dict__.get("method", "")
    if own not in ("", name):
        raise ValueError(f"{config_class.__name__}.method is {own!r}, but the method is {name!r}")
    config_class.method = name
    _REGISTRY[name] = cls
    return cls


def unregister_peft_method(name: str) -> None:
    """Remove a method (tests registering toy methods clean up with this)."""
    _REGISTRY.pop(name, None)


def list_peft_methods() -> List[str]:
    """Registered method names in registration order (``clora`` first): every CLI's ``--peft`` choices."""
    return list(_REGISTRY)


def get_method_class(name: str) -> Type[PeftMethod]:
    key = str(name).lower()
    if key not in _REGISTRY:
        close = difflib.get_close_matches(key, list(_REGISTRY), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise PeftConfigError(f"unknown PEFT method {name!r}{hint} Choose one of: {', '.join(_REGISTRY)}")
    return _REGISTRY[key]


def get_peft_method(target: Any) -> PeftMethod:
    """The method of a config, of a prepared model (its ``peft_config``), or of a name (with default options)."""
    if isinstance(target, nn.Module):
        config = getattr(target, "peft_config", None)
        if config is None:
            raise ValueError(f"{type(target).__name__} carries no PEFT method (call inject_adapters first)")
        target = config
    if isinstance(target, str):
        return get_method_class(target)(get_method_class(target).config_class())
    if isinstance(target, PeftConfig):
        return get_method_class(target.method)(target)
    raise TypeError(f"expected a PeftConfig, a prepared model or a method name, got {type(target).__name__}")
