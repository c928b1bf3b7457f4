"""Several adapters on one frozen backbone: load_adapter(..., adapter_name=), set_adapter, delete_adapter."""

import builtins

import pytest
import torch
from peft_helpers import randomize_adapters, tiny

from pointclora.models import create_model
from pointclora.peft import (
    AdapterMismatchError,
    CLoRAConfig,
    LinearConfig,
    LoRAConfig,
    active_adapter,
    delete_adapter,
    get_peft_method,
    inject_adapters,
    list_adapters,
    list_peft_methods,
    load_adapter,
    make_peft_config,
    save_adapter,
    set_adapter,
)
from pointclora.peft.multi import adapter_tensors


def _saved(folder, config, num_classes, seed):
    """A trained-looking adapter for ``num_classes`` classes on the seed-0 tiny backbone, saved to ``folder``."""
    model = inject_adapters(tiny(num_classes=num_classes), config)
    randomize_adapters(model, seed=seed)
    torch.manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith(("cls_head_finetune", "cls_")):
                p.add_(torch.randn_like(p) * 0.1)
        model.cls_head_finetune[1].running_mean.add_(0.3 * seed)
    save_adapter(model, folder)
    return folder


@pytest.fixture
def folders(tmp_path):
    return {
        "a": _saved(tmp_path / "a", CLoRAConfig(r=4, num_bases=2), num_classes=5, seed=1),
        "b": _saved(tmp_path / "b", LoRAConfig(r=2), num_classes=3, seed=2),  # another method, other classes
        "c": _saved(tmp_path / "c", CLoRAConfig(r=2, num_bases=3), num_classes=7, seed=3),
        "lin": _saved(tmp_path / "lin", LinearConfig(), num_classes=4, seed=4),
    }


def _alone(folder, num_classes):
    """A model that loaded only this adapter (the single-adapter API)."""
    return load_adapter(tiny(num_classes=num_classes), folder).eval()


@torch.no_grad()
def test_active_adapter_equals_a_model_that_loaded_only_it(folders, points):
    model = tiny(num_classes=5).eval()
    for name in ("a", "b", "c", "lin"):
        load_adapter(model, folders[name], adapter_name=name)
    assert list_adapters(model) == ["a", "b", "c", "lin"] and active_adapter(model) == "a"  # the first is active
    classes = {"a": 5, "b": 3, "c": 7, "lin": 4}
    for name in ("b", "a", "lin", "c", "a"):
        set_adapter(model, name)
        out = model(points)
        assert out.shape == (3, classes[name]) and model.num_classes == classes[name]
        assert model.peft_config.method == {"a": "clora", "b": "lora", "c": "clora", "lin": "linear"}[name]
        assert torch.equal(out, _alone(folders[name], classes[name])(points)), name
        # the state the model shows is exactly the single-adapter model's
        alone = _alone(folders[name], classes[name]).state_dict()
        assert sorted(model.state_dict()) == sorted(alone)


def test_switching_reads_no_file_and_copies_no_tensor(folders, points, monkeypatch):
    model = tiny(num_classes=5).eval()
    load_adapter(model, folders["a"], adapter_name="a")
    load_adapter(model, folders["b"], adapter_name="b")
    owned = {n: [t.data_ptr() for t in adapter_tensors(model, n)] for n in ("a", "b")}

    def no_io(*args, **kwargs):
        raise AssertionError("set_adapter opened a file")

    monkeypatch.setattr(builtins, "open", no_io)
    monkeypatch.setattr("safetensors.torch.load_file", no_io)
    for name in ("b", "a", "b"):
        set_adapter(model, name)
        live = {t.data_ptr() for t in model.state_dict().values()}
        assert set(owned[name]) <= live  # the adapter's own tensors are live as they are: nothing copied
    monkeypatch.undo()


def test_backbone_weights_exist_once(folders):
    model = tiny(num_classes=5)
    base = {p.data_ptr() for n, p in model.named_parameters() if n.startswith("blocks.")}
    for name in ("a", "b", "c"):
        load_adapter(model, folders[name], adapter_name=name)
    for name in ("a", "b", "c"):
        set_adapter(model, name)
        wrapped = {m.base_layer.weight.data_ptr() for m in model.modules() if hasattr(m, "base_layer")}
        assert wrapped and wrapped <= base
        # frozen base, trainable adapter + head: ready to keep training the active task
        assert not any(p.requires_grad for n, p in model.named_parameters() if "base_layer" in n)


def test_another_backbone_is_refused_and_the_model_is_untouched(folders, points):
    model = tiny(num_classes=5).eval()
    load_adapter(model, folders["a"], adapter_name="a")
    before = model(points)
    with pytest.raises(AdapterMismatchError, match="different pre-trained weights"):
        load_adapter(model, _foreign(folders["a"].parent), adapter_name="x")
    assert list_adapters(model) == ["a"] and active_adapter(model) == "a"
    assert torch.equal(model(points), before)


