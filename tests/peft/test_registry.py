"""The method registry: a new method is one registered class; every library entry point reads the registry."""

import copy

import pytest
import torch
import torch.nn.functional as F
from peft_helpers import randomize_adapters, tiny
from torch import nn

from pointclora.engine.optim import build_optimizer, param_groups
from pointclora.peft import (
    AdapterLinear,
    AdapterMethod,
    CLoRAConfig,
    PeftConfigError,
    adapter_state_dict,
    auxiliary_loss,
    auxiliary_losses,
    can_merge,
    get_peft_method,
    inject_adapters,
    list_peft_methods,
    load_adapter,
    load_adapter_state_dict,
    make_peft_config,
    merge_and_unload,
    no_weight_decay_names,
    register_peft_method,
    save_adapter,
    trainable_parameter_summary,
    unregister_peft_method,
)


def test_builtin_methods_in_registration_order():
    assert list_peft_methods()[:5] == ["clora", "lora", "full", "linear", "none"]
    assert can_merge(inject_adapters(tiny(), "lora")) and not can_merge(inject_adapters(tiny(), "full"))


class ToyRankOne(AdapterMethod):
    """``ΔW_j = u_j vᵀ``: a rank-one update per LRM, ``u`` zero-initialised. The whole method: one class (its layer
    nested inside); registered by the ``toy`` fixture, no other edit anywhere."""

    name = "toy_rank_one"

    class Layer(AdapterLinear):
        def __init__(self, base_layer, n_splits, config):
            super().__init__(base_layer, n_splits, scaling=1.0, dropout=config.dropout)
            self.u = nn.Parameter(torch.zeros(n_splits * self.out_features))
            self.v = nn.Parameter(torch.randn(self.in_features) / self.in_features**0.5)

        def adapter_delta(self, x):
            return (x @ self.v).unsqueeze(-1) * self.u

        def delta_weight(self):
            return torch.outer(self.u, self.v)

        def adapter_parameters(self):
            yield self.u
            yield self.v

        def adapter_flops_per_token(self):
            return 0 if self.merged else self.in_features + self.n_splits * self.out_features

    layer_class = Layer


@pytest.fixture
def toy():
    register_peft_method(ToyRankOne)
    try:
        yield ToyRankOne
    finally:
        unregister_peft_method("toy_rank_one")
    assert "toy_rank_one" not in list_peft_methods()


def test_toy_method_is_one_registered_class(toy, tmp_path, points):
    assert "toy_rank_one" in list_peft_methods()
    cfg = make_peft_config("toy_rank_one", split_qkv=False)
    assert cfg.to_dict()["method"] == "toy_rank_one" and make_peft_config(**cfg.to_dict()) == cfg
    model = inject_adapters(tiny(), cfg)
    assert model.peft_config.target_modules == model.default_adapter_targets  # the model's defaults
    layers = [m for m in model.modules() if isinstance(m, ToyRankOne.Layer)]
    assert len(layers) == 2 * 4  # point_mae_tiny: 2 blocks x (qkv, proj, fc1, fc2)
    per_block = (3 * 32 + 32) + (32 + 32) + (128 + 32) + (32 + 128)  # u (out) + v (in) per layer
    assert trainable_parameter_summary(model)["adapter_params"] == 2 * per_block
    assert auxiliary_loss(model) is None and auxiliary_losses(model) == {}

    model.train()
    optimizer = build_optimizer(model, lr=1e-2)
    before = {n: t.clone() for n, t in model.state_dict().items()}
    F.cross_entropy(model(points), torch.tensor([0, 1, 2])).backward()
    optimizer.step()
    changed = {n for n, t in model.state_dict().items() if not torch.equal(t, before[n])}
    assert any(n.endswith(".u") for n in changed)
    allowed = (".u", ".v")
    assert all(n.endswith(allowed) or n.startswith(("cls_head_finetune.", "cls_")) for n in changed), changed

    model.eval()
    with torch.no_grad():
        out = model(points)
        plain = merge_and_unload(copy.deepcopy(model))
        assert not any(isinstance(m, AdapterLinear) for m in plain.modules())
        torch.testing.assert_close(plain(points), out, rtol=1e-5, atol=1e-5)

    save_adapter(model, tmp_path / "toy")
    fresh = tiny()  # same seed: same frozen base
    load_adapter(fresh, tmp_path / "toy")
    fresh.eval()
    with torch.no_grad():
        torch.testing.assert_close(fresh(points), out, rtol=0, atol=0)
    again = inject_adapters(tiny(), cfg)
    load_adapter_state_dict(again, adapter_state_dict(model))
    again.eval()
    with torch.no_grad():
        torch.testing.assert_close(again(points), out, rtol=0, atol=0)


