"""The one timed training step the cost benchmarks share (bench/adapters.py, bench/frontier.py, bench/peers_cost.py).

A step is what the Trainer does per batch: forward, cross-entropy plus the method's declared auxiliary losses
(CLoRA's weighted SADE, PointLoRA's mask loss; nothing for a plain model), backward, AdamW. It is timed in process CPU
time on the CPU (with ``OMP_NUM_THREADS=1``, the step's own work: waiting for a shared core is not counted) and in
wall time between CUDA synchronisations on a GPU.
"""

from __future__ import annotations

import statistics
import time
from typing import Callable, List, Sequence

import torch


def rss_kib(field: str) -> int:
    """``VmRSS`` / ``VmHWM`` (peak) of this process in KiB, from /proc (0 where there is none)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def training_step(
    model: torch.nn.Module,
    batch: int,
    npoints: int,
    num_classes: int,
    lr: float = 5e-4,
    device: str = "cpu",
) -> Callable[[], float]:
    """A function running one training step of ``model`` on a fixed random batch ``(batch, npoints, 3)``; it returns
    the step's time in seconds. Only ``requires_grad`` tensors are optimised (none: no optimizer step)."""
    from pointclora.peft import auxiliary_loss

    gen = torch.Generator().manual_seed(0)
    points = (torch.rand(batch, npoints, 3, generator=gen) * 2 - 1).to(device)
    labels = torch.randint(0, num_classes, (batch,), generator=gen).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.05) if params else None
    model.train()
    cuda = device == "cuda"
    clock = time.perf_counter if cuda else time.process_time

    def step() -> float:
        if cuda:
            torch.cuda.synchronize()
        t0 = clock()
        loss = torch.nn.functional.cross_entropy(model(points), labels)
        aux = auxiliary_loss(model)
        if aux is not None:
            loss = loss + aux
        loss.backward()
        if opt is not None:
            opt.step()
            opt.zero_grad(set_to_none=True)
        if cuda:
            torch.cuda.synchronize()
        return clock() - t0

    return step


def interleaved(steppers: Sequence[Callable[[], float]], steps: int, stat=statistics.median) -> List:
    """``stat`` (median) of each stepper's step times, taking steps round-robin so that load from other processes (a
    shared CPU) falls on every method alike; the first round is a warm-up (allocations, the optimizer state)."""
    times: List[List[float]] = [[] for _ in steppers]
    for i in range(steps + 1):
        for k, step in enumerate(steppers):
            t = step()
            if i:
                times[k].append(t)
    return [stat(t) for t in times]
