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
import json
import logging
import sys
from typing import List, Optional

from ..api.count import count, count_table
from .common import ToolParser, run_cli


def build_parser() -> argparse.ArgumentParser:
    from ..peft import list_peft_methods

    p = ToolParser(prog="pointclora-count-params", description=__doc__.split("\n")[0])
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
    p.add_argument("--debug", action="store_true", help="show the full traceback of an error")
    return p


def _body(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    result = count(args)
    print(json.dumps(result) if args.json else count_table(result))
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    return run_cli(_body, build_parser(), argv)


if __name__ == "__main__":
    raise SystemExit(main())
