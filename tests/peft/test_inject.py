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
    adapter_layers,
    adapter_named_parameters,
    adapter_parameter_groups,
    format_parameter_summary,
    get_peft_method,
    inject_adapters,
    make_peft_config,
    merge_adapters,
    merge_and_unload,
    sade_loss,
    trainable_parameter_summary,
    unmerge_adapters,
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
    with pytest.raises(PeftConfigError) as err:
        inject_adapters(tiny(), CLoRAConfig(target_modules=["blocks.0.mlp"]))
    assert str(err.value) == (
        "target_modules entry 'blocks.0.mlp' matched 'blocks.0.mlp', a Mlp; only nn.Linear layers can be adapted "
        "(target the Linear inside it, e.g. with a suffix like 'mlp.fc1')")
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
    with pytest.raises(PeftMergeError, match="NaN/Inf"):
        merge_and_unload(model)  # checks by default too
    assert torch.equal(model.blocks[0].mlp.fc1.base_layer.weight, w)
    unmerge_adapters(model)
    merge_adapters(model, check_finite=False)  # asked not to check: the update goes in as it is
    assert model.blocks[0].mlp.fc1.merged and model.blocks[0].mlp.fc1.base_layer.weight.isnan().all()
    nan = inject_adapters(tiny(), CLoRAConfig())
    with torch.no_grad():
        nan.clora_banks["32x128"].B.fill_(float("nan"))
    plain = merge_and_unload(nan, check_finite=False)
    assert not hasattr(plain, "clora_banks") and plain.blocks[0].mlp.fc1.weight.isnan().all()


def test_config_given_as_none_a_name_or_a_dict_and_a_bad_type_named():
    assert inject_adapters(tiny(), None).peft_config.method == "clora"  # the default method
    assert inject_adapters(tiny(), "lora").peft_config.method == "lora"
    model = inject_adapters(tiny(), {"method": "lora", "r": 2})
    assert (model.peft_config.method, model.peft_config.r, model.blocks[0].mlp.fc1.lora_A.shape[1]) == ("lora", 2, 2)
    with pytest.raises(TypeError, match="config must be a PeftConfig, a method name or a dict, got int"):
        inject_adapters(tiny(), 4)


class _MyBN(nn.BatchNorm1d):
    """A BatchNorm subclass with no frozen twin: it is held in eval mode by a forward pre-hook instead."""


class _BNNet(nn.Module):
    """``x (B, 4) -> (B, 3)``: a frozen trunk with a plain BN, an affine-free BN and a BN subclass; a trained head
    whose affine-free BN must train (it has no parameters to say so)."""

    default_adapter_targets = ("fc",)

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)
        self.trunk = nn.Sequential(nn.BatchNorm1d(4), nn.BatchNorm1d(4, affine=False), _MyBN(4))
        self.head = nn.Sequential(nn.BatchNorm1d(4, affine=False), nn.Linear(4, 3))

    def forward(self, x):
        return self.head(self.trunk(self.fc(x)))


def test_frozen_batchnorm_of_every_kind_stays_in_eval_and_merge_and_unload_restores_it():
    torch.manual_seed(0)
    model = inject_adapters(_BNNet(), LoRAConfig(r=2, train_modules=["head"]))
    plain_bn, free_bn, my_bn = model.trunk
    assert not any(bn.training for bn in model.trunk)  # switched to eval at injection, before any train()
    assert type(plain_bn).__name__ == "FrozenStatsBatchNorm1d" and isinstance(plain_bn, nn.BatchNorm1d)
    assert type(free_bn).__name__ == "FrozenStatsBatchNorm1d"  # no parameters, not under a trained module
    assert type(my_bn) is _MyBN and my_bn._peft_forced_eval and my_bn.training is False
    model.train()
    assert not plain_bn.training and not free_bn.training and model.head[0].training
    assert type(model.head[0]) is nn.BatchNorm1d  # affine-free but under the trained head: trains
    stats = [bn.running_mean.clone() for bn in model.trunk]
    model(torch.randn(8, 4) * 3 + 1)
    assert my_bn.training is False  # the hook switched it back to eval before its forward
    for bn, before in zip(model.trunk, stats):
        assert torch.equal(bn.running_mean, before)  # no frozen statistics drifted
    assert not model.head[0].running_mean.eq(0).all()  # the trained head's did

    plain = merge_and_unload(model)
    assert [type(bn) for bn in plain.trunk] == [nn.BatchNorm1d, nn.BatchNorm1d, _MyBN]
    assert not hasattr(my_bn, "_peft_forced_eval") and not my_bn._forward_pre_hooks
    plain.train()
    plain(torch.randn(8, 4) * 3 + 1)
    assert all(bn.training and not torch.equal(bn.running_mean, s) for bn, s in zip(plain.trunk, stats))


