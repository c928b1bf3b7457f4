"""PPT (Positional Prompt Tuning, zsc000722/PPT), ``--peft ppt``.

Reproduces ``models/PPT.py`` (``PointTransformer``, ``TransformerEncoder``, ``Block``) and the trainable filter of
``tools/runner_finetune.py`` (``type: pos``) of zsc000722/PPT @ 8f87fb8 (written from reading, not copied):

- a **second tokenization** of the same cloud (FPS ``prompt_num_group`` centres, kNN ``prompt_group_size`` points)
  through the *shared* mini-PointNet and position MLP; these "positional prompt" tokens are appended after the patch
  tokens (the sequence is 1 + G + E);
- before every block, once positions are added: ``patch += prompt_mlp(patch)`` and ``extra +=
  prompt_pos_mlp(extra)``; inside every block ``prompt_all_mlp`` of the residual stream after attention is added
  beside the MLP branch (outside its drop-path). The three bottleneck MLPs (C -> 256 -> C, GELU, truncated-normal
  init) are shared by all blocks;
- the head reads ``[cls, mean(patch tokens), mean(extra tokens)]`` (3C) and uses GELU in place of ReLU;
- trained (the official filter: names with ``cls``, ``prompt``, ``first_conv`` or ``pos_embed``): the three MLPs, the
  head, ``cls_token``/``cls_pos``, the position MLP and the first half of the mini-PointNet (``encoder.first_conv``,
  its BatchNorm statistics too).

Per-dataset official values: ``prompt_num_group`` 128 on ScanObjectNN (2,048 points), 64 on ModelNet40 (1,024);
``prompt_group_size`` 32; the backbone's ``drop_path_rate`` 0.3. With ``prompt_num_group`` equal to the backbone's
groups the second tokenization picks the same centres (FPS is deterministic), so the extra tokens start as copies of
the patch tokens and differ through ``prompt_pos_mlp`` only, as in the official code.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, List, Tuple

import torch
from torch import nn

from ..models.extensions import BackboneExtension, BlockExtension
from ..models.heads import ClassificationHead
from ..models.tokenizer import PointGrouper
from .config import PeftConfig, PeftConfigError, _check_int
from .extension import ExtensionMethod
from .registry import model_train_modules, register_peft_method

__all__ = ["PPTConfig", "PPTPrompts", "PPTBlock", "PPTMethod"]

#: Hidden width of PPT's three prompt MLPs (hard-coded in the official ``TransformerEncoder``).
PROMPT_HIDDEN = 256


@dataclass
class PPTConfig(PeftConfig):
    """PPT options (official config names; defaults of ``cfgs/pointmae_configs/finetune_scan_hardest.yaml``).

    Args:
        prompt_num_group: E, centres of the second tokenization (128 ScanObjectNN, 64 ModelNet40).
        prompt_group_size: points per extra patch (32).
        train_modules: trained beside the prompt MLPs (default: head, ``cls_token``, ``cls_pos``,
            ``encoder.first_conv``, ``pos_embed``, as the official filter).
    """

    method: ClassVar[str] = "ppt"
    prompt_num_group: int = 128
    prompt_group_size: int = 32

    def validate(self) -> None:
        super().validate()
        _check_int("prompt_num_group", self.prompt_num_group, 1)
        _check_int("prompt_group_size", self.prompt_group_size, 1)


def _bottleneck(dim: int) -> nn.Sequential:
    mlp = nn.Sequential(nn.Linear(dim, PROMPT_HIDDEN), nn.GELU(), nn.Linear(PROMPT_HIDDEN, dim))
    for layer in (mlp[0], mlp[2]):
        nn.init.trunc_normal_(layer.weight, std=0.02)
        nn.init.zeros_(layer.bias)
    return mlp


class PPTPrompts(BackboneExtension):
    """The extra tokens, the per-block prompt MLPs on patch / extra tokens, the shared in-block MLP, the head."""

    def __init__(self, dim: int, num_groups: int, prompt_num_group: int, prompt_group_size: int,
                 skip_near_origin: bool) -> None:  # fmt: skip
        super().__init__()
        self.num_groups = num_groups
        self.num_extra = prompt_num_group
        self.center_divider = PointGrouper(prompt_num_group, prompt_group_size, skip_near_origin=skip_near_origin)
        self.prompt_mlp = _bottleneck(dim)
        self.prompt_pos_mlp = _bottleneck(dim)
        self.prompt_all_mlp = _bottleneck(dim)

    def on_tokens(self, backbone, x, pos, centers, points):
        grouping = self.center_divider(points)
        extra = backbone.encoder(grouping.neighborhood)  # the shared mini-PointNet
        if backbone.reduce_dim is not None:
            extra = backbone.reduce_dim(extra)
        return torch.cat([x, extra], dim=1), torch.cat([pos, backbone.pos_embed(grouping.centers)], dim=1)

    def block_input(self, backbone: nn.Module, index: int, x: torch.Tensor) -> torch.Tensor:
        G, E = self.num_groups, self.num_extra
        patch, extra = x[:, 1 : 1 + G], x[:, -E:]
        parts = [x[:, :1], patch + self.prompt_mlp(patch), x[:, 1 + G : -E], extra + self.prompt_pos_mlp(extra)]
        return torch.cat(parts, dim=1)

    def pool(self, backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
        G, E = self.num_groups, self.num_extra
        return torch.cat([x[:, 0], x[:, 1 : 1 + G].mean(dim=1), x[:, -E:].mean(dim=1)], dim=-1)

    def pooled_dim(self, backbone: nn.Module) -> int:
        return 3 * backbone.trans_dim

    def make_head(self, backbone: nn.Module, in_dim: int, num_classes: int) -> nn.Module:
        head = ClassificationHead(in_dim, num_classes, backbone.head_hidden_dim, dropout=backbone.head_dropout,
                                  batch_norm=backbone.head_batch_norm, activation="gelu")  # fmt: skip
        for m in head.modules():  # the official model applies its truncated-normal init to the whole network
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)
        return head

    def patch_tokens(self, backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return x[:, : 1 + self.num_groups]


class PPTBlock(BlockExtension):
    """``out + prompt_all_mlp(x)``, ``x`` the stream after attention; the MLP is the one of :class:`PPTPrompts`
    (held by reference, not registered again: one set of tensors for all blocks)."""

    def __init__(self, shared: nn.Module) -> None:
        super().__init__()
        self._shared: List[nn.Module] = [shared]

    def block_output(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        return out + self._shared[0](x)


@register_peft_method
class PPTMethod(ExtensionMethod):
    """PPT: positional prompt tokens from a second tokenization + shared prompt MLPs (module docstring)."""

    name = "ppt"
    config_class = PPTConfig
    description = "PPT: positional prompts from a second tokenization, shared prompt MLPs"

    def default_train_modules(self, model: nn.Module) -> Tuple[str, ...]:
        return tuple(model_train_modules(model)) + ("encoder.first_conv", "pos_embed")

    def build(self, model: nn.Module) -> None:
        c = self.config
        if getattr(model, "cls_token", None) is None:
            raise PeftConfigError("ppt pools the cls token; the model has no cls_token")
        ref = model.cls_token
        ext = PPTPrompts(model.trans_dim, model.num_groups, c.prompt_num_group, c.prompt_group_size,
                         model.group_divider.skip_near_origin).to(device=ref.device, dtype=ref.dtype)  # fmt: skip
        model.add_extension("ppt", ext)
        for block in model.blocks:
            block.add_extension("ppt", PPTBlock(ext.prompt_all_mlp))

