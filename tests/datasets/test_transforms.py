"""datasets/transforms.py beyond the defaults: arguments no pipeline passes, the boundaries of each branch, the
per-point keys, argument checks (their messages), the pipelines' options and the worker seeding."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from pointclora.datasets.transforms import (
    Compose,
    FarthestPointSubset,
    Jitter,
    NormalizeUnitSphere,
    PointDropout,
    RandomSubset,
    RotateUp,
    ScaleAndTranslate,
    eval_transforms,
    reference_point_all,
    seed_worker,
    train_transforms,
    vote_eval_transforms,
)
from pointclora.ops import farthest_point_sample


def _cloud(n: int, c: int = 3, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, c, generator=torch.Generator().manual_seed(seed)) * 2 + 0.5


def test_selection_indexes_every_per_point_key_and_leaves_the_rest():
    pts = _cloud(20)
    sample = {"points": pts, "seg": np.arange(20) * 10, "mask": torch.arange(20) % 2 == 0, "label": 4, "name": "a"}
    for t in (RandomSubset(8, generator=torch.Generator().manual_seed(0)), RandomSubset(30), FarthestPointSubset(6),
              PointDropout(0.5, generator=torch.Generator().manual_seed(1))):  # fmt: skip
        out = t(dict(sample))
        idx = out["seg"] // 10  # seg tells which points were taken
        assert torch.equal(out["points"], pts[idx]) and torch.equal(out["mask"], idx % 2 == 0)
        assert out["label"] == 4 and out["name"] == "a"
    none_seg = RandomSubset(5)({"points": pts, "seg": None})
    assert none_seg["seg"] is None and none_seg["points"].shape == (5, 3)


def test_random_subset_sizes_and_top_up():
    pts = _cloud(12)
    g = torch.Generator().manual_seed(3)
    whole = RandomSubset(12, generator=g)({"points": pts, "seg": torch.arange(12)})
    assert sorted(whole["seg"].tolist()) == list(range(12))  # n == num_points: a permutation, no repeats
    g = torch.Generator().manual_seed(3)
    assert torch.equal(whole["seg"], torch.randperm(12, generator=g))
    up = RandomSubset(30, generator=torch.Generator().manual_seed(5))({"points": pts, "seg": torch.arange(12)})
    counts = torch.bincount(up["seg"], minlength=12)
    assert counts.sum() == 30 and (counts >= 1).all()  # every point at least once, 18 repeats on top
    assert up["seg"][:12].tolist() != list(range(12))  # shuffled, not the points first then the repeats
    one = RandomSubset(4)({"points": pts[:1]})
    assert torch.equal(one["points"], pts[:1].expand(4, 3))


def test_normalize_unit_sphere_on_a_collapsed_cloud_and_repr():
    same = {"points": torch.full((5, 4), 2.0)}
    out = NormalizeUnitSphere()(same)["points"]
    assert torch.equal(out[:, :3], torch.zeros(5, 3)) and torch.equal(out[:, 3], torch.full((5,), 2.0))
    assert torch.equal(same["points"], torch.full((5, 4), 2.0))  # the input is not modified in place


def test_farthest_point_subset_top_up_with_the_near_origin_rule():
    pts = _cloud(10, seed=2)
    pts[3] = 1e-6  # pointnet2_ops never picks a point this close to the origin
    out = FarthestPointSubset(14, skip_near_origin=True)({"points": pts, "seg": torch.arange(10)})
    fps = farthest_point_sample(pts[None], 10, skip_near_origin=True).idx[0]
    assert torch.equal(out["seg"], fps[torch.arange(14) % 10])
    plain = FarthestPointSubset(14)({"points": pts, "seg": torch.arange(10)})
    assert torch.equal(plain["seg"], farthest_point_sample(pts[None], 10).idx[0][torch.arange(14) % 10])
    assert sorted(plain["seg"][:10].tolist()) == list(range(10))


def test_augmentation_argument_checks_name_the_values():
    with pytest.raises(ValueError, match=r"^need 0 < scale_low <= scale_high, got 0.0, 1.0$"):
        ScaleAndTranslate(0.0, 1.0)
    with pytest.raises(ValueError, match=r"^need 0 < scale_low <= scale_high, got 2, 1$"):
        ScaleAndTranslate(2, 1)
    fixed = ScaleAndTranslate(1.5, 1.5, 0.0)({"points": torch.ones(3, 3)})["points"]  # low == high is allowed
    assert torch.equal(fixed, torch.full((3, 3), 1.5))
    with pytest.raises(ValueError, match=r"^axis must be one of 'x', 'y', 'z', got 'Y'$"):
        RotateUp("Y")
    with pytest.raises(ValueError, match=r"^sigma and clip must be >= 0, got -0.1, 0.05$"):
        Jitter(-0.1)
    with pytest.raises(ValueError, match=r"^sigma and clip must be >= 0, got 0.01, -1$"):
        Jitter(0.01, -1)
    assert torch.equal(Jitter(0.0, 0.0)({"points": torch.ones(4, 3)})["points"], torch.ones(4, 3))
    for bad in (1.0, -0.1):
        with pytest.raises(ValueError, match=rf"^max_ratio must be in \[0, 1\), got {bad}$"):
            PointDropout(bad)
    assert torch.equal(PointDropout(0.0)({"points": _cloud(6)})["points"], _cloud(6))  # ratio 0 drops nothing
    assert repr(RotateUp("z")) == "RotateUp(axis='z')" and repr(RandomSubset(7)) == "RandomSubset(num_points=7)"
    assert repr(Compose([Jitter(0.5, 1)])) == "Compose([\n    Jitter(sigma=0.5, clip=1),\n])"


def test_augmentations_draw_from_the_global_rng_without_a_generator():
    pts = {"points": _cloud(10, c=6)}
    for make in (ScaleAndTranslate, RotateUp, Jitter, PointDropout):
        torch.manual_seed(11)
        a = make()(dict(pts))["points"]
        torch.manual_seed(11)
        b = make(generator=torch.Generator().manual_seed(11))(dict(pts))["points"]
        assert torch.equal(a, b), make.__name__


def test_reference_point_all_table_and_rounding():
    assert [reference_point_all(n) for n in (1024, 2048, 4096, 8192)] == [1200, 2400, 4800, 8192]
    assert [reference_point_all(n) for n in (10, 12, 13, 1000)] == [12, 14, 16, 1200]  # round(1.2 n)


def test_train_transforms_options():
    # fps_first: the FPS to point_all runs only on a larger cloud (19 for 16 points), with the near-origin rule passed
    t = train_transforms(16, "none", generator=torch.Generator().manual_seed(0), skip_near_origin=True)
    assert repr(t) == ("Compose([\n    FarthestPointSubset(num_points=19, only_if_larger=True),\n"
                       "    RandomSubset(num_points=16),\n])")  # fmt: skip
    assert t.transforms[0].skip_near_origin and not train_transforms(16).transforms[0].skip_near_origin
    pts = _cloud(40)
    pts[5] = 0.0
    out = t({"points": pts, "seg": torch.arange(40)})
    fps = farthest_point_sample(pts[None], 19, skip_near_origin=True).idx[0]
    assert set(out["seg"].tolist()) <= set(fps.tolist()) and 5 not in out["seg"].tolist()
    # a cloud of exactly point_all (or fewer) points is not re-ordered by FPS: the subset draws from it directly
    small = _cloud(19)
    a = train_transforms(16, "none", generator=torch.Generator().manual_seed(1))({"points": small})["points"]
    b = RandomSubset(16, generator=torch.Generator().manual_seed(1))({"points": small})["points"]
    assert torch.equal(a, b)
    # no FPS, and the generator reaches the augmentation: the pipeline equals its steps run by hand
    for aug, make in (("scale_translate", ScaleAndTranslate), ("rotate", RotateUp)):
        t = train_transforms(8, aug, fps_first=False, generator=torch.Generator().manual_seed(2))
        assert len(t.transforms) == 2
        g = torch.Generator().manual_seed(2)
        want = make(generator=g)(RandomSubset(8, generator=g)({"points": _cloud(30, c=6)}))["points"]
        assert torch.equal(t({"points": _cloud(30, c=6)})["points"], want)
    assert repr(train_transforms(8, "rotate", fps_first=False).transforms[1]) == "RotateUp(axis='y')"
    with pytest.raises(ValueError, match=r"^augmentation must be 'scale_translate', 'rotate' or 'none', got 'flip'$"):
        train_transforms(8, "flip")


def test_eval_and_vote_transforms_pass_the_near_origin_rule():
    pts = torch.nn.functional.normalize(_cloud(50, seed=4), dim=1)  # on the unit sphere, and one point at the
    pts[7] = 0.0  # origin, which plain FPS takes 7th and the near-origin rule never
    for make, k in ((eval_transforms, 12), (vote_eval_transforms, 14)):  # vote: reference_point_all(12) = 14
        t = make(12, skip_near_origin=True)
        assert repr(t) == f"Compose([\n    FarthestPointSubset(num_points={k}),\n])"
        got = t({"points": pts, "seg": torch.arange(50)})["seg"]
        assert torch.equal(got, farthest_point_sample(pts[None], k, skip_near_origin=True).idx[0])
        plain = make(12)({"points": pts, "seg": torch.arange(50)})["seg"]
        assert torch.equal(plain, farthest_point_sample(pts[None], k).idx[0]) and 7 in plain.tolist()
        assert 7 not in got.tolist()


def test_seed_worker_seeds_numpy_and_random_from_the_torch_seed():
    state = torch.get_rng_state()
    try:
        torch.manual_seed(2**32 + 7)  # the worker's seed is reduced modulo 2**32
        seed_worker(0)
        got = (np.random.random(), random.random())
        np.random.seed(7)
        random.seed(7)
        assert got == (np.random.random(), random.random())
    finally:
        torch.set_rng_state(state)


def test_numpy_points_become_float32_and_one_point_targets_work():
    pts64 = np.arange(12, dtype=np.float64).reshape(4, 3)
    out = RandomSubset(4, generator=torch.Generator().manual_seed(0))({"points": pts64, "seg": np.arange(4)})
    assert out["points"].dtype == torch.float32 and out["seg"].dtype == torch.int64
    assert torch.equal(out["points"], torch.from_numpy(pts64).float()[out["seg"]])
    assert NormalizeUnitSphere()({"points": pts64})["points"].dtype == torch.float32
    assert RandomSubset(1)({"points": pts64})["points"].shape == (1, 3)
    assert FarthestPointSubset(1)({"points": pts64, "seg": np.arange(4)})["seg"].tolist() == [0]
    with pytest.raises(ValueError, match=r"^sample\['points'\] must be \(N, C>=3\), got shape \(6,\)$"):
        NormalizeUnitSphere()({"points": torch.zeros(6)})


def test_scaling_up_renormalises_normals_that_shrink_below_unit_length():
    pts = _cloud(20, c=6, seed=5)
    pts[:, 3:] = torch.nn.functional.normalize(pts[:, 3:], dim=1)
    out = ScaleAndTranslate(1.5, 2.0, 0.1, generator=torch.Generator().manual_seed(0))({"points": pts})["points"]
    torch.testing.assert_close(out[:, 3:].norm(dim=1), torch.ones(20))  # nrm / scale has length 0.5 .. 0.67
    u = torch.rand(6, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out[:, 3:], torch.nn.functional.normalize(pts[:, 3:] / (1.5 + 0.5 * u[:3]), dim=1))


def test_normalize_scales_a_small_cloud_up_to_the_unit_sphere():
    # every other test normalises clouds of radius > 1: a transform that only shrinks would pass them
    small = torch.tensor([[0.1, 0.0, 0.0], [-0.1, 0.0, 0.0], [0.0, 0.05, 0.0], [0.0, -0.05, 0.0]]) + 0.3
    out = NormalizeUnitSphere()({"points": small})["points"]
    torch.testing.assert_close(out, (small - 0.3) / 0.1)


@pytest.mark.parametrize("channels", [4, 7])
def test_augmentations_leave_channels_other_than_xyz_and_normals_alone(channels):
    # columns 3-5 are normals only when there are at least 6; a 4th channel (intensity) or a 7th (after the normals)
    # is never scaled, rotated, jittered or renormalised, while selections carry whole rows
    pts = _cloud(30, c=channels, seed=6)
    if channels >= 6:
        pts[:, 3:6] = torch.nn.functional.normalize(pts[:, 3:6], dim=1)
    extra = pts[:, 6:] if channels >= 6 else pts[:, 3:]
    for make in (ScaleAndTranslate, RotateUp, Jitter):
        out = make(generator=torch.Generator().manual_seed(7))({"points": pts})["points"]
        assert out.shape == pts.shape, make.__name__
        assert torch.equal(out[:, pts.shape[1] - extra.shape[1] :], extra), make.__name__
        assert not torch.equal(out[:, :3], pts[:, :3]), make.__name__
    rot = RotateUp("z", generator=torch.Generator().manual_seed(8))({"points": pts})["points"]
    angle = float(torch.rand(1, generator=torch.Generator().manual_seed(8))) * 2 * torch.pi
    r = RotateUp("z").matrix(angle)
    torch.testing.assert_close(rot[:, :3], pts[:, :3] @ r.T)
    if channels >= 6:
        torch.testing.assert_close(rot[:, 3:6], pts[:, 3:6] @ r.T)
    dropped = PointDropout(0.6, generator=torch.Generator().manual_seed(9))({"points": pts, "seg": torch.arange(30)})
    assert torch.equal(dropped["points"], pts[dropped["seg"]]) and (dropped["seg"] == 0).sum() > 1
    # FPS measures distances on xyz only, whatever follows them
    fps = FarthestPointSubset(10)({"points": pts, "seg": torch.arange(30)})
    assert torch.equal(fps["seg"], farthest_point_sample(pts[None, :, :3].contiguous(), 10).idx[0])
    assert torch.equal(fps["points"], pts[fps["seg"]])


def test_random_subset_top_up_draws_everything_from_its_generator():
    pts = _cloud(12)
    torch.manual_seed(123)  # the global RNG must play no part
    got = RandomSubset(30, generator=torch.Generator().manual_seed(5))({"points": pts, "seg": torch.arange(12)})
    g = torch.Generator().manual_seed(5)
    extra = torch.randint(12, (18,), generator=g)  # the repeats, then the shuffle of all 30
    want = torch.cat([torch.arange(12), extra])[torch.randperm(30, generator=g)]
    assert torch.equal(got["seg"], want) and torch.equal(got["points"], pts[want])


def test_point_dropout_drops_a_point_whose_draw_equals_the_ratio():
    # PointNet++'s random_point_dropout drops where random() <= ratio; max_ratio is chosen so that the ratio equals
    # point k's own draw exactly
    g = torch.Generator().manual_seed(0)
    u, draws = float(torch.rand(1, generator=g)), torch.rand(20, generator=g)
    k = int(torch.nonzero(draws < u)[0])
    max_ratio = float(draws[k]) / u
    assert u * max_ratio == float(draws[k])
    drop = PointDropout(max_ratio, generator=torch.Generator().manual_seed(0))
    out = drop({"points": _cloud(20), "seg": torch.arange(20)})
    assert torch.equal(out["seg"], torch.where(draws <= float(draws[k]), 0, torch.arange(20))) and out["seg"][k] == 0


def test_defaults_are_the_reference_values():
    # Jitter's defaults (PointNet++'s jitter_point_cloud: sigma 0.01, clip 0.05): every other test passes both
    assert repr(Jitter()) == "Jitter(sigma=0.01, clip=0.05)" and repr(PointDropout()) == "PointDropout(max_ratio=0.875)"
    pts = _cloud(50)
    out = Jitter(generator=torch.Generator().manual_seed(4))({"points": pts})["points"]
    draws = torch.randn(50, 3, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(out, pts + (draws * 0.01).clamp(-0.05, 0.05))
    wide = Jitter(0.1, generator=torch.Generator().manual_seed(4))({"points": pts})["points"]  # the default clip bites
    torch.testing.assert_close(wide, pts + (draws * 0.1).clamp(-0.05, 0.05))
    assert (draws * 0.1).abs().max() > 0.05
    assert RotateUp().axis == "y" and not FarthestPointSubset(5).skip_near_origin
    assert not eval_transforms(5).transforms[0].skip_near_origin
    assert not vote_eval_transforms(5).transforms[0].skip_near_origin
