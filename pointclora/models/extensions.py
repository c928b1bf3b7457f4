"""Extension points of the backbone and its blocks: where prompt and adapter methods plug in.

A PEFT method that adds tokens or runs modules between / beside the blocks (IDPT, DAPT, PPT, PointGST, ...) does not
edit the backbone: it builds :class:`BackboneExtension` / :class:`BlockExtension` modules and installs them with
``host.add_extension(name, module)``. They are registered under ``extensions.<name>`` of their host (the backbone, or
``blocks.<i>``), so they are saved, moved and counted like any submodule, and the host calls their hooks in
installation order (the call sites are listed in :mod:`pointclora.models.backbone`). Every hook defaults to
"no change"; a host without extensions calls nothing (outputs bit-identical to the plain model).

Shapes: ``x (B, T, C)`` tokens (cls first when present), ``pos (B, T, C)`` position embeddings (or ``None`` once a
method has added them itself), ``centers (B, G, 3)``, ``points (B, N, 3+)``.
"""

from __future__ import annotations

from typing import List, Optional, Tuple

import torch
from torch import nn

__all__ = ["BackboneExtension", "BlockExtension", "ExtensionHost"]

Tokens = Tuple[torch.Tensor, Optional[torch.Tensor]]


class ExtensionHost:
    """Mixin for an ``nn.Module`` that accepts extensions (the backbone and :class:`~pointclora.models.layers.Block`).

    The ``extensions`` ModuleDict is created on the first ``add_extension``, so a model without extensions has exactly
    the plain model's ``state_dict`` keys and module tree.
    """

    def add_extension(self, name: str, module: nn.Module) -> None:
        """Install ``module`` as ``extensions.<name>``; a name already installed is an error."""
        exts = self._modules.get("extensions")
        if exts is None:
            exts = nn.ModuleDict()
            self.add_module("extensions", exts)
        if name in exts:
            raise ValueError(f"{type(self).__name__} already has an extension named {name!r}")
        exts[name] = module

    def extension_modules(self) -> List[nn.Module]:
        """Installed extensions in installation order (``[]`` when none)."""
        exts = self._modules.get("extensions")
        return list(exts.values()) if exts is not None else []


class BackboneExtension(nn.Module):
    """Hooks around the token sequence of a :class:`~pointclora.models.backbone.PointTransformerEncoder`."""

    def on_points(self, backbone: nn.Module, points: torch.Tensor) -> torch.Tensor:
        """Before grouping: ``points (B, N, 3) -> (B, N', 3)`` (GAPrompt shifts them and appends prompt points)."""
        return points

    def on_tokens(
        self, backbone: nn.Module, x: torch.Tensor, pos: torch.Tensor, centers: torch.Tensor, points: torch.Tensor
    ) -> Tokens:
        """After tokenization (cls prepended), before the blocks: add tokens, or add ``pos`` once and return None."""
        return x, pos

    def before_block(self, backbone: nn.Module, index: int, x: torch.Tensor, pos: Optional[torch.Tensor]) -> Tokens:
        """Before block ``index`` (before ``pos`` is added to its input)."""
        return x, pos

    def block_input(self, backbone: nn.Module, index: int, x: torch.Tensor) -> torch.Tensor:
        """The input of block ``index`` once positions are added (PPT's prompt MLPs read ``x + pos``)."""
        return x

    def after_block(self, backbone: nn.Module, index: int, x: torch.Tensor, pos: Optional[torch.Tensor]) -> Tokens:
        """After block ``index``."""
        return x, pos

    def pool(self, backbone: nn.Module, x: torch.Tensor) -> Optional[torch.Tensor]:
        """``x (B, T, C)`` normed -> the classifier's feature ``(B, D)``, or None to leave pooling to the model."""
        return None

    def pooled_dim(self, backbone: nn.Module) -> Optional[int]:
        """D of :meth:`pool` (sizes the head), or None."""
        return None

    def make_head(self, backbone: nn.Module, in_dim: int, num_classes: int) -> Optional[nn.Module]:
        """The classifier head for a pooled feature of ``in_dim``, or None for the model's own kind."""
        return None

    def patch_tokens(self, backbone: nn.Module, x: torch.Tensor) -> torch.Tensor:
        """Drop the tokens this extension added: ``(B, T', C) -> (B, T, C)`` as the plain backbone has them."""
        return x


class BlockExtension(nn.Module):
    """Hooks inside a pre-norm :class:`~pointclora.models.layers.Block` (parallel / post-block adapters)."""

    def mlp_branch(self, x: torch.Tensor, h: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``x`` the residual stream after attention, ``h = norm2(x)``, ``y = mlp(h)`` -> the MLP branch (before
        drop-path): a parallel adapter returns ``y + adapter(h)``."""
        return y

    def block_output(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        """``out = x + drop_path(branch)`` -> the block's output (may change the token count)."""
        return out
