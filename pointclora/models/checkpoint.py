"""Loading official and our own checkpoints into the models, safely.

Formats understood (after ``torch.load(weights_only=True)``; a file that needs arbitrary pickled objects is refused):
- Point-MAE ``pretrain.pth``: ``{'base_model': {'module.MAE_encoder.encoder...': ...}}`` (DataParallel ``module.``);
- Point-MAE fine-tuned ``ckpt-best.pth``: ``{'base_model': {'module.encoder...', 'module.cls_head_finetune...'}}``;
- Point-BERT: ``transformer_q.*`` (the MoCo query encoder; ``transformer_q.cls_head*`` dropped);
- the same layout under other prefixes: ACT's ``ACT_encoder.``, or any ``prefix=`` the caller names;
- DDP/DataParallel ``module.`` prefixes; ``model``/``state_dict``/``base_model`` containers;
- our own checkpoints (``{'model': state_dict, 'config': ..., 'version': ...}``) and plain state dicts.
Point-MAE nests blocks as ``blocks.blocks.{i}``; ours are ``blocks.{i}``; :func:`convert_state_dict` renames them and
:func:`to_point_mae_layout` writes ours back in the official layout.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
from typing import Any, Dict, List, Mapping, NamedTuple, Optional

import torch
from torch import nn

__all__ = [
    "CheckpointError",
    "LoadResult",
    "safe_torch_load",
    "extract_state_dict",
    "convert_state_dict",
    "load_pretrained",
    "to_point_mae_layout",
]

logger = logging.getLogger(__name__)

#: Prefixes under which the encoder lives in the released pre-training checkpoints, in priority order.
KNOWN_ENCODER_PREFIXES = ("MAE_encoder.", "transformer_q.", "ACT_encoder.", "base_model.")
#: Keys under a known prefix that are not part of the fine-tuning model (Point-BERT's pre-training head).
_DROPPED_UNDER_PREFIX = {"transformer_q.": ("cls_head",)}
#: Groups of the Point-BERT file that belong to other networks entirely (momentum encoder, dVAE, MoCo queue).
_FOREIGN_GROUPS = ("transformer_k.", "dvae.", "queue", "queue_ptr")


class CheckpointError(RuntimeError):
    """A checkpoint could not be read or does not fit the model."""


class LoadResult(NamedTuple):
    missing_keys: List[str]
    unexpected_keys: List[str]
    loaded_keys: List[str]


def _file_kind(path: str) -> str:
    """What a file looks like from its first bytes: ``"zip"`` (torch.save), ``"pickle"`` (legacy torch.save or a
    plain pickle) or a description of something that is no checkpoint at all."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError as err:
        return f"unreadable ({err})"
    if not head:
        return "an empty file (0 bytes)"
    if head.startswith(b"PK\x03\x04"):
        return "zip"
    if head[:1] == b"\x80" and 2 <= head[1] <= 5:
        return "pickle"
    if head.startswith(b"\x89HDF"):
        return "an HDF5 file"
    if head.startswith(b"\x93NUMPY"):
        return "a NumPy .npy array"
    if head.startswith(b"\x1f\x8b"):
        return "a gzip-compressed file"
    if len(head) >= 9 and head[8:9] == b"{":
        return "a safetensors file (load it with safetensors.torch.load_file)"
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError:
        return f"binary data of an unknown format (first bytes {head[:8].hex(' ')})"
    if text.lstrip().startswith(("<!DOCTYPE", "<html", "<HTML")):
        return "an HTML page (a download that saved an error or login page?)"
    return f"a text file (starts with {text[:16]!r})"


def safe_torch_load(path: str, map_location: Any = "cpu") -> Any:
    """``torch.load(path, weights_only=True)`` with errors that say what went wrong and never run pickled code.

    A file that is no ``torch.save`` output at all (text, HTML, HDF5, truncated) is reported as such, naming what it
    looks like; only a real checkpoint that needs arbitrary Python objects is refused as "pickled Python objects".
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    kind = _file_kind(path)
    if kind not in ("zip", "pickle"):
        raise CheckpointError(
            f"{path} is not a PyTorch checkpoint: it is {kind}. Expected a file written by torch.save (a zip "
            "archive, or the legacy pickle format): check the path and that the download completed"
        )
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        if "Unsupported global" in str(err) or "GLOBAL" in str(err):
            raise CheckpointError(
                f"refusing to load {path}: it contains pickled Python objects that are not plain tensors/containers "
                f"(torch.load(weights_only=True) said: {_global_line(str(err)) or first}). Loading it fully would "
                "execute arbitrary code from the file. If you trust it, re-save just its state_dict with "
                "torch.save({'model': sd}, out) in an environment where you accept that risk."
            ) from None
        raise CheckpointError(
            f"cannot read checkpoint {path}: it looks like a {'torch.save zip archive' if kind == 'zip' else 'pickle'} "
            f"but does not load ({first}); the file may be truncated or corrupt"
        ) from None
    except Exception as err:  # noqa: BLE001 - torch raises RuntimeError, KeyError, EOFError, ... for damaged files
        raise CheckpointError(
            f"cannot read checkpoint {path}: {type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''} "
            "(the file may be truncated or corrupt)"
        ) from None


def _global_line(message: str) -> str:
    """The line of torch's weights-only error that names the refused global."""
    for line in message.splitlines():
        if "Unsupported global" in line or "GLOBAL" in line:
            return line.strip()
    return ""


