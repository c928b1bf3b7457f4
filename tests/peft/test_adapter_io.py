import json
import os

import pytest
import torch
from peft_helpers import randomize_adapters, tiny
from torch import nn

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


def test_config_records_the_frozen_base_under_plain_names(tmp_path):
    from safetensors import safe_open

    from pointclora.peft.io import base_fingerprint

    model = _trained()
    save_adapter(model, tmp_path)
    meta = read_adapter_config(tmp_path)
    assert (meta["format"], meta["format_version"]) == ("pointclora-adapter", 1)
    base = meta["base_model"]
    assert base["class"] == "PointTransformer" and base["constructor"] == {
        "name": "point_mae_tiny", "num_classes": 5, "trans_dim": 32, "depth": 2, "num_heads": 2, "num_groups": 16,
        "group_size": 8, "encoder_dims": 32, "head_hidden_dim": 32, "head_batch_norm": True, "pos_every_block": True,
    }  # fmt: skip
    state = model.state_dict()
    assert base["num_frozen_tensors"] == len(state) - len(meta["tensors"]) > 0
    assert (base["shapes_sha256"], base["fingerprint"]) == base_fingerprint(model)[:2]
    # the wrapper's base_layer level is not part of the signature: the plain backbone hashes the same
    plain = tiny()
    task = [n for n in meta["tensors"] if n in plain.state_dict()]
    assert base_fingerprint(plain, task) == (base["shapes_sha256"], base["fingerprint"], base["num_frozen_tensors"])
    with safe_open(str(tmp_path / "adapter.safetensors"), "pt") as f:
        assert f.metadata() == {"format": "pointclora-adapter"} and sorted(f.keys()) == sorted(meta["tensors"])
        torch.testing.assert_close(f.get_tensor("clora_banks.32x32.B"), state["clora_banks.32x32.B"])


def test_include_carries_a_frozen_tensor_outside_the_fingerprint(tmp_path, points):
    model = _trained("lora")
    with torch.no_grad():
        model.blocks[0].norm1.weight.mul_(2.0)  # a frozen tensor no checkpoint would provide
    save_adapter(model, tmp_path, include=["blocks.0.norm1.weight"])
    assert "blocks.0.norm1.weight" in read_adapter_config(tmp_path)["tensors"]
    fresh = load_adapter(tiny(), tmp_path).eval()  # its norm1 differs, yet the fingerprint matches
    with torch.no_grad():
        assert torch.equal(fresh(points), model(points))


def test_save_refuses_a_plain_or_merged_model(tmp_path):
    from pointclora.peft import merge_adapters

    with pytest.raises(ValueError) as err:
        save_adapter(tiny(), tmp_path)
    assert str(err.value) == "model has no adapters (model.peft_config is missing); call inject_adapters first"
    model = merge_adapters(_trained())
    with pytest.raises(ValueError) as err:
        save_adapter(model, tmp_path)
    assert str(err.value) == "cannot save an adapter from a merged model: call unmerge_adapters(model) first"
    assert not os.listdir(tmp_path)  # nothing half-written


def test_read_config_refuses_another_format_and_a_newer_version(tmp_path):
    save_adapter(_trained(), tmp_path)
    path = tmp_path / "adapter_config.json"
    meta = json.loads(path.read_text())
    path.write_text(json.dumps({**meta, "format": "peft"}))
    with pytest.raises(AdapterMismatchError, match=r"adapter_config.json is not a PointCLoRA adapter config "
                                                   r"\(format='peft'\)"):  # fmt: skip
        read_adapter_config(tmp_path)
    path.write_text(json.dumps({**meta, "format_version": 2}))
    with pytest.raises(AdapterMismatchError, match="has format_version 2; this pointclora reads up to 1"):
        read_adapter_config(tmp_path)
    del meta["format_version"]  # an older file without the key reads as version 0
    path.write_text(json.dumps(meta))
    assert "format_version" not in read_adapter_config(tmp_path)
    with pytest.raises(FileNotFoundError, match=r"no adapter_config.json in '.*nope'; is this an adapter directory"):
        read_adapter_config(tmp_path / "nope")


def test_load_into_a_model_carrying_the_same_adapters(tmp_path, points):
    from pointclora.peft import merge_adapters, unmerge_adapters

    model = _trained()
    save_adapter(model, tmp_path)
    target = inject_adapters(tiny(), model.peft_config)  # zero updates, same config
    assert load_adapter(target, tmp_path) is target
    with torch.no_grad():
        assert torch.equal(target.eval()(points), model(points))
    merge_adapters(target)
    with pytest.raises(AdapterMismatchError, match="model's adapters are merged; unmerge_adapters"):
        load_adapter(target, tmp_path)
    unmerge_adapters(target)


