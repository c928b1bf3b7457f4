"""Training-step time and peak memory of CLoRA vs LoRA vs full vs linear on point_mae_s, plus a CLoRA ablation.

    python bench/adapters.py                              # B=32, 2048 points (the issue's setting; a GPU run)
    python bench/adapters.py --batch 2 --npoints 1024 --steps 3      # quick CPU run

One step = forward, cross-entropy (+ sade_weight · SADE for CLoRA), backward, AdamW step. Each method runs in its own
child process so its peak memory is its own: on CUDA ``max_memory_allocated``; on CPU the peak resident set size
(``VmHWM``) minus the resident size before the first step. Step times are taken in this process, round-robin over the
methods (one step each in turn, so load from other processes on a shared machine falls on all alike), median over
``--steps`` after a warm-up round. Ratios are to LoRA (time, memory) and to the frozen backbone (merged inference
GFLOPs). The ablation (SADE on/off, p, r, share) runs in this process and reports parameters and step time, each
variant timed alternately with the default.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any, Dict, List

import torch


def _rss_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def _build(method: str, peft_kwargs: Dict[str, Any], num_groups: int, device: str):
    from pointclora.models import create_model
    from pointclora.peft import inject_adapters, make_peft_config

    torch.manual_seed(0)
    model = create_model("point_mae_s", num_classes=15, num_groups=num_groups).to(device)
    cfg = make_peft_config(method, **peft_kwargs)
    inject_adapters(model, cfg)
    return model, cfg


def _stepper(model, cfg, batch: int, npoints: int, device: str):
    """A function that runs one training step and returns its wall time."""
    from pointclora.peft import sade_loss

    gen = torch.Generator().manual_seed(0)
    points = (torch.rand(batch, npoints, 3, generator=gen) * 2 - 1).to(device)
    labels = torch.randint(0, 15, (batch,), generator=gen).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=5e-4, weight_decay=0.05) if params else None
    lam = float(getattr(cfg, "sade_weight", 0.0))
    model.train()

    def step() -> float:
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        loss = torch.nn.functional.cross_entropy(model(points), labels)
        if lam > 0:
            loss = loss + lam * sade_loss(model)
        loss.backward()
        if opt is not None:
            opt.step()
            opt.zero_grad(set_to_none=True)
        if device == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t0

    return step


def _interleaved(steppers: List[Any], steps: int) -> List[float]:
    """Median step time of each stepper, taking steps round-robin so that load from other processes (a shared CPU)
    falls on every method alike; the first round is a warm-up."""
    times: List[List[float]] = [[] for _ in steppers]
    for i in range(steps + 1):
        for k, step in enumerate(steppers):
            t = step()
            if i:
                times[k].append(t)
    return [statistics.median(t) for t in times]


def worker(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Child process: one method, returns step time, peak memory, parameter counts and GFLOPs."""
    from pointclora.models.flops import count_flops
    from pointclora.peft import merge_adapters, trainable_parameter_summary

    device = spec["device"]
    model, cfg = _build(spec["method"], spec.get("peft_kwargs", {}), spec["num_groups"], device)
    counts = trainable_parameter_summary(model)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = _rss_kib("VmRSS") * 1024
    step = _stepper(model, cfg, spec["batch"], spec["npoints"], device)
    for _ in range(2):  # two steps: the optimizer state exists from the first
        step()
    peak = (torch.cuda.max_memory_allocated() if device == "cuda" else _rss_kib("VmHWM") * 1024) - base
    model.eval()
    unmerged = count_flops(model, spec["npoints"])
    merge_adapters(model)
    merged = count_flops(model, spec["npoints"])
    return dict(method=spec["method"], peak_bytes=peak, **counts,
                gflops_frozen=unmerged.linear_conv / 1e9, gflops_unmerged=unmerged.total() / 1e9,
                gflops_merged=merged.total() / 1e9)


def _run_child(spec: Dict[str, Any]) -> Dict[str, Any]:
    out = subprocess.run([sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)],
                         capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise RuntimeError(f"worker for {spec['method']} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--npoints", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--methods", default="clora,lora,full,linear")
    ap.add_argument("--no-ablation", action="store_true")
    ap.add_argument("--ablation-steps", type=int, default=None, help="default: --steps")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    if args.batch < 2:
        raise SystemExit("--batch must be >= 2: the head's BatchNorm trains and needs more than one sample")
    num_groups = max(1, args.npoints // 16)
    common = dict(batch=args.batch, npoints=args.npoints, steps=args.steps, num_groups=num_groups, device=args.device)
    print(f"point_mae_s, 15 classes, batch {args.batch}, {args.npoints} points / {num_groups} groups, device "
          f"{args.device}, torch threads {torch.get_num_threads()}, median of {args.steps} steps after 1 warm-up")
    methods = args.methods.split(",")
    rows = [_run_child({**common, "method": m}) for m in methods]  # memory, counts, GFLOPs: one process each
    steppers = []
    for m in methods:
        model, cfg = _build(m, {}, num_groups, args.device)
        steppers.append(_stepper(model, cfg, args.batch, args.npoints, args.device))
    for r, t in zip(rows, _interleaved(steppers, args.steps)):
        r["step_s"] = t
    del steppers
    ref = next((r for r in rows if r["method"] == "lora"), rows[0])
    mem_label = "peak alloc MB" if args.device == "cuda" else "peak RSS+ MB"
    print(f"{'method':<8}{'trainable':>12}{'w/o head':>12}{'step s':>9}{'× lora':>8}{mem_label:>15}{'× lora':>8}"
          f"{'GF unmerged':>13}{'GF merged':>11}{'merged/frozen':>15}")
    for r in rows:
        print(f"{r['method']:<8}{r['trainable_params']:>12,}{r['trainable_params_without_head']:>12,}"
              f"{r['step_s']:>9.3f}{r['step_s'] / ref['step_s']:>8.2f}{r['peak_bytes'] / 2**20:>15.0f}"
              f"{r['peak_bytes'] / max(ref['peak_bytes'], 1):>8.2f}{r['gflops_unmerged']:>13.3f}"
              f"{r['gflops_merged']:>11.3f}{r['gflops_merged'] / r['gflops_frozen']:>15.3f}")
    if args.no_ablation:
        return 0

    steps = args.ablation_steps or args.steps
    variants = [("default (p4 r8 shape, SADE 0.1)", {}), ("SADE off", dict(sade_weight=0.0))]
    for p in (1, 2, 4, 8):
        for r in (4, 8):
            for share in ("shape", "block"):
                if (p, r, share) != (4, 8, "shape"):
                    variants.append((f"p{p} r{r} {share}", dict(num_bases=p, r=r, share=share)))
    from pointclora.peft import trainable_parameter_summary

    print(f"\nCLoRA ablation (same batch; each variant timed alternately with the default, median of {steps} steps)")
    print(f"{'variant':<34}{'adapter params':>15}{'rank bound':>11}{'step s':>9}{'× default':>11}")
    default_model, default_cfg = _build("clora", {}, num_groups, args.device)
    default_step = _stepper(default_model, default_cfg, args.batch, args.npoints, args.device)
    for label, kw in variants:
        model, cfg = _build("clora", kw, num_groups, args.device)
        n = trainable_parameter_summary(model)["adapter_params"]
        t_default, t = _interleaved([default_step, _stepper(model, cfg, args.batch, args.npoints, args.device)], steps)
        print(f"{label:<34}{n:>15,}{cfg.num_bases * cfg.r:>11}{t:>9.3f}{t / t_default:>11.2f}")
        del model
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