def test_toy_method_is_offered_by_every_tool_and_trains_with_the_trainer(toy, tmp_path):
    from pointclora.cli.count_params import build_parser

    assert build_parser().parse_args(["--peft", "toy_rank_one"]).peft == "toy_rank_one"  # a --peft choice
    from pointclora.cli import fewshot, finetune, segment

    for tool in (finetune, segment, fewshot):  # every training tool offers it
        assert tool.build_parser().parse_args(["--cfg", "x", "--peft", "toy_rank_one"]).peft == "toy_rank_one"
    _trains_and_reloads_with_the_trainer(tmp_path)


def test_register_rejects_bad_and_duplicate_names():
    with pytest.raises(ValueError, match="already registered"):

        @register_peft_method
        class Other(AdapterMethod):
            name = "lora"

    with pytest.raises(ValueError, match="lower-case identifier"):

        @register_peft_method
        class Bad(AdapterMethod):
            name = "Bad Name"


def test_model_without_declared_targets_needs_target_modules():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    with pytest.raises(PeftConfigError) as err:
        inject_adapters(model, "lora")
    assert str(err.value) == (
        "Sequential declares no default_adapter_targets; pass target_modules (names, suffixes or 're:' patterns of "
        "its nn.Linear layers, e.g. ['qkv', 'proj', 'fc1', 'fc2'] for a ViT)")
    inject_adapters(model, make_peft_config("lora", r=2, target_modules=["0"], train_modules=["2"]))
    assert [n for n, p in model.named_parameters() if p.requires_grad] == ["0.lora_A", "0.lora_B", "2.weight", "2.bias"]


def test_clora_auxiliary_loss_is_weighted_sade():
    model = randomize_adapters(inject_adapters(tiny(), CLoRAConfig(r=4, num_bases=2, sade_weight=0.3)))
    terms = auxiliary_losses(model)
    assert set(terms) == {"sade"} and terms["sade"].weight == 0.3
    assert terms["sade"].value > 0
    torch.testing.assert_close(auxiliary_loss(model), 0.3 * terms["sade"].value)
    off = inject_adapters(tiny(), CLoRAConfig(r=4, num_bases=2, sade_weight=0.0))
    assert auxiliary_loss(off) is None


def _q_ids(model):
    return {id(p) for n, p in model.named_parameters() if n.endswith(".Q")}


@pytest.mark.parametrize("q_weight_decay", [False, True])
def test_clora_q_weight_decay(q_weight_decay):
    """Q starts at the identity; AdamW's decoupled decay would shrink it toward 0 by (1 - lr·wd) per step."""
    model = inject_adapters(tiny(), CLoRAConfig(r=4, num_bases=2, q_weight_decay=q_weight_decay))
    groups = param_groups(model, weight_decay=0.5)
    decayed = {id(p) for g in groups if g["weight_decay"] > 0 for p in g["params"]}
    assert (_q_ids(model) <= decayed) == q_weight_decay and (_q_ids(model) & decayed != set()) == q_weight_decay
    assert bool(no_weight_decay_names(model)) != q_weight_decay
    # the banks' A and B (2-D) are decayed either way, as LoRA's A and B are
    assert all(id(p) in decayed for n, p in model.named_parameters() if n.startswith("clora_banks."))

    optimizer = build_optimizer(model, lr=0.1, weight_decay=0.5)
    for p in model.parameters():
        if p.requires_grad:
            p.grad = torch.zeros_like(p)  # no gradient: only decay can move a tensor
    optimizer.step()
    q = model.blocks[0].attn.qkv.Q
    expected = torch.eye(4).expand_as(q) * (0.95 if q_weight_decay else 1.0)
    torch.testing.assert_close(q.detach(), expected)


