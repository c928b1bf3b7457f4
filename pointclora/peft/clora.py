"""CLoRA: collaborative low-rank adaptation (CLORA.md).

Shape group ``g`` (all LRMs of one ``(in, out)`` shape, or of one shape inside one block with ``share="block"``) owns
one :class:`CLoRABank` of ``p`` pairs ``A_h (r × in)``, ``B_h (out × r)``, stored stacked:

- ``A = [A_1; …; A_p]`` of shape ``(p·r, in)``  (rows ``h·r … h·r+r-1`` are ``A_h``),
- ``B = [B_1 … B_p]`` of shape ``(out, p·r)``  (columns ``h·r … h·r+r-1`` are ``B_h``),

so the forward is two plain GEMMs around one small batched einsum. The banks live once on the model
(``model.clora_banks``); every :class:`CLoRALinear` only *references* its bank (not a registered submodule), so
``model.parameters()`` and ``state_dict()`` hold each bank tensor exactly once. Each layer owns
``Q (n_splits, p, r, r)``, ``Q[j, h] = Q_h^j``, initialised to the identity.

``ΔW_j = s · Σ_h B_h Q_h^j A_h``; with ``B = 0`` at initialisation ``ΔW_j = 0``: the wrapped model equals the frozen
one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Dict, Iterable, Iterator, List, Optional, Set, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from .base import AdapterLinear, kaiming_uniform_like_lora_
from .config import LowRankConfig, PeftConfigError, _check_float, _check_int
from .registry import AdapterMethod, AuxLoss, register_peft_method

__all__ = ["CLoRAConfig", "CLoRABank", "CLoRALinear", "CLoRAMethod", "sade_loss", "sade_loss_naive", "clora_layers",
           "BANKS_ATTR"]  # fmt: skip


@dataclass
class CLoRAConfig(LowRankConfig):
    """Collaborative LoRA (CLORA.md).

    Args:
        r: rank of each base pair (A_h: r×in, B_h: out×r, Q_h^j: r×r).
        num_bases: p, the number of shared (A_h, B_h) pairs per shape group (>= 1).
        alpha: scaling numerator, ``s = alpha / r``; ``None`` means ``alpha = r`` (s = 1).
        dropout, target_modules, exclude_modules, split_qkv: see :class:`AdapterConfig`.
        share: ``"shape"`` one bank per (in, out) shape for the whole model; ``"block"`` one bank per shape per block.
        sade_weight: λ of ``L = L_task + λ · L_SADE`` (0 turns SADE off); ``auxiliary_loss(model)`` applies it.
        q_weight_decay: put the coefficient matrices ``Q`` (initialised to the identity) in the weight-decay group.
            Default false: AdamW would pull them toward 0, a regulariser the method does not have (decay is meant
            to pull an update toward "no change", which for ``Q`` is ``I``, not 0). ``true`` restores the old groups.
        q_fixed: freeze every ``Q`` at its identity initialisation (an ablation: the layers then share ``B A`` with no
            per-layer coefficients, so collaboration is off; ``Q`` is neither trained nor counted as trainable).
        train_modules: trained besides the adapters (default: the model's ``default_train_modules``).
    """

    num_bases: int = 4
    share: str = "shape"
    sade_weight: float = 0.1
    q_weight_decay: bool = False
    q_fixed: bool = False

    def validate(self) -> None:
        super().validate()
        _check_int("num_bases", self.num_bases, 1)
        if self.share not in ("shape", "block"):
            raise PeftConfigError(f"share must be 'shape' or 'block', got {self.share!r}")
        self.sade_weight = _check_float("sade_weight", self.sade_weight, 0.0)
        if not isinstance(self.q_weight_decay, bool):
            raise PeftConfigError(f"q_weight_decay must be true or false, got {self.q_weight_decay!r}")
        if not isinstance(self.q_fixed, bool):
            raise PeftConfigError(f"q_fixed must be true or false, got {self.q_fixed!r}")


#: Attribute of the model root that owns the CLoRA banks (``model.clora_banks[key].A / .B``).
BANKS_ATTR = "clora_banks"

#: ε of the squared cosine's denominator (CLORA.md).
SADE_EPS = 1e-12


class CLoRABank(nn.Module):
    """``p`` shared pairs for one shape group: ``A (p·r, in)`` Kaiming-uniform, ``B (out, p·r)`` zero."""

    def __init__(
        self,
        in_features: int,
        out_features: int,
        r: int,
        num_bases: int,
        device: Optional[torch.device] = None,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.r = r
        self.num_bases = num_bases
        self.A = nn.Parameter(torch.empty(num_bases * r, in_features, device=device, dtype=dtype))
        self.B = nn.Parameter(torch.zeros(out_features, num_bases * r, device=device, dtype=dtype))
        kaiming_uniform_like_lora_(self.A, in_features)

    def extra_repr(self) -> str:
        return f"in={self.in_features}, out={self.out_features}, r={self.r}, p={self.num_bases}"


class CLoRALinear(AdapterLinear):
    """A frozen ``nn.Linear`` plus ``n_splits`` CLoRA LRMs drawing on a shared bank.

    ``x (..., in) -> (..., n_splits · out)``. With ``n_splits = 3`` (``attn.qkv`` split) q, k and v share the bank's
    ``x Aᵀ`` (one GEMM for the three LRMs), then each applies its own ``Q`` and the shared ``B``.
    """

    def __init__(
        self,
        base_layer: nn.Linear,
        bank: CLoRABank,
        bank_key: str,
        n_splits: int = 1,
        scaling: float = 1.0,
        dropout: float = 0.0,
    ) -> None:
        super().__init__(base_layer, n_splits, scaling, dropout)
        if (bank.in_features, bank.out_features) != (self.in_features, self.out_features):
            raise ValueError(
                f"bank {bank_key!r} has shape in={bank.in_features}, out={bank.out_features} but the layer's LRMs are "
                f"in={self.in_features}, out={self.out_features}"
            )
        # Referenced, not registered: the model owns the bank once (model.clora_banks[bank_key]).
        object.__setattr__(self, "_bank", bank)
        self.bank_key = bank_key
        self.r = bank.r
        self.num_bases = bank.num_bases
        eye = torch.eye(bank.r, device=bank.A.device, dtype=bank.A.dtype)
        self.Q = nn.Parameter(eye.expand(n_splits, bank.num_bases, bank.r, bank.r).clone())

    @property
    def bank(self) -> CLoRABank:
        return self._bank

    def adapter_delta(self, x: torch.Tensor) -> torch.Tensor:
        bank, p, r = self._bank, self.num_bases, self.r
        z = F.linear(x, bank.A).unflatten(-1, (p, r))  # (..., p, r)     z_h = A_h x
        z = torch.einsum("...hr,nhsr->...nhs", z, self.Q)  # (..., n, p, r)  z'_h = Q_h^j z_h, batched over h (and j)
        delta = F.linear(z.flatten(-2), bank.B)  # (..., n, out)   Σ_h B_h z'_h
        return delta.flatten(-2) * self.scaling  # (..., n·out)

    def low_rank_factors(self):
        """``(A (p·r, in), Bp (n·out, p·r))``, ``Bp_j = [B_1 Q_1^j … B_p Q_p^j]``: ``ΔW = s · Bp A`` (fused forward).

        ``out·p·r²`` work per LRM, once per step, instead of the ``Q`` einsum on every token.
        """
        bank, p, r = self._bank, self.num_bases, self.r
        BQ = torch.einsum("ohs,nhsr->nohr", bank.B.view(self.out_features, p, r), self.Q)  # (n, out, p, r)
        return bank.A, BQ.reshape(self.n_splits * self.out_features, p * r)

    def delta_weight(self) -> torch.Tensor:
        """``s · [ΔW_1; …; ΔW_n]`` of shape ``(n·out, in)`` (merging and tests; training never builds it per token)."""
        A, Bp = self.low_rank_factors()
        return (Bp @ A) * self.scaling

    def adapter_parameters(self) -> Iterator[nn.Parameter]:
        """Only the layer's own ``Q``; the bank's tensors belong to the model's ``clora_banks``."""
        yield self.Q

    def adapter_flops_per_token(self) -> int:
        """Multiply-adds per token: ``x Aᵀ`` once (shared by the splits), ``n·p·r²`` for Q, ``n·out·p·r`` for B."""
        if self.merged:
            return 0
        pr = self.num_bases * self.r
        return pr * self.in_features + self.n_splits * (self.num_bases * self.r * self.r + pr * self.out_features)

    def extra_repr(self) -> str:
        return f"bank={self.bank_key!r}, r={self.r}, p={self.num_bases}, " + super().extra_repr()


def clora_layers(model: nn.Module) -> List[CLoRALinear]:
    return [m for m in model.modules() if isinstance(m, CLoRALinear)]


def _group_by_bank(layers: Iterable[CLoRALinear]) -> Dict[int, List[CLoRALinear]]:
    groups: Dict[int, List[CLoRALinear]] = {}
    for layer in layers:
        groups.setdefault(id(layer.bank), []).append(layer)
    return groups


def _sade_bank(bank: CLoRABank, Q: torch.Tensor) -> torch.Tensor:
    """``Σ_{h<k} c²_hk`` for each of the ``J`` LRMs whose coefficients are ``Q (J, p, r, r)``; returns ``(J,)``.

    ``⟨B_h Q_h A_h, B_k Q_k A_k⟩ = tr((B_hᵀ B_k) Q_k (A_k A_hᵀ) Q_hᵀ)`` from the Gram matrices ``G_B = Bᵀ B`` and
    ``G_A = A Aᵀ`` (``p·r × p·r``, once per bank), then ``O(J p² r³)``; no ``out × in`` matrix is ever formed.
    """
    p, r = bank.num_bases, bank.r
    GA = (bank.A @ bank.A.T).view(p, r, p, r)  # GA[h, a, k, b] = A_h[a] · A_k[b]
    GB = (bank.B.T @ bank.B).view(p, r, p, r)  # GB[h, a, k, b] = (B_hᵀ B_k)[a, b]
    X = torch.einsum("hakb,jkbc->jhkac", GB, Q)  # (B_hᵀ B_k) Q_k
    Y = torch.einsum("jhad,kchd->jhkac", Q, GA)  # Y[j,h,k,a,c] = Σ_d Q_h[a,d] (A_k A_hᵀ)[c,d]
    inner = (X * Y).sum(dim=(-2, -1))  # (J, p, p): inner[j, h, k] = ⟨M_h, M_k⟩
    norms = torch.diagonal(inner, dim1=1, dim2=2)  # (J, p)
    c2 = inner.square() / (norms.unsqueeze(2) * norms.unsqueeze(1) + SADE_EPS)
    upper = torch.triu(torch.ones(p, p, dtype=torch.bool, device=c2.device), diagonal=1)
    return c2[:, upper].sum(dim=1)


def sade_loss(model: nn.Module) -> torch.Tensor:
    """Sample-agnostic diversity enhancement: ``mean_j Σ_{h<k} c²_hk`` over every CLoRA LRM of ``model`` (scalar).

    ``c²_hk = ⟨M_h, M_k⟩² / (⟨M_h, M_h⟩⟨M_k, M_k⟩ + 1e-12)``, ``M_h = B_h Q_h^j A_h`` (no square roots, so the value and
    gradient are 0, not NaN, at ``B = 0``). A model without CLoRA layers, or with ``p = 1``, gives a zero tensor.
    The trainer adds ``config.sade_weight * sade_loss(model)``.
    """
    per_lrm = []
    for layers in _group_by_bank(clora_layers(model)).values():
        bank = layers[0].bank
        Q = torch.cat([layer.Q.reshape(-1, bank.num_bases, bank.r, bank.r) for layer in layers])  # (J, p, r, r)
        per_lrm.append(_sade_bank(bank, Q))
    if not per_lrm:
        ref = next(iter(model.parameters()), None)
        return torch.zeros((), device=ref.device if ref is not None else None)
    return torch.cat(per_lrm).mean()


def sade_loss_naive(model: nn.Module) -> torch.Tensor:
    """Reference SADE: builds every ``M_h = B_h Q_h^j A_h`` (``out × in``) and takes Frobenius inner products.

    ``O(p·r·out·in + p²·out·in)`` per LRM; for tests and ``bench/sade.py`` only.
    """
    values = []
    for layer in clora_layers(model):
        bank, p, r = layer.bank, layer.num_bases, layer.r
        for j in range(layer.n_splits):
            M = [bank.B[:, h * r : (h + 1) * r] @ layer.Q[j, h] @ bank.A[h * r : (h + 1) * r] for h in range(p)]
            total = bank.A.new_zeros(())
            for h in range(p):
                for k in range(h + 1, p):
                    hk, hh, kk = (M[h] * M[k]).sum(), (M[h] * M[h]).sum(), (M[k] * M[k]).sum()
                    total = total + hk.square() / (hh * kk + SADE_EPS)
            values.append(total)
    if not values:
        return torch.zeros(())
    return torch.stack(values).mean()


# --- the registered method --------------------------------------------------------------------------------------------
_BLOCK_RE = re.compile(r"(?:^|\.)blocks\.(\d+)(?:\.|$)")


def bank_key(name: str, in_features: int, out_features: int, share: str) -> str:
    """``"384x384"`` (``share="shape"``) or ``"block3_384x384"`` (``share="block"``; ModuleDict keys have no dots)."""
    key = f"{in_features}x{out_features}"
    if share == "block":
        found = _BLOCK_RE.search(name)
        if found:
            key = f"block{found.group(1)}_{key}"
    return key


@register_peft_method
class CLoRAMethod(AdapterMethod):
    """CLoRA: the model owns one :class:`CLoRABank` per shape group (``model.clora_banks``), each wrapped layer its
    ``Q``; the auxiliary loss is SADE weighted by ``sade_weight``; ``Q`` stays out of weight decay unless
    ``q_weight_decay``; merges exactly."""

    name = "clora"
    config_class = CLoRAConfig
    description = "collaborative LoRA: shared bases per shape group, per-layer Q, SADE"

    def _key(self, name: str, layer: nn.Linear, n_splits: int) -> str:
        return bank_key(name, layer.in_features, layer.out_features // n_splits, self.config.share)

    def create_shared_state(self, model: nn.Module, targets: List[Tuple[str, nn.Linear]]) -> None:
        if hasattr(model, BANKS_ATTR):
            raise PeftConfigError(f"model already has an attribute {BANKS_ATTR!r}")
        banks = nn.ModuleDict()
        for name, layer in targets:
            n = self.n_splits(name, layer)
            key = self._key(name, layer, n)
            if key not in banks:
                w = layer.weight
                banks[key] = CLoRABank(
                    layer.in_features, layer.out_features // n, self.config.r, self.config.num_bases,
                    device=w.device, dtype=w.dtype if w.dtype.is_floating_point else torch.float32,
                )  # fmt: skip
        setattr(model, BANKS_ATTR, banks)

    def make_layer(self, model: nn.Module, name: str, base_layer: nn.Linear, n_splits: int) -> AdapterLinear:
        key = self._key(name, base_layer, n_splits)
        bank = getattr(model, BANKS_ATTR)[key]
        return CLoRALinear(base_layer, bank, key, n_splits, self.config.scaling, self.config.dropout)

    def apply(self, model: nn.Module) -> List[str]:
        trained = super().apply(model)
        if self.config.q_fixed:  # the ablation: Q stays the identity it was initialised to
            for layer in clora_layers(model):
                layer.Q.requires_grad_(False)
        return trained

    def shared_state(self, model: nn.Module) -> Optional[nn.Module]:
        banks = getattr(model, BANKS_ATTR, None)
        return banks if isinstance(banks, nn.Module) else None

    def group_key(self, layer: AdapterLinear) -> str:
        return getattr(layer, "bank_key", super().group_key(layer))

    def shared_parameter_counts(self, model: nn.Module) -> Dict[str, int]:
        banks = self.shared_state(model)
        return {k: sum(p.numel() for p in b.parameters()) for k, b in banks.items()} if banks is not None else {}

    def auxiliary_losses(self, model: nn.Module) -> Dict[str, AuxLoss]:
        if self.config.sade_weight <= 0:
            return {}  # SADE off: not even computed
        return {"sade": AuxLoss(sade_loss(model), float(self.config.sade_weight))}

    def no_weight_decay(self, model: nn.Module) -> Set[str]:
        if self.config.q_weight_decay:
            return set()
        q_ids = {id(layer.Q) for layer in clora_layers(model)}
        return {n for n, p in model.named_parameters() if id(p) in q_ids}

    def unload(self, model: nn.Module) -> None:
        super().unload(model)
        if hasattr(model, BANKS_ATTR):
            delattr(model, BANKS_ATTR)
