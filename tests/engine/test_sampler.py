"""N processes x accumulation steps see exactly the global batches of one process."""

import pytest

from pointclora.engine.distributed import GlobalBatchSampler


@pytest.mark.parametrize("world, accum", [(2, 1), (2, 2), (1, 4), (4, 1)])
def test_shards_recompose_the_single_process_batches(world, accum):
    single = list(GlobalBatchSampler(37, 8, seed=5))
    shards = [GlobalBatchSampler(37, 8, world, r, accum, seed=5) for r in range(world)]
    per_rank = [list(s) for s in shards]
    assert len(single) == 37 // 8 and all(len(b) == 8 for b in single)
    for step, batch in enumerate(single):
        micro = [per_rank[r][step * accum + j] for j in range(accum) for r in range(world)]
        assert sorted(i for m in micro for i in m) == sorted(batch)
        assert all(len(m) == 8 // (world * accum) for m in micro)


def test_epochs_differ_and_are_reproducible():
    s = GlobalBatchSampler(20, 4, seed=1)
    s.set_epoch(0)
    e0 = list(s)
    s.set_epoch(1)
    assert list(s) != e0
    s.set_epoch(0)
    assert list(s) == e0


def test_errors_name_the_keys():
    with pytest.raises(ValueError, match="batch_size=6.*world_size"):
        GlobalBatchSampler(20, 6, world_size=4)
    with pytest.raises(ValueError, match="fewer than data.batch_size"):
        GlobalBatchSampler(3, 4)
