"""FarthestPointSubset skips FPS when the cloud already has the target count: the model sees the same thing."""

import torch

from pointclora.datasets import eval_transforms
from pointclora.datasets.transforms import FarthestPointSubset
from pointclora.models import create_model
from pointclora.ops import farthest_point_sample


def _shape(n: int, seed: int) -> torch.Tensor:
    """A surface-like cloud (points on a torus with noise): distinct points, FPS n -> n is a pure reordering."""
    g = torch.Generator().manual_seed(seed)
    u, v = torch.rand(n, generator=g) * 6.2832, torch.rand(n, generator=g) * 6.2832
    r = 0.3 + 0.02 * torch.rand(n, generator=g)
    return torch.stack([(0.7 + r * v.cos()) * u.cos(), (0.7 + r * v.cos()) * u.sin(), r * v.sin()], 1)


def test_cloud_with_target_count_is_returned_unchanged(monkeypatch):
    calls = []
    import pointclora.ops as ops

    real = ops.farthest_point_sample
    monkeypatch.setattr(ops, "farthest_point_sample", lambda *a, **k: calls.append(1) or real(*a, **k))
    sample = {"points": _shape(64, 0), "label": 3}
    assert FarthestPointSubset(64)(sample) is sample
    assert eval_transforms(64)(sample)["points"] is sample["points"]
    assert not calls  # no FPS ran
    assert FarthestPointSubset(32)(sample)["points"].shape == (32, 3) and calls  # smaller target: FPS as before


def test_skip_gives_the_model_the_same_centres_and_logits():
    torch.manual_seed(0)
    model = create_model("point_mae_tiny", num_classes=5, num_groups=16, group_size=16).eval()
    for seed in range(3):
        cloud = _shape(256, seed)
        # What evaluation used to feed: FPS 256 -> 256, a permutation of the same points.
        fps_order = farthest_point_sample(cloud[None], 256).idx[0]
        assert sorted(fps_order.tolist()) == list(range(256))
        reordered = cloud[fps_order]
        skipped = FarthestPointSubset(256)({"points": cloud})["points"]
        with torch.no_grad():
            _, _, centres_old = model.tokenize(reordered[None])
            _, _, centres_new = model.tokenize(skipped[None])
            assert torch.equal(centres_new, centres_old)  # same centres, same order
            assert torch.allclose(model(skipped[None]), model(reordered[None]), atol=1e-5)
