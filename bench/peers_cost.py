"""The peer PEFT methods side by side on point_mae_s (15 classes): trainable parameters, inference GFLOPs at 1,024 and
2,048 points, training-step time and peak memory relative to CLoRA, measured in one run.

    OMP_NUM_THREADS=1 nice python bench/peers_cost.py [--batch 32] [--steps 2] [--methods clora idpt ...] [--markdown]

Each method runs in its own child process (so its peak memory is its own: the peak resident set size ``VmHWM``
minus the resident size before the first step), one after the other, with the same seeded batch of ``--batch``
random clouds of 2,048 points (128 groups), AdamW over the trainable tensors, the method's auxiliary loss when it has
one (CLoRA's SADE, PointLoRA's mask loss). Step time is process CPU time (``time.process_time``; with
``OMP_NUM_THREADS=1`` the step's own work: waiting for a core shared with other jobs is not counted), the median of
``--steps`` steps after one warm-up step. GFLOPs: batch 1, Linear + Conv multiply-adds (:mod:`pointclora.models.flops`)
with every extra token and module of the method, merged for mergeable methods (CLoRA), without the attention
matmuls, as the papers count; 1,024 points use 64 groups, 2,048 points 128 (the official ModelNet / ScanObjectNN
settings; PPT's and PointGST's ModelNet configs use 64 extra groups / windows that divide 64, set here too).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from typing import Any, Dict, List

import torch
from stepping import rss_kib, training_step

METHODS = ("clora", "idpt", "dapt", "ppt", "pointlora", "pointgst", "gaprompt")
#: Options of the ModelNet (1,024 points, 64 groups) configs where they differ from the ScanObjectNN defaults.
MODELNET = {
    "ppt": {"prompt_num_group": 64},
    "dapt": {"rank": 72, "drop_adapter_rate": 0.0, "prompt_token": "None"},
    "gaprompt": {"perturbation": 0.05},
}
#: Published trainable parameters and GFLOPs (PEERS.md; PointGST's table; "-" where not published).
PAPER = {"clora": ("-", "fewest (claim)"), "idpt": ("1.7 M", "7.10"), "dapt": ("1.1 M", "4.96"),
         "ppt": ("1.04 M", "-"), "pointlora": ("0.77 M", "-"), "pointgst": ("0.6 M", "4.81"),
         "gaprompt": ("0.6 M", "-")}  # fmt: skip


def _model(method: str, num_groups: int, options: Dict[str, Any]):
    from pointclora.models import create_model
    from pointclora.peft import inject_adapters, make_peft_config

    torch.manual_seed(0)
    model = create_model("point_mae_s", num_classes=15, num_groups=num_groups)
    return inject_adapters(model, make_peft_config(method, **options))


def _gflops(method: str, num_points: int) -> float:
    import copy

    from pointclora.models.flops import count_gflops
    from pointclora.peft import can_merge, merge_and_unload

    groups = num_points // 16
    model = _model(method, groups, MODELNET.get(method, {}) if num_points == 1024 else {})
    if can_merge(model):
        model = merge_and_unload(copy.deepcopy(model))
    return count_gflops(model, num_points)


def worker(spec: Dict[str, Any]) -> Dict[str, Any]:
    from pointclora.peft import trainable_parameter_summary

    method = spec["method"]
    model = _model(method, 128, {})
    counts = trainable_parameter_summary(model)
    base = rss_kib("VmRSS") * 1024
    step = training_step(model, spec["batch"], 2048, num_classes=15)
    times = [step() for _ in range(spec["steps"] + 1)][1:]  # the first step is a warm-up (the optimizer state)
    peak = rss_kib("VmHWM") * 1024 - base
    return dict(method=method, trainable=counts["trainable_params"], step_s=statistics.median(times), peak_bytes=peak,
                gflops_1024=_gflops(method, 1024), gflops_2048=_gflops(method, 2048))  # fmt: skip


def main(argv: List[str] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=2)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--markdown", action="store_true")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    rows = []
    for method in args.methods:
        spec = {"method": method, "batch": args.batch, "steps": args.steps}
        out = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)],
                             capture_output=True, text=True, check=False)  # fmt: skip
        if out.returncode != 0:
            raise SystemExit(f"worker for {method} failed:\n{out.stderr[-3000:]}")
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"# {method} done", file=sys.stderr)
    ref = next((r for r in rows if r["method"] == "clora"), rows[0])
    if args.markdown:
        print(
            f"| method | trainable | paper | GFLOPs 1k | GFLOPs 2k | paper GFLOPs | step time (B={args.batch}, "
            "CPU) | × CLoRA | peak memory | × CLoRA |"
        )
        print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        t, m = r["step_s"] / ref["step_s"], r["peak_bytes"] / ref["peak_bytes"]
        paper = PAPER[r["method"]]
        if args.markdown:
            print(
                f"| {r['method']} | {r['trainable']:,} | {paper[0]} | {r['gflops_1024']:.2f} | "
                f"{r['gflops_2048']:.2f} | {paper[1]} | {r['step_s']:.1f} s | {t:.2f} | "
                f"{r['peak_bytes'] / 2**30:.2f} GiB | {m:.2f} |"
            )
        else:
            print(json.dumps({**r, "step_vs_clora": t, "memory_vs_clora": m}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