def _foreign(root):
    """An adapter trained on another backbone of the same variant (other pre-trained weights)."""
    torch.manual_seed(9)
    model = inject_adapters(create_model("point_mae_tiny", num_classes=5), LoRAConfig(r=2))
    return save_adapter(randomize_adapters(model), root / "foreign")


def test_names_and_errors(folders):
    model = tiny(num_classes=5)
    load_adapter(model, folders["a"], adapter_name="a")
    with pytest.raises(ValueError, match="already loaded"):
        load_adapter(model, folders["b"], adapter_name="a")
    with pytest.raises(KeyError, match="no adapter named 'zz'"):
        set_adapter(model, "zz")
    full = inject_adapters(tiny(num_classes=5), make_peft_config("full"))
    save_adapter(full, folders["a"].parent / "full")
    with pytest.raises(ValueError, match="trains the backbone itself"):
        load_adapter(model, folders["a"].parent / "full", adapter_name="full")


def test_delete_adapter(folders, points):
    model = tiny(num_classes=5).eval()
    load_adapter(model, folders["a"], adapter_name="a")
    load_adapter(model, folders["b"], adapter_name="b")
    delete_adapter(model, "a")  # the active one: the next becomes active
    assert list_adapters(model) == ["b"] and active_adapter(model) == "b"
    assert torch.equal(model(points), _alone(folders["b"], 3)(points))
    delete_adapter(model, "b")
    assert list_adapters(model) == [] and getattr(model, "peft_config", None) is None
    assert not any("base_layer" in n for n in model.state_dict())  # the plain backbone again
    load_adapter(model, folders["c"], adapter_name="c")
    assert torch.equal(model(points), _alone(folders["c"], 7)(points))


def test_a_single_adapter_model_keeps_its_adapter_as_default(folders, points):
    model = load_adapter(tiny(num_classes=5), folders["a"]).eval()
    load_adapter(model, folders["b"], adapter_name="b")
    assert list_adapters(model) == ["default", "b"] and active_adapter(model) == "default"
    assert torch.equal(model(points), _alone(folders["a"], 5)(points))
    set_adapter(model, "b")
    assert torch.equal(model(points), _alone(folders["b"], 3)(points))


def test_the_registry_contract_covers_every_method():
    frozen = [m for m in list_peft_methods() if get_peft_method(m).keeps_base_frozen]
    assert {"clora", "lora", "linear", "none"} <= set(frozen) and "full" not in frozen


@torch.no_grad()
def test_part_segmentation_adapters_bring_their_own_heads(tmp_path):
    def seg(parts, categories):
        torch.manual_seed(0)
        return create_model("point_mae_tiny_seg", num_classes=parts, num_categories=categories)

    folders = {}
    setups = {"p6": (6, 2, LoRAConfig(r=2)), "p9": (9, 3, CLoRAConfig(r=2, num_bases=2))}
    for name, (parts, cats, cfg) in setups.items():
        model = inject_adapters(seg(parts, cats), cfg)
        randomize_adapters(model, seed=parts)
        with torch.no_grad():
            model.convs3.weight.add_(0.1)
        folders[name] = save_adapter(model, tmp_path / name)
    pts = torch.rand(2, 128, 3) * 2 - 1
    model = seg(6, 2).eval()
    load_adapter(model, folders["p6"], adapter_name="p6")
    load_adapter(model, folders["p9"], adapter_name="p9")
    for name, (parts, cats) in (("p9", (9, 3)), ("p6", (6, 2))):
        set_adapter(model, name)
        cat = torch.tensor([0, cats - 1])
        out = model(pts, cat)
        alone = load_adapter(seg(parts, cats), folders[name]).eval()(pts, cat)
        assert out.shape == (2, 128, parts) and torch.equal(out, alone)
        assert model.num_categories == cats


@torch.no_grad()
def test_merging_a_model_with_several_adapters_is_refused_and_a_copy_merges_exactly(folders, points):
    """The adapters share the frozen base weights: an in-place merge would fold one adapter into all of them."""
    import copy

    from pointclora.peft import merge_and_unload

    model = tiny(num_classes=5).eval()
    load_adapter(model, folders["a"], adapter_name="a")
    load_adapter(model, folders["b"], adapter_name="b")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ValueError, match="2 adapters"):
        merge_and_unload(model)
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())  # nothing changed
    set_adapter(model, "b")
    single = copy.deepcopy(model)
    delete_adapter(single, "a")
    merged = merge_and_unload(single)
    torch.testing.assert_close(merged(points), _alone(folders["b"], 3)(points), atol=1e-5, rtol=1e-5)
    set_adapter(model, "a")  # the shared model is untouched by the copy's merge
    assert torch.equal(model(points), _alone(folders["a"], 5)(points))
