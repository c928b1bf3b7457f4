"""Trainable parameters (with / without the head) and GFLOPs (frozen, unmerged, merged) of a model + adapter, built
the way a training run builds it (``tools/count_params.py``; CLORA.md's "How we count")."""

from __future__ import annotations

import copy
import logging
from typing import Any, Dict

import torch

__all__ = ["count", "count_table"]

logger = logging.getLogger("pointclora.count_params")

#: CLI option -> config field; an option is accepted only for methods whose config has that field.
_OPTION_FIELDS = {"r": "--r", "num_bases": "--num-bases", "share": "--share", "split_qkv": "--no-split-qkv"}


def _peft_kwargs(args: Any) -> Dict[str, Any]:
    """The adapter options given on the command line, checked against the method's config fields."""
    import dataclasses

    from ..peft.registry import get_method_class

    fields = {f.name for f in dataclasses.fields(get_method_class(args.peft).config_class)}
    given = {"r": args.r, "num_bases": args.num_bases, "share": args.share,
             "split_qkv": False if args.no_split_qkv else None}  # fmt: skip
    kwargs: Dict[str, Any] = {}
    for field, value in given.items():
        if value is None:
            continue
        if field not in fields:
            raise ValueError(f"{_OPTION_FIELDS[field]} does not apply to --peft {args.peft!r}")
        kwargs[field] = value
    return kwargs


#: Class counts of the datasets whose YAML does not say it (the official releases).
_KNOWN_NUM_CLASSES = {"scanobjectnn": 15, "modelnet40": 40, "shapenet55": 55}


def _num_classes_from_config(cfg: Dict[str, Any]) -> int:
    dataset = cfg.get("dataset") or {}
    for key in ("num_classes", "way", "num_categories"):
        if dataset.get(key):
            return int(dataset[key])
    name = str(dataset.get("name", ""))
    if name in _KNOWN_NUM_CLASSES:
        return _KNOWN_NUM_CLASSES[name]
    raise ValueError(f"cannot tell the number of classes of dataset {name!r} from the config: pass --num-classes")


def _apply_config(args: Any) -> Dict[str, Any]:
    """Fill unset arguments from ``--cfg``; returns the config's model constructor overrides."""
    from ..config import load_config
    from ..peft.config import DEFAULT_METHOD

    cfg = load_config(args.cfg, args.set)
    model_cfg = dict(cfg.get("model") or {})
    for key in ("checkpoint", "checkpoint_prefix", "init"):
        model_cfg.pop(key, None)
    args.model = args.model or model_cfg.pop("name", None)
    model_cfg.pop("name", None)
    args.npoints = args.npoints or int((cfg.get("data") or {}).get("num_points") or 2048)
    args.num_classes = args.num_classes or _num_classes_from_config(cfg)
    if args.num_groups is None and "num_groups" in model_cfg:
        args.num_groups = int(model_cfg.pop("num_groups"))
    model_cfg.pop("num_groups", None)
    if args.peft is None:
        peft = dict(cfg.get("peft") or {})
        args.peft = peft.pop("method", DEFAULT_METHOD)
        args.peft_from_config = peft
    return model_cfg


def count(args: Any) -> Dict[str, Any]:
    """The counts of the model + adapter ``args`` describe (the options of ``tools/count_params.py``: ``cfg``,
    ``set``, ``model``, ``num_classes``, ``npoints``, ``num_groups``, ``peft``, ``r``, ``num_bases``, ``share``,
    ``no_split_qkv``, ``no_flops``), built by the library's own builder
    (:func:`pointclora.tasks.common.build_adapted_model`) as a training run builds it."""
    from ..models import model_defaults
    from ..models.flops import count_flops
    from ..peft import can_merge, merge_and_unload, trainable_parameter_summary
    from ..peft.config import DEFAULT_METHOD
    from ..tasks.common import build_adapted_model

    model_overrides = _apply_config(args) if args.cfg else {}
    args.model = args.model or "point_mae_s"
    args.npoints = args.npoints or 2048
    args.num_classes = args.num_classes or 15
    args.peft = args.peft or DEFAULT_METHOD
    if args.num_groups is None and args.cfg and "num_groups" in model_defaults(args.model):
        num_groups = int(model_defaults(args.model)["num_groups"])  # the variant's own choice, as training uses
    else:
        num_groups = args.num_groups or max(1, args.npoints // 16)
    torch.manual_seed(0)
    peft = {**getattr(args, "peft_from_config", {}), **_peft_kwargs(args), "method": args.peft}
    cfg = {"model": {"name": args.model, **model_overrides}, "peft": peft}
    model = build_adapted_model(cfg, args.model, None, logger.info, num_classes=args.num_classes,
                                num_groups=num_groups)  # fmt: skip
    config = model.peft_config
    result: Dict[str, Any] = dict(trainable_parameter_summary(model))
    result.update(model=args.model, peft=config.to_dict(), num_classes=args.num_classes, npoints=args.npoints,
                  num_groups=num_groups)
    if not args.no_flops:
        logger.info("counting FLOPs: %s at %d points / %d groups", args.model, args.npoints, num_groups)
        unmerged = count_flops(model, args.npoints)
        # measured again on the plain merged model (no wrappers left), not assumed: must equal the frozen count
        deployed = merge_and_unload(copy.deepcopy(model)) if can_merge(model) else model
        merged = count_flops(deployed, args.npoints)
        result.update(
            gflops_frozen=unmerged.linear_conv / 1e9,
            gflops_unmerged=unmerged.total() / 1e9,
            gflops_merged=merged.total() / 1e9,
            gflops_frozen_with_attention=(unmerged.linear_conv + unmerged.attention) / 1e9,
        )
    return result


def count_table(result: Dict[str, Any]) -> str:
    lines = [f"{result['model']} + {result['peft']['method']}  ({result['num_classes']} classes, "
             f"{result['npoints']} points / {result['num_groups']} groups)"]
    for key in ("adapter_params", "trainable_params", "trainable_params_without_head", "total_params"):
        lines.append(f"  {key:<32}{result[key]:>14,}  ({result[key] / 1e6:.3f} M)")
    for key in ("gflops_frozen", "gflops_frozen_with_attention", "gflops_unmerged", "gflops_merged"):
        if key in result:
            lines.append(f"  {key:<32}{result[key]:>14.3f}")
    return "\n".join(lines)


