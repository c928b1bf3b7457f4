"""Fold an adapter into its backbone and write a plain checkpoint that loads without pointclora's peft code.

    python tools/merge_adapter.py --adapter runs/x/adapter --base checkpoints/pretrain.pth --output merged.pth

The output is ``torch.save({'model': state_dict, 'config': {...}, 'version': ...})`` in our layout (``blocks.{i}``):
``create_model(variant, num_classes=...).load_state_dict(ckpt['model'])`` loads it, and
``pointclora.models.load_pretrained`` reads it like any of our checkpoints. The merged model runs at exactly the frozen
backbone's FLOPs.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from typing import List, Optional

import torch

logger = logging.getLogger("pointclora.merge_adapter")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pointclora-merge-adapter", description=__doc__.split("\n")[0])
    p.add_argument("--adapter", required=True, help="directory with adapter.safetensors + adapter_config.json")
    p.add_argument("--base", default=None, help="pre-trained checkpoint the adapter was trained on (else random init)")
    p.add_argument("--output", required=True, help="merged checkpoint path (.pth)")
    p.add_argument("--model", default=None, help="variant (default: the one recorded in the adapter)")
    p.add_argument("--num-classes", type=int, default=None, help="default: recorded in the adapter")
    p.add_argument("--allow-fingerprint-mismatch", action="store_true",
                   help="merge even if --base differs from the weights the adapter was trained on")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    from .. import __version__
    from ..models import create_model, load_pretrained
    from ..peft import load_adapter, merge_and_unload, read_adapter_config

    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    meta = read_adapter_config(args.adapter)
    base = meta.get("base_model", {})
    variant = args.model or base.get("variant")
    if variant is None:
        raise SystemExit("the adapter records no backbone variant; pass --model")
    constructor = dict(base.get("constructor") or {})
    num_classes = args.num_classes if args.num_classes is not None else constructor.get("num_classes", 40)
    overrides = {k: constructor[k] for k in ("num_groups", "group_size") if k in constructor}
    model = create_model(variant, num_classes=num_classes, **overrides)
    if args.base:
        load_pretrained(model, args.base)
    elif base.get("fingerprint"):
        logger.warning("no --base given: merging into randomly initialised weights (only meaningful for tests)")
    load_adapter(model, args.adapter, allow_fingerprint_mismatch=args.allow_fingerprint_mismatch)
    plain = merge_and_unload(model)
    out = {
        "model": plain.state_dict(),
        "config": {
            "model": variant,
            "num_classes": num_classes,
            "model_kwargs": overrides,
            "merged_adapter": meta["peft_config"],
            "adapter_base_fingerprint": base.get("fingerprint"),
        },
        "version": __version__,
    }
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    tmp = args.output + ".tmp"
    torch.save(out, tmp)
    os.replace(tmp, args.output)
    logger.info("wrote merged %s (%s adapter) to %s", variant, meta["peft_config"]["method"], args.output)
    return 0
