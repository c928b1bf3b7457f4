"""PointLoRA (Wang et al., CVPR'25), ``--peft pointlora``.

Reproduces ``models/PointLoRA.py`` (``PointTransformer_PointLoRA``, ``TransformerEncoder``, ``MaskPredictor``),
``utils/lora.py`` (``LoRALinear``), ``inject_pointlora2pt`` and the ``part: pointlora`` filter of ``tools/builder.py``
of songw-zju/PointLoRA @ 82719f0 (written from reading, not copied):

- **LoRA** (rank ``r`` = 8; A Kaiming-uniform, B zero) on ``attn.qkv`` and ``attn.proj`` of every block, summed with
  a **shared prompt MLP** (qkv: C -> 32 -> 3C, proj: C -> 32 -> C, one each for all blocks) times a scalar
  ``prompt_weight`` (initialised to 1): ``y = W x + B A x + prompt_weight * mlp(x)``;
- **multi-scale token selection**: two extra tokenizations of the cloud (``num_group_scales`` x
  ``group_size_scales`` = 128 x 32 and 64 x 64) through the shared mini-PointNet and position MLP; a
  ``MaskPredictor`` (C -> C/2 -> 1, ReLU, sigmoid) scores their tokens and the top ``topk_scales`` (32 and 8) of each
  are appended; ``mask_loss = mean(p log p + (1-p) log(1-p))`` (+ 0.25 x the same for the second scale) enters the
  loss with ``mask_loss_weight`` 0.004 (an auxiliary loss, logged as ``train/mask_loss``);
- ``prompt_mlp`` on the patch tokens and ``prompt_pos_mlp`` on the selected tokens (C -> 32 -> C) added before every
  block once positions are added, as PPT; the head reads ``[cls, max(all other tokens)]`` (Point-MAE's);
- trained (names with ``cls``, ``prompt``, ``first_conv``, ``pos_embed`` or ``lora_``): LoRA factors, the four prompt
  MLPs, the mask predictor, ``encoder.first_conv``, ``pos_embed``, the head, ``cls_token``/``cls_pos``.

Quirks, each under an option defaulting to the official behaviour:

- ``train_prompt_weight`` (false): the scalar is named ``...attn.qkv.weight`` in the official code, matches no
  keyword of the filter and stays at 1;
- ``official_slices`` (true): the official encoder hard-codes the patch-token slice as ``x[:, 1:129]`` and the
  selected-token slice as the last 40, right only for 128 groups (its one shipped config, PB_T50_RS); false uses the
  model's groups and the configured top-k;
- the LoRA ``scaling = alpha / r`` is computed and never used by the official forward; at its ``alpha = r = 8`` it
  is 1, so no option is needed (the branch is unscaled here too).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..models.extensions import BackboneExtension
from ..models.tokenizer import PointGrouper
from .config import PeftConfig, PeftConfigError, _check_float, _check_int
from .extension import ExtensionMethod
from .registry import AuxLoss, model_train_modules, register_peft_method, set_submodule

__all__ = ["PointLoRAConfig", "PointLoRALinear", "MaskPredictor", "PointLoRATokens", "PointLoRAMethod"]

#: Hidden width of PointLoRA's prompt MLPs (hard-coded in the official ``TransformerEncoder``).
PROMPT_HIDDEN = 32
#: The official encoder's hard-coded slices: patch tokens ``x[:, 1:1 + 128]``, selected tokens the last 40.
OFFICIAL_PATCH_SLICE, OFFICIAL_SELECTED = 128, 40


def _pair(name: str, value) -> Tuple[int, int]:
    try:
        out = tuple(int(v) for v in value)
    except TypeError:
        raise PeftConfigError(f"{name} must be a list of two integers, got {value!r}") from None
    if len(out) != 2 or min(out) < 1:
        raise PeftConfigError(f"{name} must be two integers >= 1 (one per scale), got {list(out)}")
    return out


@dataclass
class PointLoRAConfig(PeftConfig):
    """PointLoRA options (defaults of ``cfgs/finetune_scan_hardest_pointlora.yaml`` and the hard-coded values).

    Args:
        r: LoRA rank (the runner's ``gamma = 8``).
        num_group_scales / group_size_scales / topk_scales: the two extra tokenizations and how many of their tokens
            are kept ((128, 64), (32, 64), (32, 8)).
        mask_loss_weight: weight of the mask predictor's entropy term in the loss (0.004).
        train_prompt_weight: train the scalar on the prompt-MLP branch (false = official: it stays 1).
        official_slices: reproduce the hard-coded token slices (see the module docstring).
        train_modules: trained beside the method's tensors (default: head, ``cls_token``, ``cls_pos``,
            ``encoder.first_conv``, ``pos_embed``).
    """

    method: ClassVar[str] = "pointlora"
    r: int = 8
    num_group_scales: Tuple[int, int] = (128, 64)
    group_size_scales: Tuple[int, int] = (32, 64)
    topk_scales: Tuple[int, int] = (32, 8)
    mask_loss_weight: float = 0.004
    train_prompt_weight: bool = False
    official_slices: bool = True

    def validate(self) -> None:
        super().validate()
        _check_int("r", self.r, 1)
        self.num_group_scales = _pair("num_group_scales", self.num_group_scales)
        self.group_size_scales = _pair("group_size_scales", self.group_size_scales)
        self.topk_scales = _pair("topk_scales", self.topk_scales)
        for k, g in zip(self.topk_scales, self.num_group_scales):
            if k > g:
                raise PeftConfigError(f"topk_scales {list(self.topk_scales)} must not exceed num_group_scales "
                                      f"{list(self.num_group_scales)}")  # fmt: skip
        self.mask_loss_weight = _check_float("mask_loss_weight", self.mask_loss_weight, 0.0)
        for key in ("train_prompt_weight", "official_slices"):
            if not isinstance(getattr(self, key), bool):
                raise PeftConfigError(f"{key} must be true or false, got {getattr(self, key)!r}")


def _prompt_mlp(dim: int, out_dim: int) -> nn.Sequential:
    mlp = nn.Sequential(nn.Linear(dim, PROMPT_HIDDEN), nn.GELU(), nn.Linear(PROMPT_HIDDEN, out_dim))
    for layer in (mlp[0], mlp[2]):
        nn.init.trunc_normal_(layer.weight, std=0.02)
        nn.init.zeros_(layer.bias)
    return mlp


class PointLoRALinear(nn.Module):
    """``x (..., in) -> W x + b + B A x + prompt_weight * mlp(x)``; ``mlp`` is shared by all blocks (held by
    reference: its tensors live once, under the backbone's ``extensions.pointlora``). Not mergeable (the MLP is not
    linear)."""

    def __init__(self, base_layer: nn.Linear, r: int, shared_mlp: nn.Module) -> None:
        super().__init__()
        self.base_layer = base_layer
        self.in_features, self.out_features, self.r = base_layer.in_features, base_layer.out_features, r
        w = base_layer.weight
        self.lora_A = nn.Parameter(torch.empty(r, self.in_features, device=w.device, dtype=w.dtype))
        self.lora_B = nn.Parameter(torch.zeros(self.out_features, r, device=w.device, dtype=w.dtype))
        nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
        self.prompt_weight = nn.Parameter(torch.ones(1, device=w.device, dtype=w.dtype))
        self._shared: List[nn.Module] = [shared_mlp]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.linear(x, self.base_layer.weight, self.base_layer.bias)
        return out + (x @ self.lora_A.T @ self.lora_B.T + self.prompt_weight * self._shared[0](x))

    def adapter_flops_per_token(self) -> int:
        """LoRA's two products (the shared MLP's Linear layers are counted where they run)."""
        return self.r * (self.in_features + self.out_features)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, r={self.r}"


class MaskPredictor(nn.Module):
    """``tokens (B, T, C) -> p (B, T)``: sigmoid(fc2(ReLU(fc1(tokens)))), fc1 C -> C/2, fc2 C/2 -> 1."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, dim // 2)
        self.fc2 = nn.Linear(dim // 2, 1)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc2(F.relu(self.fc1(tokens))).squeeze(-1))


def _neg_entropy(p: torch.Tensor) -> torch.Tensor:
    return torch.mean(p * torch.log(p + 1e-6) + (1 - p) * torch.log(1 - p + 1e-6))


class PointLoRATokens(BackboneExtension):
    """Selected multi-scale tokens, the per-block prompt MLPs, the shared qkv / proj MLPs, the mask predictor."""

    def __init__(self, dim: int, num_groups: int, config: PointLoRAConfig, skip_near_origin: bool) -> None:
        super().__init__()
        self.num_groups = num_groups
        self.topk = config.topk_scales
        self.dividers = nn.ModuleList(PointGrouper(g, k, skip_near_origin=skip_near_origin)
                                      for g, k in zip(config.num_group_scales, config.group_size_scales))  # fmt: skip
        self.lora_mask_predictor = MaskPredictor(dim)
        self.prompt_mlp = _prompt_mlp(dim, dim)
        self.prompt_pos_mlp = _prompt_mlp(dim, dim)
        self.prompt_proj_mlp = _prompt_mlp(dim, dim)
        self.prompt_qkv_mlp = _prompt_mlp(dim, 3 * dim)
        if config.official_slices:
            self.patch_end, self.num_selected = 1 + OFFICIAL_PATCH_SLICE, OFFICIAL_SELECTED
        else:
            self.patch_end, self.num_selected = 1 + num_groups, sum(config.topk_scales)
        self.mask_loss: Optional[torch.Tensor] = None

    def on_tokens(self, backbone, x, pos, centers, points):
        tokens, positions, losses = [x], [pos], []
        for divider, k, w in zip(self.dividers, self.topk, (1.0, 0.25)):
            grouping = divider(points)
            t = backbone.encoder(grouping.neighborhood)
            if backbone.reduce_dim is not None:
                t = backbone.reduce_dim(t)
            p = backbone.pos_embed(grouping.centers)
            prob = self.lora_mask_predictor(t)  # (B, G_s)
            losses.append(w * _neg_entropy(prob))
            idx = prob.topk(k, dim=1)[1].unsqueeze(-1).expand(-1, -1, t.shape[-1])  # (B, k, C)
            tokens.append(torch.gather(t, 1, idx))
            positions.append(torch.gather(p, 1, idx))
        self.mask_loss = losses[0] + losses[1]
        return torch.cat(tokens, dim=1), torch.cat(positions, dim=1)

    def block_input(self, backbone: nn.Module, index: int, x: torch.Tensor) -> torch.Tensor:
        # sequential, as the official in-place updates (the two slices overlap when the hard-coded 128 > groups)
        e, n = self.patch_end, self.num_selected
        x = torch.cat([x[:, :1], x[:, 1:e] + self.prompt_mlp(x[:, 1:e]), x[:, e:]], dim=1)
        return torch.cat([x[:, :-n], x[:, -n:] + self.prompt_pos_mlp(x[:, -n:])], dim=1)

    def patch_tokens(self, backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return x[:, : 1 + self.num_groups]


@register_peft_method
class PointLoRAMethod(ExtensionMethod):
    """PointLoRA: LoRA + shared prompt MLPs on qkv / proj, multi-scale selected tokens (module docstring)."""

    name = "pointlora"
    config_class = PointLoRAConfig
    description = "PointLoRA (CVPR'25): LoRA + shared prompt MLPs, multi-scale token selection"

    def default_train_modules(self, model: nn.Module) -> Tuple[str, ...]:
        return tuple(model_train_modules(model)) + ("encoder.first_conv", "pos_embed")

    def build(self, model: nn.Module) -> None:
        c = self.config
        if getattr(model, "cls_token", None) is None:
            raise PeftConfigError("pointlora pools the cls token; the model has no cls_token")
        ref = model.cls_token
        ext = PointLoRATokens(model.trans_dim, model.num_groups, c, model.group_divider.skip_near_origin)
        model.add_extension("pointlora", ext.to(device=ref.device, dtype=ref.dtype))
        for block in model.blocks:
            attn = block.attn
            set_submodule(block, "attn.qkv", PointLoRALinear(attn.qkv, c.r, ext.prompt_qkv_mlp))
            set_submodule(block, "attn.proj", PointLoRALinear(attn.proj, c.r, ext.prompt_proj_mlp))

    def _lora_layers(self, model: nn.Module) -> List[PointLoRALinear]:
        return [m for m in model.modules() if isinstance(m, PointLoRALinear)]

    def adapter_named_parameters(self, model: nn.Module) -> List[Tuple[str, nn.Parameter]]:
        ids = {id(p) for layer in self._lora_layers(model) for p in (layer.lora_A, layer.lora_B, layer.prompt_weight)}
        ext = {id(p) for _, p in super().adapter_named_parameters(model)}
        return [(n, p) for n, p in model.named_parameters() if id(p) in ids | ext]

    def apply(self, model: nn.Module) -> List[str]:
        trained = super().apply(model)
        if not self.config.train_prompt_weight:
            for layer in self._lora_layers(model):
                layer.prompt_weight.requires_grad_(False)  # the official filter misses it (quirk)
        return trained

    def saved_state_names(self, model: nn.Module) -> List[str]:
        names = set(super().saved_state_names(model)) | {n for n, _ in self.adapter_named_parameters(model)}
        return [n for n in model.state_dict() if n in names]

    def auxiliary_losses(self, model: nn.Module) -> Dict[str, AuxLoss]:
        loss = model.extensions.pointlora.mask_loss
        if loss is None or self.config.mask_loss_weight <= 0:
            return {}
        return {"mask": AuxLoss(loss, float(self.config.mask_loss_weight))}
