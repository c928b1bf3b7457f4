"""Transformer building blocks with Point-MAE's module names (``norm1``, ``attn.qkv``, ``attn.proj``, ``mlp.fc1``,
``mlp.fc2``, ``norm2``), so any LoRA tool can target the same layers and official checkpoints load unchanged."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .extensions import ExtensionHost

__all__ = ["DropPath", "Mlp", "Attention", "Block"]


class DropPath(nn.Module):
    """Stochastic depth per sample: drop the residual branch with probability ``drop_prob`` while training."""

    def __init__(self, drop_prob: float = 0.0) -> None:
        super().__init__()
        self.drop_prob = float(drop_prob)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.drop_prob == 0.0 or not self.training:
            return x
        keep = 1.0 - self.drop_prob
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"drop_prob={self.drop_prob:.3f}"


class Mlp(nn.Module):
    """fc1 -> exact GELU -> dropout -> fc2 -> dropout. ``(B, T, C) -> (B, T, C)``."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = nn.Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class Attention(nn.Module):
    """Multi-head self-attention with a fused ``qkv`` projection (no bias, as Point-MAE). ``(B, T, C) -> (B, T, C)``."""

    def __init__(
        self, dim: int, num_heads: int = 6, qkv_bias: bool = False, attn_drop: float = 0.0, proj_drop: float = 0.0
    ) -> None:
        super().__init__()
        if dim % num_heads != 0:
            raise ValueError(f"dim={dim} must be divisible by num_heads={num_heads}")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = nn.Dropout(proj_drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, C = x.shape
        qkv = self.qkv(x).reshape(B, T, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # (B, H, T, D) each
        # The fused kernel computes softmax(q kᵀ · D^-0.5) v exactly as Point-MAE's explicit matmuls do.
        x = F.scaled_dot_product_attention(q, k, v, dropout_p=self.attn_drop if self.training else 0.0)
        x = x.transpose(1, 2).reshape(B, T, C)
        return self.proj_drop(self.proj(x))


class Block(ExtensionHost, nn.Module):
    """Pre-norm transformer block: ``x + DropPath(Attn(LN1(x)))`` then ``x + DropPath(MLP(LN2(x)))``.

    Registration order (norm1, drop_path, norm2, mlp, attn) follows Point-MAE so ``state_dict()`` lists keys in the
    official order. LayerNorm uses PyTorch's eps 1e-5 (not timm's 1e-6), as the official weights were trained.

    Extensions (:class:`~pointclora.models.extensions.BlockExtension`, installed by PEFT methods with
    ``add_extension``) see the MLP branch (``mlp_branch``) and the block output (``block_output``).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        drop: float = 0.0,
        attn_drop: float = 0.0,
        drop_path: float = 0.0,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-5)
        self.drop_path = DropPath(drop_path)
        self.norm2 = nn.LayerNorm(dim, eps=1e-5)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=drop)
        self.attn = Attention(dim, num_heads=num_heads, qkv_bias=qkv_bias, attn_drop=attn_drop, proj_drop=drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.drop_path(self.attn(self.norm1(x)))
        exts = self.extension_modules()
        if not exts:
            return x + self.drop_path(self.mlp(self.norm2(x)))
        h = self.norm2(x)
        y = self.mlp(h)
        for ext in exts:
            y = ext.mlp_branch(x, h, y)
        out = x + self.drop_path(y)
        for ext in exts:
            out = ext.block_output(x, out)
        return out
