"""Training-step time and peak memory of CLoRA vs Hugging Face peft's LoRA, our LoRA, full fine-tuning and linear
probing on point_mae_s, plus a CLoRA ablation.

    python bench/adapters.py                                   # B=32 and 8, 2048 points (the issue's setting)
    python bench/adapters.py --batch 2 --npoints 1024 --steps 3 --no-ablation     # quick CPU run
    python bench/adapters.py --batch 32 --repeats 5 --no-ablation --no-memory     # issue 20: ratios to the floor
    pip install -e .[bench]                                    # peft (and fpsample for bench/ops.py)

Methods: ``clora`` (r 8, p 4, SADE 0.1), ``peft_lora`` (peft ``LoraConfig(r=8, lora_alpha=8, target_modules=[qkv,
proj, fc1, fc2])`` injected into the same backbone: the same layers, qkv as one fused Linear as peft users would),
``lora`` (ours: q, k, v split), ``full``, ``linear``, and ``frozen``: no adapter, but ``cls_token``/``cls_pos`` and
the head train, so the backward still runs through every block — the least any adapter method's step can cost
(every adapter method trains the same head and cls token/position).

One step = forward, cross-entropy (+ sade_weight · SADE for CLoRA), backward, AdamW step. Each method runs in its own
child process so its peak memory is its own: on CUDA ``max_memory_allocated``; on CPU the peak resident set size
(``VmHWM``) minus the resident size before the first step. Step times are taken in this process, round-robin over the
methods (one step each in turn, so load from other processes on a shared machine falls on all alike); on the CPU each
step is timed in process CPU time (``time.process_time``, with ``OMP_NUM_THREADS=1`` the step's own work: waiting for
a core shared with other jobs is not counted), on CUDA in wall time after a synchronize. ``min`` and ``median`` over
``--steps`` after a warm-up round. Ratios are to peft's LoRA (time, memory) and to full fine-tuning, printed beside
the targets of issue 13; merged inference GFLOPs are relative to the frozen backbone. ``--compile`` runs every model
through :func:`pointclora.utils.compile.maybe_compile` (slow to start). The ablation (SADE on/off, p, r, share) runs in
this process and reports parameters and step time, each variant timed alternately with the default.

The floor (issue 20): every method's median step over the ``frozen`` row's median step, computed within each of
``--repeats`` round-robin runs, and reported as the median of those per-run ratios (with their min-max): single runs
on a shared CPU spread by about ±10 %, and a ratio taken inside one run cancels the load both rows saw.
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
from stepping import interleaved, rss_kib, training_step

NUM_CLASSES = 15  # ScanObjectNN, the papers' setting
TRAIN_MODULES = ("cls_head_finetune", "cls_token", "cls_pos")  # trained besides the adapters, by every method here


def _import_peft():
    # transformers (imported by peft) imports torchvision when one is installed, and a torchvision built for another
    # torch fails on import; peft's LoRA never needs it.
    try:
        import torchvision  # noqa: F401
    except Exception:
        sys.modules["torchvision"] = None
    try:
        import peft
    except ImportError as err:
        raise SystemExit(f"peft_lora needs Hugging Face peft: pip install -e .[bench] ({err})") from None
    return peft


def _build(method: str, peft_kwargs: Dict[str, Any], num_groups: int, device: str, compile_model: bool = False):
    from pointclora.models import create_model
    from pointclora.peft import inject_adapters, make_peft_config
    from pointclora.utils.compile import maybe_compile

    torch.manual_seed(0)
    model = create_model("point_mae_s", num_classes=NUM_CLASSES, num_groups=num_groups).to(device)
    if method == "peft_lora":
        peft = _import_peft()
        model.requires_grad_(False)
        lora = peft.LoraConfig(r=8, lora_alpha=8, lora_dropout=0.0, target_modules=["qkv", "proj", "fc1", "fc2"])
        peft.inject_adapter_in_model(lora, model)  # marks only the lora_A/lora_B tensors trainable
        if isinstance(getattr(model, "peft_config", None), dict):
            # peft records its configs as model.peft_config, the attribute our library reads as the model's own
            # PeftConfig; its injected layers do not need the record to train.
            del model.peft_config
        cfg = None
    elif method == "frozen":
        cfg = make_peft_config("none")
        inject_adapters(model, cfg)
    else:
        cfg = make_peft_config(method, **peft_kwargs)
        inject_adapters(model, cfg)
    if method in ("peft_lora", "frozen"):
        for name, p in model.named_parameters():
            if name.startswith(TRAIN_MODULES):
                p.requires_grad_(True)
    return maybe_compile(model, compile_model, device), cfg


def worker(spec: Dict[str, Any]) -> Dict[str, Any]:
    """Child process: one method, returns step time, peak memory, parameter counts and GFLOPs."""
    from pointclora.models.flops import count_flops
    from pointclora.peft import merge_adapters, trainable_parameter_summary

    device = spec["device"]
    model, _ = _build(spec["method"], spec.get("peft_kwargs", {}), spec["num_groups"], device, spec["compile"])
    counts = trainable_parameter_summary(model)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        base = rss_kib("VmRSS") * 1024
    step = training_step(model, spec["batch"], spec["npoints"], NUM_CLASSES, device=device)
    for _ in range(2):  # two steps: the optimizer state exists from the first
        step()
    peak = (torch.cuda.max_memory_allocated() if device == "cuda" else rss_kib("VmHWM") * 1024) - base
    model.eval()
    unmerged = count_flops(model, spec["npoints"])
    if spec["method"] == "peft_lora":  # peft's layers are not ours: count_flops sees only the frozen Linears
        return dict(
            method=spec["method"],
            peak_bytes=peak,
            **counts,
            gflops_frozen=unmerged.linear_conv / 1e9,
            gflops_unmerged=float("nan"),
            gflops_merged=float("nan"),
        )
    merge_adapters(model)
    merged = count_flops(model, spec["npoints"])
    return dict(
        method=spec["method"],
        peak_bytes=peak,
        **counts,
        gflops_frozen=unmerged.linear_conv / 1e9,
        gflops_unmerged=unmerged.total() / 1e9,
        gflops_merged=merged.total() / 1e9,
    )


def _run_child(spec: Dict[str, Any]) -> Dict[str, Any]:
    out = subprocess.run(
        [sys.executable, os.path.abspath(__file__), "--worker", json.dumps(spec)],
        capture_output=True,
        text=True,
        check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(f"worker for {spec['method']} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


TARGETS = (  # issue 13: (numerator, denominator, batch or None for the largest, bound)
    ("clora", "peft_lora", 32, 0.75),
    ("clora", "peft_lora", 8, 0.90),
    ("clora", "full", None, 0.55),
)


def _table(rows: List[Dict[str, Any]], ref: Dict[str, Any], device: str) -> None:
    mem_label = "peak alloc MB" if device == "cuda" else "peak RSS+ MB"
    print(
        f"{'method':<10}{'trainable':>12}{'w/o head':>12}{'step min':>10}{'median':>9}{'× peft':>8}"
        f"{mem_label:>15}{'× peft':>8}{'GF unmerged':>13}{'GF merged':>11}{'merged/frozen':>15}"
    )
    for r in rows:
        mem = r.get("peak_bytes")
        mem_txt = (
            f"{mem / 2**20:>15.0f}{mem / max(ref.get('peak_bytes') or 1, 1):>8.2f}"
            if mem is not None
            else (f"{'—':>15}{'—':>8}")
        )
        gf = r.get("gflops_merged", float("nan"))
        print(
            f"{r['method']:<10}{r['trainable_params']:>12,}{r['trainable_params_without_head']:>12,}"
            f"{r['step_min']:>10.3f}{r['step_med']:>9.3f}{r['step_min'] / ref['step_min']:>8.2f}{mem_txt}"
            f"{r.get('gflops_unmerged', float('nan')):>13.3f}{gf:>11.3f}"
            f"{gf / r.get('gflops_frozen', float('nan')):>15.3f}"
        )


def _floor_ratios(rows: List[Dict[str, Any]], runs: List[List[Any]], floor: int, batch: int, npoints: int) -> None:
    """Each method's median step / the frozen floor's median step, taken within each run, then the median over runs."""
    print(f"\nbatch {batch}, {npoints} points: step time × the frozen floor (head + cls tokens train, the backward "
          f"runs through every block), median of {len(runs)} round-robin runs [min-max]")  # fmt: skip
    for k, r in enumerate(rows):
        ratios = sorted(run[k][1] / run[floor][1] for run in runs)
        r["floor_ratio"] = statistics.median(ratios)
        print(f"  {r['method']:<10}{r['floor_ratio']:>6.2f}×  [{ratios[0]:.2f}-{ratios[-1]:.2f}]")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, nargs="+", default=[32, 8], help="one table per batch size")
    ap.add_argument("--npoints", type=int, default=2048)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=1, help="round-robin timing runs; ratios to the floor: median")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument(
        "--methods", default="clora,peft_lora,full,frozen", help="from clora, peft_lora, lora, full, linear, frozen"
    )
    ap.add_argument("--compile", action="store_true", help="maybe_compile every model (inductor; slow to start)")
    ap.add_argument("--no-memory", action="store_true", help="skip the per-method child processes (peak memory)")
    ap.add_argument("--no-ablation", action="store_true")
    ap.add_argument("--ablation-steps", type=int, default=None, help="default: --steps")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return 0
    if min(args.batch) < 2:
        raise SystemExit("--batch must be >= 2: the head's BatchNorm trains and needs more than one sample")
    num_groups = max(1, args.npoints // 16)
    methods = args.methods.split(",")
    clock = "wall time" if args.device == "cuda" else "process CPU time"
    print(
        f"point_mae_s, 15 classes, {args.npoints} points / {num_groups} groups, device {args.device}, torch threads "
        f"{torch.get_num_threads()}, {clock}, min and median of {args.steps} round-robin steps after 1 warm-up"
        f"{', compiled' if args.compile else ''}"
    )
    from pointclora.peft import trainable_parameter_summary

    results: Dict[int, Dict[str, Dict[str, Any]]] = {}
    for batch in args.batch:
        common = dict(
            batch=batch,
            npoints=args.npoints,
            steps=args.steps,
            num_groups=num_groups,
            device=args.device,
            compile=args.compile,
        )
        # Memory, counts, GFLOPs: one child process each, at the largest batch only (minutes on a small CPU).
        with_memory = not args.no_memory and batch == max(args.batch)
        rows = [_run_child({**common, "method": m}) if with_memory else {"method": m} for m in methods]
        steppers = []
        for r, m in zip(rows, methods):
            model, _ = _build(m, {}, num_groups, args.device, args.compile)
            if "trainable_params" not in r:
                r.update(trainable_parameter_summary(model))
            steppers.append(training_step(model, batch, args.npoints, NUM_CLASSES, device=args.device))
        runs = [
            interleaved(steppers, args.steps, stat=lambda t: (min(t), statistics.median(t)))
            for _ in range(max(1, args.repeats))
        ]
        for k, r in enumerate(rows):
            r["step_min"] = min(run[k][0] for run in runs)
            r["step_med"] = statistics.median(run[k][1] for run in runs)
        del steppers
        if "frozen" in methods:
            _floor_ratios(rows, runs, methods.index("frozen"), batch, args.npoints)
        ref = next((r for r in rows if r["method"] == "peft_lora"), rows[0])
        print(f"\nbatch {batch} (ratios × the {ref['method']} row, step time by the min)")
        _table(rows, ref, args.device)
        results[batch] = {r["method"]: r for r in rows}

    print("\nissue 13 targets (step time by the min; memory at the largest batch)")
    largest = max(args.batch)
    for num, den, batch, bound in TARGETS:
        batch = batch or largest
        row = results.get(batch, {})
        if num in row and den in row:
            ratio = row[num]["step_min"] / row[den]["step_min"]
            floor = row["frozen"]["step_min"] / row[den]["step_min"] if "frozen" in row and den == "peft_lora" else None
            note = f"   (frozen backbone alone: {floor:.2f}, the floor of any adapter step)" if floor else ""
            print(
                f"  B={batch:<3} {num} / {den}: {ratio:.2f} (target <= {bound:.2f}: "
                f"{'met' if ratio <= bound else 'missed'}){note}"
            )
    row = results.get(largest, {})
    if all(m in row and row[m].get("peak_bytes") for m in ("clora", "peft_lora")):
        ratio = row["clora"]["peak_bytes"] / row["peft_lora"]["peak_bytes"]
        print(
            f"  B={largest:<3} clora / peft_lora peak memory: {ratio:.2f} (target <= 1.00: "
            f"{'met' if ratio <= 1.0 else 'missed'})"
        )
    if args.no_ablation:
        return 0

    steps = args.ablation_steps or args.steps
    args.batch = max(args.batch)
    variants = [("default (p4 r8 shape, SADE 0.1)", {}), ("SADE off", dict(sade_weight=0.0))]
    for p in (1, 2, 4, 8):
        for r in (4, 8):
            for share in ("shape", "block"):
                if (p, r, share) != (4, 8, "shape"):
                    variants.append((f"p{p} r{r} {share}", dict(num_bases=p, r=r, share=share)))
    from pointclora.peft import trainable_parameter_summary

    print(f"\nCLoRA ablation (same batch; each variant timed alternately with the default, median of {steps} steps)")
    print(f"{'variant':<34}{'adapter params':>15}{'rank bound':>11}{'step s':>9}{'× default':>11}")
    default_model, _ = _build("clora", {}, num_groups, args.device)
    default_step = training_step(default_model, args.batch, args.npoints, NUM_CLASSES, device=args.device)
    for label, kw in variants:
        model, cfg = _build("clora", kw, num_groups, args.device)
        n = trainable_parameter_summary(model)["adapter_params"]
        step = training_step(model, args.batch, args.npoints, NUM_CLASSES, device=args.device)
        t_default, t = interleaved([default_step, step], steps)
        print(f"{label:<34}{n:>15,}{cfg.num_bases * cfg.r:>11}{t:>9.3f}{t / t_default:>11.2f}")
        del model
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
