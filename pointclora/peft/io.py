"""Adapter files: ``adapter.safetensors`` + ``adapter_config.json``, never the base model.

``adapter.safetensors`` holds the adapter tensors (CLoRA banks once, every ``Q``; or LoRA ``A``/``B``) and the state of
the ``train_modules`` (parameters *and* buffers, so the head's BatchNorm running statistics travel too), under the
injected model's ``state_dict`` names. ``adapter_config.json`` holds::

    {"format": "pointclora-adapter", "format_version": 1, "pointclora_version": "...",
     "peft_config": {...},                      # the method config (to_dict)
     "base_model": {"variant": "point_mae_s",   # model.variant (create_model records it)
                    "constructor": {...},       # num_classes, trans_dim, depth, ... where the model exposes them
                    "shapes_sha256": "...",     # names + shapes of the frozen base tensors
                    "fingerprint": "...",       # sha256 of the frozen base tensors' bytes
                    "num_frozen_tensors": N},
     "tensors": ["clora_banks.384x384.A", ...]}

:func:`load_adapter` refuses an adapter made for another backbone variant or architecture (shape signature), and one
made on top of other pre-trained weights (fingerprint) unless ``allow_fingerprint_mismatch=True``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
from torch import nn

from ..utils.atomic import atomic_write_bytes, atomic_write_text
from .config import peft_config_from_dict
from .inject import adapter_layers, inject_adapters, merge_and_unload
from .training import adapter_state_names

__all__ = [
    "save_adapter",
    "load_adapter",
    "read_adapter_config",
    "AdapterMismatchError",
    "base_fingerprint",
    "ADAPTER_WEIGHTS",
    "ADAPTER_CONFIG",
]

logger = logging.getLogger(__name__)

ADAPTER_WEIGHTS = "adapter.safetensors"
ADAPTER_CONFIG = "adapter_config.json"
FORMAT = "pointclora-adapter"
FORMAT_VERSION = 1
#: Model attributes recorded as constructor information when present.
_CONSTRUCTOR_ATTRS = (
    "num_classes", "trans_dim", "depth", "num_heads", "num_groups", "group_size", "encoder_dims", "head_hidden_dim",
    "head_batch_norm", "pos_every_block",
)


class AdapterMismatchError(RuntimeError):
    """The adapter file does not belong to this model."""


def _canonical(name: str) -> str:
    """State-dict name without the wrapper's ``base_layer.`` level, so injected and plain models hash alike."""
    return name.replace(".base_layer.", ".")


def _frozen_base(model: nn.Module, saved: List[str]) -> List[Tuple[str, torch.Tensor]]:
    skip = set(saved)
    return sorted(
        ((_canonical(n), t) for n, t in model.state_dict().items() if n not in skip),
        key=lambda item: item[0],
    )


def base_fingerprint(model: nn.Module, saved: Optional[List[str]] = None) -> Tuple[str, str, int]:
    """``(shapes_sha256, fingerprint, n)`` of the frozen base tensors (everything the adapter file does not carry)."""
    saved = adapter_state_names(model) if saved is None else saved
    shapes, content = hashlib.sha256(), hashlib.sha256()
    items = _frozen_base(model, saved)
    for name, tensor in items:
        header = f"{name}:{tuple(tensor.shape)}:{str(tensor.dtype)};".encode()
        shapes.update(header)
        content.update(header)
        flat = tensor.detach().to("cpu").contiguous().reshape(-1)
        content.update(flat.view(torch.uint8).numpy().tobytes() if flat.numel() else b"")
    return shapes.hexdigest(), content.hexdigest(), len(items)


def _constructor_info(model: nn.Module) -> Dict[str, Any]:
    info = getattr(model, "constructor_kwargs", None)
    out: Dict[str, Any] = dict(info) if isinstance(info, dict) else {}
    for attr in _CONSTRUCTOR_ATTRS:
        value = getattr(model, attr, None)
        if isinstance(value, (int, float, str, bool)) and attr not in out:
            out[attr] = value
    return out


def save_adapter(model: nn.Module, directory: Union[str, os.PathLike], include: Sequence[str] = ()) -> str:
    """Write ``directory/adapter.safetensors`` and ``directory/adapter_config.json``; returns the directory.

    The method decides what is saved (``adapter_state_names``); ``include`` adds ``state_dict`` names, e.g. frozen
    tensors that the pre-trained checkpoint did not provide (a linear probe's randomly initialised ``cls_token``),
    so loading never depends on a random draw. Refuses a merged model (``unmerge_adapters`` first).
    """
    from safetensors.torch import save

    config = getattr(model, "peft_config", None)
    if config is None:
        raise ValueError("model has no adapters (model.peft_config is missing); call inject_adapters first")
    if any(layer.merged for layer in adapter_layers(model)):
        raise ValueError("cannot save an adapter from a merged model: call unmerge_adapters(model) first")
    names = adapter_state_names(model, include)
    state = model.state_dict()
    # safetensors wants contiguous tensors that share no storage
    tensors = {n: state[n].detach().to("cpu").contiguous().clone() for n in names}
    shapes_sha, fingerprint, n_frozen = base_fingerprint(model, names)
    from .. import __version__ as version

    meta = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "pointclora_version": version,
        "peft_config": config.to_dict(),
        "base_model": {
            "variant": getattr(model, "variant", None),
            "class": type(model).__name__,
            "constructor": _constructor_info(model),
            "shapes_sha256": shapes_sha,
            "fingerprint": fingerprint,
            "num_frozen_tensors": n_frozen,
        },
        "tensors": names,
    }
    directory = os.fspath(directory)
    os.makedirs(directory, exist_ok=True)
    # weights first, config last: a folder with a config always has its weights (both writes are atomic)
    atomic_write_bytes(save(tensors, metadata={"format": FORMAT}), os.path.join(directory, ADAPTER_WEIGHTS))
    atomic_write_text(json.dumps(meta, indent=2), os.path.join(directory, ADAPTER_CONFIG))
    return directory


