"""Named model variants: ``create_model(name, num_classes=..., **overrides)``, as timm's model registry."""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Union

from torch import nn

from ..config import register_section_schema
from .backbone import PointTransformer

__all__ = [
    "register_model",
    "create_model",
    "list_models",
    "model_defaults",
    "pretrained_names",
    "pretrained_path",
    "resolve_checkpoint_path",
    "find_backbone",
    "model_constructor_keys",
    "pretrained_meta",
]

_VARIANTS: Dict[str, Dict[str, Any]] = {}
_BUILDERS: Dict[str, Callable[..., nn.Module]] = {}
#: variant name -> weights file shipped in pointclora/assets (package data: loads offline).
_PRETRAINED: Dict[str, str] = {}
#: variant name -> what its shipped encoder was pre-trained with (num_points, up_axis): tools follow it (#19).
_PRETRAINED_META: Dict[str, Dict[str, Any]] = {}
#: variant name -> the pre-training config that makes its weights, for variants whose file is too large for the
#: package: looked up in the hub cache folder, where the recipe's last step writes it.
_BUILT_LOCALLY: Dict[str, str] = {}
_ASSETS = Path(__file__).resolve().parents[1] / "assets"


def register_model(
    name: str,
    builder: Callable[..., nn.Module] = PointTransformer,
    pretrained_file: Optional[str] = None,
    pretrained_meta: Optional[Dict[str, Any]] = None,
    pretrained_recipe: Optional[str] = None,
    **defaults: Any,
) -> None:
    """Register ``name`` as ``builder(**defaults)``; overrides given to :func:`create_model` win.

    ``pretrained_file``: a file name in ``pointclora/assets`` holding the variant's pre-trained encoder
    (``create_model(name, pretrained=True)`` and ``--ckpt NAME`` load it). ``pretrained_recipe``: the pre-training
    config (in ``configs/``) of a file the package does not hold; it is then read from the hub cache folder
    (``$POINTCLORA_CACHE/hub``), and its absence is reported with the commands that make it.
    """
    _VARIANTS[name] = dict(defaults)
    _BUILDERS[name] = builder
    if pretrained_file:
        _PRETRAINED[name] = pretrained_file
        _PRETRAINED_META[name] = dict(pretrained_meta or {})
        if pretrained_recipe:
            _BUILT_LOCALLY[name] = pretrained_recipe


def pretrained_meta(name: str) -> Dict[str, Any]:
    """What the shipped encoder of ``name`` was pre-trained with: ``num_points``, ``up_axis`` (empty if unknown)."""
    return dict(_PRETRAINED_META.get(name, {}))


def pretrained_names() -> List[str]:
    """Weights known by name: variants that ship pre-trained weights, and the official files of
    :mod:`pointclora.models.hub` (downloaded on first use)."""
    from .hub import hub_names

    return sorted(set(_PRETRAINED) | set(hub_names()))


def pretrained_path(name: str) -> Path:
    """The weights file of ``name``: shipped package data, a file its recipe wrote to the hub cache folder (variants
    registered with ``pretrained_recipe``), or an official file downloaded, verified and cached by
    :func:`pointclora.models.hub.download_pretrained`. KeyError naming the known names, FileNotFoundError when the
    package was installed without its assets or a recipe's file was not made, ``DownloadError`` (one line) when a
    download fails."""
    from .hub import download_pretrained, hub_names

    if name not in _PRETRAINED and name in hub_names():
        return download_pretrained(name)
    if name not in _PRETRAINED:
        raise KeyError(f"no pre-trained weights named {name!r}; known: {pretrained_names()}")
    path = _ASSETS / _PRETRAINED[name]
    if name in _BUILT_LOCALLY and not path.is_file():
        return _built_locally(name)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: the pre-trained weights of {name!r} are missing from the installed package")
    return path


def _built_locally(name: str) -> Path:
    from .hub import hub_cache_dir

    path = hub_cache_dir() / _PRETRAINED[name]
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found: the pre-trained weights of {name!r} are not in the package (too large) and no file "
            f"is hosted; make them with `python tools/pretrain.py --cfg {_BUILT_LOCALLY[name]} --output RUN` and "
            f"`python bench/ship_backbone.py --run RUN --out {path}` (models/README.md), or put a copy there"
        )
    return path


def resolve_checkpoint_path(path: Any) -> Path:
    """A relative checkpoint path is looked up in the current directory, then in the repository / install root."""
    import os

    p = Path(os.path.expanduser(os.fspath(path)))
    if p.is_absolute():
        return p
    for root in (Path.cwd(), Path(__file__).resolve().parents[2]):
        if (root / p).exists():
            return root / p
    return Path.cwd() / p


