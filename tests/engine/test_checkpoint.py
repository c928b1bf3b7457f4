"""Atomic writes survive a failure mid-write; RNG states round-trip through a weights_only checkpoint."""

import io
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


def test_rng_round_trip_without_cached_gaussians_and_with_several_generators(tmp_path):
    # The other state of the two caches (no pending gaussian), and two named generators restored by name.
    np.random.seed(5), random.seed(6)
    gens = {"a": torch.Generator().manual_seed(1), "b": torch.Generator().manual_seed(2)}
    state = ck.get_rng_state(gens)
    assert int(state["numpy"]["has_gauss"]) == 0 and int(state["python"]["has_gauss_next"]) == 0
    assert sorted(state["generators"]) == ["a", "b"] and "cuda" not in state
    ck.atomic_save({"rng": state}, tmp_path / "s.pth")
    expected = (np.random.randn(2), random.gauss(0, 1), torch.rand(2, generator=gens["a"]),
                torch.rand(2, generator=gens["b"]))  # fmt: skip
    np.random.seed(0), random.seed(0), gens["a"].manual_seed(9), gens["b"].manual_seed(9)
    loaded = torch.load(tmp_path / "s.pth", weights_only=True)["rng"]
    ck.set_rng_state(loaded, {"b": gens["b"], "absent": torch.Generator()})  # only b is restored; 'absent' is skipped
    assert np.array_equal(np.random.randn(2), expected[0]) and random.gauss(0, 1) == expected[1]
    assert torch.equal(torch.rand(2, generator=gens["b"]), expected[3])
    assert not torch.equal(torch.rand(2, generator=gens["a"]), expected[2])


def test_load_checkpoint_refuses_a_non_dict(tmp_path):
    torch.save([1, 2], tmp_path / "list.pth")
    with pytest.raises(ValueError, match=r"list.pth: expected a checkpoint dict, got list"):
        ck.load_checkpoint(tmp_path / "list.pth")
    torch.save({"epoch": 3}, tmp_path / "ok.pth")
    assert ck.load_checkpoint(tmp_path / "ok.pth") == {"epoch": 3}
    assert torch.load(io.BytesIO(ck.torch_save_bytes({"x": 1})), weights_only=True) == {"x": 1}


def test_load_checkpoint_maps_tensors_to_the_cpu_by_default_and_old_states_lack_generators(tmp_path):
    torch.save({"w": torch.arange(3.0)}, tmp_path / "t.pth")
    assert torch.equal(ck.load_checkpoint(tmp_path / "t.pth")["w"], torch.arange(3.0))
    state = ck.get_rng_state()
    del state["generators"]  # a state saved without named generators: the named ones are left as they are
    gen = torch.Generator().manual_seed(4)
    expected = torch.rand(2, generator=torch.Generator().manual_seed(4))
    ck.set_rng_state(state, {"loader": gen})
    assert torch.equal(torch.rand(2, generator=gen), expected)
