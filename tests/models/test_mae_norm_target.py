"""PointMAEPretrain(norm_target=True): masked patches are reconstructed at unit radius."""

import torch

from pointclora.models.mae import build_pretrain_model, random_patch_mask


def test_norm_target_scales_each_masked_patch_to_unit_radius_and_changes_the_loss():
    torch.manual_seed(0)
    plain = build_pretrain_model("point_mae_tiny", decoder_depth=1)
    normed = build_pretrain_model("point_mae_tiny", decoder_depth=1, norm_target=True)
    normed.load_state_dict(plain.state_dict())
    pts = torch.randn(2, 128, 3) * 0.3
    mask = random_patch_mask(
        2, plain.MAE_encoder.num_groups, plain.mask_ratio, generator=torch.Generator().manual_seed(1)
    )
    a, b = plain.eval()(pts, mask=mask), normed.eval()(pts, mask=mask)
    radius = b.target.norm(dim=-1).amax(dim=-1)
    torch.testing.assert_close(radius, torch.ones_like(radius))
    scale = a.target.norm(dim=-1).amax(dim=-1)[..., None, None]
    torch.testing.assert_close(b.target * scale, a.target)
    torch.testing.assert_close(b.pred, a.pred)  # the network is the same; only the target differs
    assert not torch.isclose(a.loss, b.loss)