def test_get_peft_method_of_a_plain_model_is_a_clear_error():
    with pytest.raises(ValueError, match="carries no PEFT method"):
        get_peft_method(tiny())
    assert auxiliary_loss(tiny()) is None and no_weight_decay_names(tiny()) == set()


@pytest.mark.parametrize("method", ["linear", "none", "lora"])
def test_adapter_file_restores_frozen_task_tensors(method, tmp_path, points):
    """A linear probe keeps cls_token/cls_pos frozen at their initial draw; no backbone checkpoint holds them, so
    the adapter file must, or a reload in another process draws other values (the 50 % -> 18 % evaluate bug)."""
    model = inject_adapters(tiny(seed=0), method)
    assert not model.cls_token.requires_grad or method == "lora"
    saved = set(adapter_state_dict(model))
    assert {"cls_token", "cls_pos"} <= saved and "cls_head_finetune.8.weight" in saved
    model.eval()
    with torch.no_grad():
        out = model(points)
    save_adapter(model, tmp_path / method)
    other = tiny(seed=0)
    with torch.no_grad():  # same backbone, but the task tensors of another random draw
        other.cls_token.normal_()
        other.cls_pos.normal_()
        other.cls_head_finetune[8].weight.normal_()
    load_adapter(other, tmp_path / method)
    other.eval()
    with torch.no_grad():
        torch.testing.assert_close(other(points), out, rtol=0, atol=0)


def _trains_and_reloads_with_the_trainer(tmp_path):
    """The registered toy method through the one Trainer and the saved-weights format, with no other edit."""
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
    from task_configs import task_cfg

    from pointclora.api import load_weights
    from pointclora.engine.trainer import Trainer

    cfg = task_cfg("classification", tmp_path, method="toy_rank_one", epochs=1)
    cfg["peft"] = {"method": "toy_rank_one", "split_qkv": False}
    metrics = Trainer(cfg, output=tmp_path / "toy_run", quiet=True).fit()
    assert metrics["method"] == "toy_rank_one" and metrics["adapter_params"] > 0
    run = load_weights(tmp_path / "toy_run")
    assert run.manifest["method"] == "toy_rank_one" and any(k.endswith(".u") for k in run.manifest["tensors"])


def test_no_match_errors_name_the_closest_modules_including_suffixes():
    from pointclora.peft.registry import nothing_matched

    names = [n for n, _ in tiny().named_modules() if n]
    assert str(nothing_matched("target_modules", "attn.qvk", names)) == (
        "target_modules entry 'attn.qvk' matches no module of the model. "
        "Closest names: 'attn.qkv', '1.attn.qkv', '0.attn.qkv'."
    )
    assert str(nothing_matched("train_modules", "re:blocks.0.mlp.fc", names)).endswith(
        "Closest names: 'blocks.0.mlp.fc2', 'blocks.0.mlp.fc1', 'blocks.1.mlp.fc2'.")  # the pattern without 're:'
    assert str(nothing_matched("exclude_modules", "zzzz", names)) == (
        "exclude_modules entry 'zzzz' matches no module of the model.")  # nothing close: no hint
    with pytest.raises(PeftConfigError, match="^exclude_modules entry 'fc3' matches no module of the model"):
        inject_adapters(tiny(), make_peft_config("lora", exclude_modules=["fc3"]))


