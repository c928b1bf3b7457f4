"""Point-MAE masked-autoencoder pre-training (``PointMAEPretrain``) and the encoder export that fine-tuning loads.

Data flow (Point-MAE's ``Point_MAE``; shapes for G groups of K points, C channels, M = int(mask_ratio · G) masked):
points (B, N, 3) -> patches (B, G, K, 3) + centres (B, G, 3) -> mini-PointNet tokens (B, G, C) -> a random
``mask_ratio`` of the patches per cloud is hidden -> ``MAE_encoder`` blocks on the G - M visible tokens only (position
re-added before every block, no cls token) -> ``norm`` -> append M copies of ``mask_token`` -> ``MAE_decoder`` (light
transformer, ``decoder_pos_embed`` of all centres) -> its last M tokens -> ``increase_dim`` Conv1d C -> 3K ->
M predicted patches (B·M, K, 3) -> Chamfer-L2 against the true masked patches (relative to their centres).

State-dict keys follow the official file (``MAE_encoder.*``, ``mask_token``, ``decoder_pos_embed.*``,
``MAE_decoder.blocks.{j}.*``, ``MAE_decoder.norm.*``, ``increase_dim.0.*``), with our ``blocks.{i}`` inside the
encoder; :func:`export_encoder_state` writes either our layout or the official ``module.MAE_encoder.blocks.blocks``
layout, both of which :func:`pointclora.models.load_pretrained` reads.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping, NamedTuple, Optional

import torch
from torch import nn

from .. import __version__
from ..ops.chamfer import chamfer_distance
from ..ops.sampling import gather_points
from .backbone import PointTransformerEncoder
from .layers import Block

__all__ = [
    "PointMAEPretrain",
    "MAEOutput",
    "TransformerDecoder",
    "random_patch_mask",
    "encoder_kwargs_from_variant",
    "encoder_state_dict",
    "export_encoder_state",
]

#: Constructor arguments of the classification variants that do not belong to the encoder.
_HEAD_ONLY_KWARGS = ("head_hidden_dim", "head_dropout", "head_batch_norm", "num_classes")


class MAEOutput(NamedTuple):
    loss: torch.Tensor  #: scalar Chamfer-L2 over the masked patches
    pred: torch.Tensor  #: (B, M, K, 3) reconstructed masked patches (relative to their centres)
    target: torch.Tensor  #: (B, M, K, 3) true masked patches
    mask: torch.Tensor  #: (B, G) bool, True where the patch was hidden
    centers: torch.Tensor  #: (B, G, 3)


def random_patch_mask(
    batch: int, num_groups: int, mask_ratio: float, device=None, generator: Optional[torch.Generator] = None
) -> torch.Tensor:
    """Point-MAE's ``rand`` masking: per cloud exactly ``int(mask_ratio · G)`` patches hidden, chosen uniformly.

    Returns ``(B, G)`` bool, True = masked.
    """
    if not 0.0 <= mask_ratio < 1.0:
        raise ValueError(f"mask_ratio must lie in [0, 1), got {mask_ratio}")
    num_mask = int(mask_ratio * num_groups)
    noise = torch.rand(batch, num_groups, generator=generator, device="cpu").to(device)
    ranks = noise.argsort(dim=1).argsort(dim=1)  # a random permutation rank per patch
    return ranks < num_mask


class TransformerDecoder(nn.Module):
    """Point-MAE's ``TransformerDecoder``: ``blocks.{j}`` (one level, as the official keys) and ``norm``.

    ``forward(x (B, T, C), pos (B, T, C), return_token_num) -> norm(x)[:, -return_token_num:]``.
    """

    def __init__(
        self, dim: int, depth: int = 4, num_heads: int = 6, mlp_ratio: float = 4.0, drop_path_rate: float = 0.1
    ):
        super().__init__()
        rates = torch.linspace(0, drop_path_rate, depth).tolist()
        self.blocks = nn.ModuleList(
            Block(dim, num_heads, mlp_ratio=mlp_ratio, drop_path=rates[j]) for j in range(depth)
        )
        self.norm = nn.LayerNorm(dim, eps=1e-5)

    def forward(self, x: torch.Tensor, pos: torch.Tensor, return_token_num: int) -> torch.Tensor:
        for block in self.blocks:
            x = block(x + pos)
        return self.norm(x[:, -return_token_num:])


def _xavier_init(module: nn.Module) -> None:
    # The official decoder uses xavier_uniform for Linear layers, zero biases, unit LayerNorm.
    if isinstance(module, nn.Linear):
        nn.init.xavier_uniform_(module.weight)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)


class PointMAEPretrain(nn.Module):
    """Masked autoencoder over point patches.

    Args:
        mask_ratio: fraction of the G patches hidden per cloud (0.6).
        decoder_depth: light decoder blocks (4).
        decoder_num_heads: decoder heads (the encoder's by default).
        decoder_drop_path_rate: decoder stochastic depth (0.1 as Point-MAE).
        norm_target: reconstruct every masked patch scaled to unit radius (its farthest point at distance 1) instead
            of in cloud units, so small patches weigh as much as large ones (off by default: Point-MAE's loss).
            ``MAEOutput.pred``/``target`` are then in those unit-radius coordinates.
        **encoder_kwargs: :class:`~pointclora.backbone.PointTransformerEncoder` arguments (``trans_dim``, ``depth``,
            ``num_groups``, ``group_size``, ...; ``cls_token`` is forced off as in ``MaskTransformer``).

    ``forward(points (B, N, 3)) -> MAEOutput``; ``loss`` is the Chamfer-L2 of the masked patches.
    """

    def __init__(
        self,
        mask_ratio: float = 0.6,
        decoder_depth: int = 4,
        decoder_num_heads: Optional[int] = None,
        decoder_drop_path_rate: float = 0.1,
        norm_target: bool = False,
        **encoder_kwargs: Any,
    ) -> None:
        super().__init__()
        if encoder_kwargs.pop("cls_token", False):
            raise ValueError("the MAE encoder has no cls token (Point-MAE's MaskTransformer has none)")
        for key in _HEAD_ONLY_KWARGS:
            encoder_kwargs.pop(key, None)
        if not 0.0 <= mask_ratio < 1.0:
            raise ValueError(f"mask_ratio must lie in [0, 1), got {mask_ratio}")
        self.mask_ratio = float(mask_ratio)
        self.norm_target = bool(norm_target)
        self.encoder_kwargs = dict(encoder_kwargs)
        self.MAE_encoder = PointTransformerEncoder(cls_token=False, **encoder_kwargs)
        enc = self.MAE_encoder
        if int(mask_ratio * enc.num_groups) < 1:
            raise ValueError(
                f"mask_ratio={mask_ratio} masks no patch of num_groups={enc.num_groups}; raise one of them"
            )
        dim = enc.trans_dim
        self.group_size = enc.group_size
        self.mask_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.decoder_pos_embed = nn.Sequential(nn.Linear(3, 128), nn.GELU(), nn.Linear(128, dim))
        self.MAE_decoder = TransformerDecoder(
            dim, decoder_depth, decoder_num_heads or enc.num_heads, drop_path_rate=decoder_drop_path_rate
        )
        self.increase_dim = nn.Sequential(nn.Conv1d(dim, 3 * enc.group_size, 1))
        self.MAE_decoder.apply(_xavier_init)
        nn.init.trunc_normal_(self.mask_token, std=0.02)

    def forward(self, points: torch.Tensor, mask: Optional[torch.Tensor] = None) -> MAEOutput:
        """``points (B, N, 3+)``; ``mask (B, G)`` bool overrides the random masking (same count per cloud)."""
        enc = self.MAE_encoder
        grouping = enc.group_divider(points)
        neighborhood, centers = grouping.neighborhood, grouping.centers  # (B, G, K, 3), (B, G, 3)
        B, G, K, _ = neighborhood.shape
        if mask is None:
            mask = random_patch_mask(B, G, self.mask_ratio, device=points.device)
        counts = mask.sum(dim=1)
        if mask.shape != (B, G) or not bool((counts == counts[0]).all()) or int(counts[0]) in (0, G):
            raise ValueError(f"mask must be (B={B}, G={G}) with the same number (0 < M < G) of True per row")
        M = int(counts[0])
        # Stable sort puts visible patches first and masked last, each in their original order.
        order = mask.to(torch.int8).argsort(dim=1, stable=True)
        vis_idx, mask_idx = order[:, : G - M], order[:, G - M :]

        tokens = enc.encoder(neighborhood)  # (B, G, encoder_dims): every patch is embedded, as the official code
        if enc.reduce_dim is not None:
            tokens = enc.reduce_dim(tokens)
        x_vis = gather_points(tokens, vis_idx)  # (B, G-M, C)
        pos_vis = enc.pos_embed(gather_points(centers, vis_idx))
        x_vis = enc.forward_blocks(x_vis, pos_vis)[0]  # normed (B, G-M, C)

        C = x_vis.shape[-1]
        dec_pos = torch.cat(
            [
                self.decoder_pos_embed(gather_points(centers, vis_idx)),
                self.decoder_pos_embed(gather_points(centers, mask_idx)),
            ],
            dim=1,
        )
        x_full = torch.cat([x_vis, self.mask_token.expand(B, M, C)], dim=1)
        x_rec = self.MAE_decoder(x_full, dec_pos, M)  # (B, M, C)
        pred = self.increase_dim(x_rec.transpose(1, 2)).transpose(1, 2).reshape(B, M, K, 3)
        target = torch.gather(neighborhood, 1, mask_idx[:, :, None, None].expand(-1, -1, K, 3))
        if self.norm_target:  # (B, M, K, 3) / (B, M, 1, 1): each patch's farthest point at radius 1
            target = target / target.norm(dim=-1).amax(dim=-1).clamp_min(1e-6)[..., None, None]
        loss = chamfer_distance(pred.reshape(B * M, K, 3), target.reshape(B * M, K, 3))
        return MAEOutput(loss, pred, target, mask, centers)

    def no_weight_decay(self) -> set:
        return {"mask_token"}


def encoder_kwargs_from_variant(name: str, **overrides: Any) -> Dict[str, Any]:
    """The encoder arguments of a registered classification variant (``point_mae_demo`` ...), head arguments dropped,
    so the pre-trained encoder has exactly the shapes :func:`pointclora.models.create_model(name)` expects."""
    from .registry import model_defaults

    kwargs = {**model_defaults(name), **overrides}
    for key in _HEAD_ONLY_KWARGS + ("builder",):
        kwargs.pop(key, None)
    kwargs.pop("cls_token", None)
    return kwargs


def encoder_state_dict(model_or_state: Any) -> Dict[str, torch.Tensor]:
    """The encoder part of a :class:`PointMAEPretrain` (or of its state dict), keys without ``MAE_encoder.``."""
    state = model_or_state.state_dict() if isinstance(model_or_state, nn.Module) else dict(model_or_state)
    prefix = "MAE_encoder."
    out = {k[len(prefix) :]: v.detach().cpu().clone() for k, v in state.items() if k.startswith(prefix)}
    if not out:
        raise KeyError(f"no '{prefix}*' keys found; is this a PointMAEPretrain state dict? keys: {sorted(state)[:5]}")
    return out


def export_encoder_state(
    model: PointMAEPretrain | Mapping[str, torch.Tensor],
    path: str,
    layout: str = "ours",
    variant: Optional[str] = None,
    config: Optional[Mapping[str, Any]] = None,
    extra: Optional[Mapping[str, Any]] = None,
) -> str:
    """Write a checkpoint that ``tools/finetune.py --ckpt`` (:func:`pointclora.models.load_pretrained`) loads.

    Args:
        model: the pre-training model or its state dict.
        path: output file (written atomically).
        layout: ``"ours"`` -> ``{'model': encoder keys (encoder.*, pos_embed.*, blocks.{i}.*, norm.*), 'variant',
            'config', 'version', ...}``; ``"point_mae"`` -> the official ``pretrain.pth`` layout
            ``{'base_model': {'module.MAE_encoder.blocks.blocks.{i}...', 'module.mask_token', 'module.MAE_decoder...'},
            'epoch': ...}`` (decoder keys included, as the released file; loaders report them as unexpected).
        variant: registered model name the encoder fits (recorded so tools can check it).
        config: the resolved run config (recorded).
        extra: more JSON-like entries (``epoch``, ``metrics`` ...).

    Returns:
        ``path``.
    """
    state = model.state_dict() if isinstance(model, nn.Module) else dict(model)
    if layout == "ours":
        obj: Dict[str, Any] = {"model": encoder_state_dict(state), "version": __version__, "kind": "point_mae_encoder"}
        if variant:
            obj["variant"] = variant
        if config is not None:
            obj["config"] = dict(config)
    elif layout == "point_mae":
        from .checkpoint import to_point_mae_layout

        encoder = to_point_mae_layout(encoder_state_dict(state))["base_model"]
        others = {"module." + k: v.detach().cpu().clone() for k, v in state.items() if not k.startswith("MAE_encoder.")}
        # Official order: mask_token first, then the encoder, then the decoder side.
        base = {"module.mask_token": others.pop("module.mask_token")} if "module.mask_token" in others else {}
        base.update(encoder)
        base.update(others)
        obj = {"base_model": base}
    else:
        raise ValueError(f"layout must be 'ours' or 'point_mae', got {layout!r}")
    if extra:
        obj.update(dict(extra))
    from ..utils.atomic import atomic_save  # temp file + fsync + rename: a kill never leaves a torn file

    atomic_save(obj, path)
    return path


def build_pretrain_model(
    variant: str, mask_ratio: float = 0.6, decoder_depth: int = 4, norm_target: bool = False, **overrides: Any
) -> PointMAEPretrain:
    """``PointMAEPretrain`` whose encoder matches the registered classification variant ``variant``."""
    model = PointMAEPretrain(
        mask_ratio=mask_ratio,
        decoder_depth=decoder_depth,
        norm_target=norm_target,
        **encoder_kwargs_from_variant(variant, **overrides),
    )
    model.variant = variant
    return model


__all__.append("build_pretrain_model")
