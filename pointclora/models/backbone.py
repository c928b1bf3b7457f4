"""Point-MAE / Point-BERT transformer encoder and the classification model built on it.

Data flow: points (B N 3) -> ``group_divider`` (FPS centres + kNN patches, relative coords) -> ``encoder``
(mini-PointNet tokens B G C) [-> ``reduce_dim`` for Point-BERT] + ``pos_embed`` of the centres -> ``blocks``
(pre-norm, the position embedding re-added before *every* block) -> ``norm``.

Top-level names follow Point-MAE (``encoder``, ``pos_embed``, ``cls_token``, ``cls_pos``, ``norm``,
``cls_head_finetune``) except the block list, ``blocks.{i}`` instead of ``blocks.blocks.{i}``; the checkpoint converter
renames that.

Extension points (for prompt and adapter methods; see :mod:`pointclora.models.extensions`). A PEFT method installs
modules with ``backbone.add_extension(name, module)`` (a :class:`~pointclora.models.extensions.BackboneExtension`,
held under ``extensions.<name>``) and ``block.add_extension(name, module)`` (a
:class:`~pointclora.models.extensions.BlockExtension`, under ``blocks.<i>.extensions.<name>``). The backbone calls
them, in installation order, at these points::

    tokenize:        points = ext.on_points(backbone, points)     # before grouping: move points, add prompt points
                     tokens, pos = ext.on_tokens(backbone, tokens, pos, centers, points)   # add / change tokens
    forward_blocks:  x, pos = ext.before_block(backbone, i, x, pos)                        # insert tokens, pre-block
                     x = x + pos                   (skipped when pos is None: positions added once, by the method)
                     x = ext.block_input(backbone, i, x)                                   # the block's own input
                     x = block(x)
                       inside the block:  y = ext.mlp_branch(x, h, y)      x: after attention, h = norm2(x), y = mlp(h)
                                          out = ext.block_output(x, out)   out = x + drop_path(y)
                     x, pos = ext.after_block(backbone, i, x, pos)                         # append tokens, post-block
    pool (classifier): feature = ext.pool(backbone, x)  (first non-None; ext.pooled_dim sizes the head,
                     ext.make_head may build it: PPT's GELU head)
    patch_tokens:    x = ext.patch_tokens(backbone, x)  (drop extra tokens: what segmentation reads)

With no extension installed nothing is called and every output is bit-identical to the plain backbone. Neither the
backbone nor the blocks know any method: a method is one file in ``pointclora/peft``.
"""

from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

from .extensions import ExtensionHost
from .heads import ClassificationHead
from .layers import Block
from .tokenizer import MiniPointNet, PointGrouper

__all__ = ["PointTransformerEncoder", "PointTransformer"]


