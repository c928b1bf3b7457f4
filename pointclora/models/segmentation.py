"""Part segmentation model: Point-MAE's ``segmentation/models/pt.py`` on our encoder (``PointTransformerSeg``).

Data flow, shapes for the ViT-S default (C = 384, three fetched blocks, 16 categories, 50 parts):
points (B, N, 3) -> patches + tokens (B, G, C) (no cls token) -> blocks, the outputs of blocks 3/7/11 each through
the *shared* final ``norm`` -> concat (B, 3C=1152, G) -> global max and mean over G (1152 each) + object category
one-hot through ``label_conv`` (64) -> 2368 channels repeated over N -> ``propagation_0``: 3-NN interpolation of
the 1152-d patch features from the G centres to all N points, concat xyz, Conv1d 1155->1536->1024 (+BN, ReLU) ->
concat 1024 + 2368 = 3392 -> ``convs1`` 512 (+``bns1``, ReLU, ``dp1`` 0.5) -> ``convs2`` 256 (+``bns2``, ReLU) ->
``convs3`` logits (B, N, num_parts).

Key names follow the official model (Appendix C of the reference notes) except the block list, ``blocks.{i}``
instead of ``blocks.blocks.{i}``, which the checkpoint converter maps. The number of categories and parts comes from
the dataset (``ShapeNetPart.num_categories`` and the largest part id + 1), never from constants.
"""

from __future__ import annotations

from typing import Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..ops.interpolate import three_nn_interpolate
from .backbone import PointTransformerEncoder

__all__ = [
    "PointTransformerSeg",
    "PointNetFeaturePropagation",
    "SEG_HEAD_MODULES",
    "default_fetch_layers",
    "predict_parts",
]

#: Top-level modules of the segmentation head: everything that is *not* the pre-trained encoder. The model declares
#: them as ``head_modules`` / ``default_train_modules``, so PEFT trains them while the blocks are frozen.
SEG_HEAD_MODULES = ("label_conv", "propagation_0", "convs1", "bns1", "convs2", "bns2", "convs3")


def default_fetch_layers(depth: int) -> Tuple[int, ...]:
    """Blocks whose outputs feed the head: (3, 7, 11) for 12 blocks, evenly spaced otherwise.

    ``depth=12 -> (3, 7, 11)``, ``4 -> (0, 2, 3)``, ``2 -> (0, 1)``, ``1 -> (0,)``.
    """
    if depth < 1:
        raise ValueError(f"depth must be >= 1, got {depth}")
    return tuple(sorted({max(0, round((i + 1) * depth / 3) - 1) for i in range(3)}))


