"""Named model variants: ``create_model(name, num_classes=..., **overrides)``, as timm's model registry."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from torch import nn

from .backbone import PointTransformer

__all__ = [
    "register_model",
    "create_model",
    "list_models",
    "model_defaults",
    "pretrained_names",
    "pretrained_path",
    "pretrained_meta",
]

_VARIANTS: Dict[str, Dict[str, Any]] = {}
_BUILDERS: Dict[str, Callable[..., nn.Module]] = {}
#: variant name -> weights file shipped in pointclora/assets (package data: loads offline).
_PRETRAINED: Dict[str, str] = {}
#: variant name -> what its shipped encoder was pre-trained with (num_points, up_axis): tools follow it (#19).
_PRETRAINED_META: Dict[str, Dict[str, Any]] = {}
_ASSETS = Path(__file__).resolve().parents[1] / "assets"


def register_model(
    name: str, builder: Callable[..., nn.Module] = PointTransformer, pretrained_file: Optional[str] = None,
    pretrained_meta: Optional[Dict[str, Any]] = None, **defaults: Any,
) -> None:
    """Register ``name`` as ``builder(**defaults)``; overrides given to :func:`create_model` win.

    ``pretrained_file``: a file name in ``pointclora/assets`` holding the variant's pre-trained encoder
    (``create_model(name, pretrained=True)`` and ``--ckpt NAME`` load it).
    """
    _VARIANTS[name] = dict(defaults)
    _BUILDERS[name] = builder
    if pretrained_file:
        _PRETRAINED[name] = pretrained_file
        _PRETRAINED_META[name] = dict(pretrained_meta or {})


def pretrained_meta(name: str) -> Dict[str, Any]:
    """What the shipped encoder of ``name`` was pre-trained with: ``num_points``, ``up_axis`` (empty if unknown)."""
    return dict(_PRETRAINED_META.get(name, {}))


def pretrained_names() -> List[str]:
    """Variants that ship pre-trained weights."""
    return sorted(_PRETRAINED)


def pretrained_path(name: str) -> Path:
    """The shipped weights file of ``name``; KeyError naming the variants that have one, FileNotFoundError when the
    package was installed without its assets."""
    if name not in _PRETRAINED:
        raise KeyError(f"model {name!r} ships no pre-trained weights; variants that do: {pretrained_names()}")
    path = _ASSETS / _PRETRAINED[name]
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the pre-trained weights of {name!r} are missing from the installed package")
    return path


def list_models() -> List[str]:
    return sorted(_VARIANTS)


def model_defaults(name: str) -> Dict[str, Any]:
    """The constructor kwargs a variant is built with (before overrides)."""
    _check_name(name)
    return dict(_VARIANTS[name])


def _check_name(name: str) -> None:
    if name not in _VARIANTS:
        close = difflib.get_close_matches(name, _VARIANTS, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise KeyError(f"unknown model {name!r}{hint} Available: {', '.join(list_models())}")


def create_model(name: str, num_classes: int = 40, pretrained: bool = False, **overrides: Any) -> nn.Module:
    """Build a named variant, e.g. ``create_model("point_mae_s", num_classes=15, num_groups=128)``.

    ``pretrained=True`` loads the variant's shipped encoder weights (:func:`pretrained_names`; the head stays
    freshly initialised, the cls token too: Point-MAE pre-training has none).

    The model records its name in ``model.variant`` and its arguments in ``model.constructor_kwargs`` (checkpoints
    and adapter files use them to rebuild the model and to refuse mismatches).
    """
    _check_name(name)
    kwargs = {**_VARIANTS[name], **overrides}
    model = _BUILDERS[name](num_classes=num_classes, **kwargs)
    model.variant = name
    # Enough to rebuild the same architecture later (adapter files and checkpoints record it).
    model.constructor_kwargs = {"name": name, "num_classes": num_classes, **overrides}
    if pretrained:
        from .checkpoint import load_pretrained

        load_pretrained(model, pretrained_path(name), log=False)
    return model


# Point-MAE ViT-S: 384 wide, 12 blocks, 6 heads, qkv without bias. 22,093,327 parameters with 15 classes.
register_model("point_mae_s", trans_dim=384, depth=12, num_heads=6, encoder_dims=384, drop_path_rate=0.1)
# Point-BERT: mini-PointNet emits 256 channels, reduce_dim lifts them to 384; light head without BN.
register_model(
    "point_bert_s", trans_dim=384, depth=12, num_heads=6, encoder_dims=256, drop_path_rate=0.1, head_batch_norm=False
)
# Small backbone for the embedded demo: trains on 2 CPU cores in minutes.
_SMALL = dict(trans_dim=128, depth=4, num_heads=4, encoder_dims=128, encoder_hidden_dims=(32, 64, 128), num_groups=32,
              drop_path_rate=0.0, head_hidden_dim=128)  # fmt: skip
register_model("point_mae_demo", group_size=16, **_SMALL)
# The shipped pre-trained small backbone: point_mae_demo's shapes with 32-point patches (32 x 32 covers all 1,024
# points), pre-trained with Point-MAE on the ModelNet10 train shapes outside the held-out report split
# (tools/pretrain.py --cfg pretrain_mn10.yaml; model card in models/README.md). ModelNet: academic research use only.
# Its files (ModelNet10 PCDs) are z-up: pretrained_meta records it, so y-up datasets are turned into its frame.
register_model("point_mae_mn10", pretrained_file="point_mae_mn10.pth",
               pretrained_meta={"num_points": 1024, "up_axis": "z"}, group_size=32, **_SMALL)  # fmt: skip
# Tiny variants for the test suite (same structure, every shape small).
register_model(
    "point_mae_tiny",
    trans_dim=32,
    depth=2,
    num_heads=2,
    encoder_dims=32,
    encoder_hidden_dims=(16, 32, 64),
    num_groups=16,
    group_size=8,
    drop_path_rate=0.0,
    head_hidden_dim=32,
)
register_model(
    "point_bert_tiny",
    trans_dim=32,
    depth=2,
    num_heads=2,
    encoder_dims=24,
    encoder_hidden_dims=(16, 32, 64),
    num_groups=16,
    group_size=8,
    drop_path_rate=0.0,
    head_hidden_dim=32,
    head_batch_norm=False,
)
