"""bench/frontier.py: rows, resumable records (a killed run leaves none), lr choice, Pareto frontier, episodes."""

import dataclasses
import importlib.util
import itertools
import json
import sys
from pathlib import Path

import numpy as np
import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def fr():
    sys.path.insert(0, str(REPO_ROOT / "bench"))
    spec = importlib.util.spec_from_file_location("frontier", REPO_ROOT / "bench" / "frontier.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["frontier"] = module  # dataclasses resolve annotations through the module's entry
    spec.loader.exec_module(module)
    return module


def _spec(fr, name="clora_p4r8"):
    return next(s for s in fr.variant_specs(fr.VARIANT) if s.name == name)


def _cfg(lr, seed):
    return {"optim": {"lr": lr}, "train": {"seed": seed}, "data": {"batch_size": 16}, "peft": {"method": "clora"},
            "model": {"name": "point_mae_mn10"}}  # fmt: skip


def test_rows_are_unique_and_cover_the_issue(fr):
    rows = fr.variant_specs(fr.VARIANT)
    names = [s.name for s in rows]
    assert len(names) == len(set(names))
    assert {f"clora_p{p}r{r}" for p, r in [(2, 4), (4, 4), (4, 8), (8, 8), (4, 16)]} <= set(names)
    assert {f"lora_r{r}" for r in (1, 2, 4, 8, 16)} | {"full", "linear", "scratch"} | set(fr.PEERS) <= set(names)
    assert [s.name for s in rows if s.default and s.family in ("clora", "lora")] == ["clora_p4r8", "lora_r8"]
    assert _spec(fr, "clora_p4r8_qid").peft["q_fixed"] is True and not _spec(fr, "scratch").pretrained
    # the peers' width-tied settings scale with the backbone: DAPT's 64 and PointGST's 36 on the 384-wide ViT-S
    assert _spec(fr, "dapt").peft["rank"] == 21 and _spec(fr, "pointgst").peft["rank"] == 12
    s = next(s for s in fr.specs(width=384, depth=12, groups=128) if s.name == "dapt")
    assert s.peft["rank"] == 64


@pytest.mark.parametrize("variant, rank", [("point_mae_mn10", 6), ("point_mae_mn10_8x256", 3)])
def test_the_no_sharing_ablation_matches_clora_p4r8_adapter_count(fr, variant, rank):
    from pointclora.models import create_model
    from pointclora.peft import inject_adapters, make_peft_config, trainable_parameter_summary

    rows = fr.variant_specs(variant)
    matched = [s for s in rows if s.group == "ablation" and s.family == "lora" and s.name != "lora_r32"]
    assert [s.name for s in matched] == [f"lora_r{rank}"]
    counts = {}
    for spec in (next(s for s in rows if s.name == "clora_p4r8"), matched[0]):
        model = create_model(variant, num_classes=10)
        inject_adapters(model, make_peft_config(spec.method, **spec.peft))
        counts[spec.method] = trainable_parameter_summary(model)["adapter_params"]
    # the closed forms the row's rank comes from are the built models' counts
    dims = fr.backbone_dims(variant)
    assert counts["clora"] == fr.clora_adapter_count(dims["width"], dims["depth"], 4, 8)
    assert counts["lora"] == fr.lora_adapter_count(dims["width"], dims["depth"], rank)
    assert counts["clora"] == counts["lora"]  # exact on both backbones


def test_a_killed_run_leaves_no_record_and_a_recorded_run_is_never_rerun(fr, tmp_path, monkeypatch):
    import pointclora.api as api

    calls = []

    def crash(cfg, output, resume, quiet, datasets):
        calls.append(resume)
        raise KeyboardInterrupt  # killed mid-run

    def finish(cfg, output, resume, quiet, datasets):
        calls.append(resume)
        return {"acc": 90.0, "best_val_acc": 88.0, "mean_class_acc": 89.0, "trainable_params": 5, "gflops": 0.06}

    spec = _spec(fr)
    runner = fr.recording_runner(spec, "10pc", {}, tmp_path)
    monkeypatch.setattr(api, "run_finetune", crash)
    with pytest.raises(KeyboardInterrupt):
        runner(_cfg(2e-3, 0), tmp_path / "work", False, True)
    assert not list(tmp_path.rglob("*.json"))
    monkeypatch.setattr(api, "run_finetune", finish)
    rec = runner(_cfg(2e-3, 0), tmp_path / "work", True, True)
    path = tmp_path / "10pc" / "clora_p4r8" / "lr0.002_seed0.json"
    assert json.loads(path.read_text()) == rec and rec["acc"] == 90.0 and rec["lr"] == 2e-3 and rec["gflops"] == 0.06
    assert rec["variant"] == "point_mae_mn10"  # records of another backbone say so
    monkeypatch.setattr(api, "run_finetune", crash)  # would raise if it ran again
    assert runner(_cfg(2e-3, 0), tmp_path / "work", False, True) == rec
    assert calls == [False, True]


def _write(fr, root, regime, row, lr, seed, val, acc):
    d = fr.record_dir(root, regime, row)
    d.mkdir(parents=True, exist_ok=True)
    rec = {"row": row, "lr": lr, "seed": seed, "best_val_acc": val, "acc": acc, "mean_class_acc": acc - 1, "cpu_s": 10}
    (d / fr.record_name(lr, seed)).write_text(json.dumps(rec))


def test_lr_chosen_on_validation_then_seeds_summarised(fr, tmp_path):
    spec = dataclasses.replace(_spec(fr), lrs=(2e-3, 4e-3))
    _write(fr, tmp_path, "all", spec.name, 2e-3, 0, val=80.0, acc=99.0)  # the best test, not the best val
    assert fr.chosen_lr(tmp_path, "all", spec) is None  # the sweep has not finished
    _write(fr, tmp_path, "all", spec.name, 4e-3, 0, val=85.0, acc=90.0)
    assert fr.chosen_lr(tmp_path, "all", spec) == 4e-3
    _write(fr, tmp_path, "all", spec.name, 4e-3, 1, val=84.0, acc=92.0)
    s = fr.summarize(tmp_path, "all", spec, [0, 1, 2])
    assert s["lr"] == 4e-3 and s["runs"] == 2 and s["expected"] == 3
    assert s["mean"] == pytest.approx(91.0) and s["std"] == pytest.approx(1.0) and s["mca"] == pytest.approx(90.0)
    assert s["cpu_s"] == 30  # every recorded run counts toward the CPU time, the unchosen lr's too
    _write(fr, tmp_path, "all", spec.name, 2e-3, 0, val=85.0, acc=99.0)  # a tie: the first lr of the grid wins
    assert fr.chosen_lr(tmp_path, "all", spec) == 2e-3


def test_a_widened_grid_appends_its_point_so_earlier_choices_stand_on_ties(fr, tmp_path):
    small = {s.name: s for s in fr.variant_specs("point_mae_mn10")}
    large = {s.name: s for s in fr.variant_specs("point_mae_mn10_8x256")}
    for name, s in small.items():
        if name not in large:  # the matched-rank ablation is lora_r6 there, lora_r3 here
            continue
        assert s.lrs == tuple(fr.LRS[s.family])
        extra = fr.WIDER_LRS["point_mae_mn10_8x256"][s.family]
        assert large[name].lrs == s.lrs + tuple(extra) and min(extra) < min(s.lrs)  # one step below the old edge
    spec = large["clora_p4r8"]
    for lr, val in zip(spec.lrs, (85.0, 84.0, 83.0)):
        _write(fr, tmp_path, "10pc", spec.name, lr, 0, val=val, acc=90.0)
    assert fr.chosen_lr(tmp_path, "10pc", spec) is None  # the new point has not run: no choice yet
    _write(fr, tmp_path, "10pc", spec.name, spec.lrs[-1], 0, val=85.0, acc=90.0)
    assert fr.chosen_lr(tmp_path, "10pc", spec) == spec.lrs[0]  # level with the old choice: it stands
    _write(fr, tmp_path, "10pc", spec.name, spec.lrs[-1], 0, val=86.0, acc=90.0)
    assert fr.chosen_lr(tmp_path, "10pc", spec) == spec.lrs[-1]


def test_pareto_matches_the_naive_definition(fr):
    rng = np.random.default_rng(0)
    pts = [{"row": f"r{i}", "trainable_params": int(rng.integers(1, 6)), "mean": float(rng.integers(80, 90))}
           for i in range(12)]  # fmt: skip
    naive = []
    for p in pts:
        dominated = False
        for q in pts:
            if q is not p and q["trainable_params"] <= p["trainable_params"] and q["mean"] > p["mean"]:
                dominated = True
        if not dominated:
            naive.append(p["row"])
    assert fr.pareto(pts) == naive
    small = [{"row": "a", "trainable_params": 10, "mean": 90.0}, {"row": "b", "trainable_params": 20, "mean": 89.0},
             {"row": "c", "trainable_params": 30, "mean": 91.0}]  # fmt: skip
    assert fr.pareto(small) == ["a", "c"]


def test_fewshot_episodes_are_seeded_disjoint_and_relabelled(fr):
    y = np.repeat(np.arange(10), 35)
    x = np.arange(len(y), dtype=np.float32)[:, None, None] * np.ones((1, 8, 3), np.float32)  # the index in every point
    classes = [f"c{i}" for i in range(10)]
    a = fr.fewshot_episode(x, y, classes, way=5, shot=10, episode=3)
    b = fr.fewshot_episode(x, y, classes, way=5, shot=10, episode=3)
    c = fr.fewshot_episode(x, y, classes, way=5, shot=10, episode=4)
    sup = a["train"].x[:, 0, 0].numpy().astype(int)
    qry = a["test"].x[:, 0, 0].numpy().astype(int)
    assert len(sup) == 50 and len(qry) == 100 and not set(sup) & set(qry)
    assert np.array_equal(sup, b["train"].x[:, 0, 0].numpy().astype(int))
    assert not np.array_equal(sup, c["train"].x[:, 0, 0].numpy().astype(int))
    for ds in (a["train"], a["test"]):  # labels 0..way-1 follow the original class of each shape
        original = y[ds.x[:, 0, 0].numpy().astype(int)]
        assert sorted(set(ds.y.tolist())) == list(range(5))
        for new, orig in itertools.product(range(5), range(10)):
            assert ((ds.y == new) & (original == orig)).any() == (a["classes"][new] == f"c{orig}")
    with pytest.raises(ValueError, match="fewer than shot \\+ query 40"):
        fr.fewshot_episode(x, y, classes, way=10, shot=20, episode=0)


def test_static_costs_merged_gflops_equal_the_frozen_backbone(fr):
    frozen = fr.static_costs(fr.Spec("frozen", "none", "none", "reference"), "point_mae_tiny", 5, 256, None)
    for name in ("clora_p4r8", "lora_r8", "clora_p4r8_qid"):
        cost = fr.static_costs(_spec(fr, name), "point_mae_tiny", 5, 256, None)
        assert cost["mergeable"] and cost["gflops"] == frozen["gflops"] < cost["gflops_unmerged"]
        assert cost["trainable_params"] > cost["trainable_params_without_head"] > 0
    full = fr.static_costs(_spec(fr, "full"), "point_mae_tiny", 5, 256, None)
    assert full["trainable_params"] == full["total_params"] and full["gflops"] == frozen["gflops"]


def test_point_mae_s_settings_are_the_rows_own_except_the_scaled_peers(fr):
    for s in fr.variant_specs(fr.VARIANT):
        if s.group == "peer":
            assert s.peft_s == {}  # official defaults on the ViT-S they were published for
        else:
            assert s.peft_s == s.peft, s.name


def test_target_check_names_other_methods_that_beat_clora_by_more_than_its_std(fr):
    pts = [
        {"row": "clora_p2r4", "trainable_params": 10, "mean": 90.0, "std": 0.5},
        {"row": "clora_p4r8", "trainable_params": 20, "mean": 89.0, "std": 0.5},
        {"row": "lora_r4", "trainable_params": 15, "mean": 89.4, "std": 0.1},  # inside clora_p4r8's std
        {"row": "linear", "trainable_params": 5, "mean": 90.2, "std": 0.1},  # beats clora_p2r4 by less than 0.5
        {"row": "clora_p4r8_sade0", "trainable_params": 20, "mean": 99.0, "std": 0.0},  # an ablation: not checked
    ]
    out = fr.target_check(pts)
    assert out.startswith("clora_p2r4: on the frontier (within 1 std); clora_p4r8: beaten by linear")
    assert "smaller CLoRA budgets do better: clora_p2r4" in out and "sade0:" not in out


def test_combine_writes_its_tables_between_the_documents_markers_only(fr, tmp_path):
    doc = tmp_path / "RESULTS.md"
    begin, end = fr.MARKERS
    doc.write_text(f"# Results\n\nprose before\n\n{begin}\n\nold table\n\n{end}\n\nprose after\n")
    fr.write_between_markers(doc, "## 10pc\n\n| a |\n|---|\n### 10pc: ablations\n")
    assert doc.read_text() == (f"# Results\n\nprose before\n\n{begin}\n\n### 10pc\n\n| a |\n|---|\n#### 10pc: ablations"
                               f"\n\n{end}\n\nprose after\n")  # fmt: skip
    fr.write_between_markers(doc, "## all\n")  # again: the block is replaced, not appended to
    assert doc.read_text().count(begin) == 1 and "### all" in doc.read_text() and "10pc" not in doc.read_text()
    bare = tmp_path / "bare.md"
    bare.write_text("no markers\n")
    with pytest.raises(SystemExit, match="bare.md has no"):
        fr.write_between_markers(bare, "## all\n")
    assert bare.read_text() == "no markers\n"


def test_a_larger_variant_scales_the_peers_and_keeps_its_records_apart(fr):
    assert fr.backbone_dims("point_mae_mn10_8x256") == {"width": 256, "depth": 8, "groups": 32}
    rows = {s.name: s for s in fr.variant_specs("point_mae_mn10_8x256")}
    assert rows["dapt"].peft["rank"] == 43 and rows["pointgst"].peft["rank"] == 24  # 64 and 36 x 256 / 384
    assert rows["idpt"].peft["prompt_layer"] == 7 and rows["gaprompt"].peft["prompt_depth"] == 4
    assert rows["clora_p4r8"].peft == _spec(fr, "clora_p4r8").peft  # CLoRA / LoRA budgets do not scale

    a = fr.argparse.Namespace(
        command="run", variant="point_mae_mn10_8x256", backbone="enc.pth", results=None, work=None
    )
    fr.settle_backbone(a, error=pytest.fail)
    assert a.results == fr.RESULTS.with_name("frontier_point_mae_mn10_8x256") and a.backbone == "enc.pth"
    assert str(a.work).endswith("runs_point_mae_mn10_8x256")
    default = fr.argparse.Namespace(command="run", variant=fr.VARIANT, backbone=None, results=None, work=None)
    fr.settle_backbone(default, error=pytest.fail)
    assert (default.results, default.backbone) == (fr.RESULTS, fr.BACKBONE)  # the recorded runs' own settings


def _exit(message):  # argparse's error: one line, then exit
    raise SystemExit(message)


@pytest.mark.parametrize(
    "variant, backbone, command, message",
    [
        ("point_mae_mn10_8x256", None, "run", "--cfg pretrain_mn10_8x256.yaml"),  # not made yet (an empty cache)
        ("point_mae_tiny", None, "run", "no pre-trained weights named .point_mae_tiny."),
        ("point_mae_mn10_9x9", "enc.pth", "combine", "'point_mae_mn10_9x9' is not a registered model"),
    ],
)
def test_settle_backbone_names_what_is_missing(fr, variant, backbone, command, message, tmp_path, monkeypatch):
    monkeypatch.setenv("POINTCLORA_CACHE", str(tmp_path))
    a = fr.argparse.Namespace(command=command, variant=variant, backbone=backbone, results=None, work=None)
    with pytest.raises(SystemExit, match=message):
        fr.settle_backbone(a, error=_exit)


def test_another_variants_tables_have_their_own_block_a_level_deeper(fr, tmp_path):
    doc = tmp_path / "RESULTS.md"
    big = "point_mae_mn10_8x256"
    (b0, e0), (b1, e1) = fr.markers(), fr.markers(big)
    assert (b0, e0) == fr.MARKERS and big in b1 and big in e1
    doc.write_text(f"## 5\n\n{b0}\n\nsmall\n\n{e0}\n\n### 5.1\n\n{b1}\n\n{e1}\n")
    fr.write_between_markers(doc, "## 10pc\n\n| a |\n", big)
    assert doc.read_text() == f"## 5\n\n{b0}\n\nsmall\n\n{e0}\n\n### 5.1\n\n{b1}\n\n#### 10pc\n\n| a |\n\n{e1}\n"