def _trunc_normal_init(module: nn.Module) -> None:
    """Point-MAE's ``_init_weights``: truncated normal (std .02) for Linear/Conv1d, zero bias, unit LayerNorm."""
    if isinstance(module, (nn.Linear, nn.Conv1d)):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class PointTransformerEncoder(ExtensionHost, nn.Module):
    """The backbone without a task head.

    PEFT declarations (read by :mod:`pointclora.peft`, which knows no model): ``default_adapter_targets`` (the
    Linear layers adapters wrap by default), ``head_modules`` (the task head: counted apart, trained by linear
    probing) and ``default_train_modules`` (trained beside the adapters).

    Args:
        trans_dim: C, token width (384 for ViT-S).
        depth: number of transformer blocks.
        num_heads: attention heads.
        mlp_ratio: MLP hidden width / C.
        drop_path_rate: stochastic depth, linearly increasing from 0 over the blocks.
        num_groups: G, patches per cloud (64 for 1k points, 128 for 2k).
        group_size: K, points per patch.
        encoder_dims: mini-PointNet output width (384 Point-MAE, 256 Point-BERT with a ``reduce_dim`` Linear).
        encoder_hidden_dims: mini-PointNet hidden widths (128, 256, 512) in the official models.
        cls_token: whether a ``cls_token``/``cls_pos`` pair is prepended (classification) or not (segmentation).
        pos_every_block: re-add the position embedding before every block (Point-MAE); False adds it once (DAPT).
        skip_near_origin: FPS skips points near the origin, as pointnet2_ops' CUDA kernel (bit-compatibility option).
    """

    def __init__(
        self,
        trans_dim: int = 384,
        depth: int = 12,
        num_heads: int = 6,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = False,
        drop_path_rate: float = 0.1,
        num_groups: int = 64,
        group_size: int = 32,
        encoder_dims: int = 384,
        encoder_hidden_dims: Sequence[int] = (128, 256, 512),
        cls_token: bool = True,
        pos_every_block: bool = True,
        skip_near_origin: bool = False,
    ) -> None:
        super().__init__()
        self.trans_dim = trans_dim
        self.depth = depth
        self.num_heads = num_heads
        self.num_groups = num_groups
        self.group_size = group_size
        self.encoder_dims = encoder_dims
        self.pos_every_block = pos_every_block
        self.group_divider = PointGrouper(num_groups, group_size, skip_near_origin=skip_near_origin)
        self.encoder = MiniPointNet(encoder_dims, tuple(encoder_hidden_dims))
        self.reduce_dim = nn.Linear(encoder_dims, trans_dim) if encoder_dims != trans_dim else None
        if cls_token:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, trans_dim))
            self.cls_pos = nn.Parameter(torch.zeros(1, 1, trans_dim))
        else:
            self.cls_token = None
            self.cls_pos = None
        self.pos_embed = nn.Sequential(nn.Linear(3, 128), nn.GELU(), nn.Linear(128, trans_dim))
        rates = torch.linspace(0, drop_path_rate, depth).tolist()
        self.blocks = nn.ModuleList(
            Block(trans_dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=qkv_bias, drop_path=rates[i])
            for i in range(depth)
        )
        self.norm = nn.LayerNorm(trans_dim, eps=1e-5)
        self.apply(_trunc_normal_init)
        if self.cls_token is not None:
            nn.init.trunc_normal_(self.cls_token, std=0.02)
            nn.init.trunc_normal_(self.cls_pos, std=0.02)

    #: CLORA.md's targets: q, k, v (split from ``attn.qkv``), ``attn.proj``, ``mlp.fc1``, ``mlp.fc2`` of every block.
    default_adapter_targets: Tuple[str, ...] = ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")

    @property
    def head_modules(self) -> Tuple[str, ...]:
        """Top-level modules that are the task head (none for the bare encoder)."""
        return ()

    @property
    def default_train_modules(self) -> Tuple[str, ...]:
        """Trained beside the adapters: the head and, as in every peer, ``cls_token``/``cls_pos`` when present."""
        cls = ("cls_token", "cls_pos") if self.cls_token is not None else ()
        return tuple(self.head_modules) + cls

    @property
    def num_prefix_tokens(self) -> int:
        return 0 if self.cls_token is None else 1

    def tokenize(self, points: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``points (B, N, 3+)`` -> ``tokens (B, T, C)``, ``pos (B, T, C)``, ``centers (B, G, 3)``; T = G (+1 cls)."""
        for ext in self.extension_modules():
            points = ext.on_points(self, points)
        grouping = self.group_divider(points)
        tokens = self.encoder(grouping.neighborhood)  # (B, G, encoder_dims)
        if self.reduce_dim is not None:
            tokens = self.reduce_dim(tokens)
        pos = self.pos_embed(grouping.centers)
        if self.cls_token is not None:
            B = tokens.shape[0]
            tokens = torch.cat([self.cls_token.expand(B, -1, -1), tokens], dim=1)
            pos = torch.cat([self.cls_pos.expand(B, -1, -1), pos], dim=1)
        for ext in self.extension_modules():
            tokens, pos = ext.on_tokens(self, tokens, pos, grouping.centers, points)
        return tokens, pos, grouping.centers

    def forward_blocks(
        self, x: torch.Tensor, pos: torch.Tensor, return_layers: Optional[Sequence[int]] = None
    ) -> List[torch.Tensor]:
        """Run the blocks; returns ``[norm(x)]`` or, with ``return_layers``, the normed outputs of those blocks."""
        outputs = []
        exts = self.extension_modules()
        if not self.pos_every_block and pos is not None:
            x = x + pos
        for i, block in enumerate(self.blocks):
            for ext in exts:
                x, pos = ext.before_block(self, i, x, pos)
            x = x + pos if self.pos_every_block and pos is not None else x
            for ext in exts:
                x = ext.block_input(self, i, x)
            x = block(x)
            for ext in exts:
                x, pos = ext.after_block(self, i, x, pos)
            if return_layers is not None and i in return_layers:
                outputs.append(self.patch_tokens(self.norm(x)) if exts else self.norm(x))
        return outputs if return_layers is not None else [self.norm(x)]

    def patch_tokens(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, C)`` -> the tokens the plain backbone would have (extensions drop what they added)."""
        for ext in self.extension_modules():
            x = ext.patch_tokens(self, x)
        return x

    def forward_features(self, points: torch.Tensor) -> torch.Tensor:
        """``points (B, N, 3)`` -> normed tokens ``(B, T, C)`` (cls first when present)."""
        tokens, pos, _ = self.tokenize(points)
        return self.forward_blocks(tokens, pos)[0]

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        return self.forward_features(points)

    def no_weight_decay(self) -> set:
        """Parameter names kept out of weight decay besides every 1-D tensor (norms, biases)."""
        return {"cls_token", "cls_pos"}


class PointTransformer(PointTransformerEncoder):
    """Classification model: encoder + ``[cls, max-pool]`` feature + ``cls_head_finetune``.

    ``forward(points (B, N, 3)) -> logits (B, num_classes)``. Extra kwargs go to :class:`PointTransformerEncoder`.
    """

    def __init__(
        self,
        num_classes: int = 40,
        head_hidden_dim: int = 256,
        head_dropout: float = 0.5,
        head_batch_norm: bool = True,
        **encoder_kwargs,
    ) -> None:
        encoder_kwargs.setdefault("cls_token", True)
        super().__init__(**encoder_kwargs)
        self.num_classes = num_classes
        self.head_hidden_dim = head_hidden_dim
        self.head_dropout = head_dropout
        self.head_batch_norm = head_batch_norm
        self.cls_head_finetune = self._make_head(num_classes)

    @property
    def head_modules(self) -> Tuple[str, ...]:
        return ("cls_head_finetune",)

    def head_in_dim(self) -> int:
        """Width of the pooled feature: ``2C`` (``C`` without cls) unless an extension pools otherwise."""
        for ext in self.extension_modules():
            dim = ext.pooled_dim(self)
            if dim is not None:
                return dim
        return self.trans_dim * (2 if self.cls_token is not None else 1)

    def _make_head(self, num_classes: int) -> nn.Module:
        in_dim = self.head_in_dim()
        for ext in self.extension_modules():
            head = ext.make_head(self, in_dim, num_classes)
            if head is not None:
                return head
        return ClassificationHead(
            in_dim, num_classes, self.head_hidden_dim, dropout=self.head_dropout, batch_norm=self.head_batch_norm
        )

    def pool(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, T, C)`` -> ``(B, 2C)``: the cls token beside the max over patch tokens (``(B, C)`` without cls);
        an extension's ``pool`` replaces this (e.g. IDPT's ``[cls, prompt, max]``)."""
        for ext in self.extension_modules():
            pooled = ext.pool(self, x)
            if pooled is not None:
                return pooled
        if self.cls_token is None:
            return x.max(dim=1).values
        return torch.cat([x[:, 0], x[:, 1:].max(dim=1).values], dim=-1)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        pooled = self.pool(x)
        return pooled if pre_logits else self.cls_head_finetune(pooled)

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(points))

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head with a freshly initialised one for ``num_classes`` classes."""
        self.num_classes = num_classes
        self.cls_head_finetune = self._make_head(num_classes).to(self.norm.weight.device)
