import torch
from peft_helpers import randomize_adapters, tiny

from pointclora.peft import (
    LoRAConfig,
    adapter_parameter_groups,
    inject_adapters,
    merge_adapters,
    trainable_parameter_summary,
    unmerge_adapters,
)


def test_lora_step0_merge_unmerge_and_closed_form(points):
    frozen = tiny().eval()
    model = inject_adapters(tiny(), LoRAConfig(r=4)).eval()
    with torch.no_grad():
        assert torch.equal(model(points), frozen(points))
        randomize_adapters(model)
        unmerged = model(points)
        merge_adapters(model)
        assert torch.allclose(model(points), unmerged, atol=1e-5)
        unmerge_adapters(model)
        assert torch.allclose(model(points), unmerged, atol=1e-6)
    groups = adapter_parameter_groups(model)
    # r (in + out) per LRM; q, k, v are three LRMs of the split qkv
    assert {k: (g["lrms"], g["params"]) for k, g in groups.items()} == {
        "32x32": (8, 8 * 4 * 64), "32x128": (2, 2 * 4 * 160), "128x32": (2, 2 * 4 * 160)
    }
    assert trainable_parameter_summary(model)["adapter_params"] == 8 * 4 * 64 + 4 * 4 * 160


def test_lora_point_mae_s_baseline_count():
    from pointclora.models import create_model

    model = inject_adapters(create_model("point_mae_s", num_classes=15, num_groups=128), "lora")
    assert trainable_parameter_summary(model)["adapter_params"] == 663_552
