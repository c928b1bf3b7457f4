"""DAPT (Dynamic Adapter meets Prompt Tuning, Zhou et al., CVPR'24), ``--peft dapt``.

Reproduces ``models/DAPT.py`` (``PointTransformer_DAPT``, ``Block``, ``Adapter``, ``init_tfts``/``apply_tfts``) of
LMD0311/DAPT @ 41aa0bc (written from reading, not copied). The backbone is frozen; trained are (the official
``part: dapt`` filter, names with ``cls``, ``tfts`` or ``Adapter``):

- **SSF scale-shift** vectors ``y * gamma + beta`` (gamma ~ N(1, .02), beta ~ N(0, .02)) on the outputs of every
  block's ``norm1``, ``attn.qkv`` (3C), ``attn.proj``, ``mlp.fc1`` (hidden), ``mlp.fc2`` and ``norm2``, on the patch
  tokens out of the mini-PointNet (``encoder_*``) and on the final norm (``norm_*``). They are applied by forward
  hooks on those layers, so the frozen layers keep their names and pre-trained weights load unchanged;
- a **dynamic adapter** per block, parallel to the MLP on the (scaled) ``norm2`` output:
  ``up(dropout(GELU(down(LN(h))))) * ReLU(scale(LN(h)))``, ``down`` C->rank Kaiming-uniform, ``up`` zero, ``scale``
  C->1; its output is added to the MLP's before drop-path;
- an **internal prompt** per block: ``mean_tokens(GELU(adapter output))``, scale-shifted (``prompt_*``), inserted
  after cls, so the sequence grows by one token per block;
- the head reads ``[cls, mean(prompts), max(patches)]`` (``class_token`` / ``prompt_token`` / ``patch_token``);
  positions are added **once**, before the first block (DAPT's encoder), not before every block as Point-MAE;
- the head, ``cls_token`` and ``cls_pos``.

Per-dataset official values (the defaults are PB_T50_RS's): ``rank`` 64 on ScanObjectNN, 72 on ModelNet40;
``drop_adapter_rate`` 0.2 PB_T50_RS, 0.5 OBJ_BG, 0 OBJ_ONLY and ModelNet40; ``prompt_token`` ``None`` on ModelNet40;
``patch_token`` ``None`` on OBJ_ONLY; the backbone's ``drop_path_rate`` 0.3 on PB_T50_RS / OBJ_BG.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import ClassVar, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..models.extensions import BackboneExtension, BlockExtension
from .config import PeftConfig, PeftConfigError, _check_float, _check_int
from .extension import ExtensionMethod
from .registry import register_peft_method

__all__ = ["DAPTConfig", "DynamicAdapter", "DAPTBlock", "DAPTTokens", "DAPTMethod"]


@dataclass
class DAPTConfig(PeftConfig):
    """DAPT options (official config names; defaults of ``cfgs/finetune_scan_hardest_dapt.yaml``).

    Args:
        rank: the adapter bottleneck (64 ScanObjectNN, 72 ModelNet40).
        drop_adapter_rate: dropout inside the adapter (0.2 PB_T50_RS, 0.5 OBJ_BG, 0 OBJ_ONLY / ModelNet40).
        class_token: ``"use"`` or ``"None"``: the cls token in the head's input.
        prompt_token: ``"mean"``, ``"max"`` or ``"None"``: how the internal prompts enter the head's input.
        patch_token: ``"max"`` or ``"None"``: the max over patch tokens in the head's input (the official
            ``"mean"`` branch reads an attribute that does not exist and crashes, so it is not offered).
        train_modules: trained beside the method's tensors (default: head, ``cls_token``, ``cls_pos``).
    """

    method: ClassVar[str] = "dapt"
    rank: int = 64
    drop_adapter_rate: float = 0.2
    class_token: str = "use"
    prompt_token: str = "mean"
    patch_token: str = "max"

    def validate(self) -> None:
        super().validate()
        _check_int("rank", self.rank, 1)
        self.drop_adapter_rate = _check_float("drop_adapter_rate", self.drop_adapter_rate, 0.0, 1.0)
        for key, allowed in (("class_token", ("use", "None")), ("prompt_token", ("mean", "max", "None")),
                             ("patch_token", ("max", "None"))):  # fmt: skip
            if getattr(self, key) not in allowed:
                raise PeftConfigError(f"{key} must be one of {', '.join(allowed)}, got {getattr(self, key)!r}")
        if (self.class_token, self.prompt_token, self.patch_token) == ("None", "None", "None"):
            raise PeftConfigError("class_token, prompt_token and patch_token are all 'None': the head reads nothing")


def _scale_shift(dim: int) -> Tuple[nn.Parameter, nn.Parameter]:
    """``[gamma, beta]``: gamma ~ N(1, .02), beta ~ N(0, .02) (DAPT's ``init_tfts``)."""
    gamma = nn.Parameter(torch.empty(dim))
    beta = nn.Parameter(torch.empty(dim))
    nn.init.normal_(gamma, mean=1.0, std=0.02)
    nn.init.normal_(beta, std=0.02)
    return gamma, beta


class _ScaleShifts(nn.Module):
    """Named scale-shift pairs ``<name>_gamma`` / ``<name>_beta`` (flat names, one per hooked layer)."""

    def add(self, name: str, dim: int) -> None:
        gamma, beta = _scale_shift(dim)
        self.register_parameter(f"{name}_gamma", gamma)
        self.register_parameter(f"{name}_beta", beta)

    def apply_to(self, name: str, y: torch.Tensor) -> torch.Tensor:
        """``y (..., D) * gamma + beta``."""
        return y * getattr(self, f"{name}_gamma") + getattr(self, f"{name}_beta")

    def hook(self, name: str, module: nn.Module, inputs, output: torch.Tensor) -> torch.Tensor:
        # a forward hook's return value replaces the layer's output (a bound method through functools.partial:
        # deep copies of the model re-bind it to the copy's parameters)
        return self.apply_to(name, output)


class DynamicAdapter(nn.Module):
    """``h (B, T, C) -> up(drop(GELU(down(LN(h))))) * ReLU(scale(LN(h)))`` (B, T, C); DAPT's ``Adapter`` ("in")."""

    def __init__(self, dim: int, rank: int, dropout: float) -> None:
        super().__init__()
        self.dropout = dropout
        self.adapter_layer_norm_before = nn.LayerNorm(dim)
        self.scale = nn.Linear(dim, 1)
        self.down_proj = nn.Linear(dim, rank)
        self.up_proj = nn.Linear(rank, dim)
        with torch.no_grad():
            nn.init.kaiming_uniform_(self.down_proj.weight, a=math.sqrt(5))
            nn.init.zeros_(self.down_proj.bias)
            nn.init.zeros_(self.up_proj.weight)
            nn.init.zeros_(self.up_proj.bias)
            nn.init.kaiming_uniform_(self.scale.weight, a=math.sqrt(5))
            nn.init.zeros_(self.scale.bias)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x = self.adapter_layer_norm_before(h)
        scale = F.relu(self.scale(x))
        down = F.dropout(F.gelu(self.down_proj(x)), p=self.dropout, training=self.training)
        return self.up_proj(down) * scale


class DAPTBlock(BlockExtension):
    """One block's DAPT tensors: the scale-shifts (hooked on the block's layers), the adapter, the prompt."""

    #: hooked layer (relative to the block) -> scale-shift name
    HOOKED: ClassVar[Dict[str, str]] = {"norm1": "norm1", "attn.qkv": "qkv", "attn.proj": "proj", "mlp.fc1": "fc1",
                                        "mlp.fc2": "fc2", "norm2": "norm2"}  # fmt: skip

    def __init__(self, block: nn.Module, rank: int, dropout: float) -> None:
        super().__init__()
        self.ssf = _ScaleShifts()
        for path, name in self.HOOKED.items():
            layer = block.get_submodule(path)
            width = layer.out_features if isinstance(layer, nn.Linear) else layer.normalized_shape[0]
            self.ssf.add(name, width)
        self.ssf.add("prompt", block.norm1.normalized_shape[0])
        self.adapter = DynamicAdapter(block.norm1.normalized_shape[0], rank, dropout)
        self._adapter_out: Optional[torch.Tensor] = None

    def attach(self, block: nn.Module) -> None:
        """Register the scale-shift hooks on ``block``'s layers (once, at injection)."""
        for path, name in self.HOOKED.items():
            block.get_submodule(path).register_forward_hook(functools.partial(self.ssf.hook, name))

    def mlp_branch(self, x: torch.Tensor, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        a = self.adapter(h)
        self._adapter_out = a
        return y + a

    def block_output(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        a, self._adapter_out = self._adapter_out, None
        prompt = self.ssf.apply_to("prompt", F.gelu(a).mean(dim=1, keepdim=True))
        return torch.cat([out[:, :1], prompt, out[:, 1:]], dim=1)


class DAPTTokens(BackboneExtension):
    """The sequence-level part: scale-shift of the patch tokens and positions added once; the head's pooling."""

    def __init__(self, dim: int, num_groups: int, class_token: str, prompt_token: str, patch_token: str) -> None:
        super().__init__()
        self.num_groups = num_groups
        self.class_token, self.prompt_token, self.patch_token = class_token, prompt_token, patch_token
        self.ssf = _ScaleShifts()
        self.ssf.add("encoder", dim)
        self.ssf.add("norm", dim)

    def on_tokens(self, backbone, x, pos, centers, points):
        x = torch.cat([x[:, :1], self.ssf.apply_to("encoder", x[:, 1:])], dim=1)
        return x + pos, None  # positions once, at the input (the blocks then add none)

    def pool(self, backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
        x = self.ssf.apply_to("norm", x)
        G = self.num_groups
        parts = []
        if self.class_token != "None":
            parts.append(x[:, 0])
        if self.prompt_token == "mean":
            parts.append(x[:, 1:-G].mean(dim=1))
        elif self.prompt_token == "max":
            parts.append(x[:, 1:-G].max(dim=1).values)
        if self.patch_token == "max":
            parts.append(x[:, -G:].max(dim=1).values)
        return torch.cat(parts, dim=-1)

    def pooled_dim(self, backbone: nn.Module) -> int:
        used = [self.class_token != "None", self.prompt_token != "None", self.patch_token != "None"]
        return backbone.trans_dim * sum(used)

    def patch_tokens(self, backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x[:, :1], x[:, -self.num_groups:]], dim=1)


@register_peft_method
class DAPTMethod(ExtensionMethod):
    """DAPT: dynamic adapters + internal prompts + SSF scale-shifts on a frozen backbone (module docstring)."""

    name = "dapt"
    config_class = DAPTConfig
    description = "DAPT (CVPR'24): dynamic adapters, internal prompts, SSF scale-shifts"

    def build(self, model: nn.Module) -> None:
        c = self.config
        if getattr(model, "cls_token", None) is None:
            raise PeftConfigError("dapt inserts its prompts after the cls token; the model has no cls_token")
        ref = model.cls_token
        model.add_extension("dapt", DAPTTokens(model.trans_dim, model.num_groups, c.class_token, c.prompt_token,
                                               c.patch_token).to(device=ref.device, dtype=ref.dtype))  # fmt: skip
        for block in model.blocks:
            ext = DAPTBlock(block, c.rank, c.drop_adapter_rate).to(device=ref.device, dtype=ref.dtype)
            block.add_extension("dapt", ext)
            ext.attach(block)
