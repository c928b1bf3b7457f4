"""Few-shot benchmark: episode generation, per-episode results, resume after an interruption, aggregation."""

import json
import math

import pytest

from pointclora.cli.fewshot import main
from pointclora.config import DEFAULTS, merge
from pointclora.tasks.fewshot import aggregate_results, format_fewshot_table, run_fewshot

WAYS, SHOTS, FOLDS = [2, 3], [2], [0, 1, 2]


def _cfg(**extra):
    cfg = merge(DEFAULTS, {
        "name": "fs_tiny",
        "dataset": {"name": "synthetic", "num_samples": 40, "num_points": 64},
        "model": {"name": "point_mae_tiny", "checkpoint": None},
        "peft": {"method": "clora", "r": 2, "num_bases": 2},
        "data": {"num_points": 64, "batch_size": 4, "eval_batch_size": 16},
        "schedule": {"epochs": 1, "warmup_epochs": 0},
        "train": {"device": "cpu"},
    })  # fmt: skip
    return merge(cfg, extra)


class StubRunner:
    """Pretends to fine-tune: accuracy = 50 + 10·way + fold; can 'crash' on the n-th call."""

    def __init__(self, crash_on=None):
        self.calls, self.crash_on = [], crash_on

    def __call__(self, cfg, datasets, run_dir, resume):
        way = len(datasets["classes"])
        fold = int(cfg["name"].rsplit("fold", 1)[1])
        if self.crash_on is not None and len(self.calls) == self.crash_on:
            raise KeyboardInterrupt("simulated kill")
        self.calls.append((way, fold))
        assert cfg["data"]["val_split"] == "test" and datasets["val"] is datasets["test"]
        assert len(datasets["train"]) == way * 2 and len(datasets["test"]) == way * 3  # shot 2, 3 queries per class
        return {"best_test_acc": 50.0 + 10 * way + fold, "acc": 1.0, "trainable_params": 123}


def test_resume_skips_finished_episodes_and_aggregates(tmp_path):
    out = tmp_path / "fs"
    crashing = StubRunner(crash_on=4)
    with pytest.raises(KeyboardInterrupt):
        run_fewshot(_cfg(), WAYS, SHOTS, FOLDS, output=str(out), seed=0, runner=crashing, log=lambda m: None,
                    num_query=3)  # fmt: skip
    assert len(crashing.calls) == 4
    finished = sorted(p.parent.name + "/" + p.parent.parent.name for p in out.rglob("result.json"))
    assert len(finished) == 4

    resumed = StubRunner()
    summary = run_fewshot(_cfg(), WAYS, SHOTS, FOLDS, output=str(out), seed=0, runner=resumed, log=lambda m: None,
                          num_query=3)  # fmt: skip
    assert resumed.calls == [(3, 1), (3, 2)]  # only the two episodes that never finished
    s2, s3 = summary["settings"]["2way2shot"], summary["settings"]["3way2shot"]
    assert s2["accs"] == [70.0, 71.0, 72.0] and s3["accs"] == [80.0, 81.0, 82.0]
    assert s2["mean"] == pytest.approx(71.0)
    assert s2["std"] == pytest.approx(math.sqrt(2 / 3))  # population std of 70, 71, 72
    assert s2["std_sample"] == pytest.approx(1.0)
    assert s3["complete"] and summary["trainable_params"] == 123
    on_disk = json.loads((out / "summary.json").read_text())
    assert on_disk["settings"]["3way2shot"]["mean"] == pytest.approx(81.0)
    table = (out / "results.md").read_text()
    assert "| 2-way 2-shot | 3-way 2-shot |" in table and "71.0 ± 0.8" in table and "81.0 ± 0.8" in table

    # A third run does no work at all, and episode files were generated once, deterministically.
    idle = StubRunner()
    again = run_fewshot(
        _cfg(), WAYS, SHOTS, FOLDS, output=str(out), seed=0, runner=idle, log=lambda m: None, num_query=3
    )
    assert idle.calls == [] and again["settings"] == summary["settings"]
    assert (out / "episodes" / "3way2shot" / "2.pkl").is_file()


def test_torn_result_file_is_rerun(tmp_path):
    out = tmp_path / "fs"
    run_fewshot(_cfg(), [2], [2], [0], output=str(out), runner=StubRunner(), log=lambda m: None, num_query=3)
    (out / "2way2shot" / "fold0" / "result.json").write_text("{not json")
    again = StubRunner()
    run_fewshot(_cfg(), [2], [2], [0], output=str(out), runner=again, log=lambda m: None, num_query=3)
    assert again.calls == [(2, 0)]


def test_aggregation_and_incomplete_table():
    results = [{"way": 5, "shot": 10, "fold": f, "acc": a} for f, a in enumerate([90.0, 100.0])]
    settings = aggregate_results(results, [5], [10, 20], [0, 1, 2])
    assert settings["5way10shot"]["mean"] == 95.0 and settings["5way10shot"]["std"] == 5.0
    assert not settings["5way10shot"]["complete"] and settings["5way20shot"]["num_folds"] == 0
    table = format_fewshot_table({"method": "lora", "num_folds": 3, "settings": settings})
    assert "95.0 ± 5.0 (2/3 folds)" in table and "| lora |" in table and table.rstrip().endswith("- |")


def test_missing_official_episodes_are_reported(tmp_path):
    cfg = _cfg(dataset={"_replace_": True, "name": "modelnet_fewshot", "root": str(tmp_path / "none")})
    with pytest.raises(FileNotFoundError, match="episode files are missing"):
        run_fewshot(cfg, [5], [10], [0], output=str(tmp_path / "o"), runner=StubRunner(), log=lambda m: None)


def test_one_real_episode_end_to_end(tmp_path, capsys):
    # The real runner (run_finetune) on one tiny 2-way 2-shot episode, through the CLI.
    cfg_path = tmp_path / "fs.yaml"
    cfg_path.write_text(
        "dataset: {name: synthetic, num_samples: 40, num_points: 64}\n"
        "model: {name: point_mae_tiny, checkpoint: null}\n"
        "peft: {method: clora, r: 2, num_bases: 2}\n"
        "data: {num_points: 64, batch_size: 4, eval_batch_size: 16}\n"
        "schedule: {epochs: 2, warmup_epochs: 0}\n"
        "train: {device: cpu}\n"
    )
    out = tmp_path / "bench"
    # 20 queries per class need 40 test samples for 2 classes of Synthetic's 8 -> generate from train (disjoint).
    rc = main(["--cfg", str(cfg_path), "--ways", "2", "--shots", "2", "--folds", "1", "--output", str(out),
               "--set", "dataset.num_samples=200"])  # fmt: skip
    assert rc == 0
    result = json.loads((out / "2way2shot" / "fold0" / "result.json").read_text())
    assert 0.0 <= result["acc"] <= 100.0 and result["trainable_params"] > 0
    assert (out / "2way2shot" / "fold0" / "run" / "metrics.json").is_file()
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["2way2shot"]["num_folds"] == 1
