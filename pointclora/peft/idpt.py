"""IDPT (Instance-aware Dynamic Prompt Tuning, Zha et al., ICCV'23), ``--peft idpt``.

Reproduces ``models/Point_MAE.py`` (``PointTransformer``, ``TransformerPromptEncoderLayerI``) and ``models/dgcnn.py``
(``DGCNNView``) of zyh16143998882/ICCV23-IDPT @ bf152f2 (written from reading, not copied):

- the backbone is frozen; a DGCNN **prompt module** runs before block ``prompt_layer`` (11 = the last) on the patch
  tokens that block receives (the output of the block before, not normed): three EdgeConv layers (kNN with ``k`` = 20
  in *feature* space, ``Conv2d(2C -> C, no bias)`` + BN2d + LeakyReLU(0.2), max over the neighbours), ``Conv1d(3C ->
  C, no bias)`` + BN1d + LeakyReLU on the concatenation, max over tokens: **one instance-aware prompt token**,
  inserted after cls with its own position embedding ``prompt_pos``;
- the head reads ``cls_type`` ("all": ``[cls, prompt, max(patches)]``, 3C wide);
- trained: the prompt module, the head, ``cls_token``, ``cls_pos`` (the official ``only_new`` filter: names with
  ``cls``).

Quirk (option ``train_prompt_pos``, default false = official): ``prompt_pos`` does not match the official filter and
stays at its truncated-normal initialisation; it is saved with the adapter so a reload is the same model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, List, Optional

import torch
from torch import nn

from ..models.extensions import BackboneExtension
from .config import PeftConfig, PeftConfigError, _check_int
from .extension import ExtensionMethod
from .registry import register_peft_method

__all__ = ["IDPTConfig", "DGCNNPrompt", "IDPTPrompt", "IDPTMethod", "CLS_TYPES"]

#: ``cls_type`` -> the tokens the head reads (official names).
CLS_TYPES = ("all", "promptonly", "promptcls", "pointcls")


@dataclass
class IDPTConfig(PeftConfig):
    """IDPT options (official config names and defaults, ``cfgs/finetune_*_idpt.yaml``).

    Args:
        prompt_layer: the prompt token is made from, and inserted before, this block (11 for ViT-S's 12 blocks).
        prompt_module: the prompt generator; only the published ``dgcnn`` is ported.
        cls_type: the head's input: ``all`` [cls, prompt, max], ``promptcls`` [cls, prompt], ``pointcls``
            [cls, max], ``promptonly`` [prompt].
        k: neighbours of the DGCNN's feature-space kNN (official ``Args.k = 20``).
        train_prompt_pos: train ``prompt_pos`` (false reproduces the official filter, which leaves it at its init).
        train_modules: trained beside the prompt module (default: head, ``cls_token``, ``cls_pos``).
    """

    method: ClassVar[str] = "idpt"
    prompt_layer: int = 11
    prompt_module: str = "dgcnn"
    cls_type: str = "all"
    k: int = 20
    train_prompt_pos: bool = False

    def validate(self) -> None:
        super().validate()
        _check_int("prompt_layer", self.prompt_layer, 0)
        _check_int("k", self.k, 1)
        if self.prompt_module != "dgcnn":
            raise PeftConfigError(f"prompt_module must be 'dgcnn' (the published IDPT), got {self.prompt_module!r}")
        if self.cls_type not in CLS_TYPES:
            raise PeftConfigError(f"cls_type must be one of {', '.join(CLS_TYPES)}, got {self.cls_type!r}")
        if not isinstance(self.train_prompt_pos, bool):
            raise PeftConfigError(f"train_prompt_pos must be true or false, got {self.train_prompt_pos!r}")


def _edge_features(x: torch.Tensor, k: int) -> torch.Tensor:
    """EdgeConv input: ``x (B, C, T)`` -> ``(B, 2C, T, k)`` = ``[x_j - x_i, x_i]`` over the k nearest ``j`` of each
    ``i`` in feature space (``i`` itself included, as its distance is 0)."""
    B, C, T = x.shape
    if k > T:
        raise ValueError(f"IDPT's kNN needs k <= tokens, got k={k} with {T} tokens; lower k")
    # -|x_i|^2 + 2 x_i.x_j - |x_j|^2 in this order: the same rounding as the official kernel, so near-ties pick the
    # same neighbours and the logits agree to float precision
    inner = -2 * torch.matmul(x.transpose(2, 1), x)
    sq = (x**2).sum(dim=1, keepdim=True)
    neg_dist = -sq - inner - sq.transpose(2, 1)  # (B, T, T)
    idx = neg_dist.topk(k=k, dim=-1)[1]  # (B, T, k)
    xt = x.transpose(2, 1)  # (B, T, C)
    # advanced indexing, not gather on a (B, T, T, C) expansion: its backward would materialise that dense tensor
    neighbours = xt[torch.arange(B, device=x.device).view(B, 1, 1), idx]  # (B, T, k, C)
    centre = xt.unsqueeze(2).expand(B, T, k, C)
    return torch.cat([neighbours - centre, centre], dim=3).permute(0, 3, 1, 2).contiguous()


def _conv_bn_act(conv: nn.Module, channels: int, bn: type) -> nn.Sequential:
    return nn.Sequential(conv, bn(channels), nn.LeakyReLU(negative_slope=0.2))


class DGCNNPrompt(nn.Module):
    """``tokens (B, T, C)`` -> ``prompt (B, 1, C)``: three EdgeConvs, a 1x1 Conv on their concatenation, max over T.

    Submodule names follow the official ``DGCNNView`` (``conv1.0`` conv, ``conv1.1`` BN, ...), so its state copies
    across by prefix. Weights keep PyTorch's default init, as the official model does when a checkpoint is loaded.
    """

    def __init__(self, dim: int, k: int = 20) -> None:
        super().__init__()
        self.k = k
        self.conv1 = _conv_bn_act(nn.Conv2d(2 * dim, dim, kernel_size=1, bias=False), dim, nn.BatchNorm2d)
        self.conv2 = _conv_bn_act(nn.Conv2d(2 * dim, dim, kernel_size=1, bias=False), dim, nn.BatchNorm2d)
        self.conv3 = _conv_bn_act(nn.Conv2d(2 * dim, dim, kernel_size=1, bias=False), dim, nn.BatchNorm2d)
        self.conv5 = _conv_bn_act(nn.Conv1d(3 * dim, dim, kernel_size=1, bias=False), dim, nn.BatchNorm1d)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = tokens.transpose(1, 2)  # (B, C, T)
        feats = []
        for conv in (self.conv1, self.conv2, self.conv3):
            x = conv(_edge_features(x, self.k)).max(dim=-1).values  # (B, C, T)
            feats.append(x)
        x = self.conv5(torch.cat(feats, dim=1))  # (B, C, T)
        return x.max(dim=-1).values.unsqueeze(1)


class IDPTPrompt(BackboneExtension):
    """Inserts the instance-aware prompt token after cls before block ``prompt_layer``; pools per ``cls_type``."""

    def __init__(self, dim: int, num_groups: int, prompt_layer: int, cls_type: str, k: int) -> None:
        super().__init__()
        self.prompt_layer = prompt_layer
        self.cls_type = cls_type
        self.num_groups = num_groups
        self.prompt_module = DGCNNPrompt(dim, k)
        self.prompt_pos = nn.Parameter(torch.empty(1, 1, dim))
        nn.init.trunc_normal_(self.prompt_pos, std=0.02)

    def before_block(self, backbone: nn.Module, index: int, x: torch.Tensor, pos: Optional[torch.Tensor]):
        if index != self.prompt_layer:
            return x, pos
        B = x.shape[0]
        prompt = self.prompt_module(x[:, 1:])  # the patch tokens the block would receive
        x = torch.cat([x[:, :1], prompt, x[:, 1:]], dim=1)
        if pos is not None:
            pos = torch.cat([pos[:, :1], self.prompt_pos.expand(B, -1, -1), pos[:, 1:]], dim=1)
        return x, pos

    def pool(self, backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
        cls, prompt, patches = x[:, 0], x[:, 1], x[:, 2:].max(dim=1).values
        parts = {"all": (cls, prompt, patches), "promptonly": (prompt,), "promptcls": (cls, prompt),
                 "pointcls": (cls, patches)}[self.cls_type]  # fmt: skip
        return torch.cat(parts, dim=-1)

    def pooled_dim(self, backbone: nn.Module) -> int:
        return backbone.trans_dim * {"all": 3, "promptonly": 1, "promptcls": 2, "pointcls": 2}[self.cls_type]

    def patch_tokens(self, backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x[:, :1], x[:, 2:]], dim=1) if x.shape[1] == self.num_groups + 2 else x


@register_peft_method
class IDPTMethod(ExtensionMethod):
    """IDPT: a DGCNN prompt token before the last block; the backbone frozen (see the module docstring)."""

    name = "idpt"
    config_class = IDPTConfig
    description = "IDPT (ICCV'23): instance-aware DGCNN prompt token before the last block"

    def build(self, model: nn.Module) -> None:
        config = self.config
        if getattr(model, "cls_token", None) is None:
            raise PeftConfigError("idpt inserts its prompt after the cls token; the model has no cls_token")
        if config.prompt_layer >= len(model.blocks):
            raise PeftConfigError(
                f"prompt_layer must be < the model's {len(model.blocks)} blocks, got {config.prompt_layer}"
            )
        ext = IDPTPrompt(model.trans_dim, model.num_groups, config.prompt_layer, config.cls_type, config.k)
        ref = model.cls_token
        model.add_extension("idpt", ext.to(device=ref.device, dtype=ref.dtype))

    def apply(self, model: nn.Module) -> List[str]:
        trained = super().apply(model)
        if not self.config.train_prompt_pos:
            model.extensions.idpt.prompt_pos.requires_grad_(False)  # the official filter misses it (quirk)
        return trained