def extract_state_dict(obj: Any, source: str = "checkpoint") -> Dict[str, torch.Tensor]:
    """Find the state dict inside a loaded checkpoint object (``model`` / ``base_model`` / ``state_dict`` / plain)."""
    if isinstance(obj, Mapping):
        for key in ("model", "base_model", "state_dict", "model_state_dict"):
            inner = obj.get(key)
            if isinstance(inner, Mapping) and any(isinstance(v, torch.Tensor) for v in inner.values()):
                return dict(inner)
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            return dict(obj)
    raise CheckpointError(
        f"{source}: no state dict found; expected a dict of tensors or a dict with a 'model', 'base_model' or "
        f"'state_dict' entry, got {type(obj).__name__}"
        + (f" with keys {sorted(obj)[:8]}" if isinstance(obj, Mapping) else "")
    )


def _strip_module(key: str) -> str:
    # DataParallel/DDP wrap every key; Point-MAE's loader even strips inner occurrences (str.replace).
    while key.startswith("module."):
        key = key[len("module.") :]
    return key


def convert_state_dict(state_dict: Mapping[str, torch.Tensor], prefix: Optional[str] = None) -> Dict[str, torch.Tensor]:
    """Map a foreign state dict onto our key names.

    Strips ``module.``; if ``prefix`` is given (or one of :data:`KNOWN_ENCODER_PREFIXES` is present) keys under it lose
    the prefix and keys of foreign networks (momentum encoder, dVAE, queue) are dropped, everything else stays (and is
    reported unexpected by :func:`load_pretrained`); ``blocks.blocks.{i}`` becomes ``blocks.{i}``.
    """
    sd = {_strip_module(k): v for k, v in state_dict.items()}
    prefixes = [prefix] if prefix else [p for p in KNOWN_ENCODER_PREFIXES if any(k.startswith(p) for k in sd)]
    if prefix and not prefix.endswith("."):
        prefixes = [prefix + "."]
    out: Dict[str, torch.Tensor] = {}
    chosen = prefixes[0] if prefixes else None
    for key, value in sd.items():
        if chosen and key.startswith(chosen):
            key = key[len(chosen) :]
            if any(key.startswith(d) for d in _DROPPED_UNDER_PREFIX.get(chosen, ())):
                continue
        elif chosen == "transformer_q." and key.startswith(_FOREIGN_GROUPS):
            continue
        out[re.sub(r"(^|\.)blocks\.blocks\.", r"\1blocks.", key)] = value
    return out


def load_pretrained(
    model: nn.Module,
    path_or_state: Any,
    prefix: Optional[str] = None,
    strict: bool = False,
    log: bool = True,
    source: Optional[str] = None,
) -> LoadResult:
    """Load a checkpoint (path or already-loaded object) into ``model``; see the module docstring for formats.

    ``source`` names an already-loaded object's file in messages (a caller that read the file once for other checks).

    Returns ``LoadResult(missing_keys, unexpected_keys, loaded_keys)`` and logs the first two.
    Raises :class:`CheckpointError` on any shape mismatch (naming the key and both shapes), when no key at all
    matched, or (``strict=True``) when anything is missing or unexpected.
    """
    if isinstance(path_or_state, str) and not os.path.exists(path_or_state):
        from .registry import pretrained_names, pretrained_path

        if path_or_state in pretrained_names():  # `--ckpt NAME`: a shipped backbone, loaded from package data
            path_or_state = str(pretrained_path(path_or_state))
    is_path = isinstance(path_or_state, (str, os.PathLike))
    obj = safe_torch_load(path_or_state) if is_path else path_or_state
    source = os.fspath(path_or_state) if is_path else (source or "state dict")
    incoming = convert_state_dict(extract_state_dict(obj, source), prefix=prefix)
    own = model.state_dict()
    mismatched = [
        f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
        for k, v in incoming.items()
        if k in own and tuple(v.shape) != tuple(own[k].shape)
    ]
    if mismatched:
        raise CheckpointError(
            f"{source}: {len(mismatched)} tensor(s) do not fit the model (wrong variant or num_classes?):\n  "
            + "\n  ".join(mismatched[:20])
        )
    loaded = [k for k in incoming if k in own]
    if not loaded:
        sample = ", ".join(sorted(incoming)[:5])
        raise CheckpointError(
            f"{source}: no key matches the model (first checkpoint keys after conversion: {sample}); pass prefix= "
            "if the encoder lives under another name"
        )
    model.load_state_dict({k: incoming[k] for k in loaded}, strict=False)
    # Computed here rather than taken from load_state_dict, which silently fills BN's num_batches_tracked.
    missing = sorted(k for k in own if k not in incoming)
    unexpected = sorted(k for k in incoming if k not in own)
    if strict and (missing or unexpected):
        raise CheckpointError(f"{source}: strict load failed; missing {missing[:10]}, unexpected {unexpected[:10]}")
    if log:
        logger.info("loaded %d tensors from %s", len(loaded), source)
        if missing:
            logger.info("missing keys (%d): %s", len(missing), ", ".join(missing))
        if unexpected:
            logger.info("unexpected keys (%d): %s", len(unexpected), ", ".join(unexpected))
    return LoadResult(missing, unexpected, loaded)


def to_point_mae_layout(state_dict: Mapping[str, torch.Tensor], prefix: str = "module.MAE_encoder.") -> Dict[str, Any]:
    """Our encoder keys -> the official ``pretrain.pth`` layout ``{'base_model': {prefix + 'blocks.blocks.i...'}}``."""
    converted = {}
    for key, value in state_dict.items():
        converted[prefix + re.sub(r"^blocks\.(\d+)\.", r"blocks.blocks.\1.", key)] = value
    return {"base_model": converted}
