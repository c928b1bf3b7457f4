"""Task heads with Point-MAE's key names (``cls_head_finetune.{0,1,4,5,8}``)."""

from __future__ import annotations

from torch import nn

__all__ = ["ClassificationHead"]


class ClassificationHead(nn.Sequential):
    """MLP classifier on the ``[cls, max-pool]`` feature: ``(B, in_dim) -> (B, num_classes)``.

    ``batch_norm=True`` is Point-MAE's head (Linear BN ReLU Dropout ×2, Linear; indices 0,1,4,5,8);
    ``batch_norm=False`` is Point-BERT's lighter head (Linear ReLU Dropout Linear; indices 0,3).
    ``activation="gelu"`` is PPT's head (GELU in place of ReLU; the same indices).
    """

    def __init__(
        self,
        in_dim: int,
        num_classes: int,
        hidden_dim: int = 256,
        dropout: float = 0.5,
        batch_norm: bool = True,
        activation: str = "relu",
    ) -> None:
        if activation not in ("relu", "gelu"):
            raise ValueError(f"activation must be 'relu' or 'gelu', got {activation!r}")

        def act() -> nn.Module:
            return nn.ReLU(inplace=True) if activation == "relu" else nn.GELU()

        if batch_norm:
            layers = [
                nn.Linear(in_dim, hidden_dim),
                nn.BatchNorm1d(hidden_dim),
                act(),
                nn.Dropout(dropout),
                nn.Linear(hidden_dim, hidden_dim),
                nn.BatchNorm1d(hidden_dim),
                act(),
                nn.Dropout(dropout),
                nn.Linear(hidden_dim, num_classes),
            ]
        else:
            layers = [
                nn.Linear(in_dim, hidden_dim),
                act(),
                nn.Dropout(dropout),
                nn.Linear(hidden_dim, num_classes),
            ]
        super().__init__(*layers)
        self.num_classes = num_classes