def test_a_file_missing_or_adding_tensors_is_named(tmp_path):
    from safetensors.torch import load_file, save_file

    save_adapter(_trained("lora"), tmp_path)
    weights = tmp_path / "adapter.safetensors"
    tensors = load_file(weights)
    lora = [n for n in read_adapter_config(tmp_path)["tensors"] if n.endswith(".lora_A")]  # model order
    short = {n: t for n, t in tensors.items() if n not in lora[:6]}
    save_file(short, weights)
    with pytest.raises(AdapterMismatchError) as err:
        load_adapter(tiny(), tmp_path)
    assert f"missing from the file: {lora[:5]} ..." in str(err.value)
    assert "point_mae_tiny" in str(err.value) and "'num_classes': 5" in str(err.value)
    save_file({**tensors, "extra.weight": torch.zeros(2)}, weights)
    with pytest.raises(AdapterMismatchError, match=r"not in the model: \['extra.weight'\]$"):
        load_adapter(tiny(), tmp_path)
    save_file({n: t for n, t in tensors.items() if n != lora[0]}, weights)
    with pytest.raises(AdapterMismatchError, match=rf"missing from the file: \['{lora[0]}'\]$"):
        load_adapter(tiny(), tmp_path)


def test_a_fingerprint_mismatch_names_both_fingerprints(tmp_path):
    from pointclora.peft.io import base_fingerprint

    save_adapter(_trained(), tmp_path)
    saved = read_adapter_config(tmp_path)["base_model"]["fingerprint"]
    other = tiny(seed=5)
    theirs = base_fingerprint(inject_adapters(tiny(seed=5), CLoRAConfig(r=4, num_bases=2)))[1]
    want = rf"\(base fingerprint {saved[:12]} vs {theirs[:12]}\); load the same"
    with pytest.raises(AdapterMismatchError, match=want):
        load_adapter(other, tmp_path)


def test_a_named_load_goes_beside_the_others_and_passes_the_fingerprint_flag(tmp_path, points):
    from pointclora.peft import active_adapter, list_adapters

    save_adapter(_trained(), tmp_path)
    model = tiny()
    assert load_adapter(model, tmp_path, adapter_name="mine") is model
    assert list_adapters(model) == ["mine"] and active_adapter(model) == "mine"
    with torch.no_grad():
        assert torch.equal(model.eval()(points), _trained()(points))
    with pytest.raises(AdapterMismatchError, match="allow_fingerprint_mismatch=True"):
        load_adapter(tiny(seed=5), tmp_path, adapter_name="other")
    with pytest.warns(UserWarning, match="different pre-trained weights"):
        load_adapter(tiny(seed=5), tmp_path, allow_fingerprint_mismatch=True, adapter_name="other")