def read_adapter_config(directory: Union[str, os.PathLike]) -> Dict[str, Any]:
    """The parsed ``adapter_config.json`` (checked to be ours)."""
    path = os.path.join(os.fspath(directory), ADAPTER_CONFIG)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"no {ADAPTER_CONFIG} in {os.fspath(directory)!r}; is this an adapter directory?")
    with open(path) as f:
        meta = json.load(f)
    if meta.get("format") != FORMAT:
        raise AdapterMismatchError(f"{path} is not a PointCLoRA adapter config (format={meta.get('format')!r})")
    if int(meta.get("format_version", 0)) > FORMAT_VERSION:
        raise AdapterMismatchError(
            f"{path} has format_version {meta['format_version']}; this pointclora reads up to {FORMAT_VERSION}"
        )
    return meta


def load_adapter(
    model: nn.Module,
    directory: Union[str, os.PathLike],
    allow_fingerprint_mismatch: bool = False,
    adapter_name: Optional[str] = None,
) -> nn.Module:
    """Load an adapter saved by :func:`save_adapter` into ``model`` (injecting its config first if needed).

    With ``adapter_name`` the adapter is loaded *beside* those the model holds, peft-style (one frozen backbone,
    ``set_adapter`` switches; see :mod:`pointclora.peft.multi`).

    ``model`` must be the same backbone variant and architecture, carrying the same pre-trained weights as when the
    adapter was saved. With ``allow_fingerprint_mismatch=True`` an adapter trained on another checkpoint of the same
    shape loads with a warning. Raises :class:`AdapterMismatchError` naming what differs (a model this call injected
    is then restored to its plain form). Returns ``model``.
    """
    if adapter_name is not None:
        from .multi import load_named_adapter

        return load_named_adapter(model, directory, adapter_name, allow_fingerprint_mismatch)
    meta = read_adapter_config(directory)
    config = peft_config_from_dict(meta["peft_config"])
    base = meta.get("base_model", {})
    saved_variant, variant = base.get("variant"), getattr(model, "variant", None)
    if saved_variant is not None and variant is not None and saved_variant != variant:
        raise AdapterMismatchError(
            f"adapter in {os.fspath(directory)!r} was made for backbone {saved_variant!r}, model is {variant!r}"
        )
    current = getattr(model, "peft_config", None)
    if current is None:
        inject_adapters(model, config)
        try:
            return _load_into(model, directory, base, allow_fingerprint_mismatch)
        except Exception:
            # leave the caller's model as it came: the fresh adapters are zero updates, so this is exact
            merge_and_unload(model)
            raise
    if current.to_dict() != config.to_dict():
        raise AdapterMismatchError(
            f"model already carries adapters {current.to_dict()} that differ from the file's {config.to_dict()}"
        )
    return _load_into(model, directory, base, allow_fingerprint_mismatch)


def _load_into(model: nn.Module, directory: Any, base: Dict[str, Any], allow_fingerprint_mismatch: bool) -> nn.Module:
    from safetensors.torch import load_file

    if any(layer.merged for layer in adapter_layers(model)):
        raise AdapterMismatchError("model's adapters are merged; unmerge_adapters(model) before loading another")

    tensors = load_file(os.path.join(os.fspath(directory), ADAPTER_WEIGHTS))
    state = model.state_dict()
    expected = adapter_state_names(model)
    # tensors saved with include= are not part of the frozen base the file was fingerprinted against
    saved = [n for n in state if n in set(expected) | set(tensors)]
    shapes_sha, fingerprint, _ = base_fingerprint(model, saved)
    if base.get("shapes_sha256") not in (None, shapes_sha):
        raise AdapterMismatchError(
            f"adapter in {os.fspath(directory)!r} was made for a backbone of another architecture (the names/shapes of "
            f"its frozen tensors differ; saved for {base.get('variant')!r} {base.get('constructor')})"
        )
    missing = [n for n in expected if n not in tensors]
    unexpected = [n for n in tensors if n not in state]
    wrong = [
        (n, tuple(t.shape), tuple(state[n].shape))
        for n, t in tensors.items()
        if n in state and t.shape != state[n].shape
    ]
    if missing or unexpected or wrong:
        parts = []
        if wrong:
            parts.append("shape mismatch " + "; ".join(f"{n}: file {a} vs model {b}" for n, a, b in wrong[:5]))
        if missing:
            parts.append(f"missing from the file: {missing[:5]}{' ...' if len(missing) > 5 else ''}")
        if unexpected:
            parts.append(f"not in the model: {unexpected[:5]}{' ...' if len(unexpected) > 5 else ''}")
        raise AdapterMismatchError(
            f"adapter in {os.fspath(directory)!r} does not fit this model ({base.get('variant')!r}, "
            f"{base.get('constructor')}): " + " | ".join(parts)
        )
    if base.get("fingerprint") not in (None, fingerprint):
        message = (
            f"adapter in {os.fspath(directory)!r} was trained on different pre-trained weights than this model carries "
            f"(base fingerprint {base.get('fingerprint', '')[:12]} vs {fingerprint[:12]})"
        )
        if not allow_fingerprint_mismatch:
            raise AdapterMismatchError(
                message + "; load the same checkpoint first, or pass allow_fingerprint_mismatch=True to load anyway"
            )
        warnings.warn(message + "; loading anyway (allow_fingerprint_mismatch=True)", stacklevel=3)
    with torch.no_grad():
        for name, tensor in tensors.items():
            state[name].copy_(tensor.to(state[name].dtype))
    return model
