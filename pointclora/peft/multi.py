"""Several adapters on one frozen backbone, peft-style: ``load_adapter(model, folder, adapter_name=...)``,
``set_adapter``, ``delete_adapter``, ``list_adapters``.

Each named adapter owns exactly what its file carries: its wrapper layers (each wrapping the *same* frozen
``nn.Linear`` of the backbone, so the base weights exist once), its shared state (CLoRA's ``clora_banks``), and its
task modules (the head, ``cls_token``/``cls_pos``; the segmentation head): classification tasks with different
classes each keep their own head. The model shows one adapter at a time: :func:`set_adapter` swaps module
references in place (no file I/O, no tensor copy), so the active model *is* the model that loaded only that adapter.
Adapters of different methods coexist (a CLoRA and a LoRA adapter are different wrappers of the same base layer).

The contract with the method registry: a method qualifies when its class declares ``keeps_base_frozen = True``
(every method but ``full``, whose file carries a whole backbone). What an adapter owns is found from the method's own
hooks (``adapter_layers``, ``shared_state``, ``saved_state_names``), so a future method gets this for free.

Inactive adapters live outside the module tree (``model.state_dict()`` and ``model.parameters()`` show the active
one only, so fingerprints and optimizers see a normal single-adapter model); :func:`set_adapter` moves an adapter to
the model's device when the model was moved since it was loaded. Do not merge a model that holds several adapters (the
base weights are shared): ``merge_and_unload(copy.deepcopy(model))`` after ``set_adapter``.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Set, Union

import torch
from torch import nn

from .base import AdapterLinear
from .config import PeftConfig, peft_config_from_dict
from .inject import _lock_frozen_batchnorm, _unlock_batchnorm
from .registry import get_method_class, get_peft_method, set_submodule

__all__ = ["load_named_adapter", "set_adapter", "delete_adapter", "list_adapters", "active_adapter", "adapter_tensors"]

_STORE = "_pointclora_adapters"
#: Model attributes that follow the task head (a 10-class adapter's model reports 10 classes while it is active).
_HEAD_ATTRS = ("num_classes", "num_categories", "constructor_kwargs")
DEFAULT_NAME = "default"


@dataclasses.dataclass
class _Adapter:
    config: PeftConfig
    layers: Dict[str, AdapterLinear]  #: target path -> wrapper (around the shared frozen base layer)
    shared: Dict[str, nn.Module]  #: model attribute -> shared state (CLoRA banks)
    task: Dict[str, Any]  #: path -> the adapter's own module / Parameter / buffer (head, cls tokens)
    attrs: Dict[str, Any]
    trainable: Set[int]  #: ids of the parameters that train while it is active
    source: str


@dataclasses.dataclass
class _Store:
    adapters: Dict[str, _Adapter] = dataclasses.field(default_factory=dict)
    active: Optional[str] = None


def _store(model: nn.Module, create: bool = False) -> Optional[_Store]:
    store = model.__dict__.get(_STORE)
    if store is None and create:
        store = model.__dict__[_STORE] = _Store()
    return store


# --- paths ----------------------------------------------------------------------------------------------------------
def _get_path(model: nn.Module, path: str) -> Any:
    parent_name, _, attr = path.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    for table in (parent._modules, parent._parameters, parent._buffers):
        if attr in table:
            return table[attr]
    raise AttributeError(f"{type(model).__name__} has no {path!r}")


def _set_path(model: nn.Module, path: str, obj: Any) -> None:
    parent_name, _, attr = path.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    if isinstance(obj, nn.Module) or isinstance(obj, nn.Parameter):
        setattr(parent, attr, obj)
    else:
        parent._buffers[attr] = obj


def _task_entries(model: nn.Module, names: Sequence[str]) -> List[str]:
    """Group tensor names into the largest modules whose whole state they cover (``cls_head_finetune``), else the
    tensor itself (``cls_token``): the units an adapter owns and swaps."""
    state = list(model.state_dict(keep_vars=True))
    wanted = set(names)
    entries: List[str] = []
    for name in names:
        if any(name == e or name.startswith(e + ".") for e in entries):
            continue
        parts = name.split(".")
        chosen = name
        for i in range(1, len(parts)):
            prefix = ".".join(parts[:i])
            if all(k in wanted for k in state if k.startswith(prefix + ".")):
                chosen = prefix
                break
        entries.append(chosen)
    return entries


# --- capture / detach / attach --------------------------------------------------------------------------------------
def _capture(model: nn.Module, saved_names: Sequence[str], source: str) -> _Adapter:
    """What the active (single) adapter of ``model`` owns."""
    method = get_peft_method(model)
    layers = {n: m for n, m in model.named_modules() if isinstance(m, AdapterLinear)}
    shared_module = method.shared_state(model)
    shared = {k: v for k, v in model._modules.items() if shared_module is not None and v is shared_module}
    owned = tuple(layers) + tuple(shared)
    task_names = [n for n in saved_names if not any(n.startswith(p + ".") for p in owned)]
    task = {path: _get_path(model, path) for path in _task_entries(model, task_names)}
    attrs = {a: copy.copy(getattr(model, a)) for a in _HEAD_ATTRS if hasattr(model, a)}
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    return _Adapter(model.peft_config, layers, shared, task, attrs, trainable, source)


def _detach(model: nn.Module, adapter: _Adapter) -> None:
    """Back to the plain backbone (the task modules stay in place until the next adapter brings its own)."""
    if any(layer.merged for layer in adapter.layers.values()):
        raise ValueError("the active adapter is merged into the shared base weights: unmerge_adapters(model) first")
    for path, layer in adapter.layers.items():
        set_submodule(model, path, layer.base_layer)
    for attr in adapter.shared:
        delattr(model, attr)
    model.__dict__.pop("peft_config", None)


def _attach(model: nn.Module, adapter: _Adapter) -> None:
    device = next((p.device for p in model.parameters()), None)
    for path, layer in adapter.layers.items():
        set_submodule(model, path, layer)
    for attr, module in adapter.shared.items():
        setattr(model, attr, module)
    for path, obj in adapter.task.items():
        _set_path(model, path, obj)
    for attr, value in adapter.attrs.items():
        setattr(model, attr, copy.copy(value))
    model.peft_config = adapter.config
    if device is not None and any(p.device != device for p in model.parameters()):
        model.to(device)  # the model moved since this adapter was loaded; only its own tensors actually move
    for p in model.parameters():
        p.requires_grad_(id(p) in adapter.trainable)
    _lock_frozen_batchnorm(model, tuple(adapter.config.train_modules or ()))
    for module in list(adapter.task.values()) + list(adapter.shared.values()):
        if isinstance(module, nn.Module):
            module.train(model.training)


# --- fresh task modules for an adapter about to load ---------------------------------------------------------------
#: ``factory(variant, **constructor) -> model`` (``pointclora.models.create_model``), for a head of another shape. Set
#: by the layer that knows both models and adapters (:mod:`pointclora.api`): peft imports no model.
_MODEL_FACTORY: Optional[Callable[..., nn.Module]] = None


def set_model_factory(factory: Optional[Callable[..., nn.Module]]) -> None:
    """Tell the multi-adapter loader how to build a model of a recorded variant (``create_model``)."""
    global _MODEL_FACTORY
    _MODEL_FACTORY = factory


def _file_shapes(folder: str) -> Dict[str, tuple]:
    from safetensors import safe_open

    from .io import ADAPTER_WEIGHTS

    with safe_open(os.path.join(folder, ADAPTER_WEIGHTS), framework="pt") as f:
        return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}


def _fresh_task(model: nn.Module, entries: Sequence[str], shapes: Dict[str, tuple], meta: Dict[str, Any]) -> Dict:
    """A new object per task entry, shaped for the file: a copy of the current one when every shape fits, else the
    entry of a model built from the constructor arguments the adapter file records (another number of classes)."""
    state = model.state_dict(keep_vars=True)
    fits = all(tuple(state[n].shape) == s for n, s in shapes.items() if n in state)
    template = None
    if not fits:
        if _MODEL_FACTORY is None:
            raise RuntimeError("loading an adapter whose head has another shape needs a model factory: import "
                               "pointclora.api (or call pointclora.peft.multi.set_model_factory(create_model))")
        constructor = dict((meta.get("base_model") or {}).get("constructor") or {})
        variant = constructor.pop("name", None) or (meta.get("base_model") or {}).get("variant")
        if not variant:
            raise ValueError("the adapter's head differs in shape from the model's and its file records no variant "
                             "to build one from")  # fmt: skip
        template = _MODEL_FACTORY(variant, **constructor)
    ref = next((p for p in model.parameters()), None)
    fresh = {}
    for path in entries:
        source = _get_path(template if template is not None else model, path)
        obj = copy.deepcopy(source)
        if isinstance(obj, nn.Module):
            obj.train(model.training)
            if ref is not None:
                obj.to(ref.device)
        elif ref is not None:
            obj = nn.Parameter(obj.data.to(ref.device), requires_grad=obj.requires_grad) if isinstance(
                obj, nn.Parameter) else obj.to(ref.device)  # fmt: skip
        fresh[path] = obj
    constructor = dict((meta.get("base_model") or {}).get("constructor") or {})
    attrs = {}
    if template is not None:
        attrs = {a: copy.copy(getattr(template, a)) for a in _HEAD_ATTRS if hasattr(template, a)}
    elif "num_classes" in constructor and hasattr(model, "num_classes"):
        attrs = {"num_classes": constructor["num_classes"]}
    return {"objects": fresh, "attrs": attrs}


# --- public API -----------------------------------------------------------------------------------------------------
def load_named_adapter(
    model: nn.Module,
    directory: Union[str, os.PathLike],
    adapter_name: str,
    allow_fingerprint_mismatch: bool = False,
    activate: bool = False,
) -> nn.Module:
    """Load the adapter folder ``directory`` beside the adapters ``model`` already holds, under ``adapter_name``.

    The first adapter becomes active; later ones wait for :func:`set_adapter` unless ``activate=True`` (peft's
    behaviour). A model prepared the single-adapter way (``inject_adapters`` / ``load_adapter`` without a name) keeps
    that adapter under the name ``"default"``. The file's backbone fingerprint is checked as by
    :func:`~pointclora.peft.io.load_adapter`; on any error the model is left as it was.
    """
    from .io import load_adapter, read_adapter_config

    directory = os.fspath(directory)
    if not isinstance(adapter_name, str) or not adapter_name:
        raise ValueError(f"adapter_name must be a non-empty string, got {adapter_name!r}")
    store = _store(model, create=True)
    if adapter_name in store.adapters:
        raise ValueError(f"an adapter named {adapter_name!r} is already loaded (delete_adapter first); "
                         f"loaded: {list(store.adapters)}")  # fmt: skip
    meta = read_adapter_config(directory)
    config = peft_config_from_dict(meta["peft_config"])
    if not get_method_class(config.method).keeps_base_frozen:
        raise ValueError(f"{directory}: PEFT method {config.method!r} trains the backbone itself, so its file cannot "
                         "share a frozen backbone with other adapters; load it into a model of its own")  # fmt: skip
    if store.active is None and getattr(model, "peft_config", None) is not None:
        if not get_peft_method(model).keeps_base_frozen:
            raise ValueError(f"the model was prepared with {model.peft_config.method!r}, which trains the backbone: "
                             "it cannot hold several adapters")  # fmt: skip
        from .training import adapter_state_names

        store.adapters[DEFAULT_NAME] = _capture(model, adapter_state_names(model), "injected")
        store.active = DEFAULT_NAME
        if adapter_name == DEFAULT_NAME:
            raise ValueError(f"the model's own adapter is already called {DEFAULT_NAME!r}; choose another name")
    previous = store.active
    if previous is not None:
        _detach(model, store.adapters[previous])
    shapes = _file_shapes(directory)
    plain = model.state_dict(keep_vars=True)
    entries = _task_entries(model, [n for n in meta.get("tensors", list(shapes)) if n in plain])
    old = {path: _get_path(model, path) for path in entries}
    old_attrs = {a: getattr(model, a) for a in _HEAD_ATTRS if hasattr(model, a)}
    try:
        fresh = _fresh_task(model, entries, shapes, meta)
        for path, obj in fresh["objects"].items():
            _set_path(model, path, obj)
        for attr, value in fresh["attrs"].items():
            setattr(model, attr, value)
        load_adapter(model, directory, allow_fingerprint_mismatch=allow_fingerprint_mismatch)
    except Exception:
        for path, obj in old.items():
            _set_path(model, path, obj)
        for attr, value in old_attrs.items():
            setattr(model, attr, value)
        if previous is not None:
            _attach(model, store.adapters[previous])
        elif not store.adapters:
            model.__dict__.pop(_STORE, None)
        raise
    store.adapters[adapter_name] = _capture(model, meta.get("tensors", list(shapes)), directory)
    if previous is None or activate:
        store.active = adapter_name
    else:
        _detach(model, store.adapters[adapter_name])
        _attach(model, store.adapters[previous])
    return model


def set_adapter(model: nn.Module, adapter_name: str) -> nn.Module:
    """Make ``adapter_name`` the active adapter: module references swapped in place, no file read, no copy."""
    store = _store(model)
    if store is None or adapter_name not in store.adapters:
        raise KeyError(f"no adapter named {adapter_name!r}; loaded: {list_adapters(model)}")
    if store.active != adapter_name:
        if store.active is not None:
            _detach(model, store.adapters[store.active])
        _attach(model, store.adapters[adapter_name])
        store.active = adapter_name
    return model


def delete_adapter(model: nn.Module, adapter_name: str) -> nn.Module:
    """Forget ``adapter_name``. Deleting the active one activates the first remaining adapter; deleting the last one
    leaves the plain backbone (with the deleted adapter's task head still in place)."""
    store = _store(model)
    if store is None or adapter_name not in store.adapters:
        raise KeyError(f"no adapter named {adapter_name!r}; loaded: {list_adapters(model)}")
    if store.active == adapter_name:
        _detach(model, store.adapters[adapter_name])
        store.active = None
    del store.adapters[adapter_name]
    if store.active is None and store.adapters:
        set_adapter(model, next(iter(store.adapters)))
    if not store.adapters:
        _unlock_batchnorm(model)
        for p in model.parameters():
            p.requires_grad_(True)
        model.__dict__.pop(_STORE, None)
    return model


def list_adapters(model: nn.Module) -> List[str]:
    """Names of the loaded adapters, in load order (``[]`` for a model without named adapters)."""
    store = _store(model)
    return list(store.adapters) if store is not None else []


def active_adapter(model: nn.Module) -> Optional[str]:
    store = _store(model)
    return store.active if store is not None else None


def adapter_tensors(model: nn.Module, adapter_name: str) -> List[torch.Tensor]:
    """Every tensor ``adapter_name`` owns (its layers' adapter parameters, shared state, task modules): what one
    more adapter costs in memory."""
    store = _store(model)
    if store is None or adapter_name not in store.adapters:
        raise KeyError(f"no adapter named {adapter_name!r}; loaded: {list_adapters(model)}")
    a = store.adapters[adapter_name]
    out: Dict[int, torch.Tensor] = {}
    for layer in a.layers.values():
        for p in layer.adapter_parameters():
            out[id(p)] = p
    for obj in list(a.shared.values()) + list(a.task.values()):
        tensors = list(obj.parameters()) + list(obj.buffers()) if isinstance(obj, nn.Module) else [obj]
        out.update((id(t), t) for t in tensors)
    return list(out.values())
