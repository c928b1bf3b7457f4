import copy
import pickle

import pytest
import torch
from peft_helpers import randomize_adapters, tiny
from torch import nn

from pointclora.models import create_model
from pointclora.peft import (
    AdapterLinear,
    CLoRAConfig,
    LoRAConfig,
    PeftConfigError,
    PeftMergeError,
    inject_adapters,
    make_peft_config,
    merge_adapters,
    merge_and_unload,
    sade_loss,
    trainable_parameter_summary,
)


def _is_trained(name):
    adapter = name.startswith("clora_banks.") or name.endswith((".Q", ".lora_A", ".lora_B"))
    return adapter or name.startswith(("cls_head_finetune.", "cls_token", "cls_pos"))


@pytest.mark.parametrize("method", ["clora", "lora"])
def test_one_step_changes_only_adapters_and_train_modules(method, points):
    model = inject_adapters(tiny(), make_peft_config(method, r=4))
    model.train()
    before = {n: t.clone() for n, t in model.state_dict().items()}
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2, weight_decay=0.05)
    loss = nn.functional.cross_entropy(model(points), torch.tensor([0, 1, 2]))
    if method == "clora":
        loss = loss + model.peft_config.sade_weight * sade_loss(model)
    loss.backward()
    opt.step()
    after = model.state_dict()
    changed = {n for n in before if not torch.equal(before[n], after[n])}
    assert changed, "nothing trained"
    assert all(_is_trained(n) for n in changed), sorted(n for n in changed if not _is_trained(n))
    # frozen encoder BN statistics did not drift; the head's BN statistics did update
    assert "encoder.first_conv.1.running_mean" not in changed
    assert "cls_head_finetune.1.running_mean" in changed
    assert any(n.endswith((".B", ".lora_B")) for n in changed)
    assert "cls_token" in changed and "cls_head_finetune.8.weight" in changed


def test_batchnorm_follows_freezing():
    model = inject_adapters(tiny(), CLoRAConfig())
    model.train()
    enc_bn = [m for m in model.encoder.modules() if isinstance(m, nn.BatchNorm1d)]
    head_bn = [m for m in model.cls_head_finetune.modules() if isinstance(m, nn.BatchNorm1d)]
    assert enc_bn and head_bn
    assert not any(m.training for m in enc_bn) and all(m.training for m in head_bn)
    assert model.training and model.blocks[0].training
    # survives deepcopy and pickling (the trainer's EMA / DDP / checkpointing paths)
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        clone.train()
        assert not any(m.training for m in clone.encoder.modules() if isinstance(m, nn.BatchNorm1d))
    full = inject_adapters(tiny(), "full").train()
    assert all(m.training for m in full.modules() if isinstance(m, nn.BatchNorm1d))
    frozen = inject_adapters(tiny(), "none").train()
    assert not any(m.training for m in frozen.modules() if isinstance(m, nn.BatchNorm1d))
    assert not any(p.requires_grad for p in frozen.parameters())


def test_full_linear_none_trainable_sets():
    n_all = sum(p.numel() for p in tiny().parameters())
    head = sum(p.numel() for p in tiny().cls_head_finetune.parameters())
    assert trainable_parameter_summary(inject_adapters(tiny(), "full"))["trainable_params"] == n_all
    lin = trainable_parameter_summary(inject_adapters(tiny(), "linear"))
    assert (lin["trainable_params"], lin["trainable_params_without_head"], lin["adapter_params"]) == (head, 0, 0)
    assert trainable_parameter_summary(inject_adapters(tiny(), "none"))["trainable_params"] == 0


def test_targets_exact_suffix_regex_and_exclude():
    m = inject_adapters(tiny(), CLoRAConfig(target_modules=["blocks.1.mlp.fc2", "re:blocks\\.0\\.attn\\.(qkv|proj)"]))
    wrapped = sorted(n for n, mod in m.named_modules() if isinstance(mod, AdapterLinear))
    assert wrapped == ["blocks.0.attn.proj", "blocks.0.attn.qkv", "blocks.1.mlp.fc2"]
    m = inject_adapters(tiny(), LoRAConfig(target_modules=["fc1"], exclude_modules=["blocks.0.mlp.fc1"]))
    assert [n for n, mod in m.named_modules() if isinstance(mod, AdapterLinear)] == ["blocks.1.mlp.fc1"]
    m = inject_adapters(tiny(), LoRAConfig(split_qkv=False, target_modules=["qkv"]))
    assert m.blocks[0].attn.qkv.n_splits == 1 and m.blocks[0].attn.qkv.lora_B.shape == (1, 96, 8)


def test_bad_targets_raise_with_closest_names():
    with pytest.raises(PeftConfigError) as err:
        inject_adapters(tiny(), CLoRAConfig(target_modules=["attn.qvk"]))
    assert "'attn.qvk' matches no module" in str(err.value) and "'attn.qkv'" in str(err.value)
    with pytest.raises(PeftConfigError, match="matched 'blocks.0.mlp', a Mlp; only nn.Linear"):
        inject_adapters(tiny(), CLoRAConfig(target_modules=["blocks.0.mlp"]))
    with pytest.raises(PeftConfigError, match="train_modules entry 'cls_haed'"):
        inject_adapters(tiny(), CLoRAConfig(train_modules=["cls_haed"]))
    with pytest.raises(PeftConfigError, match="removed every target"):
        inject_adapters(tiny(), CLoRAConfig(target_modules=["fc1"], exclude_modules=["fc1"]))
    model = inject_adapters(tiny(), CLoRAConfig())
    with pytest.raises(PeftConfigError, match="already prepared with method 'clora'"):
        inject_adapters(model, LoRAConfig())


def test_merge_and_unload_returns_plain_loadable_model(points):
    model = randomize_adapters(inject_adapters(tiny(), CLoRAConfig(r=4))).eval()
    with torch.no_grad():
        expected = model(points)
    plain = merge_and_unload(model)
    assert not any(isinstance(m, AdapterLinear) for m in plain.modules())
    assert not hasattr(plain, "clora_banks") and not hasattr(plain, "peft_config")
    assert type(plain.encoder.first_conv[1]) is nn.BatchNorm1d
    fresh = create_model("point_mae_tiny", num_classes=5)
    fresh.load_state_dict(plain.state_dict(), strict=True)
    with torch.no_grad():
        assert torch.allclose(fresh.eval()(points), expected, atol=1e-5)


def test_merge_refuses_non_finite_update():
    model = inject_adapters(tiny(), CLoRAConfig())
    w = model.blocks[0].mlp.fc1.base_layer.weight.clone()
    with torch.no_grad():
        model.clora_banks["32x128"].B.fill_(float("nan"))
    with pytest.raises(PeftMergeError, match="NaN/Inf"):
        merge_adapters(model)
    assert torch.equal(model.blocks[0].mlp.fc1.base_layer.weight, w)
