"""GAPrompt (Geometry-Aware Point Cloud Prompt, Ai et al., ICML'25), ``--peft gaprompt``.

Reproduces ``models/prompt_MAE.py`` (``PointTransformer_pointtokenprompt``, its ``Block``, ``TransformerEncoder``,
``Adapter``) and ``models/GAPrompt.py`` (``ShiftNet``, ``PointPrompt``, ``PointNetSetAbstraction``,
``PointNetFeaturePropagation``, ``propagate``, ``pooling``) with the trainable filter of ``tools/runner_module.py``
of zhoujiahuan1991/ICML2025-GAPrompt @ 8a26a2e (written from reading, not copied):

- **Shift prompt** (``shift_net``): a two-level PointNet++ (positional encoding of the points, 4 frequencies ->
  set abstraction ``num_group`` x ``group_size`` -> ``num_group/2`` x ``group_size/2`` -> two feature propagations)
  predicts a per-point shift ``y = x + perturbation * mlp(features) * x`` and a global **shape feature** (the level-2
  features flattened, then ``shape_feature_mlp`` to C);
- **Point prompt** (``point_prompt``): ``point_number`` learnable points (x ``factor``) appended to the cloud before
  grouping;
- **Token prompts**: in the first ``prompt_depth`` blocks, ``num_tokens`` tokens ``prompt_embeddings`` (dropout 0.1)
  ``+ 0.5 * shape feature + pos_embed(prompt_cor)`` are inserted after cls at the block's input and removed at its
  output;
- **Geometry-aware propagation** (``propagation_type``): the patch tokens are gathered over the kNN graph of a second,
  coarser FPS of the centres, max-pooled (BatchNorm + GELU: ``out_transform``), ``+ 0.3 x`` the centre tokens, and
  propagated back to all patches by inverse-distance weights (``+ 0.3 x``), after attention (default) or before;
- an **adapter** per block on the patch tokens (LayerNorm, C -> 16, QuickGELU, dropout 0.1, 16 -> C, times 0.7; its
  ``scale`` Linear is built and trained but unused, as official), fed ``x + 0.5 * shape feature`` in the first 6 blocks;
- the head reads ``[cls, max(patches), shape feature]`` (3C), dropout 0.6, Kaiming-uniform init;
- trained: everything above, the head, ``cls_token``/``cls_pos``.

Quirk, under an option defaulting to the official behaviour:

- ``batch_flat_index`` (true): the propagation gathers neighbours with indices built for ``B x num_group`` rows
  (``b * num_group + j``) from a tensor that holds ``B x (num_tokens + num_group)`` rows while the token prompts are
  in, so in the first ``prompt_depth`` blocks the gathered rows are shifted (prompt tokens, other clouds' tokens):
  the result depends on the batch. False gathers each cloud's own patch tokens.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..models.extensions import BackboneExtension, BlockExtension
from ..models.heads import ClassificationHead
from ..models.layers import DropPath
from ..models.tokenizer import PointGrouper
from .config import PeftConfig, PeftConfigError, _check_float, _check_int
from .extension import ExtensionMethod
from .registry import register_peft_method

__all__ = ["GAPromptConfig", "ShiftNet", "GAPromptTokens", "GAPromptBlock", "GAPromptMethod"]

PROPAGATION_TYPES = ("permutation_after_attention", "permutation_before_attention")
#: The official adapter reads the shape feature in blocks 0..5 (hard-coded 6, the published prompt_depth).
ADAPTER_GLOBAL_DEPTH = 6


@dataclass
class GAPromptConfig(PeftConfig):
    """GAPrompt options (official config names; defaults of ``cfgs/gaprompt_scan_hardest.yaml``).

    Args:
        point_number / scale / factor: prompt points, their init range U(-scale, scale) and multiplier (5, 0.01, 5;
            OBJ_BG / OBJ_ONLY use 10 points).
        perturbation: the shift's scale (0.8 PB_T50_RS, 0.2 OBJ_BG, 0.1 OBJ_ONLY, 0.05 ModelNet40).
        prompt_depth / num_tokens: blocks with token prompts and tokens per block (6, 10).
        propagation_type: ``permutation_after_attention`` (PB_T50_RS, OBJ_ONLY, ModelNet40) or
            ``permutation_before_attention`` (OBJ_BG).
        batch_flat_index: the propagation's index quirk (module docstring).
        train_modules: trained beside the method's tensors (default: head, ``cls_token``, ``cls_pos``).
    """

    method: ClassVar[str] = "gaprompt"
    point_number: int = 5
    scale: float = 0.01
    factor: float = 5.0
    perturbation: float = 0.8
    prompt_depth: int = 6
    num_tokens: int = 10
    propagation_type: str = "permutation_after_attention"
    batch_flat_index: bool = True

    def validate(self) -> None:
        super().validate()
        _check_int("point_number", self.point_number, 0)
        _check_int("prompt_depth", self.prompt_depth, 0)
        _check_int("num_tokens", self.num_tokens, 1)
        self.scale = _check_float("scale", self.scale, 0.0)
        self.factor = _check_float("factor", self.factor, 0.0)
        self.perturbation = _check_float("perturbation", self.perturbation, 0.0)
        if self.propagation_type not in PROPAGATION_TYPES:
            raise PeftConfigError(f"propagation_type must be one of {', '.join(PROPAGATION_TYPES)}, got "
                                  f"{self.propagation_type!r}")  # fmt: skip
        if not isinstance(self.batch_flat_index, bool):
            raise PeftConfigError(f"batch_flat_index must be true or false, got {self.batch_flat_index!r}")


# --- geometry helpers ----------------------------------------------------------------------------------------------
def _square_distance(src: torch.Tensor, dst: torch.Tensor) -> torch.Tensor:
    """``(B, N, 3), (B, M, 3) -> (B, N, M)`` squared distances, summed in the official order (-2ab + |a|² + |b|²)."""
    dist = -2 * torch.matmul(src, dst.transpose(1, 2))
    dist = dist + (src**2).sum(-1).unsqueeze(-1)
    return dist + (dst**2).sum(-1).unsqueeze(1)


def _interpolate(xyz1: torch.Tensor, xyz2: torch.Tensor, feats2: torch.Tensor, k: int, eps: float) -> torch.Tensor:
    """Inverse-distance interpolation of ``feats2 (B, S, D)`` at ``xyz1 (B, N, 3)`` from its ``k`` nearest of
    ``xyz2 (B, S, 3)``: ``(B, N, D)``."""
    dists, idx = _square_distance(xyz1, xyz2).sort(dim=-1)
    dists, idx = dists[:, :, :k], idx[:, :, :k]
    recip = 1.0 / (dists + eps)
    weight = recip / recip.sum(dim=2, keepdim=True)
    B = idx.shape[0]
    # advanced indexing, not gather on a (B, N, S, D) expansion: its backward would materialise that dense tensor
    gathered = feats2[torch.arange(B, device=idx.device).view(B, 1, 1), idx]  # (B, N, k, D)
    return (gathered * weight.unsqueeze(-1)).sum(dim=2)


def _flat_index(idx: torch.Tensor, rows: int) -> torch.Tensor:
    """Per-cloud indices ``(B, ...)`` -> indices into the ``(B * rows, ...)`` flattening."""
    base = torch.arange(idx.shape[0], device=idx.device).view(-1, *([1] * (idx.dim() - 1))) * rows
    return (idx + base).reshape(-1)


class _SetAbstraction(nn.Module):
    """FPS + kNN of ``xyz``, the features of each group through Conv2d + BN2d + ReLU layers, max over the group."""

    def __init__(self, num_group: int, group_size: int, in_channel: int, mlp: List[int], skip_near_origin: bool):
        super().__init__()
        self.num_group, self.group_size = num_group, group_size
        self.grouper = PointGrouper(num_group, group_size, skip_near_origin=skip_near_origin)
        self.mlp_convs, self.mlp_bns = nn.ModuleList(), nn.ModuleList()
        last = in_channel
        for out in mlp:
            self.mlp_convs.append(nn.Conv2d(last, out, 1))
            self.mlp_bns.append(nn.BatchNorm2d(out))
            last = out

    def forward(self, xyz: torch.Tensor, feats: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        B, N, D = feats.shape
        g = self.grouper(xyz.float())
        x = feats.reshape(B * N, D)[_flat_index(g.idx, N)].reshape(B, self.num_group, self.group_size, D)
        x = x.permute(0, 3, 2, 1)  # (B, D, K, G)
        for conv, bn in zip(self.mlp_convs, self.mlp_bns):
            x = F.relu(bn(conv(x)))
        return g.centers, x.max(dim=2).values.permute(0, 2, 1)  # (B, G, 3), (B, G, D')


class _FeaturePropagation(nn.Module):
    """Inverse-distance interpolation from 32 neighbours, concatenated with the skip features, Conv1d + BN + ReLU."""

    def __init__(self, in_channel: int, mlp: List[int], neighbours: int = 32) -> None:
        super().__init__()
        self.neighbours = neighbours
        self.mlp_convs, self.mlp_bns = nn.ModuleList(), nn.ModuleList()
        last = in_channel
        for out in mlp:
            self.mlp_convs.append(nn.Conv1d(last, out, 1))
            self.mlp_bns.append(nn.BatchNorm1d(out))
            last = out

    def forward(self, xyz1, xyz2, feats1, feats2) -> torch.Tensor:
        x = torch.cat([feats1, _interpolate(xyz1, xyz2, feats2, self.neighbours, 1e-4)], dim=-1).permute(0, 2, 1)
        for conv, bn in zip(self.mlp_convs, self.mlp_bns):
            x = F.relu(bn(conv(x)))
        return x.permute(0, 2, 1)


def _positional_encoding(x: torch.Tensor, levels: int = 4) -> torch.Tensor:
    """``(..., 3) -> (..., 3 (2 levels + 1))``: ``[x, sin(x), cos(x), sin(2x), cos(2x), ...]``."""
    out = [x]
    for freq in 2 ** torch.linspace(0, levels - 1, levels):
        out += [torch.sin(freq * x), torch.cos(freq * x)]
    return torch.cat(out, -1)


class ShiftNet(nn.Module):
    """``points (B, N, 3) -> (shifted points (B, N, 3), shape feature (B, G/2 * 8))`` (module docstring)."""

    def __init__(self, num_group: int, group_size: int, perturbation: float, skip_near_origin: bool) -> None:
        super().__init__()
        self.perturbation = perturbation
        enc = 3 * (2 * 4 + 1)
        self.abstraction_level1 = _SetAbstraction(num_group, group_size, enc, [64, 32, 64], skip_near_origin)
        self.abstraction_level2 = _SetAbstraction(num_group // 2, group_size // 2, 64, [64, 32, 8], skip_near_origin)
        self.propagation1 = _FeaturePropagation(enc + 32, [32, 32])
        self.propagation2 = _FeaturePropagation(64 + 8, [64, 32])
        self.mlp_position = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Dropout(0.2), nn.Linear(64, 3))
        for layer in (self.mlp_position[0], self.mlp_position[3]):
            nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5))
            nn.init.zeros_(layer.bias)

    def forward(self, x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        B = x.shape[0]
        feats = _positional_encoding(x)
        c1, f1 = self.abstraction_level1(x, feats)
        c2, f2 = self.abstraction_level2(c1, f1)
        f1 = self.propagation2(c1, c2, f1, f2)
        feats = self.propagation1(x, c1, feats, f1)
        return self.mlp_position(feats) * self.perturbation * x + x, f2.reshape(B, -1)


class _PointPrompt(nn.Module):
    def __init__(self, point_number: int, scale: float, factor: float) -> None:
        super().__init__()
        self.factor = factor
        self.points = nn.Parameter(torch.empty(1, point_number, 3))
        nn.init.uniform_(self.points, -scale, scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.points.expand(x.shape[0], -1, -1) * self.factor], dim=1)


class _Adapter(nn.Module):
    """LayerNorm, C -> 16, QuickGELU, dropout, 16 -> C, times 0.7. ``scale`` exists (and trains) but is unused."""

    def __init__(self, dim: int, hidden: int = 16, dropout: float = 0.1) -> None:
        super().__init__()
        self.dropout = nn.Dropout(dropout)
        self.layer_norm = nn.LayerNorm(dim)
        self.scale = nn.Linear(dim, 1)
        self.ln1 = nn.Linear(dim, hidden)
        self.ln2 = nn.Linear(hidden, dim)
        for layer in (self.scale, self.ln1, self.ln2):
            nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5))
            nn.init.normal_(layer.bias, std=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.ln1(self.layer_norm(x))
        out = self.ln2(self.dropout(h * torch.sigmoid(1.702 * h))) * 0.7
        # "+ 0 x scale" keeps the unused, trained scale Linear in the graph (gradient 0, as in the official code, where
        # it gets none), so distributed training sees every trainable tensor used; the values are unchanged
        return out + 0.0 * (self.scale.weight.sum() + self.scale.bias.sum())


class GAPromptTokens(BackboneExtension):
    """Shift + point prompts before grouping, the coarse centre graph, token prompts into the first blocks, the head."""

    def __init__(self, dim: int, num_groups: int, group_size: int, config: GAPromptConfig, skip_near_origin: bool):
        super().__init__()
        self.config = config
        self.num_groups = num_groups
        self.shift_net = ShiftNet(num_groups, group_size, config.perturbation, skip_near_origin)
        self.shape_feature_mlp = nn.Sequential(nn.Linear(num_groups // 2 * 8, 16), nn.GELU(), nn.Dropout(0.25),
                                               nn.Linear(16, dim))  # fmt: skip
        for layer in (self.shape_feature_mlp[0], self.shape_feature_mlp[3]):
            nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5))
        self.point_prompt = _PointPrompt(config.point_number, config.scale, config.factor)
        self.prompt_cor = nn.Parameter(torch.empty(config.num_tokens, 3))
        nn.init.trunc_normal_(self.prompt_cor, std=0.06)
        self.level2 = PointGrouper(num_groups // 2, group_size // 2, skip_near_origin=skip_near_origin)
        self.shape_feature: Optional[torch.Tensor] = None
        self.graph: Optional[Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]] = None

    def on_points(self, backbone: nn.Module, points: torch.Tensor) -> torch.Tensor:
        shifted, feature = self.shift_net(points[..., :3])
        self.shape_feature = self.shape_feature_mlp(feature).unsqueeze(1)  # (B, 1, C)
        return self.point_prompt(shifted)

    def on_tokens(self, backbone, x, pos, centers, points):
        g = self.level2(centers)
        self.graph = (centers, g.centers, g.idx, g.center_idx)
        return x, pos

    def block_input(self, backbone: nn.Module, index: int, x: torch.Tensor) -> torch.Tensor:
        ext: GAPromptBlock = backbone.blocks[index].extensions.gaprompt
        if index < self.config.prompt_depth:
            B = x.shape[0]
            token_pos = backbone.pos_embed(self.prompt_cor)
            prompt = ext.prompt_dropout(ext.prompt_embeddings.expand(B, -1, -1))
            prompt = prompt + 0.5 * self.shape_feature.expand(-1, self.config.num_tokens, -1) + token_pos
            x = torch.cat([x[:, :1], prompt, x[:, 1:]], dim=1)
        if self.config.propagation_type == "permutation_before_attention":
            x = torch.cat([x[:, :1], ext.propagate(x[:, 1:])], dim=1)
        return x

    def pool(self, backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x[:, 0], x[:, 1:].max(dim=1).values, self.shape_feature[:, 0]], dim=-1)

    def pooled_dim(self, backbone: nn.Module) -> int:
        return 3 * backbone.trans_dim

    def make_head(self, backbone: nn.Module, in_dim: int, num_classes: int) -> nn.Module:
        head = ClassificationHead(in_dim, num_classes, backbone.head_hidden_dim, dropout=0.6,
                                  batch_norm=backbone.head_batch_norm)  # fmt: skip
        for m in head.modules():
            if isinstance(m, nn.Linear):
                nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5))
        return head


class GAPromptBlock(BlockExtension):
    """One block's prompt tokens, propagation (BN + GELU ``out_transform``) and adapter."""

    def __init__(self, dim: int, index: int, drop_path: float, tokens: GAPromptTokens) -> None:
        super().__init__()
        self.index = index
        self.prompt_dropout = nn.Dropout(0.1)
        self.prompt_embeddings = nn.Parameter(torch.zeros(tokens.config.num_tokens, dim))
        self.adapter = _Adapter(dim)
        self.out_transform = nn.Sequential(nn.BatchNorm1d(dim), nn.GELU())
        self.drop_path = DropPath(drop_path)
        self._tokens: List[GAPromptTokens] = [tokens]

    def propagate(self, x: torch.Tensor) -> torch.Tensor:
        """``x (B, T, C)`` without cls (prompts first when in) -> the same with its last G tokens propagated."""
        tokens = self._tokens[0]
        centers, coarse, idx, center_idx = tokens.graph
        B, T, C = x.shape
        G, S, K = centers.shape[1], coarse.shape[1], idx.shape[-1]
        if tokens.config.batch_flat_index:  # indices for B x G rows into B x T rows (quirk)
            rows = x.reshape(B * T, C)
            nb = rows[_flat_index(idx, G)].reshape(B * S, K, C)
            ce = rows[_flat_index(center_idx, G)].reshape(B, S, C)
        else:
            patches = x[:, -G:].reshape(B * G, C)
            nb = patches[_flat_index(idx, G)].reshape(B * S, K, C)
            ce = patches[_flat_index(center_idx, G)].reshape(B, S, C)
        nb = self.drop_path(nb) + nb
        pooled = self.out_transform(nb.reshape(B, S, K, C).max(dim=2).values.transpose(1, 2)).transpose(1, 2)
        vis = pooled + 0.3 * ce
        last = x[:, -G:] + 0.3 * _interpolate(centers, coarse, vis, 64, 1e-8)
        return torch.cat([x[:, :-G], last], dim=1)

    def block_output(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        tokens = self._tokens[0]
        cls, h = out[:, :1], out[:, 1:]
        if tokens.config.propagation_type == "permutation_after_attention":
            h = self.propagate(h)
        if self.index < ADAPTER_GLOBAL_DEPTH:
            h = h + self.adapter(h + tokens.shape_feature * 0.5)
        else:
            h = h + self.adapter(h)
        if self.index < tokens.config.prompt_depth:
            h = h[:, tokens.config.num_tokens :]
        else:  # the official model builds (and trains) prompts in every block but uses them in the first ones only:
            h = h + 0.0 * self.prompt_embeddings.sum()  # kept in the graph with gradient 0, for distributed training
        return torch.cat([cls, h], dim=1)


@register_peft_method
class GAPromptMethod(ExtensionMethod):
    """GAPrompt: shift / point / token prompts, geometry-aware propagation and adapters (module docstring)."""

    name = "gaprompt"
    config_class = GAPromptConfig
    description = "GAPrompt (ICML'25): geometry-aware point, shift and token prompts"

    def build(self, model: nn.Module) -> None:
        c = self.config
        if getattr(model, "cls_token", None) is None:
            raise PeftConfigError("gaprompt pools the cls token; the model has no cls_token")
        if c.prompt_depth > len(model.blocks):
            raise PeftConfigError(
                f"prompt_depth must be <= the model's {len(model.blocks)} blocks, got {c.prompt_depth}"
            )
        if model.num_groups < 2 or model.group_size < 2:
            raise PeftConfigError("gaprompt's coarse graph halves the groups and their size; the model's are too small")
        ref = model.cls_token
        skip = model.group_divider.skip_near_origin
        tokens = GAPromptTokens(model.trans_dim, model.num_groups, model.group_size, c, skip)
        model.add_extension("gaprompt", tokens.to(device=ref.device, dtype=ref.dtype))
        for i, block in enumerate(model.blocks):
            ext = GAPromptBlock(model.trans_dim, i, block.drop_path.drop_prob, tokens)
            block.add_extension("gaprompt", ext.to(device=ref.device, dtype=ref.dtype))