def _fingerprint_naive(state, skip):
    """The recorded signature written out: sorted plain names; ``name:shape:dtype;`` headers, then the raw bytes."""
    import hashlib

    shapes, content = hashlib.sha256(), hashlib.sha256()
    # sorted by name alone: two tensors whose plain names agree keep their state_dict order
    items = sorted(((n.replace(".base_layer.", "."), t) for n, t in state.items() if n not in skip), key=lambda i: i[0])
    for name, t in items:
        header = f"{name}:{tuple(t.shape)}:{t.dtype};".encode()
        shapes.update(header)
        content.update(header + t.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return shapes.hexdigest(), content.hexdigest(), len(items)


def test_the_signature_is_the_documented_hash_of_the_frozen_tensors(tmp_path):
    """Files written by earlier versions must keep loading: the hash itself is part of the format."""
    model = _trained("lora")
    save_adapter(model, tmp_path)
    meta = read_adapter_config(tmp_path)
    want = _fingerprint_naive(model.state_dict(), set(meta["tensors"]))
    base = meta["base_model"]
    assert (base["shapes_sha256"], base["fingerprint"], base["num_frozen_tensors"]) == want
    assert all(".base_layer." not in n for n in meta["tensors"])


def test_a_file_without_a_recorded_signature_or_variant_still_loads(tmp_path, points):
    model = _trained()
    save_adapter(model, tmp_path)
    path = tmp_path / "adapter_config.json"
    meta = json.loads(path.read_text())
    for key in ("shapes_sha256", "fingerprint", "variant"):
        del meta["base_model"][key]
    path.write_text(json.dumps(meta))
    other = load_adapter(tiny(seed=5), tmp_path).eval()  # other weights, but nothing recorded to tell
    with torch.no_grad():
        assert other(points).shape == (3, 5)
    assert torch.equal(other.clora_banks["32x32"].B, model.clora_banks["32x32"].B)
    save_adapter(model, tmp_path)  # into an existing folder: overwritten in place
    assert read_adapter_config(tmp_path)["base_model"]["fingerprint"]


def _lora_file(tmp_path):
    save_adapter(_trained("lora"), tmp_path)
    from safetensors.torch import load_file

    return load_file(tmp_path / "adapter.safetensors"), read_adapter_config(tmp_path)["tensors"]


def test_every_mismatch_of_a_file_is_listed_five_at_most(tmp_path):
    from safetensors.torch import save_file

    tensors, order = _lora_file(tmp_path)
    a = [n for n in order if n.endswith(".lora_A")]  # 8 layers, model order
    where = f"adapter in {str(tmp_path)!r} does not fit this model ('point_mae_tiny', {{'name': 'point_mae_tiny', "
    bad = {**tensors, **{n: torch.zeros(1, 1, 1) for n in a[:6]}}  # six of the wrong shape: five named, then ...
    save_file(bad, tmp_path / "adapter.safetensors")
    with pytest.raises(AdapterMismatchError) as err:
        load_adapter(tiny(), tmp_path)
    msg = str(err.value)
    assert msg.startswith(where) and "'pos_every_block': True}): shape mismatch " in msg
    from safetensors.torch import load_file

    in_file = [n for n in load_file(tmp_path / "adapter.safetensors") if n in a[:6]]  # the file's own order
    shown = "; ".join(f"{n}: file (1, 1, 1) vs model {tuple(tensors[n].shape)}" for n in in_file[:5])
    assert msg.endswith("): shape mismatch " + shown)
    # exactly five missing and five unexpected: all named, no "..."; the parts joined by " | "
    extra = {f"extra{i}.weight": torch.zeros(1) for i in range(5)}
    short = {n: t for n, t in tensors.items() if n not in a[:5]}
    save_file({**short, **extra}, tmp_path / "adapter.safetensors")
    with pytest.raises(AdapterMismatchError) as err:
        load_adapter(tiny(), tmp_path)
    assert str(err.value).endswith(f"): missing from the file: {a[:5]} | not in the model: {sorted(extra)}")
    more = {**extra, "extra5.weight": torch.zeros(1)}
    save_file({**tensors, **more}, tmp_path / "adapter.safetensors")
    with pytest.raises(AdapterMismatchError) as err:
        load_adapter(tiny(), tmp_path)
    assert str(err.value).endswith(f"): not in the model: {sorted(more)[:5]} ...")


def test_architecture_and_merged_refusals_read_whole(tmp_path):
    from pointclora.peft import merge_adapters

    save_adapter(_trained(), tmp_path)
    constructor = read_adapter_config(tmp_path)["base_model"]["constructor"]
    with pytest.raises(AdapterMismatchError) as err:
        load_adapter(tiny(depth=3), tmp_path)  # same variant name, one block more
    assert str(err.value) == (
        f"adapter in {str(tmp_path)!r} was made for a backbone of another architecture (the names/shapes of its "
        f"frozen tensors differ; saved for 'point_mae_tiny' {constructor})"
    )
    merged = merge_adapters(inject_adapters(tiny(), CLoRAConfig(r=4, num_bases=2)))
    with pytest.raises(AdapterMismatchError) as err:
        load_adapter(merged, tmp_path)
    assert str(err.value) == "model's adapters are merged; unmerge_adapters(model) before loading another"


def test_the_warning_of_an_allowed_mismatch_reads_whole_also_into_present_adapters(tmp_path):
    save_adapter(_trained(), tmp_path)
    saved = read_adapter_config(tmp_path)["base_model"]["fingerprint"]
    from pointclora.peft.io import base_fingerprint

    target = inject_adapters(tiny(seed=5), CLoRAConfig(r=4, num_bases=2))  # adapters present, other weights
    theirs = base_fingerprint(target)[1]
    with pytest.warns(UserWarning) as caught:
        assert load_adapter(target, tmp_path, allow_fingerprint_mismatch=True) is target
    assert [str(w.message) for w in caught] == [
        f"adapter in {str(tmp_path)!r} was trained on different pre-trained weights than this model carries (base "
        f"fingerprint {saved[:12]} vs {theirs[:12]}); loading anyway (allow_fingerprint_mismatch=True)"
    ]
    # the caller's line, not one inside pointclora; under mutation testing (bench/mutants.py) mutmut's trampoline is
    # one more frame between this test and pointclora, so the line is the trampoline's there
    if "MUTANT_UNDER_TEST" not in os.environ:
        assert caught[0].filename == __file__


def test_a_file_without_base_model_loads_into_a_model_without_variant(tmp_path, points):
    model = _trained()
    save_adapter(model, tmp_path)
    path = tmp_path / "adapter_config.json"
    meta = json.loads(path.read_text())
    del meta["base_model"]
    path.write_text(json.dumps(meta))
    plain = tiny()
    del plain.variant  # a backbone that records no variant name
    load_adapter(plain, tmp_path)
    with torch.no_grad():
        assert torch.equal(plain.eval()(points), model(points))


def test_the_signature_of_an_empty_tensor_is_its_header_alone():
    from torch import nn

    from pointclora.peft.io import base_fingerprint

    model = nn.Linear(2, 3)
    model.register_buffer("empty", torch.zeros(0, 4))
    assert base_fingerprint(model, []) == _fingerprint_naive(model.state_dict(), set())
    assert base_fingerprint(model, ["weight"])[2] == 2  # bias, empty


def test_the_signature_of_two_tensors_with_the_same_plain_name_keeps_their_order():
    """A child module that happens to be called ``base_layer`` (not an adapter wrapper) gives a plain name twice."""
    from pointclora.peft.io import base_fingerprint

    model = nn.Module()
    model.x = nn.Linear(2, 3)
    model.x.base_layer = nn.Linear(2, 3)  # x.weight and x.base_layer.weight both hash as x.weight
    assert base_fingerprint(model, []) == _fingerprint_naive(model.state_dict(), set())
    swapped = nn.Module()
    swapped.x = nn.Linear(2, 3)
    swapped.x.base_layer = nn.Linear(2, 3)
    swapped.load_state_dict({**model.state_dict(), "x.weight": model.x.base_layer.weight,
                             "x.base_layer.weight": model.x.weight})
    assert base_fingerprint(swapped, [])[1] != base_fingerprint(model, [])[1]  # the order is part of the hash


def _small(**attrs):
    """``x (B, 4) -> (B, 3)``: a model of the user's own with no ``variant`` and no ``constructor_kwargs``."""
    class Small(nn.Module):
        default_adapter_targets = ("fc",)
        default_train_modules = ("head",)

        def __init__(self):
            super().__init__()
            self.fc, self.head = nn.Linear(4, 4), nn.Linear(4, 3)

        def forward(self, x):
            return self.head(self.fc(x))

    torch.manual_seed(0)
    model = Small()
    for k, v in attrs.items():
        setattr(model, k, v)
    return model


def test_a_model_without_variant_or_constructor_kwargs_records_its_scalar_attributes(tmp_path):
    model = randomize_adapters(inject_adapters(_small(num_classes=3, depth=2, trans_dim=[4], num_heads=None),
                                               LoRAConfig(r=2)))  # fmt: skip
    save_adapter(model, tmp_path)
    text = (tmp_path / "adapter_config.json").read_text()
    meta = json.loads(text)
    assert text == json.dumps(meta, indent=2)  # the config is written indented by 2, for people to read
    base = meta["base_model"]
    assert base["variant"] is None and base["class"] == "Small"
    assert base["constructor"] == {"num_classes": 3, "depth": 2}  # a list, None and absent attributes are left out
    x = torch.randn(5, 4)
    fresh = load_adapter(_small(num_classes=3), tmp_path)
    with torch.no_grad():
        assert torch.equal(fresh(x), model(x))
    # recorded constructor arguments come first; attributes only fill in what they do not name
    model.constructor_kwargs = {"num_classes": 7, "width": [4]}
    save_adapter(model, tmp_path)
    assert read_adapter_config(tmp_path)["base_model"]["constructor"] == {"num_classes": 7, "width": [4], "depth": 2}
    model.constructor_kwargs = None  # not a dict: ignored
    save_adapter(model, tmp_path)
    assert read_adapter_config(tmp_path)["base_model"]["constructor"] == {"num_classes": 3, "depth": 2}