def test_targets_that_cannot_be_wrapped_are_refused_with_the_reason():
    model = inject_adapters(tiny(), "lora")
    method = get_peft_method(model)
    with pytest.raises(PeftConfigError) as err:
        method.find_targets(model)
    assert str(err.value) == "'blocks.0.attn.qkv' already carries an adapter; inject_adapters was called twice"
    qkv = nn.Sequential()
    qkv.qkv = nn.Linear(4, 10)
    with pytest.raises(PeftConfigError) as err:
        inject_adapters(qkv, make_peft_config("lora", target_modules=["qkv"], train_modules=[]))
    assert str(err.value) == (
        "split_qkv=true but 'qkv' has out_features=10, not divisible by 3; set split_qkv=false or exclude it")
    plain = nn.Sequential()
    plain.qkv = nn.Linear(4, 10)
    inject_adapters(plain, make_peft_config("lora", target_modules=["qkv"], train_modules=[], split_qkv=False))
    assert plain.qkv.n_splits == 1

    class NoLayer(AdapterMethod):
        name = "no_layer"

    with pytest.raises(NotImplementedError) as err:
        NoLayer(make_peft_config("lora")).make_layer(tiny(), "blocks.0.mlp.fc1", nn.Linear(4, 4), 1)
    assert str(err.value) == "PEFT method 'no_layer' sets no layer_class and does not override make_layer"


def test_lora_groups_by_lrm_shape_and_marks_parameters_by_name():
    model = inject_adapters(tiny(), make_peft_config("lora", r=2, train_modules=["cls_token", "blocks.1.norm1"]))
    method = get_peft_method(model)
    blk = model.blocks[0]
    assert [method.group_key(blk.attn.qkv), method.group_key(blk.mlp.fc1)] == ["32x32", "32x128"]
    assert method.shared_state(model) is None and method.shared_parameter_counts(model) == {}
    trained = sorted(n for n, p in model.named_parameters() if p.requires_grad and ".lora_" not in n)
    assert trained == ["blocks.1.norm1.bias", "blocks.1.norm1.weight", "cls_token"]  # a parameter and a module
    assert model.peft_config.train_modules == ("cls_token", "blocks.1.norm1")  # given: not the model's default


def test_the_head_and_train_modules_come_from_the_model_or_timm_cfg():
    from pointclora.peft.registry import model_head_modules, model_train_modules

    class Net(nn.Module):
        pass

    net = Net()
    assert model_head_modules(net) == () and model_train_modules(net) == ()
    net.pretrained_cfg = {"classifier": "head"}
    assert model_head_modules(net) == ("head",) and model_train_modules(net) == ("head",)
    net.pretrained_cfg = {"classifier": ["head", "head_dist"]}
    assert model_head_modules(net) == ("head", "head_dist")
    net.pretrained_cfg = None
    net.default_cfg = {"classifier": ("fc",)}  # older timm
    assert model_head_modules(net) == ("fc",)
    net.default_cfg = {"classifier": None}
    assert model_head_modules(net) == ()
    net.head_modules = ["cls"]  # declared by the model: wins
    assert model_head_modules(net) == ("cls",) and model_train_modules(net) == ("cls",)
    net.default_train_modules = ["cls", "token"]
    assert model_train_modules(net) == ("cls", "token")