class PointNetFeaturePropagation(nn.Module):
    """3-NN interpolation of patch features to every point, concat xyz, then Conv1d-BN-ReLU layers.

    ``forward(xyz (B, N, 3), centers (B, G, 3), features (B, C, G)) -> (B, mlp[-1], N)``. Key names
    ``mlp_convs.{i}`` / ``mlp_bns.{i}`` as PointNet++.
    """

    def __init__(self, in_channel: int, mlp: Sequence[int]) -> None:
        super().__init__()
        self.mlp_convs = nn.ModuleList()
        self.mlp_bns = nn.ModuleList()
        last = in_channel
        for width in mlp:
            self.mlp_convs.append(nn.Conv1d(last, width, 1))
            self.mlp_bns.append(nn.BatchNorm1d(width))
            last = width

    def forward(self, xyz: torch.Tensor, centers: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        interpolated = three_nn_interpolate(xyz, centers, features.transpose(1, 2))  # (B, N, C)
        x = torch.cat([xyz, interpolated], dim=-1).transpose(1, 2)  # (B, 3 + C, N): official order [points1, interp]
        for conv, bn in zip(self.mlp_convs, self.mlp_bns):
            x = F.relu(bn(conv(x)))
        return x


class PointTransformerSeg(PointTransformerEncoder):
    """Point-MAE part segmentation model.

    Args:
        num_classes: number of part logits (the largest global part id + 1; 50 for ShapeNetPart, 54 for the cattle
            scans whose parts are 50–53). Named ``num_classes`` so :func:`pointclora.models.create_model` builds it.
        num_categories: object categories (16 for ShapeNetPart); the one-hot fed to ``label_conv``.
        fetch_layers: block indices whose normed outputs feed the head; default :func:`default_fetch_layers`.
        label_dim: ``label_conv`` width (64).
        propagation_dims: ``propagation_0`` widths ((1536, 1024)).
        head_dims: ``convs1``/``convs2`` widths ((512, 256)).
        head_dropout: ``dp1`` (0.5).
        **encoder_kwargs: :class:`~pointclora.backbone.PointTransformerEncoder` arguments (``cls_token`` is forced off).

    ``forward(points (B, N, 3+), category (B,) int64 or (B, num_categories) one-hot) -> logits (B, N, num_classes)``.
    Raw logits: ``F.cross_entropy`` on them equals the official log_softmax + NLL loss.
    """

    def __init__(
        self,
        num_classes: int = 50,
        num_categories: int = 16,
        fetch_layers: Optional[Sequence[int]] = None,
        label_dim: int = 64,
        propagation_dims: Sequence[int] = (1536, 1024),
        head_dims: Sequence[int] = (512, 256),
        head_dropout: float = 0.5,
        **encoder_kwargs,
    ) -> None:
        if encoder_kwargs.pop("cls_token", False):
            raise ValueError("PointTransformerSeg has no cls token (the official segmentation model has none)")
        for unused in ("head_hidden_dim", "head_batch_norm"):  # classification-only defaults of shared variants
            encoder_kwargs.pop(unused, None)
        super().__init__(cls_token=False, **encoder_kwargs)
        if num_classes < 1 or num_categories < 1:
            raise ValueError(f"num_classes and num_categories must be >= 1, got {num_classes}, {num_categories}")
        self.fetch_layers = tuple(default_fetch_layers(self.depth) if fetch_layers is None else fetch_layers)
        bad = [i for i in self.fetch_layers if not 0 <= int(i) < self.depth]
        if bad or not self.fetch_layers or len(set(self.fetch_layers)) != len(self.fetch_layers):
            raise ValueError(
                f"fetch_layers must be distinct block indices in [0, {self.depth}), got {list(self.fetch_layers)}"
            )
        if len(propagation_dims) < 1 or len(head_dims) != 2:
            raise ValueError(
                f"propagation_dims needs >= 1 width and head_dims exactly 2, got {propagation_dims}, {head_dims}"
            )
        self.num_classes = num_classes
        self.num_categories = num_categories
        feat_dim = self.trans_dim * len(self.fetch_layers)
        self.label_conv = nn.Sequential(
            nn.Conv1d(num_categories, label_dim, 1, bias=False), nn.BatchNorm1d(label_dim), nn.LeakyReLU(0.2)
        )
        self.propagation_0 = PointNetFeaturePropagation(feat_dim + 3, propagation_dims)
        global_dim = 2 * feat_dim + label_dim
        self.convs1 = nn.Conv1d(propagation_dims[-1] + global_dim, head_dims[0], 1)
        self.dp1 = nn.Dropout(head_dropout)
        self.convs2 = nn.Conv1d(head_dims[0], head_dims[1], 1)
        self.convs3 = nn.Conv1d(head_dims[1], num_classes, 1)
        self.bns1 = nn.BatchNorm1d(head_dims[0])
        self.bns2 = nn.BatchNorm1d(head_dims[1])

    @property
    def head_modules(self) -> Tuple[str, ...]:
        """The modules that are not part of the pre-trained encoder (trained under every PEFT method)."""
        return SEG_HEAD_MODULES

    def _category_onehot(self, category: torch.Tensor, batch: int) -> torch.Tensor:
        # In the parameters' dtype, so a model cast with .double() (or .half()) runs end to end in that precision.
        dtype = self.label_conv[0].weight.dtype
        if category.dim() == 2:
            if category.shape != (batch, self.num_categories):
                raise ValueError(
                    f"category one-hot must be (B={batch}, num_categories={self.num_categories}), "
                    f"got {tuple(category.shape)}"
                )
            return category.to(dtype)
        category = category.reshape(-1).long()
        if category.shape[0] != batch:
            raise ValueError(f"category must hold one label per cloud (B={batch}), got {tuple(category.shape)}")
        if category.numel() and (int(category.min()) < 0 or int(category.max()) >= self.num_categories):
            raise ValueError(
                f"category ids must lie in [0, {self.num_categories}), got {sorted(set(category.tolist()))}"
            )
        return F.one_hot(category, self.num_categories).to(dtype)

    def label_feature(self, onehot: torch.Tensor) -> torch.Tensor:
        """``label_conv`` on ``(B, num_categories)`` one-hots -> ``(B, label_dim)``.

        With a single category the one-hot is the same constant for every cloud, so the BatchNorm sees zero variance:
        in training it outputs exactly its bias, but its running variance decays towards 0 and in eval mode
        ``(x - running_mean) / sqrt(running_var + eps)`` amplifies the leftover difference ~300x, wrecking every
        prediction. The branch then carries no information anyway, so both modes use the training-mode value
        ``LeakyReLU(bias)`` (same keys, running stats untouched).
        """
        conv, bn, act = self.label_conv
        if self.num_categories == 1:
            # "+ 0 * weight" keeps the conv in the graph (its gradient is 0, as in train-mode BN), so DDP's
            # unused-parameter check and optimizers see the same parameter set as with several categories.
            return act(bn.bias).unsqueeze(0).expand(onehot.shape[0], -1) + 0.0 * conv.weight.sum()
        return self.label_conv(onehot.unsqueeze(-1)).squeeze(-1)

    def forward_features(self, points: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """``points (B, N, 3+)`` -> ``(features (B, C·L, G), centers (B, G, 3))`` from the L fetched blocks."""
        feats, centers, _ = self._fetch(points)
        return feats, centers

    def _fetch(self, points: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """``points`` -> ``(features (B, C·L, G), centers (B, G, 3), global (B, 2·C·L))``: ``global`` is
        ``[max, mean]`` over the patches unless an extension makes its own (IDPT's prompt tokens)."""
        tokens, pos, centers = self.tokenize(points)
        layers = self.forward_blocks(tokens, pos, return_layers=self.fetch_layers, keep_added_tokens=True)
        patches = [self.patch_tokens(f) for f in layers] if self.extension_modules() else layers
        feats = torch.cat([f.transpose(1, 2) for f in patches], dim=1)  # (B, C·L, G)
        global_feat = None
        for ext in self.extension_modules():
            global_feat = ext.seg_global_feature(self, layers)
            if global_feat is not None:
                break
        if global_feat is None:
            global_feat = torch.cat([feats.max(dim=2).values, feats.mean(dim=2)], dim=1)
        return feats, centers, global_feat

    def forward(self, points: torch.Tensor, category: torch.Tensor) -> torch.Tensor:
        B, N = points.shape[:2]
        xyz = points[..., :3].contiguous()
        feats, centers, pooled = self._fetch(xyz)  # pooled (B, 2C·L): [max, mean] of the patches by default
        label = self.label_feature(self._category_onehot(category, B))  # (B, label_dim)
        global_feat = torch.cat([pooled, label], dim=1).unsqueeze(-1).expand(-1, -1, N)  # (B, 2C·L+64, N)
        f_level_0 = self.propagation_0(xyz, centers, feats)  # (B, prop[-1], N)
        x = torch.cat([f_level_0, global_feat], dim=1)
        x = self.dp1(F.relu(self.bns1(self.convs1(x))))
        x = F.relu(self.bns2(self.convs2(x)))
        return self.convs3(x).transpose(1, 2)  # (B, N, num_classes)

    def no_weight_decay(self) -> set:
        return set()


def predict_parts(
    logits: torch.Tensor, category: torch.Tensor, category_parts: Sequence[Sequence[int]]
) -> torch.Tensor:
    """Argmax restricted to the object category's parts (the standard ShapeNetPart evaluation).

    Args:
        logits: ``(B, N, P)``.
        category: ``(B,)`` category index of each cloud.
        category_parts: ``category_parts[c]`` = global part ids of category ``c``.

    Returns:
        ``(B, N)`` int64 global part ids, each among its cloud's category parts.
    """
    B, N, P = logits.shape
    mask = torch.full((len(category_parts), P), float("-inf"), dtype=logits.dtype, device=logits.device)
    for c, parts in enumerate(category_parts):
        bad = [p for p in parts if not 0 <= int(p) < P]
        if bad:
            raise ValueError(f"category {c} lists part ids {bad} outside the model's {P} logits")
        mask[c, list(parts)] = 0
    return (logits + mask[category.long()].unsqueeze(1)).argmax(dim=-1)


def _encoder_defaults(classifier_variant: str) -> dict:
    """A classification variant's constructor kwargs minus its classification-head options."""
    from .registry import model_defaults

    head_keys = ("head_hidden_dim", "head_dropout", "head_batch_norm")
    return {k: v for k, v in model_defaults(classifier_variant).items() if k not in head_keys}


def _register() -> None:
    from .registry import register_model

    seg = dict(builder=PointTransformerSeg, drop_path_rate=0.1)
    # Point-MAE ViT-S segmentation: 2048 points, 128 groups of 32 (the official recipe).
    register_model(
        "point_mae_s_seg", trans_dim=384, depth=12, num_heads=6, encoder_dims=384, num_groups=128, group_size=32, **seg
    )
    # Same encoders as ``point_mae_demo`` and the shipped ``point_mae_mn10`` (read from their registrations, so they
    # never drift apart and their pre-trained weights always load); 128 groups for 2048 points, head widths scaled
    # to the 128-wide model.
    for small in ("point_mae_demo", "point_mae_mn10"):
        encoder = _encoder_defaults(small)
        encoder.update(num_groups=128, propagation_dims=(256, 256), head_dims=(256, 128))
        register_model(f"{small}_seg", builder=PointTransformerSeg, **encoder)
    # The test-suite variant: point_mae_tiny's encoder with a tiny head.
    tiny = _encoder_defaults("point_mae_tiny")
    tiny.update(label_dim=8, propagation_dims=(32, 32), head_dims=(32, 16))
    register_model("point_mae_tiny_seg", builder=PointTransformerSeg, **tiny)


_register()