def test_parameter_table_lists_the_summary_and_every_shape_group():
    model = inject_adapters(tiny(), CLoRAConfig(r=2, num_bases=2))
    s = trainable_parameter_summary(model)
    head = sum(p.numel() for p in model.cls_head_finetune.parameters())
    assert s["frozen_params"] == s["total_params"] - s["trainable_params"] > 0
    assert s["trainable_params_without_head"] == s["trainable_params"] - head
    # another head: cls_token (1 x 1 x 32) and cls_pos count as the head, the classifier does not
    other = trainable_parameter_summary(model, head_modules=["cls_token", "cls_pos"])
    assert other["trainable_params_without_head"] == s["trainable_params"] - 2 * 32
    # shared p·r·(in+out), per LRM p·r² each; 32x32: qkv (3 LRMs) + proj, in two blocks = 8 LRMs
    assert format_parameter_summary(model).splitlines() == [
        "parameters                               count         M",
        "adapter_params                           1,632     0.002",
        "trainable_params                         5,125     0.005",
        "trainable_params_without_head            1,696     0.002",
        "total_params                            42,053     0.042",
        "frozen_params                           36,928     0.037",
        "shape group               in   out  LRMs    shared   per-LRM     total",
        "32x128                    32   128     2       640        16       656",
        "128x32                   128    32     2       640        16       656",
        "32x32                     32    32     8       256        64       320",
    ]
    assert s["adapter_params"] == 656 + 656 + 320
    assert format_parameter_summary({"adapter_params": 1_234_567, "total_params": 5_000_000_000}).splitlines() == [
        "parameters                               count         M",
        "adapter_params                       1,234,567     1.235",
        "total_params                     5,000,000,000  5000.000",
    ]
    # LoRA: no shared tensors, r·(in+out) per LRM
    lora = adapter_parameter_groups(inject_adapters(tiny(), LoRAConfig(r=2)))
    assert lora["32x128"] == {"in": 32, "out": 128, "lrms": 2, "shared_params": 0, "per_lrm_params": 2 * 2 * 160,
                              "params": 2 * 2 * 160}  # fmt: skip
    assert lora["32x32"]["lrms"] == 8 and lora["32x32"]["params"] == 8 * 2 * 64


def test_a_plain_model_has_no_adapters_to_count_merge_or_unmerge(points):
    model = tiny().eval()
    before = {n: t.clone() for n, t in model.state_dict().items()}
    assert merge_adapters(model) is model and unmerge_adapters(model) is model
    assert all(torch.equal(t, before[n]) for n, t in model.state_dict().items())
    assert adapter_named_parameters(model) == [] and adapter_parameter_groups(model) == {}
    assert trainable_parameter_summary(model)["adapter_params"] == 0


def test_unmerge_restores_the_base_weights_and_the_adapted_output(points):
    model = randomize_adapters(inject_adapters(tiny(), LoRAConfig(r=4))).eval()
    base = model.blocks[1].mlp.fc2.base_layer.weight.clone()
    with torch.no_grad():
        want = model(points)
        merge_adapters(model)
        assert not torch.allclose(model.blocks[1].mlp.fc2.base_layer.weight, base)
        assert unmerge_adapters(model) is model
        assert not any(layer.merged for layer in adapter_layers(model))
        torch.testing.assert_close(model.blocks[1].mlp.fc2.base_layer.weight, base)
        torch.testing.assert_close(model(points), want)
    names = [n for n, _ in adapter_named_parameters(model)]
    assert names and all(n.endswith((".lora_A", ".lora_B")) for n in names)
    assert len(names) == len(set(names)) == 2 * len(adapter_layers(model))


def test_locking_names_what_it_froze_once_and_unload_gives_every_tensor_back(tmp_path):
    from pointclora.peft import load_adapter, save_adapter
    from pointclora.peft.inject import _lock_frozen_batchnorm

    torch.manual_seed(0)
    model = inject_adapters(_BNNet(), LoRAConfig(r=2, train_modules=["head"]))
    assert _lock_frozen_batchnorm(model, ["head"]) == []  # already locked: nothing to do, no second hook
    assert len(model.trunk[2]._forward_pre_hooks) == 1
    fresh = _BNNet()
    fresh.fc.requires_grad_(False)
    for bn in fresh.trunk:
        bn.requires_grad_(False)
    assert _lock_frozen_batchnorm(fresh, ["head"]) == ["trunk.0", "trunk.1", "trunk.2"]
    # set_adapter locks again on every switch: the hooked BN subclass keeps one hook (it gained one per switch)
    from pointclora.peft import set_adapter

    save_adapter(model, tmp_path / "bn")
    torch.manual_seed(0)
    switching = _BNNet()
    load_adapter(switching, tmp_path / "bn", adapter_name="a")
    load_adapter(switching, tmp_path / "bn", adapter_name="b")
    for name in "abab":
        set_adapter(switching, name)
    assert len(switching.trunk[2]._forward_pre_hooks) == 1

    frozen = merge_and_unload(inject_adapters(tiny(), "none"))
    assert all(p.requires_grad for p in frozen.parameters()) and not hasattr(frozen, "peft_config")
    lora = inject_adapters(tiny(), "lora")
    monkey = type(get_peft_method(lora))
    try:
        monkey.mergeable = False
        with pytest.raises(ValueError, match="PEFT method 'lora' does not merge into the base weights"):
            merge_and_unload(lora)
    finally:
        monkey.mergeable = True
    save_adapter(randomize_adapters(inject_adapters(tiny(), LoRAConfig(r=2))), tmp_path / "a")
    shared = tiny()
    load_adapter(shared, tmp_path / "a", adapter_name="a")
    load_adapter(shared, tmp_path / "a", adapter_name="b")
    with pytest.raises(ValueError, match=r"this model holds 2 adapters \['a', 'b'\] on one shared backbone"):
        merge_and_unload(shared)


