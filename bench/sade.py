"""SADE cost: the Gram form of CLORA.md vs the naive definition (build every M_h = B_h Q_h A_h), at ViT-S sizes.

    python bench/sade.py [--repeats 5] [--r 8] [--num-bases 4] [--threads N]

Prints, per shape group of point_mae_s (q/k/v/proj 384x384 ×48 LRMs, fc1 384->1536 ×12, fc2 1536->384 ×12) and for
the whole model: forward+backward time of each form, the speed ratio, and the relative difference of the values in
float64 (must be <= 1e-9) and float32.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from pointclora.models import create_model
from pointclora.peft import CLoRAConfig, inject_adapters, sade_loss, sade_loss_naive
from pointclora.peft.clora import clora_layers


def _randomize(model: torch.nn.Module, seed: int = 0) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("clora_banks.") or name.endswith(".Q"):
                p.add_(0.05 * torch.randn(p.shape, generator=gen, dtype=p.dtype))


def _time(fn, params, repeats: int) -> float:
    times = []
    for _ in range(repeats + 1):  # first call warms up
        for p in params:
            p.grad = None
        t0 = time.perf_counter()
        fn().backward()
        times.append(time.perf_counter() - t0)
    return statistics.median(times[1:])


class _Subset(torch.nn.Module):
    """Holds the CLoRA layers of one bank so sade_loss sees just that shape group."""

    def __init__(self, layers):
        super().__init__()
        self.layers = torch.nn.ModuleList(layers)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--r", type=int, default=8)
    ap.add_argument("--num-bases", type=int, default=4)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    config = CLoRAConfig(r=args.r, num_bases=args.num_bases)
    model = inject_adapters(create_model("point_mae_s", num_classes=15), config)
    _randomize(model)
    groups = {}
    for layer in clora_layers(model):
        groups.setdefault(layer.bank_key, []).append(layer)
    rows = [(key, _Subset(layers)) for key, layers in groups.items()] + [("all (mean over LRMs)", model)]
    print(f"SADE, point_mae_s, r={args.r}, p={args.num_bases}, torch threads={torch.get_num_threads()}; "
          f"forward+backward, median of {args.repeats}")
    print(f"{'group':<22}{'LRMs':>6}{'gram ms':>10}{'naive ms':>11}{'speed-up':>10}"
          f"{'rel diff f64':>14}{'rel diff f32':>14}")
    for key, holder in rows:
        params = [p for p in model.parameters() if p.requires_grad]
        n_lrm = sum(layer.n_splits for layer in clora_layers(holder))
        fast = _time(lambda: sade_loss(holder), params, args.repeats)
        slow = _time(lambda: sade_loss_naive(holder), params, max(1, args.repeats // 2))
        f32 = (sade_loss(holder).item(), sade_loss_naive(holder).item())
        model.double()
        f64 = (sade_loss(holder).item(), sade_loss_naive(holder).item())
        model.float()
        rel64 = abs(f64[0] - f64[1]) / abs(f64[1])
        rel32 = abs(f32[0] - f32[1]) / abs(f32[1])
        print(f"{key:<22}{n_lrm:>6}{fast * 1e3:>10.2f}{slow * 1e3:>11.1f}{slow / fast:>9.0f}x"
              f"{rel64:>14.1e}{rel32:>14.1e}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
