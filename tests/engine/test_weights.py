"""engine/weights.py on its own, without training: what a weights folder keeps for each kind of method, the manifest
it writes, the exact rebuild, and each refusal's message (tiny point_mae_tiny models built by the classification
task on a seeded 'pre-trained' backbone file; no data is read)."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

sys.path.insert(0, str(Path(__file__).parent))
from task_configs import task_cfg, write_tiny_backbone  # noqa: E402

from pointclora import __version__  # noqa: E402
from pointclora.engine.weights import (  # noqa: E402
    WeightsError,
    read_manifest,
    rebuild_model,
    resolve_weights_folder,
    save_weights,
    saved_state,
)
from pointclora.tasks import get_task  # noqa: E402

CLASSES = ["a", "b", "c"]


@pytest.fixture(scope="module")
def backbone(tmp_path_factory):
    return write_tiny_backbone(tmp_path_factory.mktemp("bb") / "backbone.pth")


def _task(tmp_path, method="clora"):
    task = get_task("classification")(task_cfg("classification", tmp_path, method=method))
    task.meta = {"classes": list(CLASSES)}
    return task


def _trained(task, backbone):
    """The task's model on ``backbone`` with every trainable tensor and the BatchNorm statistics of trained layers
    moved off their initial values (zero-initialised adapter factors included), as after training: a reload that
    kept any initial value fails. Frozen BatchNorm layers stay in eval mode in training: their statistics stay."""
    model = task.build_model(task.meta, backbone, lambda _m: None)
    params = dict(model.named_parameters())
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if "running_" in name and params[name.rsplit(".", 1)[0] + ".weight"].requires_grad:
                t.add_(torch.rand(t.shape, generator=g) + 0.5)
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.rand(p.shape, generator=g) + 0.5)
    return model


def _backbone_keys(backbone):
    return set(torch.load(backbone, weights_only=True)["model"])


def test_a_peft_folder_keeps_exactly_the_tensors_the_backbone_did_not_give(backbone, tmp_path):
    model = _trained(_task(tmp_path, "clora"), backbone)
    kept = saved_state(model)
    from_file = _backbone_keys(backbone)
    state = model.state_dict()
    # the wrapped layers' frozen weights are the backbone's under another name (".base_layer."): never saved
    assert not any(".base_layer." in k for k in kept)
    assert any(".base_layer." in k for k in state)
    expected = {k for k in state if k.replace(".base_layer.", ".") not in from_file}
    assert set(kept) == expected
    # the adapters, the head with its BatchNorm statistics, and the cls tokens drawn at random (the file has none)
    assert {"blocks.0.attn.qkv.Q", "cls_token", "cls_pos", "cls_head_finetune.1.running_mean",
            "cls_head_finetune.0.weight"} <= set(kept)  # fmt: skip
    for k, v in kept.items():
        assert torch.equal(v, state[k]) and v.data_ptr() != state[k].data_ptr(), k  # a copy, not the live tensor
    # a backbone tensor the user unfroze by hand trains, so it is kept too (the method does not declare it)
    model.norm.weight.requires_grad_(True)
    assert "norm.weight" in saved_state(model) and "norm.weight" in from_file


def test_methods_that_train_the_backbone_or_run_without_one_keep_every_tensor(backbone, tmp_path):
    full = _trained(_task(tmp_path, "full"), backbone)
    assert set(saved_state(full)) == set(full.state_dict())
    no_backbone = _task(tmp_path, "clora").build_model({"classes": CLASSES}, None, lambda _m: None)
    assert set(saved_state(no_backbone)) == set(no_backbone.state_dict())
    # PPT trains encoder.first_conv: its BatchNorm statistics move, so they are kept although the backbone has them
    ppt = _trained(_task(tmp_path, "ppt"), backbone)
    kept = set(saved_state(ppt))
    assert "encoder.first_conv.1.running_mean" in kept and "encoder.first_conv.1.running_mean" in _backbone_keys(
        backbone)
    assert "encoder.second_conv.1.running_mean" not in kept


def test_the_manifest_records_the_run(backbone, tmp_path):
    model = _trained(_task(tmp_path, "clora"), backbone)
    config = {"optim": {"lr": 0.002, "betas": (0.9, 0.999)}, "name": "tiny"}
    folder = save_weights(model, tmp_path / "runs" / "r1" / "best", task="classification", config=config,
                          meta={"classes": CLASSES}, epoch=np.int64(3), metrics={"acc": 62.5})  # fmt: skip
    assert folder == tmp_path / "runs" / "r1" / "best"  # its parents are made
    manifest = json.loads((folder / "manifest.json").read_text())
    tensors = load_file(str(folder / "weights.safetensors"))
    assert manifest == {
        "format": "pointclora-weights", "format_version": 1, "pointclora_version": __version__,
        "task": "classification", "method": "clora", "epoch": 3, "metrics": {"acc": 62.5},
        "meta": {"classes": CLASSES},
        "backbone": {"path": str(backbone), "fingerprint": model.backbone_info["fingerprint"],
                     "keys": model.backbone_info["keys"]},
        "config": {"optim": {"lr": 0.002, "betas": [0.9, 0.999]}, "name": "tiny"},
        "tensors": sorted(tensors),
    }  # fmt: skip
    assert type(manifest["epoch"]) is int and len(manifest["backbone"]["fingerprint"]) == 64
    assert set(tensors) == set(saved_state(model))
    with safe_open(str(folder / "weights.safetensors"), "pt") as f:
        assert f.metadata() == {"format": "pointclora-weights"}
    # CLoRA also leaves peft-style adapter files for other tools
    assert (folder / "adapter.safetensors").is_file() and (folder / "adapter_config.json").is_file()
    assert read_manifest(folder) == manifest


def test_saving_again_replaces_the_folder_whole_and_leaves_no_temporaries(backbone, tmp_path):
    task = _task(tmp_path, "linear")
    model = _trained(task, backbone)
    folder = tmp_path / "best"
    (tmp_path / "best.tmp").mkdir()  # a temporary folder left by a killed save
    (tmp_path / "best.tmp" / "stale").write_text("x")
    save_weights(model, folder, task="classification", config={}, meta={"classes": CLASSES}, epoch=1)
    (folder / "extra.txt").write_text("from the first save")
    (tmp_path / "best.old").mkdir()  # the previous folder of a save killed while swapping: it must go first
    (tmp_path / "best.old" / "manifest.json").write_text("{}")
    with torch.no_grad():
        model.cls_head_finetune[0].weight.mul_(2)
    save_weights(model, folder, task="classification", config={}, meta={"classes": CLASSES}, epoch=2)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("best")) == ["best"]
    assert not (folder / "extra.txt").exists()
    manifest = read_manifest(folder)
    assert manifest["epoch"] == 2 and manifest["metrics"] == {} and manifest["method"] == "linear"
    assert not (folder / "adapter_config.json").exists()  # linear probing writes no adapter files
    assert torch.equal(load_file(str(folder / "weights.safetensors"))["cls_head_finetune.0.weight"],
                       model.cls_head_finetune[0].weight)  # fmt: skip


@pytest.mark.parametrize("method", ["clora", "ppt", "full"])
def test_rebuild_gives_back_every_tensor_in_eval_mode(method, backbone, tmp_path):
    task = _task(tmp_path, method)
    model = _trained(task, backbone)
    save_weights(model, tmp_path / "best", task="classification", config=task.cfg, meta=task.meta, epoch=1)
    logged = []
    rebuilt = rebuild_model(task, tmp_path / "best", read_manifest(tmp_path / "best"), log=logged.append)
    assert not rebuilt.training
    want, got = model.state_dict(), rebuilt.state_dict()
    assert want.keys() == got.keys()
    for k in want:
        assert torch.equal(want[k], got[k]), k
    assert logged and logged[0].startswith(f"loaded {len(model.backbone_info['keys'])} tensors from {backbone}")


def test_rebuild_without_a_backbone_file_and_with_a_moved_one(backbone, tmp_path):
    task = _task(tmp_path, "clora")
    plain = task.build_model(task.meta, None, lambda _m: None)
    save_weights(plain, tmp_path / "plain", task="classification", config=task.cfg, meta=task.meta, epoch=1)
    manifest = read_manifest(tmp_path / "plain")
    assert manifest["backbone"] == {"path": None, "fingerprint": None, "keys": []}
    rebuilt = rebuild_model(task, tmp_path / "plain", manifest)
    assert all(torch.equal(v, rebuilt.state_dict()[k]) for k, v in plain.state_dict().items())
    # a backbone passed to a run that had none is not used: the rebuild is the saved model
    assert all(torch.equal(v, rebuild_model(task, tmp_path / "plain", manifest, backbone=backbone).state_dict()[k])
               for k, v in plain.state_dict().items())  # fmt: skip

    model = _trained(task, backbone)
    save_weights(model, tmp_path / "best", task="classification", config=task.cfg, meta=task.meta, epoch=1)
    manifest = read_manifest(tmp_path / "best")
    moved = tmp_path / "moved.pth"
    moved.write_bytes(Path(backbone).read_bytes())
    manifest["backbone"]["path"] = str(tmp_path / "gone.pth")
    recorded = tmp_path / "best" / "manifest.json"
    with pytest.raises(FileNotFoundError, match=rf"^backbone {tmp_path / 'gone.pth'} \(recorded in {recorded}\) "
                                                r"not found; pass --ckpt PATH$"):  # fmt: skip
        rebuild_model(task, tmp_path / "best", manifest)
    rebuilt = rebuild_model(task, tmp_path / "best", manifest, backbone=moved)  # the override wins
    assert torch.equal(rebuilt.state_dict()["blocks.0.attn.qkv.Q"], model.state_dict()["blocks.0.attn.qkv.Q"])
    manifest["backbone"]["path"] = None
    with pytest.raises(WeightsError, match=rf"^{tmp_path / 'best'} was trained on a backbone file; pass its path "
                                           r"\(--ckpt\)$"):  # fmt: skip
        rebuild_model(task, tmp_path / "best", manifest)


def test_another_backbone_is_refused_naming_both_fingerprints(backbone, tmp_path):
    task = _task(tmp_path, "clora")
    save_weights(_trained(task, backbone), tmp_path / "best", task="classification", config=task.cfg,
                 meta=task.meta, epoch=1)  # fmt: skip
    manifest = read_manifest(tmp_path / "best")
    state = torch.load(backbone, weights_only=True)
    state["model"]["norm.weight"] = state["model"]["norm.weight"] + 1
    other = tmp_path / "other.pth"
    torch.save(state, other)
    got = _task(tmp_path, "clora").build_model(task.meta, other, lambda _m: None).backbone_info["fingerprint"]
    want = manifest["backbone"]["fingerprint"]
    assert got != want
    with pytest.raises(WeightsError, match=rf"^{tmp_path / 'best'} was trained on another backbone than {other}: "
                                           rf"tensor fingerprint {got[:12]} != recorded {want[:12]}; pass the "
                                           "backbone it was trained on$"):  # fmt: skip
        rebuild_model(task, tmp_path / "best", manifest, backbone=other)


def _saved(tmp_path, backbone):
    task = _task(tmp_path, "clora")
    save_weights(_trained(task, backbone), tmp_path / "best", task="classification", config=task.cfg,
                 meta=task.meta, epoch=1)  # fmt: skip
    return task, tmp_path / "best", load_file(str(tmp_path / "best" / "weights.safetensors"))


def test_a_tensor_the_model_lacks_or_one_nobody_provides_is_refused_naming_it(backbone, tmp_path):
    task, folder, tensors = _saved(tmp_path, backbone)
    manifest = read_manifest(folder)
    # seven of each: the message names the first five (sorted), so a long list stays readable
    strays = [f"blocks.9.t{i}" for i in range(7)]
    save_file(dict(tensors, **{k: torch.zeros(1) for k in strays}), str(folder / "weights.safetensors"))
    with pytest.raises(WeightsError) as err:
        rebuild_model(task, folder, manifest)
    assert str(err.value) == (f"{folder}: saved tensors do not fit the rebuilt model; not in the model: "
                              f"{strays[:5]}, in neither the file nor the backbone: []")  # fmt: skip
    dropped = sorted(k for k in tensors if k.endswith(".Q"))[:6] + ["cls_token"]
    save_file({k: v for k, v in tensors.items() if k not in dropped}, str(folder / "weights.safetensors"))
    with pytest.raises(WeightsError) as err:
        rebuild_model(task, folder, manifest)
    assert str(err.value).endswith(f"not in the model: [], in neither the file nor the backbone: {sorted(dropped)[:5]}")
    # a backbone key dropped from the manifest's list must be in the file
    manifest["backbone"]["keys"] = [k for k in manifest["backbone"]["keys"] if k != "norm.weight"]
    save_file(tensors, str(folder / "weights.safetensors"))
    with pytest.raises(WeightsError, match=r"in neither the file nor the backbone: \['norm.weight'\]$"):
        rebuild_model(task, folder, manifest)


def test_a_tensor_of_another_shape_is_refused_naming_both_shapes(backbone, tmp_path):
    task, folder, tensors = _saved(tmp_path, backbone)
    wrong = sorted(k for k in tensors if k.endswith(".Q"))[:6] + ["cls_token"]  # seven: five are named
    bad = {k: (torch.zeros(3, 3) if k in wrong else v) for k, v in tensors.items()}
    save_file(bad, str(folder / "weights.safetensors"))
    with pytest.raises(WeightsError) as err:
        rebuild_model(task, folder, read_manifest(folder))
    order = [k for k in load_file(str(folder / "weights.safetensors")) if k in wrong][:5]  # the file's order
    assert str(err.value) == f"{folder}: shape mismatch: " + "; ".join(
        f"{k}: saved (3, 3) vs model {tuple(tensors[k].shape)}" for k in order)


def test_read_manifest_names_what_is_wrong(tmp_path):
    with pytest.raises(WeightsError, match=rf"^{tmp_path}: no manifest.json; expected a weights folder written by a "
                                           r"training run \(<run>/best or <run>/last\) or a run folder$"):  # fmt: skip
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text("{not json")
    with pytest.raises(WeightsError, match=rf"^{tmp_path / 'manifest.json'}: not valid JSON \(Expecting"):
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format": "other", "format_version": 1}))
    with pytest.raises(WeightsError, match=rf"^{tmp_path / 'manifest.json'}: format 'other' is not "
                                           r"'pointclora-weights'$"):  # fmt: skip
        read_manifest(tmp_path)
    (tmp_path / "manifest.json").write_text(json.dumps({"format_version": 1}))
    with pytest.raises(WeightsError, match=r"format None is not 'pointclora-weights'$"):
        read_manifest(tmp_path)


def test_resolve_weights_folder(tmp_path):
    for name in ("best", "last"):
        (tmp_path / "run" / name).mkdir(parents=True)
        (tmp_path / "run" / name / "manifest.json").write_text("{}")
    assert resolve_weights_folder(tmp_path / "run") == tmp_path / "run" / "best"
    assert resolve_weights_folder(str(tmp_path / "run"), "last") == tmp_path / "run" / "last"
    assert resolve_weights_folder(tmp_path / "run" / "last", "best") == tmp_path / "run" / "last"
    with pytest.raises(FileNotFoundError, match=rf"^{tmp_path / 'nope'} does not exist$"):
        resolve_weights_folder(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(WeightsError, match=rf"^{tmp_path / 'empty'}: neither a weights folder \(manifest.json\) nor a "
                                           r"run folder with last/manifest.json$"):  # fmt: skip
        resolve_weights_folder(tmp_path / "empty", "last")


def test_a_plain_model_of_a_task_without_backbone_info_round_trips(tmp_path):
    """A task's builder need not record ``backbone_info`` (a plugin's plain model): everything is saved, and a
    manifest whose backbone entry is empty (no keys, no fingerprint) rebuilds it."""

    class PlainTask:
        meta = {"classes": CLASSES}

        def build_model(self, meta, backbone, log):
            torch.manual_seed(len(meta["classes"]))
            return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.BatchNorm1d(4))

    model = PlainTask().build_model(PlainTask.meta, None, None)
    with torch.no_grad():
        model[0].weight.add_(1.0)
        model[1].running_mean.add_(2.0)
    assert not hasattr(model, "backbone_info")
    # a model without a PEFT method counts as fully trained: every tensor, even those a backbone file gave
    model.backbone_info = {"path": "bb.pth", "fingerprint": "f", "keys": ["0.weight", "1.running_mean"]}
    assert set(saved_state(model)) == set(model.state_dict())
    del model.backbone_info
    save_weights(model, tmp_path / "best", task="plain", config={}, meta=PlainTask.meta, epoch=4)
    manifest = read_manifest(tmp_path / "best")
    assert manifest["method"] == "full" and manifest["tensors"] == sorted(model.state_dict())
    assert manifest["backbone"] == {"path": None, "fingerprint": None, "keys": []}
    manifest["backbone"] = {}
    rebuilt = rebuild_model(PlainTask(), tmp_path / "best", manifest)
    assert all(torch.equal(v, rebuilt.state_dict()[k]) for k, v in model.state_dict().items())
