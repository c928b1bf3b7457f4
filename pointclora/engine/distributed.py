"""torchrun / DDP helpers and the batch sampler that makes N processes see the same global batches as one.

Launch: ``torchrun --nproc_per_node 2 tools/finetune.py --cfg ...``. torchrun sets ``RANK``, ``WORLD_SIZE`` and
``LOCAL_RANK``; :func:`init_distributed` picks NCCL on CUDA and gloo on CPU. ``data.batch_size`` is the *global*
batch per optimizer step, so a 2-process run optimises the same objective as a 1-process run.
"""

from __future__ import annotations

import atexit
import os
from dataclasses import dataclass
from typing import Iterator, List

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

__all__ = ["DistInfo", "init_distributed", "cleanup_distributed", "is_main", "barrier", "all_reduce_sum",
           "GlobalBatchSampler"]


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group when launched by torchrun (``WORLD_SIZE`` > 1); a no-op otherwise."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(local_rank)
        dist.init_process_group(backend=backend)
        # Destroy the group before the interpreter tears down: left alive, its gloo threads are killed at exit and a
        # rank can abort ("terminate called without an active exception"), failing the launch after a good run.
        atexit.register(cleanup_distributed)
    return DistInfo(rank=rank, world_size=world, local_rank=local_rank)


def cleanup_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_main() -> bool:
    return not (dist.is_available() and dist.is_initialized()) or dist.get_rank() == 0


def barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def all_reduce_sum(values: List[float], device: torch.device) -> List[float]:
    """Sum a few Python numbers over processes (logging only)."""
    if not (dist.is_available() and dist.is_initialized()):
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


class GlobalBatchSampler(Sampler[List[int]]):
    """Yields this process's micro-batches of one global shuffled order.

    Epoch ``e`` permutes the dataset with ``seed + e`` (so it needs no state to resume), cuts it into global batches of
    ``batch_size`` (the remainder is dropped, as Point-MAE's train loader), and splits every global batch into
    ``accumulation_steps * world_size`` equal micro-batches; micro-step ``j`` of rank ``r`` gets chunk
    ``j * world_size + r``. With one process and no accumulation it yields the global batches themselves.
    """

    def __init__(
        self,
        num_samples: int,
        batch_size: int,
        world_size: int = 1,
        rank: int = 0,
        accumulation_steps: int = 1,
        shuffle: bool = True,
        seed: int = 0,
    ) -> None:
        parts = world_size * accumulation_steps
        if batch_size % parts:
            raise ValueError(
                f"data.batch_size={batch_size} must be divisible by world_size ({world_size}) x "
                f"optim.accumulation_steps ({accumulation_steps})"
            )
        if num_samples < batch_size:
            raise ValueError(
                f"the training set has {num_samples} samples, fewer than data.batch_size={batch_size}; "
                "lower data.batch_size"
            )
        self.num_samples, self.batch_size = num_samples, batch_size
        self.world_size, self.rank, self.accumulation_steps = world_size, rank, accumulation_steps
        self.micro = batch_size // parts
        self.shuffle, self.seed, self.epoch = shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    @property
    def steps_per_epoch(self) -> int:
        return self.num_samples // self.batch_size

    def __len__(self) -> int:
        return self.steps_per_epoch * self.accumulation_steps

    def __iter__(self) -> Iterator[List[int]]:
        if self.shuffle:
            g = torch.Generator().manual_seed(self.seed + self.epoch)
            order = torch.randperm(self.num_samples, generator=g).tolist()
        else:
            order = list(range(self.num_samples))
        for step in range(self.steps_per_epoch):
            batch = order[step * self.batch_size : (step + 1) * self.batch_size]
            for j in range(self.accumulation_steps):
                chunk = j * self.world_size + self.rank
                yield batch[chunk * self.micro : (chunk + 1) * self.micro]
