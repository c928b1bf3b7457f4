"""PointGST (Point cloud Graph Spectral Tuning, Liang et al., TPAMI'25), ``--peft pointgst``.

Reproduces ``models/PGST.py`` (``PCSA``, ``get_basis``, ``get_laplacian``), ``models/z_order.py`` (``xyz2key``) and
``PointTransformer_PGST`` / ``Block`` of ``models/PointTransformer.py`` of jerryfeng2003/PointGST @ 7fbe92f, with the
``part: adapt`` filter of ``tools/builder.py`` (written from reading, not copied):

- per cloud, a **graph Fourier basis** U of the patch centres: adjacency ``1 / (dist / min nonzero dist + I)``,
  normalised Laplacian ``I - D^-1/2 A D^-1/2`` (``D + 1e-6``), ``U = eigh(L).eigenvectors``; and **local bases**
  sub_U of the centres sorted in z-order (Morton keys of ``trunc(100 * centre)``, axes passed as y, x, z) and cut
  into windows of ``local`` = 32;
- a **PCSA** adapter per block, on the stream after attention, added after the MLP residual: ``h = down(x)``
  (C -> rank 36, Xavier), patch part: ``U x``, LayerNorm, ``+ SiLU(adapt1(.))`` (adapt1 rank -> rank, zero init,
  shared by the global and local paths), back with ``U^T``; the same on the z-order windows with sub_U; the two are
  summed and added to ``SiLU(h)``; ``up`` (rank -> C, zero init);
- trained: the PCSAs, the head, ``cls_token``/``cls_pos`` (names with ``adapt`` or ``cls``).

Quirks, each under an option defaulting to the official behaviour:

- ``transpose_basis`` (false): the official code projects with ``U @ x`` where the graph Fourier transform is
  ``U^T @ x`` (its comment: "should be U.transpose ... we keep it for reproducing our results in paper");
- ``batch_min_distance`` (true): the adjacency divides by the smallest nonzero distance of the **whole batch**
  (``L[L > 0]`` flattens the batch), so a cloud's logits depend on the other clouds of its batch; false uses each
  cloud's (each window's) own;
- ``zorder_wraparound`` (true): the Morton keys take the low 16 bits of the truncated, possibly negative,
  coordinates (two's complement: -1 sorts after 100); false shifts the coordinates to be non-negative first.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from ..models.extensions import BackboneExtension, BlockExtension
from .config import PeftConfig, PeftConfigError, _check_int
from .extension import ExtensionMethod
from .registry import register_peft_method

__all__ = ["PointGSTConfig", "PCSA", "PointGSTBasis", "PointGSTMethod", "graph_basis", "morton_keys"]

Basis = Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


@dataclass
class PointGSTConfig(PeftConfig):
    """PointGST options (official config names; defaults of ``cfgs/mae/finetune_scan_hardest_pgst.yaml``).

    Args:
        rank: the PCSA bottleneck (36).
        local: centres per z-order window of the local bases (32; the groups must be a multiple).
        transpose_basis / batch_min_distance / zorder_wraparound: the quirks (module docstring).
        train_modules: trained beside the PCSAs (default: head, ``cls_token``, ``cls_pos``).
    """

    method: ClassVar[str] = "pointgst"
    rank: int = 36
    local: int = 32
    transpose_basis: bool = False
    batch_min_distance: bool = True
    zorder_wraparound: bool = True

    def validate(self) -> None:
        super().validate()
        _check_int("rank", self.rank, 1)
        _check_int("local", self.local, 2)
        for key in ("transpose_basis", "batch_min_distance", "zorder_wraparound"):
            if not isinstance(getattr(self, key), bool):
                raise PeftConfigError(f"{key} must be true or false, got {getattr(self, key)!r}")


def graph_basis(centers: torch.Tensor, batch_min_distance: bool = True) -> torch.Tensor:
    """``centers (B, N, 3)`` -> U ``(B, N, N)``: eigenvectors (columns, ascending eigenvalues) of the normalised
    Laplacian of the inverse-distance graph. The operations follow the official order, so that ``eigh`` sees the
    same matrix and returns the same vectors (their signs are not unique)."""
    dist = torch.cdist(centers, centers)
    if batch_min_distance:
        scale = torch.min(dist[dist > 0], dim=-1, keepdim=True).values  # one scalar for the whole batch (quirk)
    else:
        scale = torch.where(dist > 0, dist, torch.full_like(dist, float("inf"))).amin(dim=(1, 2)).view(-1, 1, 1)
    eye = torch.eye(dist.size(-1), device=dist.device, dtype=dist.dtype)
    adj = 1 / (dist / scale + eye.unsqueeze(0))
    d_inv_sqrt = torch.diag_embed(torch.rsqrt(torch.sum(adj, dim=-1) + 1e-6))
    lap = eye - d_inv_sqrt @ adj @ d_inv_sqrt
    return torch.linalg.eigh(lap)[1]


def morton_keys(x: torch.Tensor, y: torch.Tensor, z: torch.Tensor, bits: int = 16) -> torch.Tensor:
    """Interleaved bits of the low ``bits`` bits of integer ``x, y, z`` (x bit i -> 3i+2, y -> 3i+1, z -> 3i), as
    the official lookup tables (two's complement for negative values)."""
    x, y, z = x.long(), y.long(), z.long()
    key = torch.zeros_like(x)
    for i in range(bits):
        key |= ((x >> i) & 1) << (3 * i + 2) | ((y >> i) & 1) << (3 * i + 1) | ((z >> i) & 1) << (3 * i)
    return key


def _gather_rows(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``t (B, N, D)``, ``idx (B, N)`` -> ``t[b, idx[b]]``."""
    return torch.gather(t, 1, idx.unsqueeze(-1).expand(-1, -1, t.size(-1)))


class PointGSTBasis(BackboneExtension):
    """Computes the global and local bases and the z-order permutation once per forward, for every block's PCSA."""

    def __init__(self, local: int, batch_min_distance: bool, zorder_wraparound: bool) -> None:
        super().__init__()
        self.local = local
        self.batch_min_distance = batch_min_distance
        self.zorder_wraparound = zorder_wraparound
        self.basis: Optional[Basis] = None

    def on_tokens(self, backbone, x, pos, centers, points):
        B, G, _ = centers.shape
        if G % self.local:
            raise ValueError(f"pointgst: the {G} groups must be a multiple of local={self.local}")
        U = graph_basis(centers, self.batch_min_distance)
        c = centers * 100
        if not self.zorder_wraparound:
            c = c - c.amin(dim=1, keepdim=True)
        key = morton_keys(c[:, :, 1], c[:, :, 0], c[:, :, 2])  # the official call passes y, x, z
        order = torch.sort(key)[1]
        inverse = torch.sort(order)[1]
        windows = _gather_rows(centers, order).reshape(B * (G // self.local), self.local, 3)
        sub_U = graph_basis(windows, self.batch_min_distance).reshape(B, G // self.local, self.local, self.local)
        self.basis = (U, sub_U, order, inverse)
        return x, pos


class PCSA(BlockExtension):
    """Point Cloud Spectral Adapter: ``x (B, 1+G, C)`` after attention -> ``up(SiLU(h) + spectral(h))`` added to the
    block's output (module docstring). Reads the bases of :class:`PointGSTBasis` (held by reference)."""

    def __init__(self, dim: int, rank: int, basis: PointGSTBasis, transpose_basis: bool) -> None:
        super().__init__()
        self.rank = rank
        self.transpose_basis = transpose_basis
        self.norm_ly1 = nn.LayerNorm(rank)
        self.norm_ly2 = nn.LayerNorm(rank)
        self.down = nn.Linear(dim, rank)
        self.up = nn.Linear(rank, dim)
        self.adapt1 = nn.Linear(rank, rank)
        nn.init.zeros_(self.adapt1.weight)
        nn.init.zeros_(self.adapt1.bias)
        nn.init.xavier_uniform_(self.down.weight)
        nn.init.zeros_(self.up.weight)
        nn.init.zeros_(self.up.bias)
        self._basis: List[PointGSTBasis] = [basis]

    def _spectral(self, U: torch.Tensor, x: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
        fwd, back = (U.transpose(-2, -1), U) if self.transpose_basis else (U, U.transpose(-2, -1))
        x_f = fwd @ x
        x_f = x_f + F.silu(self.adapt1(norm(x_f)))
        return back @ x_f

    def block_output(self, x: torch.Tensor, out: torch.Tensor) -> torch.Tensor:
        U, sub_U, order, inverse = self._basis[0].basis
        B, n_win, local, _ = sub_U.shape
        G = n_win * local
        h = self.down(x)
        patches = h[:, -G:]
        glob = self._spectral(U, patches, self.norm_ly1)
        windows = _gather_rows(patches, order).reshape(B, n_win, local, self.rank)
        loc = self._spectral(sub_U, windows, self.norm_ly2).reshape(B, G, self.rank)
        h = F.silu(h)
        h = torch.cat([h[:, :-G], glob + _gather_rows(loc, inverse) + h[:, -G:]], dim=1)
        return out + self.up(h)


@register_peft_method
class PointGSTMethod(ExtensionMethod):
    """PointGST: a graph-spectral adapter (PCSA) per block beside the MLP (module docstring)."""

    name = "pointgst"
    config_class = PointGSTConfig
    description = "PointGST (TPAMI'25): graph spectral adapters"

    def build(self, model: nn.Module) -> None:
        c = self.config
        if model.num_groups % c.local:
            raise PeftConfigError(f"local={c.local} must divide the model's {model.num_groups} groups")
        ref = next(model.parameters())
        basis = PointGSTBasis(c.local, c.batch_min_distance, c.zorder_wraparound)
        model.add_extension("pointgst", basis)
        for block in model.blocks:
            pcsa = PCSA(model.trans_dim, c.rank, basis, c.transpose_basis).to(device=ref.device, dtype=ref.dtype)
            block.add_extension("pointgst", pcsa)