def test_registration_derives_a_config_and_checks_the_class():
    from pointclora.peft import PeftConfig

    class Derived(AdapterMethod):
        """A method with no options of its own."""

        name = "derived_toy"

    try:
        assert register_peft_method(Derived) is Derived and register_peft_method(Derived) is Derived  # idempotent
        cfg_class = Derived.config_class
        assert cfg_class.__name__ == "DerivedConfig" and cfg_class.method == "derived_toy"
        assert cfg_class.__doc__ == Derived.__doc__ and issubclass(cfg_class, PeftConfig)
        assert list_peft_methods()[-1] == "derived_toy"
        method = get_peft_method("Derived_Toy")  # method names are looked up lower-case
        assert type(method) is Derived and type(method.config) is cfg_class and method.config.split_qkv is True
        assert type(get_peft_method(method.config)) is Derived
    finally:
        unregister_peft_method("derived_toy")

    class NotAConfig(AdapterMethod):
        name = "not_a_config"
        config_class = dict

    with pytest.raises(TypeError, match="^NotAConfig.config_class must be a PeftConfig subclass, got <class 'dict'>$"):
        register_peft_method(NotAConfig)

    class Borrowed(AdapterMethod):
        name = "borrowed"
        config_class = CLoRAConfig

    with pytest.raises(ValueError, match="^CLoRAConfig.method is 'clora', but the method is 'borrowed'$"):
        register_peft_method(Borrowed)
    assert "borrowed" not in list_peft_methods() and "not_a_config" not in list_peft_methods()
    with pytest.raises(ValueError, match="^Bad.name must be a lower-case identifier, got 'Bad Name'$"):
        register_peft_method(type("Bad", (AdapterMethod,), {"name": "Bad Name"}))
    with pytest.raises(ValueError, match="^Empty.name must be a lower-case identifier, got ''$"):
        register_peft_method(type("Empty", (AdapterMethod,), {}))
    with pytest.raises(ValueError, match="^PEFT method 'lora' is already registered by LoRAMethod$"):
        register_peft_method(type("Other", (AdapterMethod,), {"name": "lora"}))


def test_unknown_methods_and_targets_are_named():
    with pytest.raises(PeftConfigError, match=r"^unknown PEFT method 'lorra'; did you mean 'lora'\? Choose one of: "
                                              r"clora, lora, full, linear, none"):  # fmt: skip
        get_peft_method("lorra")
    with pytest.raises(PeftConfigError, match=r"^unknown PEFT method 'zzz' Choose one of: clora, lora"):
        get_peft_method("zzz")
    with pytest.raises(TypeError, match="^expected a PeftConfig, a prepared model or a method name, got int$"):
        get_peft_method(3)
    with pytest.raises(ValueError, match=r"^Sequential carries no PEFT method \(call inject_adapters first\)$"):
        get_peft_method(nn.Sequential())


def test_wrappers_take_the_mode_of_the_layer_they_replace_and_keep_model_order():
    model = tiny().eval()
    model.blocks[1].train()
    inject_adapters(model, make_peft_config("lora", r=2))
    assert [m.training for m in (model.blocks[0].attn.qkv, model.blocks[1].mlp.fc2)] == [False, True]
    targets = get_peft_method(model.peft_config).find_targets(tiny())
    in_order = [n for n, m in tiny().named_modules() if isinstance(m, nn.Linear) and n.startswith("blocks.")]
    assert [n for n, _ in targets] == in_order and len(in_order) == 8  # model order, not the targets' order
    assert model.peft_config.target_modules[0] == "attn.qkv" and in_order[0] != "blocks.0.attn.qkv"
    with pytest.raises(PeftConfigError) as err:
        inject_adapters(tiny(), make_peft_config("lora", target_modules=["fc1"], exclude_modules=["mlp.fc1"]))
    assert str(err.value) == "exclude_modules ['mlp.fc1'] removed every target of ['fc1']"


def test_a_method_with_its_own_config_class_registers_and_unknown_names_unregister_silently():
    import dataclasses

    from pointclora.peft.config import AdapterConfig

    @dataclasses.dataclass
    class GainConfig(AdapterConfig):  # declares no method: registration names it
        gain: float = 1.0

    class Gain(AdapterMethod):
        name = "gain_toy"
        config_class = GainConfig

    try:
        assert register_peft_method(Gain) is Gain and Gain.config_class is GainConfig
        cfg = make_peft_config("gain_toy", gain=2.0)
        assert type(cfg) is GainConfig and cfg.to_dict()["method"] == "gain_toy" and cfg.gain == 2.0
    finally:
        unregister_peft_method("gain_toy")
    assert "gain_toy" not in list_peft_methods()
    unregister_peft_method("gain_toy")  # not registered (any more): nothing to do, no error
    assert list_peft_methods()[:5] == ["clora", "lora", "full", "linear", "none"]


