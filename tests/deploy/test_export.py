"""Export end to end from raw points: ONNX Runtime and TorchScript give the eager model's predictions on real clouds."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from pointclora.datasets.base import pc_normalize
from pointclora.datasets.io import read_point_cloud
from pointclora.deploy import export_model, prepare_for_export
from pointclora.deploy.export import fps_fixed
from pointclora.models import create_model
from pointclora.ops import farthest_point_sample, group_points
from pointclora.peft import LoRAConfig, inject_adapters, make_peft_config
from pointclora.peft.lora import LoRAMethod
from pointclora.peft.registry import register_peft_method, unregister_peft_method

CLASSES = ["bathtub", "bed", "chair", "desk", "dresser", "monitor", "night_stand", "sofa", "table", "toilet"]


def _randomize(model, seed=1, scale=0.05):
    """Move adapters and head away from their init so merging and the head matter."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if p.requires_grad:
                p.add_(torch.randn(p.shape, generator=gen) * scale)
    return model


def _modelnet10(real_data, per_class=1):
    clouds = []
    for name in CLASSES:
        for path in sorted((real_data / "modelnet10_pcd" / name / "train").glob("*.pcd"))[:per_class]:
            clouds.append(pc_normalize(read_point_cloud(path)[:, :3]).astype(np.float32))
    return torch.from_numpy(np.stack(clouds))  # (10, 1024, 3)


@pytest.fixture(scope="module")
def classifier():
    """The shipped pre-trained backbone with a trained-looking CLoRA adapter and head (10 ModelNet10 classes)."""
    torch.manual_seed(0)
    model = create_model("point_mae_mn10", num_classes=10, pretrained=True)
    inject_adapters(model, make_peft_config("clora", r=4, num_bases=2))
    return _randomize(model).eval()


def _session(path):
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.realdata
def test_onnx_and_torchscript_match_eager_on_real_clouds(classifier, real_data, tmp_path):
    clouds = _modelnet10(real_data)
    before = {k: v.clone() for k, v in classifier.state_dict().items()}
    with torch.no_grad():
        eager = classifier(clouds)
    onnx_file = export_model(classifier, tmp_path / "m.onnx", "onnx", num_points=1024)
    ts_file = export_model(classifier, tmp_path / "m.pt", "torchscript", num_points=1024)
    # the eager model is untouched (adapters still there, not merged)
    assert all(torch.equal(before[k], v) for k, v in classifier.state_dict().items())
    sess, ts = _session(onnx_file), torch.jit.load(str(ts_file))
    for batch in (clouds, clouds[:1], clouds[3:5]):  # dynamic batch size
        ref = eager[: len(batch)] if batch is clouds else classifier(batch).detach()
        got = sess.run(None, {"points": batch.numpy()})[0]
        assert np.abs(got - ref.numpy()).max() < 1e-4
        assert (got.argmax(1) == ref.numpy().argmax(1)).all()
        with torch.no_grad():
            scripted = ts(batch)
        assert (scripted - ref).abs().max() < 1e-4 and torch.equal(scripted.argmax(1), ref.argmax(1))


@pytest.mark.realdata
def test_part_segmentation_exports_with_its_category_input(real_data, tmp_path):
    torch.manual_seed(0)
    model = create_model("point_mae_tiny_seg", num_classes=54, num_categories=2)
    inject_adapters(model, LoRAConfig(r=2))
    model = _randomize(model, scale=0.1).eval()
    folder = real_data / "cattle_parts" / "shapenetcore_partanno_segmentation_benchmark_v0_normal" / "05896765"
    rows = [np.loadtxt(p)[:, :3] for p in sorted(folder.glob("*.txt"))[:3]]
    pts = torch.from_numpy(np.stack([pc_normalize(r[:512]).astype(np.float32) for r in rows]))
    category = torch.tensor([0, 1, 0])
    with torch.no_grad():
        eager = model(pts, category)
    sess = _session(export_model(model, tmp_path / "seg.onnx", "onnx", num_points=512))
    got = sess.run(None, {"points": pts.numpy(), "category": category.numpy()})[0]
    assert got.shape == (3, 512, 54)
    assert np.abs(got - eager.numpy()).max() < 1e-4 and (got.argmax(-1) == eager.numpy().argmax(-1)).all()
    ts = torch.jit.load(str(export_model(model, tmp_path / "seg.pt", "torchscript", num_points=512)))
    with torch.no_grad():
        assert (ts(pts[:1], category[:1]) - eager[:1]).abs().max() < 1e-4


