"""CPU thread counts that fit the cores this process may actually use.

PyTorch starts one OpenMP thread per *machine* core in every process, including each DataLoader worker. In a
container or under ``taskset`` with fewer cores, or with loader workers beside the main process, the threads
oversubscribe the cores and spin against each other: an epoch of the demo ran 3-6x slower on a busy 2-core machine
than with one thread per process. So:

- the main process uses the cores it may run on (``os.sched_getaffinity``, capped by a cgroup CPU quota), minus one
  per loader worker, minus the cores other processes keep busy (the 1-minute load average when the run starts), at
  least 1: OpenMP threads that share a core with another busy process wait on each other (a demo pre-training epoch
  took 7 s with the machine to itself and 176-210 s with 2 threads beside one other busy process);
- each loader worker uses one thread (:func:`worker_init`; its work is per-sample numpy/torch on small arrays).
  PyTorch already gives workers one *torch* thread; numpy's BLAS pool (OpenBLAS, one thread per machine core) is
  limited too when ``threadpoolctl`` is installed.

An explicit ``OMP_NUM_THREADS`` (or the ``threads`` argument) wins: the user knows the machine.
"""

from __future__ import annotations

import functools
import math
import os
import random
from pathlib import Path
from typing import Callable, Dict, Optional

import numpy as np
import torch

__all__ = ["available_cores", "busy_cores", "configure_threads", "worker_init", "make_worker_init"]


def _cgroup_cpu_limit() -> Optional[int]:
    """CPUs allowed by a cgroup v2 ``cpu.max`` quota (containers), or None when unlimited/unknown."""
    for path in ("/sys/fs/cgroup/cpu.max",):
        try:
            quota, period = Path(path).read_text().split()[:2]
        except (OSError, ValueError):
            continue
        if quota != "max":
            try:
                return max(1, math.ceil(int(quota) / int(period)))
            except (ValueError, ZeroDivisionError):
                return None
    try:  # cgroup v1
        quota = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_quota_us").read_text())
        period = int(Path("/sys/fs/cgroup/cpu/cpu.cfs_period_us").read_text())
        if quota > 0 and period > 0:
            return max(1, math.ceil(quota / period))
    except (OSError, ValueError):
        pass
    return None


def _limit_blas(n: int) -> bool:
    """Cap numpy's BLAS/OpenMP pools at ``n`` threads (needs ``threadpoolctl``; False when it is absent)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return False
    threadpool_limits(n)
    return True


def available_cores() -> int:
    """Cores this process may run on: the affinity mask (``taskset``, container cpusets), capped by a CPU quota."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # macOS / Windows
        cores = os.cpu_count() or 1
    limit = _cgroup_cpu_limit()
    return max(1, min(cores, limit) if limit else cores)


def busy_cores(cores: int) -> int:
    """Cores other processes keep busy right now: the 1-minute load average, rounded down, below ``cores``."""
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # not available (Windows)
        return 0
    return max(0, min(cores - 1, int(load)))


def configure_threads(num_workers: int = 0, threads: Optional[int] = None) -> Dict[str, int]:
    """Set ``torch.set_num_threads`` for the main process; returns ``{"cores", "main_threads", "worker_threads"}``.

    Args:
        num_workers: DataLoader workers that will run beside this process (each gets 1 thread via
            :func:`worker_init`); their cores are taken from the main process's share.
        threads: main-process threads, overriding the computation (e.g. a ``train.threads`` config key).
            ``$OMP_NUM_THREADS``, when set, is honoured the same way.
    """
    cores = available_cores()
    env = os.environ.get("OMP_NUM_THREADS", "").strip()
    if threads is not None:
        main = int(threads)
    elif env.isdigit() and int(env) > 0:
        main = int(env)
    else:
        main = cores - max(0, int(num_workers)) - busy_cores(cores)
    main = max(1, main)
    torch.set_num_threads(main)
    _limit_blas(main)
    return {"cores": cores, "main_threads": main, "worker_threads": 1 if num_workers > 0 else 0}


def worker_init(worker_id: int, chained: Optional[Callable[[int], None]] = None) -> None:
    """``DataLoader(worker_init_fn=worker_init)``: one thread per worker, and numpy/random seeded from the worker's
    torch seed (as :func:`pointclora.datasets.seed_worker`), so numpy randomness in transforms is reproducible."""
    torch.set_num_threads(1)
    _limit_blas(1)
    seed = torch.initial_seed() % 2**32
    np.random.seed(seed)
    random.seed(seed)
    if chained is not None:
        chained(worker_id)


def make_worker_init(chained: Optional[Callable[[int], None]] = None) -> Callable[[int], None]:
    """:func:`worker_init` followed by ``chained(worker_id)`` (picklable, for the ``spawn`` start method too)."""
    return functools.partial(worker_init, chained=chained) if chained is not None else worker_init
