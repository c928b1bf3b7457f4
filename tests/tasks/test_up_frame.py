"""The run's frame (issue 19 item 7): every backbone records its up axis, data are turned into it in training,
evaluation, pre-training exports and predict --up."""

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "engine"))
from test_own_data import cfg_for, train_only_folder  # noqa: E402

from pointclora.datasets.up_axis import ToUpAxis  # noqa: E402
from pointclora.models import create_model  # noqa: E402
from pointclora.tasks.classification import build_classification_data  # noqa: E402
from pointclora.tasks.up_frame import axis_recorded_in, backbone_up_axis  # noqa: E402


def test_every_backbone_records_its_up_axis(tmp_path):
    from pointclora.models.mae import export_encoder_state

    assert backbone_up_axis({"model": {"checkpoint": "point_mae_mn10"}}) == "z"  # the shipped one: ModelNet10 PCDs
    state = {f"MAE_encoder.{k}": v for k, v in create_model("point_mae_tiny").state_dict().items()}
    assert axis_recorded_in({"base_model": state}) == "y"  # official Point-MAE / Point-BERT: ShapeNet, y-up
    ours = tmp_path / "enc.pth"
    export_encoder_state(state, str(ours), variant="point_mae_tiny", config={"data": {"up_axis": "x"}})
    assert backbone_up_axis({"model": {"checkpoint": str(ours)}}) == "x"
    torch.save({"model": {}, "version": "0"}, tmp_path / "bare.pth")
    assert backbone_up_axis({"model": {"checkpoint": str(tmp_path / "bare.pth")}}) is None
    assert backbone_up_axis({"model": {"checkpoint": None}}) is None


def test_y_up_files_are_turned_into_the_z_up_backbone(tmp_path):
    root = train_only_folder(tmp_path / "mine")
    plain = cfg_for(root, test_split="carve")
    plain["dataset"]["up_axis"] = "z"
    turned = cfg_for(root, test_split="carve")
    turned["dataset"]["up_axis"] = "y"
    for cfg in (plain, turned):
        cfg["model"] = {"name": "point_mae_mn10", "checkpoint": "point_mae_mn10"}
    a, b = build_classification_data(plain), build_classification_data(turned)
    assert plain["data"]["up_axis"] == turned["data"]["up_axis"] == "z"  # recorded: evaluate / predict follow it
    assert a.meta["up_axis_note"] is None
    assert "are y-up, the model works z-up: every cloud is rotated y -> z" in b.meta["up_axis_note"]
    for i in range(len(a.test)):
        expect = ToUpAxis("y", "z")({"points": a.test[i]["points"]})["points"]
        assert torch.allclose(b.test[i]["points"], expect, atol=1e-6)


def test_pretraining_exports_the_axis_it_trained_in_and_runs_evaluate_in_their_frame(tmp_path):
    from pointclora.cli.evaluate import evaluate_run
    from pointclora.engine.trainer import Trainer

    root = train_only_folder(tmp_path / "mine", per_class=(8, 8, 8))
    pre = cfg_for(root)
    pre.update(task="mae_pretraining", pretrain={"mask_ratio": 0.6, "decoder_depth": 1})
    pre["dataset"]["up_axis"] = "y"
    pre["data"]["val_fraction"] = 0.25
    Trainer(pre, output=tmp_path / "pre", quiet=True).fit()
    enc = torch.load(tmp_path / "pre" / "encoder-best.pth", weights_only=True)
    assert axis_recorded_in(enc) == "y"

    # fine-tune that encoder on the same files declared z-up: they are turned z -> y, and evaluate does the same
    cfg = cfg_for(root, test_split="carve")
    cfg["dataset"]["up_axis"] = "z"
    cfg["model"]["checkpoint"] = str(tmp_path / "pre" / "encoder-best.pth")
    metrics = Trainer(cfg, output=tmp_path / "ft", quiet=True).fit()
    log = (tmp_path / "ft" / "log.txt").read_text()
    assert "every cloud is rotated z -> y" in log and log.count("every cloud is rotated") == 1
    assert "up_axis: y" in (tmp_path / "ft" / "config.yaml").read_text()
    assert evaluate_run(str(tmp_path / "ft"), device="cpu")["acc"] == metrics["acc"]


def test_predict_up_turns_user_files_into_the_model_frame(tmp_path):
    from pointclora.cli.predict import predict_files
    from pointclora.engine.trainer import Trainer

    root = train_only_folder(tmp_path / "mine")
    cfg = cfg_for(root, test_split="carve", up_axis="z")
    Trainer(cfg, output=tmp_path / "run", quiet=True).fit()
    rng = np.random.default_rng(1)
    xyz = rng.normal(size=(200, 3)).astype(np.float32) * np.array([1.0, 3.0, 0.5], dtype=np.float32)
    np.save(tmp_path / "y_up.npy", xyz)
    np.save(tmp_path / "z_up.npy", xyz @ ToUpAxis("y", "z").R.numpy().T)  # the same shape, turned by hand
    (a,) = predict_files([str(tmp_path / "y_up.npy")], str(tmp_path / "run"), device="cpu", up="y", topk=3)
    (b,) = predict_files([str(tmp_path / "z_up.npy")], str(tmp_path / "run"), device="cpu", topk=3)
    assert [p["label"] for p in a["predictions"]] == [p["label"] for p in b["predictions"]]
    assert np.allclose([p["prob"] for p in a["predictions"]], [p["prob"] for p in b["predictions"]], atol=1e-5)


def test_fewshot_episodes_are_turned_into_the_backbone_frame_and_said_once(tmp_path):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "datasets"))
    from dataset_files import write_fewshot

    from pointclora.config import DEFAULTS, merge
    from pointclora.datasets.fewshot import ModelNetFewShot
    from pointclora.tasks.fewshot import run_fewshot

    for fold in (0, 1):
        write_fewshot(tmp_path / "eps", way=5, shot=2, fold=fold, points=64)  # official layout: ModelNet40, y-up
    seen, lines = [], []

    def runner(cfg, datasets, run_dir, resume):
        seen.append((cfg["data"]["up_axis"], datasets["train"][0]["points"]))
        return {"acc": 50.0, "best_test_acc": 50.0}

    cfg = merge(DEFAULTS, {"dataset": {"name": "modelnet_fewshot", "root": str(tmp_path / "eps")},
                           "model": {"name": "point_mae_mn10", "checkpoint": "point_mae_mn10"},
                           "data": {"num_points": 64, "augmentation": "none"}})  # fmt: skip
    run_fewshot(cfg, ways=[5], shots=[2], folds=[0, 1], output=str(tmp_path / "out"),
                episodes_root=str(tmp_path / "eps"), runner=runner, log=lines.append)  # fmt: skip
    notes = [x for x in lines if "rotated y -> z" in x]
    assert len(notes) == 1 and "the episodes' shapes are y-up" in notes[0]
    raw = ModelNetFewShot(tmp_path / "eps", 5, 2, 0, "train")[0]["points"][:, :3]
    frame, points = seen[0]
    assert frame == "z" and len(seen) == 2
    # augmentation none + FPS of all 64 points: the same points, each turned y -> z
    expect = ToUpAxis("y", "z")({"points": torch.as_tensor(raw)})["points"]
    assert torch.allclose(torch.sort(points[:, 2]).values, torch.sort(expect[:, 2]).values, atol=1e-6)
