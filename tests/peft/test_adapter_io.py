import json
import os

import pytest
import torch
from peft_helpers import randomize_adapters, tiny

from pointclora.models import create_model
from pointclora.peft import (
    AdapterMismatchError,
    CLoRAConfig,
    LoRAConfig,
    inject_adapters,
    load_adapter,
    read_adapter_config,
    save_adapter,
)


def _trained(method="clora"):
    cfg = CLoRAConfig(r=4, num_bases=2) if method == "clora" else LoRAConfig(r=4)
    model = randomize_adapters(inject_adapters(tiny(), cfg))
    with torch.no_grad():  # head BN statistics must travel with the adapter
        model.cls_head_finetune[1].running_mean.add_(0.5)
        model.cls_head_finetune[0].weight.mul_(1.5)
        model.cls_token.add_(0.1)
    return model.eval()


@pytest.mark.parametrize("method", ["clora", "lora"])
def test_save_load_round_trip_identical_outputs(tmp_path, points, method):
    model = _trained(method)
    save_adapter(model, tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["adapter.safetensors", "adapter_config.json"]
    meta = read_adapter_config(tmp_path)
    assert meta["peft_config"]["method"] == method and meta["base_model"]["variant"] == "point_mae_tiny"
    assert meta["base_model"]["constructor"]["num_classes"] == 5 and meta["pointclora_version"]
    assert "cls_head_finetune.1.running_mean" in meta["tensors"]
    assert not any("base_layer" in n or n.startswith("blocks.0.norm") for n in meta["tensors"])
    # the file is small: adapters + head, never the frozen backbone
    assert os.path.getsize(tmp_path / "adapter.safetensors") < 0.5 * sum(
        t.numel() * 4 for t in model.state_dict().values())
    fresh = load_adapter(tiny(), tmp_path).eval()
    assert fresh.peft_config == model.peft_config
    with torch.no_grad():
        assert torch.equal(fresh(points), model(points))


def test_mismatched_adapters_refused(tmp_path):
    save_adapter(_trained(), tmp_path)
    with pytest.raises(AdapterMismatchError, match="made for backbone 'point_mae_tiny', model is 'point_bert_tiny'"):
        load_adapter(create_model("point_bert_tiny", num_classes=5), tmp_path)
    with pytest.raises(AdapterMismatchError, match=r"cls_head_finetune.8.weight: file \(5, 32\) vs model \(7, 32\)"):
        load_adapter(tiny(num_classes=7), tmp_path)
    with pytest.raises(AdapterMismatchError, match="differ from the file's"):
        load_adapter(inject_adapters(tiny(), LoRAConfig()), tmp_path)
    other = tiny(seed=5)  # same shapes, other "pre-trained" weights
    with pytest.raises(AdapterMismatchError, match="allow_fingerprint_mismatch=True"):
        load_adapter(other, tmp_path)
    with pytest.warns(UserWarning, match="different pre-trained weights"):
        load_adapter(tiny(seed=5), tmp_path, allow_fingerprint_mismatch=True)
    with pytest.raises(FileNotFoundError, match="adapter_config.json"):
        load_adapter(tiny(), tmp_path / "nope")


def test_architecture_mismatch_without_variant(tmp_path):
    model = _trained()
    save_adapter(model, tmp_path)
    meta = json.loads((tmp_path / "adapter_config.json").read_text())
    meta["base_model"]["variant"] = None
    (tmp_path / "adapter_config.json").write_text(json.dumps(meta))
    with pytest.raises(AdapterMismatchError, match="another architecture"):
        load_adapter(tiny(depth=3), tmp_path)


def test_refused_load_leaves_model_plain(tmp_path):
    save_adapter(_trained(), tmp_path)
    other = tiny(seed=5)
    with pytest.raises(AdapterMismatchError):
        load_adapter(other, tmp_path)
    assert not hasattr(other, "peft_config") and not hasattr(other, "clora_banks")
    create_model("point_mae_tiny", num_classes=5).load_state_dict(other.state_dict(), strict=True)