def find_backbone(checkpoint: Optional[Any]) -> Optional[Path]:
    """The backbone file a config's ``model.checkpoint`` names: ``None`` for none, a shipped backbone's name (package
    data, offline), or a path (:func:`resolve_checkpoint_path`); FileNotFoundError saying what to do when missing."""
    if not checkpoint:
        return None
    if str(checkpoint) in pretrained_names():
        return pretrained_path(str(checkpoint))
    path = resolve_checkpoint_path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(
            f"model.checkpoint={checkpoint!r} not found (looked in {Path.cwd()} and the repository root). Get the "
            "pre-trained weights (see models/README.md), pass --ckpt PATH, or --set model.checkpoint=null to train "
            "from scratch."
        )
    return path


def model_constructor_keys(name: Optional[str] = None) -> List[str]:
    """Keyword arguments a config's ``model`` section may pass to the constructors: those of every registered builder
    (a task may build the classifier, the segmentation model or the encoder from one section) and ``name``'s own
    variant defaults. Declared to :func:`pointclora.config.register_section_schema` as the ``model`` schema."""
    import inspect

    from .backbone import PointTransformerEncoder

    keys = set()
    for builder in {*_BUILDERS.values(), PointTransformerEncoder}:
        params = inspect.signature(builder).parameters.values()
        keys.update(p.name for p in params if p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL))
    keys -= {"self", "num_classes", "encoder_kwargs"}
    if name in _VARIANTS:
        keys.update(_VARIANTS[name])
    return sorted(keys)


def _model_section_keys(cfg: Dict[str, Any]) -> List[str]:
    section = cfg.get("model")
    return model_constructor_keys(section.get("name") if isinstance(section, dict) else None)


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


def create_model(name: str, num_classes: int = 40, pretrained: Union[bool, str] = False, **overrides: Any) -> nn.Module:
    """Build a named variant, e.g. ``create_model("point_mae_s", num_classes=15, num_groups=128)``.

    ``pretrained=True`` loads the variant's pre-trained encoder weights: shipped in the package, or the official file
    of :mod:`pointclora.models.hub` (downloaded once into the cache; the head stays freshly initialised, the cls token
    too: Point-MAE pre-training has none). ``pretrained="point_mae_scan_objbg"`` names another known file.

    The model records its name in ``model.variant`` and its arguments in ``model.constructor_kwargs`` (checkpoints
    and adapter files use them to rebuild the model and to refuse mismatches).
    """
    _check_name(name)
    weights = _pretrained_name(name, pretrained)
    if weights is not None and weights not in _PRETRAINED:
        from .hub import hub_entry

        # Official files: their encoders saw pointnet2_ops' FPS centres (skip_near_origin); explicit overrides win.
        defaults = {k: v for k, v in hub_entry(weights).model_kwargs.items() if k != "num_classes"}
        overrides = {**defaults, **overrides}
    kwargs = {**_VARIANTS[name], **overrides}
    model = _BUILDERS[name](num_classes=num_classes, **kwargs)
    model.variant = name
    # Enough to rebuild the same architecture later (adapter files and checkpoints record it).
    model.constructor_kwargs = {"name": name, "num_classes": num_classes, **overrides}
    if weights is not None:
        from .checkpoint import load_pretrained

        load_pretrained(model, pretrained_path(weights), log=False)
    return model


def _pretrained_name(variant: str, pretrained: Union[bool, str]) -> Optional[str]:
    """The weights ``create_model(variant, pretrained=...)`` loads: ``None``, a shipped or a hub file name."""
    if not pretrained:
        return None
    if isinstance(pretrained, str):
        if pretrained not in pretrained_names():
            raise KeyError(f"no pre-trained weights named {pretrained!r}; known: {pretrained_names()}")
        return pretrained
    if variant in _PRETRAINED:
        return variant
    from .hub import default_hub_file

    default = default_hub_file(variant)
    if default is None:
        raise KeyError(f"model {variant!r} ships no pre-trained weights and has no known official file; "
                       "variants that do: "
                       f"{sorted(set(_PRETRAINED) | set(_hub_defaults()))}")  # fmt: skip
    return default


def _hub_defaults() -> List[str]:
    from .hub import _DEFAULTS

    return list(_DEFAULTS)


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
# The larger ModelNet10 backbone (issue 20): 8 blocks, 256 wide (4 heads of 64, as ViT-S's), mini-PointNet 64-128-256,
# the same 32 x 32 tokens and frame as point_mae_mn10, so the backbone, not the head, holds the parameters (6.5M vs
# 0.2M). Pre-trained by configs/pretrain_mn10_8x256.yaml; its 26 MB file is not package data: the recipe's last step
# writes it to the hub cache, where pretrained=True reads it. Model card in models/README.md.
register_model("point_mae_mn10_8x256", pretrained_file="point_mae_mn10_8x256.pth",
               pretrained_meta={"num_points": 1024, "up_axis": "z"}, pretrained_recipe="pretrain_mn10_8x256.yaml",
               trans_dim=256, depth=8, num_heads=4, encoder_dims=256, encoder_hidden_dims=(64, 128, 256),
               num_groups=32, group_size=32, drop_path_rate=0.1)  # fmt: skip
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


register_section_schema("model", _model_section_keys)
