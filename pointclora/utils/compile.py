"""Opt-in ``torch.compile`` for training (``train.compile``), in place, so names and checkpoints do not change."""

from __future__ import annotations

import shutil
import warnings

import torch
from torch import nn

__all__ = ["maybe_compile", "compile_unavailable_reason"]


def compile_unavailable_reason(device: str = "cpu") -> str:
    """Why ``torch.compile`` cannot run here (empty string when it can): no ``torch.compile``, or on the CPU no C++
    compiler for inductor's generated kernels."""
    if not hasattr(torch, "compile") or not hasattr(nn.Module, "compile"):
        return f"torch {torch.__version__} has no torch.compile / nn.Module.compile (needs torch >= 2.2)"
    if torch.device(device).type == "cpu" and not any(shutil.which(c) for c in ("c++", "g++", "clang++")):
        return "no C++ compiler (c++, g++ or clang++) on PATH for inductor's CPU kernels"
    return ""


def maybe_compile(
    model: nn.Module, enabled: bool, device: str = "cpu", mode: str = "default", backend: str = "inductor"
) -> nn.Module:
    """Compile ``model`` in place with ``nn.Module.compile`` when ``enabled``; returns the same object.

    In place (not ``torch.compile(model)``, which wraps it) keeps ``state_dict()`` keys, ``isinstance`` checks and
    adapter lookups unchanged, so checkpointing and ``save_adapter`` need nothing special. The first steps are slow
    (tracing and code generation); shapes are compiled as static. When compiling is impossible here it warns and
    returns the model uncompiled, naming the reason. ``backend="aot_eager"`` traces without generating code (tests).
    """
    if not enabled:
        return model
    reason = compile_unavailable_reason(device) if backend == "inductor" else ""
    if reason:
        warnings.warn(f"train.compile is on but {reason}; training uncompiled", RuntimeWarning, stacklevel=2)
        return model
    model.compile(backend=backend, mode=mode if backend == "inductor" else None, dynamic=False)
    return model