def test_a_batchnorm_trained_by_a_parameter_name_trains_and_those_after_it_still_lock():
    """``train_modules`` may name a BN's parameter (the module is then not in the trained list): its own parameters
    say it trains. A BN that trains, met first, must not stop the locking of the frozen ones after it."""
    model = inject_adapters(_BNNet(), LoRAConfig(r=2, train_modules=["trunk.0.weight", "head"])).train()
    plain_bn, free_bn, my_bn = model.trunk
    assert type(plain_bn) is nn.BatchNorm1d and plain_bn.training and plain_bn.weight.requires_grad
    assert type(free_bn).__name__ == "FrozenStatsBatchNorm1d" and not free_bn.training
    assert my_bn._peft_forced_eval


def test_a_model_holding_one_named_adapter_merges(tmp_path, points):
    from pointclora.peft import load_adapter, save_adapter

    save_adapter(randomize_adapters(inject_adapters(tiny(), LoRAConfig(r=2))), tmp_path / "a")
    model = tiny()
    load_adapter(model, tmp_path / "a", adapter_name="a")
    with torch.no_grad():
        want = model.eval()(points)
        plain = merge_and_unload(model)
        assert not adapter_layers(plain)
        torch.testing.assert_close(plain(points), want, rtol=1e-5, atol=1e-5)


class _GatedBN(nn.BatchNorm1d):
    """A BatchNorm subclass with a child module of its own (a gate): only its own parameters say whether it trains."""

    def __init__(self, n):
        super().__init__(n)
        self.gate = nn.Linear(n, n)


def test_a_frozen_batchnorm_whose_child_module_trains_is_still_locked():
    torch.manual_seed(0)
    net = _BNNet()
    net.trunk[2] = _GatedBN(4)
    model = inject_adapters(net, LoRAConfig(r=2, train_modules=["head", "trunk.2.gate"])).train()
    gated = model.trunk[2]
    assert gated.gate.weight.requires_grad and not gated.weight.requires_grad
    assert gated._peft_forced_eval  # its own weight and bias are frozen: held in eval at every forward (no twin)
    before = gated.running_mean.clone()
    model(torch.randn(8, 4) * 3 + 1)
    assert not gated.training and torch.equal(gated.running_mean, before)


class _ConvBNNet(nn.Module):
    """A frozen BatchNorm of every other kind (2-D, 3-D, sync) beside an adapted Linear (no forward: the layers are
    run one by one)."""

    default_adapter_targets = ("fc",)

    def __init__(self):
        super().__init__()
        self.bn2, self.bn3, self.sync = nn.BatchNorm2d(2), nn.BatchNorm3d(2), nn.SyncBatchNorm(2)
        self.fc = nn.Linear(2, 3)


def test_frozen_batchnorm_of_every_dimension_gets_its_own_twin_and_merge_and_unload_restores_it():
    torch.manual_seed(0)
    model = inject_adapters(_ConvBNNet(), LoRAConfig(r=2, train_modules=[])).train()
    kinds = [(model.bn2, nn.BatchNorm2d), (model.bn3, nn.BatchNorm3d), (model.sync, nn.SyncBatchNorm)]
    assert [type(bn).__name__ for bn, _ in kinds] == [
        "FrozenStatsBatchNorm2d", "FrozenStatsBatchNorm3d", "FrozenStatsSyncBatchNorm"]
    assert all(isinstance(bn, kind) and not bn.training for bn, kind in kinds)
    stats = [bn.running_mean.clone() for bn, _ in kinds]
    model.bn3(torch.randn(4, 2, 2, 2, 2) * 3 + 1)  # the 3-D and 2-D ones run on the CPU; sync needs a process group
    model.bn2(torch.randn(4, 2, 2, 2) * 3 + 1)
    assert all(torch.equal(bn.running_mean, s) for (bn, _), s in zip(kinds, stats))
    plain = merge_and_unload(model)
    assert [type(plain.bn2), type(plain.bn3), type(plain.sync)] == [nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm]
    plain.train()
    plain.bn2(torch.randn(4, 2, 2, 2) * 3 + 1)
    assert plain.bn2.training and not torch.equal(plain.bn2.running_mean, stats[0])
