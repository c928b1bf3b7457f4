"""configure_threads: main threads from the cores actually available; one thread per loader worker."""

import os

import pytest
import torch
from torch.utils.data import DataLoader, Dataset

from pointclora.utils import threads as th


@pytest.fixture(autouse=True)
def _restore_threads(monkeypatch):
    before = torch.get_num_threads()
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    yield
    torch.set_num_threads(before)


def test_main_threads_follow_the_affinity_mask_minus_workers(monkeypatch):
    monkeypatch.setattr(th.os, "sched_getaffinity", lambda pid: {0, 1, 2, 3, 4, 5}, raising=False)
    monkeypatch.setattr(th, "_cgroup_cpu_limit", lambda: None)
    monkeypatch.setattr(th.os, "getloadavg", lambda: (0.0, 0.0, 0.0))
    assert th.available_cores() == 6
    assert th.configure_threads() == {"cores": 6, "main_threads": 6, "worker_threads": 0}
    assert torch.get_num_threads() == 6
    assert th.configure_threads(num_workers=2)["main_threads"] == 4 and torch.get_num_threads() == 4
    assert th.configure_threads(num_workers=8)["main_threads"] == 1  # never below one
    monkeypatch.setattr(th, "_cgroup_cpu_limit", lambda: 2)  # a container quota caps the mask
    assert th.available_cores() == 2 and th.configure_threads()["main_threads"] == 2


def test_cores_other_processes_keep_busy_are_left_to_them(monkeypatch):
    monkeypatch.setattr(th.os, "sched_getaffinity", lambda pid: {0, 1}, raising=False)
    monkeypatch.setattr(th, "_cgroup_cpu_limit", lambda: None)
    monkeypatch.setattr(th.os, "getloadavg", lambda: (1.2, 1.0, 1.0))  # one other busy process
    assert th.configure_threads()["main_threads"] == 1
    monkeypatch.setattr(th.os, "getloadavg", lambda: (0.3, 0.2, 0.1))  # a quiet machine: both cores
    assert th.configure_threads()["main_threads"] == 2
    monkeypatch.setattr(th.os, "getloadavg", lambda: (9.0, 9.0, 9.0))
    assert th.busy_cores(2) == 1 and th.configure_threads()["main_threads"] == 1  # never below one


def test_explicit_settings_win(monkeypatch):
    monkeypatch.setattr(th.os, "sched_getaffinity", lambda pid: set(range(8)), raising=False)
    monkeypatch.setattr(th, "_cgroup_cpu_limit", lambda: None)
    monkeypatch.setattr(th.os, "getloadavg", lambda: (7.5, 7.0, 7.0))
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert th.configure_threads(num_workers=1)["main_threads"] == 3
    assert th.configure_threads(threads=5)["main_threads"] == 5 and torch.get_num_threads() == 5


def test_cgroup_quota_parsing(tmp_path, monkeypatch):
    real = th.Path

    def fake(path):
        return real(tmp_path / "cpu.max") if str(path) == "/sys/fs/cgroup/cpu.max" else real(tmp_path / "absent")

    monkeypatch.setattr(th, "Path", fake)
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert th._cgroup_cpu_limit() == 2
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert th._cgroup_cpu_limit() is None


class _Threads(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        import numpy as np

        blas = 0
        try:
            from threadpoolctl import threadpool_info

            blas = max((p["num_threads"] for p in threadpool_info() if p["user_api"] == "blas"), default=0)
        except ImportError:
            pass
        return torch.tensor([torch.get_num_threads(), int(np.random.randint(0, 2**31 - 1)), os.getpid(), blas])


def _mark(worker_id):
    torch.manual_seed(1000 + worker_id)  # runs after worker_init: proves the chain


def test_loader_workers_run_one_thread_each():
    torch.set_num_threads(2)
    loader = DataLoader(_Threads(), batch_size=1, num_workers=2, worker_init_fn=th.make_worker_init(_mark))
    rows = torch.cat(list(loader))
    assert rows[:, 0].tolist() == [1, 1, 1, 1]
    assert len(set(rows[:, 2].tolist())) == 2 and os.getpid() not in rows[:, 2].tolist()
    assert torch.get_num_threads() == 2  # the main process is untouched
    assert len(set(rows[:, 1].tolist())) == 4  # numpy seeded per worker from torch's worker seed: no repeats
    pytest.importorskip("threadpoolctl")
    assert rows[:, 3].max() <= 1  # numpy's BLAS pool limited to one thread too