@pytest.mark.realdata
@pytest.mark.parametrize("skip", [False, True])
def test_traceable_fps_picks_the_eager_points(real_data, skip):
    clouds = _modelnet10(real_data)
    for batch in (clouds, clouds[:1]):  # the batched torch loop and the one-cloud numpy/numba path
        eager = farthest_point_sample(batch, 64, skip_near_origin=skip).idx
        assert torch.equal(fps_fixed(batch, 64, skip_near_origin=skip), eager)
    grouper = prepare_for_export(create_model("point_mae_tiny", skip_near_origin=skip)).model.group_divider
    ref, got = group_points(clouds, 16, 8, skip_near_origin=skip), grouper(clouds)
    assert torch.equal(got.center_idx, ref.center_idx) and torch.equal(got.neighborhood, ref.neighborhood)


def test_a_method_that_cannot_merge_exports_unmerged(tmp_path):
    @register_peft_method
    class NoMerge(LoRAMethod):
        name = "lora_nomerge_test"
        config_base = LoRAConfig
        mergeable = False

    try:
        torch.manual_seed(0)
        model = create_model("point_mae_tiny", num_classes=3)
        inject_adapters(model, make_peft_config("lora_nomerge_test", r=2))
        model = _randomize(model).eval()
        assert prepare_for_export(model).unmerged_adapters
        pts = torch.rand(2, 128, 3) * 2 - 1
        with torch.no_grad():
            eager = model(pts)
        got = _session(export_model(model, tmp_path / "u.onnx", "onnx", num_points=128)).run(
            None, {"points": pts.numpy()})[0]  # fmt: skip
        assert np.abs(got - eager.numpy()).max() < 1e-4
    finally:
        unregister_peft_method("lora_nomerge_test")


def test_bad_arguments_are_clear(classifier, tmp_path):
    with pytest.raises(ValueError, match="format must be one of"):
        export_model(classifier, tmp_path / "x", "tflite")
    with pytest.raises(ValueError, match="num_points=16 is below"):
        export_model(classifier, tmp_path / "x.onnx", "onnx", num_points=16)
    assert list(tmp_path.iterdir()) == []  # nothing half-written


TINY = """\
_base_: [adapters/lora.yaml]
dataset: {name: synthetic, num_samples: 16, num_points: 96, num_classes: 4}
model: {name: point_mae_tiny}
data: {num_points: 64, batch_size: 8, eval_batch_size: 16}
schedule: {epochs: 1, warmup_epochs: 0}
"""


def test_export_tool_on_a_run_folder(tmp_path, capsys):
    from pointclora.api import load_weights
    from pointclora.cli.export import main
    from pointclora.cli.finetune import main as finetune

    (tmp_path / "tiny.yaml").write_text(TINY)
    run = tmp_path / "run"
    assert finetune(["--cfg", str(tmp_path / "tiny.yaml"), "--output", str(run), "--device", "cpu", "--quiet"]) == 0
    out = tmp_path / "model.onnx"
    assert main([str(run), "--format", "onnx", "--out", str(out)]) == 0
    info = json.loads((tmp_path / "model.onnx.json").read_text())
    assert info["task"] == "classification" and info["inputs"] == {"points": ["batch", 64, 3]}
    assert info["meta"]["classes"] == json.loads((run / "metrics.json").read_text())["classes"]
    model = load_weights(run).model
    pts = torch.rand(5, 64, 3) * 2 - 1
    with torch.no_grad():
        eager = model(pts).numpy()
    assert np.abs(_session(out).run(None, {"points": pts.numpy()})[0] - eager).max() < 1e-4
    capsys.readouterr()
    assert main([str(tmp_path / "nowhere"), "--format", "onnx", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "nowhere" in err[0]
