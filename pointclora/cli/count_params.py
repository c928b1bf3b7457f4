"""Trainable parameters (with / without the head) and GFLOPs (frozen, unmerged, merged) of a model + adapter.

    python tools/count_params.py --model point_mae_s --num-classes 15 --npoints 2048 --peft clora [--json]
    python tools/count_params.py --cfg scanobjectnn.yaml [--peft lora] [--set peft.r=4] [--json]

Counts follow CLORA.md's "How we count": parameters each once (shared CLoRA banks once); GFLOPs at batch 1, one
multiply-add = one FLOP, over Linear and Conv layers, adapters added analytically when unmerged;
``gflops_frozen_with_attention`` adds the attention matmuls. With ``--json`` standard output holds one JSON object and
nothing else; logs go to standard error.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
from typing import Any, Dict, List, Optional

import torch

logger = logging.getLogger("pointclora.count_params")

#: CLI option -> config field; an option is accepted only for methods whose config has that field.
_OPTION_FIELDS = {"r": "--r", "num_bases": "--num-bases", "share": "--share", "split_qkv": "--no-split-qkv"}


def build_parser() -> argparse.ArgumentParser:
    from ..peft import list_peft_methods

    p = argparse.ArgumentParser(prog="pointclora-count-params", description=__doc__.split("\n")[0])
    p.add_argument("--cfg", default=None, help="experiment config: model, adapter and points are taken from it")
    p.add_argument("--set", nargs="+", default=[], metavar="KEY=VALUE", help="config overrides (with --cfg)")
    p.add_argument("--model", default=None, help="registered variant (default point_mae_s)")
    p.add_argument("--num-classes", type=int, default=None, help="default 15, or the config's dataset")
    p.add_argument("--npoints", type=int, default=None, help="points per cloud for the GFLOPs forward (default 2048)")
    p.add_argument("--num-groups", type=int, default=None, help="patches G (default npoints // 16: 128 at 2048)")
    p.add_argument("--peft", default=None, choices=list_peft_methods(),
                   help="default clora, or the config's peft section")
    p.add_argument("--r", type=int, default=None, help="adapter rank (clora/lora)")
    p.add_argument("--num-bases", type=int, default=None, help="CLoRA p")
    p.add_argument("--share", default=None, choices=("shape", "block"), help="CLoRA bank sharing")
    p.add_argument("--no-split-qkv", action="store_true", help="one fused qkv LRM instead of q, k, v")
    p.add_argument("--no-flops", action="store_true", help="parameters only")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    return p


def _peft_kwargs(args: argparse.Namespace) -> Dict[str, Any]:
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
            raise SystemExit(f"{_OPTION_FIELDS[field]} does not apply to --peft {args.peft!r}")
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
    raise SystemExit(f"cannot tell the number of classes of dataset {name!r} from the config: pass --num-classes")


def _apply_config(args: argparse.Namespace) -> Dict[str, Any]:
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


def count(args: argparse.Namespace) -> Dict[str, Any]:
    from ..models import create_model, model_defaults
    from ..models.flops import count_flops
    from ..peft import can_merge, inject_adapters, make_peft_config, merge_and_unload, trainable_parameter_summary
    from ..peft.config import DEFAULT_METHOD

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
    model = create_model(args.model, num_classes=args.num_classes, num_groups=num_groups, **model_overrides)
    peft_kwargs = {**getattr(args, "peft_from_config", {}), **_peft_kwargs(args)}
    config = make_peft_config(args.peft, **peft_kwargs)
    inject_adapters(model, config)
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


def _table(result: Dict[str, Any]) -> str:
    lines = [f"{result['model']} + {result['peft']['method']}  ({result['num_classes']} classes, "
             f"{result['npoints']} points / {result['num_groups']} groups)"]
    for key in ("adapter_params", "trainable_params", "trainable_params_without_head", "total_params"):
        lines.append(f"  {key:<32}{result[key]:>14,}  ({result[key] / 1e6:.3f} M)")
    for key in ("gflops_frozen", "gflops_frozen_with_attention", "gflops_unmerged", "gflops_merged"):
        if key in result:
            lines.append(f"  {key:<32}{result[key]:>14.3f}")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    result = count(args)
    if args.json:
        sys.stdout.write(json.dumps(result) + "\n")
    else:
        print(_table(result))
    return 0