def test_a_method_merges_with_the_finite_check_by_default():
    from pointclora.peft import PeftMergeError

    model = inject_adapters(tiny(), make_peft_config("lora", r=2))
    with torch.no_grad():
        model.blocks[0].mlp.fc1.lora_B.fill_(float("nan"))
    method = get_peft_method(model)
    with pytest.raises(PeftMergeError, match="NaN/Inf"):
        method.merge(model)  # no check_finite given
    assert not model.blocks[0].mlp.fc1.merged


def test_a_pattern_that_matches_no_target_is_named_whole_with_the_closest_names_by_its_text():
    """The hint compares the pattern's text without ``re:`` (cut-off 0.5): ``re:qkv`` (a full match, so it finds
    nothing) is close to ``qkv`` and ``attn.qkv``."""
    from pointclora.peft.registry import _closest

    with pytest.raises(PeftConfigError) as err:
        inject_adapters(tiny(), make_peft_config("lora", target_modules=["re:qkv"]))
    assert str(err.value) == (
        "target_modules entry 're:qkv' matches no module of the model. Closest names: 'qkv', 'attn.qkv'.")
    names = [n for n, _ in tiny().named_modules() if n]
    assert _closest("blk", names) == ["blocks", "blocks.1", "blocks.0"]  # 'blocks.1' scores 0.55 (cut-off 0.5)
    assert _closest("blk", names, n=2) == ["blocks", "blocks.1"]


def test_a_class_without_a_name_is_refused_with_the_empty_name():
    with pytest.raises(ValueError, match="^Plain.name must be a lower-case identifier, got ''$"):
        register_peft_method(type("Plain", (), {}))  # not even a PeftMethod: no name attribute at all


def test_make_layer_gets_each_target_by_its_name_and_split_qkv_needs_a_multiple_of_three():
    from pointclora.peft import LoRAConfig
    from pointclora.peft.lora import LoRALinear

    class Named(AdapterMethod):
        name = "named_toy"  # never registered: its hooks are called directly

        def make_layer(self, model, name, base_layer, n_splits):
            seen.append((name, n_splits))
            return LoRALinear(base_layer, 2, n_splits)

    seen = []
    Named(LoRAConfig(r=2, target_modules=["fc1", "qkv"])).inject(tiny())
    in_order = [n for n, _ in tiny().named_modules() if n.endswith(("mlp.fc1", "attn.qkv"))]  # a block's mlp first
    assert seen == [(n, 3 if n.endswith("qkv") else 1) for n in in_order] and len(seen) == 4
    lora = get_peft_method(LoRAConfig())
    assert lora.n_splits("attn.qkv", nn.Linear(4, 12)) == 3 and lora.n_splits("attn.proj", nn.Linear(4, 12)) == 1
    with pytest.raises(PeftConfigError) as err:
        lora.n_splits("blocks.0.attn.qkv", nn.Linear(4, 8))  # divisible by 4, not by 3
    assert str(err.value) == (
        "split_qkv=true but 'blocks.0.attn.qkv' has out_features=8, not divisible by 3; set split_qkv=false or "
        "exclude it")
    # a method whose config has no split_qkv option never splits
    assert AdapterMethod(make_peft_config("linear")).n_splits("blocks.0.attn.qkv", nn.Linear(4, 12)) == 1


def test_an_adapter_file_saves_nested_train_modules_and_a_pattern_entry_matches_names_not_the_root():
    model = inject_adapters(tiny(), make_peft_config("lora", r=2, train_modules=["blocks.1.norm1", "re:(cls_token)?"]))
    saved = get_peft_method(model).saved_state_names(model)
    want = [n for n in model.state_dict() if n.endswith((".lora_A", ".lora_B")) or n in ("cls_token", "cls_pos")
            or n.startswith(("blocks.1.norm1.", "cls_head_finetune."))]  # fmt: skip
    assert saved == want and "blocks.1.norm1.weight" in saved  # model order; a pattern that matches '' saves no more
