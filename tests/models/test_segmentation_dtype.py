"""The part-segmentation model runs in the precision it is cast to (float64 for numerical comparisons)."""

import pytest
import torch

from pointclora.models import create_model


@pytest.mark.parametrize("onehot", [False, True])
def test_segmentation_model_runs_in_float64(onehot):
    torch.manual_seed(0)
    m = create_model("point_mae_tiny_seg", num_classes=8, num_categories=3).eval()
    pts = torch.randn(2, 128, 3)
    cat = torch.tensor([0, 2])
    cat = torch.nn.functional.one_hot(cat, 3) if onehot else cat
    ref = m(pts, cat)
    out = m.double()(pts.double(), cat)
    assert out.dtype == torch.float64 and out.shape == (2, 128, 8)
    assert torch.allclose(out.float(), ref, atol=1e-4)
