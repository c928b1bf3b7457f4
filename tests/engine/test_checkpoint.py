"""Atomic writes survive a failure mid-write; RNG states round-trip through a weights_only checkpoint."""

import os
import random

import numpy as np
import pytest
import torch

from pointclora.engine import checkpoint as ck
from pointclora.utils import atomic


def test_failure_mid_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "last.pth"
    ck.atomic_save({"epoch": 0, "w": torch.arange(4.0)}, path)

    def torn_write(f):
        f.write(b"PK\x03\x04 half a checkpoint")  # some bytes reach the disk, then the process dies
        raise KeyboardInterrupt("simulated kill during the write")

    with pytest.raises(KeyboardInterrupt):
        atomic._atomic_write(path, torn_write)
    obj = torch.load(path, weights_only=True)
    assert obj["epoch"] == 0 and torch.equal(obj["w"], torch.arange(4.0))
    assert os.listdir(tmp_path) == ["last.pth"]  # no temporary file left behind

    ck.atomic_save({"epoch": 1}, path)
    assert torch.load(path, weights_only=True)["epoch"] == 1


def test_a_torn_file_is_refused_with_its_name(tmp_path):
    bad = tmp_path / "bad.pth"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(Exception, match="bad.pth"):
        ck.load_checkpoint(bad)


def test_rng_state_round_trip_through_weights_only_file(tmp_path):
    gen = torch.Generator().manual_seed(3)
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    np.random.randn()  # leave a cached gaussian in numpy's state
    random.gauss(0, 1)
    state = ck.get_rng_state({"loader": gen})
    ck.atomic_save({"rng": state}, tmp_path / "s.pth")
    expected = (torch.rand(3), np.random.randn(3), random.random(), random.gauss(0, 1), torch.rand(2, generator=gen))
    torch.manual_seed(99), np.random.seed(99), random.seed(99), gen.manual_seed(99)
    ck.set_rng_state(torch.load(tmp_path / "s.pth", weights_only=True)["rng"], {"loader": gen})
    got = (torch.rand(3), np.random.randn(3), random.random(), random.gauss(0, 1), torch.rand(2, generator=gen))
    assert torch.equal(expected[0], got[0]) and np.array_equal(expected[1], got[1])
    assert expected[2] == got[2] and expected[3] == got[3] and torch.equal(expected[4], got[4])
