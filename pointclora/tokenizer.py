"""Point-MAE's tokenizer: FPS + kNN patches (``PointGrouper``) and the mini-PointNet patch embedding
(``MiniPointNet``, registered as ``encoder`` in the backbone so checkpoint keys read ``encoder.first_conv.0.weight``).
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .ops import Grouping, group_points

__all__ = ["PointGrouper", "MiniPointNet"]


class PointGrouper(nn.Module):
    """Split ``(B, N, 3)`` clouds into ``num_groups`` patches of ``group_size`` points. No parameters.

    Returns a :class:`~pointclora.ops.Grouping`: ``neighborhood (B, G, K, 3)`` relative to ``centers (B, G, 3)``.
    """

    def __init__(self, num_groups: int, group_size: int, skip_near_origin: bool = False) -> None:
        super().__init__()
        self.num_groups = num_groups
        self.group_size = group_size
        self.skip_near_origin = skip_near_origin

    def forward(self, points: torch.Tensor, lengths: Optional[torch.Tensor] = None) -> Grouping:
        return group_points(
            points[..., :3].contiguous(),
            self.num_groups,
            self.group_size,
            lengths=lengths,
            skip_near_origin=self.skip_near_origin,
        )

    def extra_repr(self) -> str:
        return f"num_groups={self.num_groups}, group_size={self.group_size}"


class MiniPointNet(nn.Module):
    """Shared PointNet over each patch: ``(B, G, K, 3)`` -> ``(B, G, C)`` tokens (Point-MAE's ``Encoder``).

    first_conv: Conv1d(3,128) BN ReLU Conv1d(128,256); global max feature concatenated *before* the per-point features
    (512 channels); second_conv: Conv1d(512,512) BN ReLU Conv1d(512,C); max over the K points.
    """

    def __init__(self, encoder_channel: int = 384, hidden_dims: tuple = (128, 256, 512)) -> None:
        super().__init__()
        h1, h2, h3 = hidden_dims  # (128, 256, 512) in Point-MAE; smaller only for tiny test/demo backbones
        self.encoder_channel = encoder_channel
        self.first_conv = nn.Sequential(
            nn.Conv1d(3, h1, 1), nn.BatchNorm1d(h1), nn.ReLU(inplace=True), nn.Conv1d(h1, h2, 1)
        )
        self.second_conv = nn.Sequential(
            nn.Conv1d(2 * h2, h3, 1), nn.BatchNorm1d(h3), nn.ReLU(inplace=True), nn.Conv1d(h3, encoder_channel, 1)
        )

    def forward(self, neighborhood: torch.Tensor) -> torch.Tensor:
        B, G, K, _ = neighborhood.shape
        x = neighborhood.reshape(B * G, K, 3).transpose(2, 1)  # (BG, 3, K)
        feature = self.first_conv(x)  # (BG, 256, K)
        global_feature = feature.max(dim=2, keepdim=True).values  # (BG, 256, 1)
        # [global, local] order, as the official weights expect.
        feature = torch.cat([global_feature.expand(-1, -1, K), feature], dim=1)  # (BG, 512, K)
        feature = self.second_conv(feature)  # (BG, C, K)
        return feature.max(dim=2).values.reshape(B, G, self.encoder_channel)
