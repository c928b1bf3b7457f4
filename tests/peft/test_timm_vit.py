"""Openness: CLoRA and LoRA on a timm Vision Transformer (the paper's image half) with the same API as on points.

The ViT is built offline (``pretrained=False``); peft wraps its ``nn.Linear`` layers by name and knows nothing else
about it. Targets are named in the config (timm models declare no ``default_adapter_targets``); the trained head comes
from timm's own ``pretrained_cfg['classifier']``.
"""

import copy

import pytest
import torch
import torch.nn.functional as F
from timm_helpers import import_timm
from torch import nn

from pointclora.engine.optim import build_optimizer
from pointclora.peft import (
    AdapterLinear,
    auxiliary_loss,
    inject_adapters,
    load_adapter,
    make_peft_config,
    merge_adapters,
    merge_and_unload,
    save_adapter,
    trainable_parameter_summary,
    unmerge_adapters,
)

TARGETS = ["attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2"]  # timm keeps the names our backbone uses
D, R, P, DEPTH = 192, 4, 2, 12  # vit_tiny: width 192, MLP 768, 12 blocks


def _vit(seed=0):
    timm = import_timm()
    torch.manual_seed(seed)
    return timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=5)


def _closed_form(method):
    lrms_square = DEPTH * 4  # q, k, v (split from qkv) and proj
    if method == "clora":  # p·r·(in+out) per shape group + p·r² per LRM
        shared = P * R * (D + D) + 2 * P * R * (D + 4 * D)
        return shared + DEPTH * 6 * P * R * R
    return lrms_square * R * 2 * D + DEPTH * 2 * R * (D + 4 * D)  # r·(in+out) per LRM


@pytest.mark.parametrize("method", ["clora", "lora"])
def test_inject_train_merge_save_load_on_timm_vit(method, tmp_path):
    model = _vit()
    base_state = copy.deepcopy(model.state_dict())
    images, labels = torch.randn(2, 3, 224, 224), torch.tensor([0, 3])
    model.eval()
    with torch.no_grad():
        frozen_out = model(images)

    kwargs = dict(num_bases=P) if method == "clora" else {}
    inject_adapters(model, make_peft_config(method, r=R, target_modules=TARGETS, **kwargs))
    assert model.peft_config.train_modules == ("head",)  # timm's classifier, found without configuration
    assert sum(isinstance(m, AdapterLinear) for m in model.modules()) == DEPTH * 4
    counts = trainable_parameter_summary(model)
    assert counts["adapter_params"] == _closed_form(method)
    assert counts["trainable_params"] - counts["trainable_params_without_head"] == D * 5 + 5
    with torch.no_grad():  # B = 0 at initialisation: the wrapped ViT is the frozen ViT
        torch.testing.assert_close(model(images), frozen_out, rtol=0, atol=0)

    # one training step through the library's optimizer groups and the method's auxiliary loss
    model.train()
    optimizer = build_optimizer(model, lr=1e-2, weight_decay=0.05)
    before = {n: t.clone() for n, t in model.state_dict().items()}
    loss = F.cross_entropy(model(images), labels)
    aux = auxiliary_loss(model)
    assert (aux is not None) == (method == "clora")
    (loss if aux is None else loss + aux).backward()
    optimizer.step()
    changed = {n for n, t in model.state_dict().items() if not torch.equal(t, before[n])}
    adapter_like = ("clora_banks.", ".Q", ".lora_A", ".lora_B")
    assert all(n.startswith(("clora_banks.", "head.")) or n.endswith(adapter_like) for n in changed), changed
    assert any(n.endswith((".B", ".lora_B")) for n in changed) and "head.weight" in changed

    model.eval()
    with torch.no_grad():
        trained_out = model(images)
    assert not torch.allclose(trained_out, frozen_out, atol=1e-4)

    # exact merge: a plain timm ViT with the same keys as the original, same outputs to float rounding
    plain = merge_and_unload(copy.deepcopy(model))
    assert not any(isinstance(m, AdapterLinear) for m in plain.modules())
    assert type(plain.blocks[0].attn.qkv) is nn.Linear and set(plain.state_dict()) == set(base_state)
    with torch.no_grad():
        torch.testing.assert_close(plain(images), trained_out, rtol=1e-5, atol=1e-5)
    # save / load round trip into a fresh ViT carrying the same base weights
    save_adapter(model, tmp_path / "adapter")
    fresh = _vit(seed=1)
    fresh.load_state_dict(base_state)
    load_adapter(fresh, tmp_path / "adapter")
    fresh.eval()
    with torch.no_grad():
        torch.testing.assert_close(fresh(images), trained_out, rtol=0, atol=0)

    # merge then unmerge restores the base weights to float rounding (after saving: the fingerprint is exact)
    qkv = model.blocks[3].attn.qkv.base_layer.weight.clone()
    merge_adapters(model)
    unmerge_adapters(model)
    torch.testing.assert_close(model.blocks[3].attn.qkv.base_layer.weight, qkv, rtol=0, atol=1e-6)
