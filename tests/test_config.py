"""Config composition: _base_ inheritance, shelves, _replace_, checked overrides with suggestions, round trip."""

from pathlib import Path

import pytest
import yaml

from pointclora.config import (
    DEFAULTS,
    ConfigError,
    apply_overrides,
    config_from_string,
    dump_config,
    load_config,
    resolve_config_path,
)

REPO = Path(__file__).resolve().parents[1]


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_bases_merge_in_order_relative_to_the_including_file(tmp_path):
    _write(tmp_path / "sub" / "sched.yaml", "optim: {lr: 0.1, weight_decay: 0.2}\nschedule: {epochs: 7}\n")
    _write(tmp_path / "sub" / "later.yaml", "optim: {lr: 0.3}\n")
    _write(tmp_path / "ds.yaml", "name: synthetic\nnum_classes: 5\n")
    cfg_path = _write(
        tmp_path / "exp.yaml",
        "_base_: [sub/sched.yaml, sub/later.yaml]\n"
        "dataset: {_base_: ds.yaml, num_points: 77}\n"
        "model: {name: point_mae_tiny}\n"
        "schedule: {warmup_epochs: 2}\n",
    )
    cfg = load_config(cfg_path)
    assert cfg["optim"]["lr"] == 0.3 and cfg["optim"]["weight_decay"] == 0.2  # later base wins, deep merge
    assert cfg["schedule"] == {**DEFAULTS["schedule"], "epochs": 7, "warmup_epochs": 2}
    assert cfg["dataset"] == {"name": "synthetic", "num_classes": 5, "num_points": 77}
    assert cfg["name"] == "exp"
    assert cfg["data"]["batch_size"] == DEFAULTS["data"]["batch_size"]  # defaults filled in


def test_bare_names_resolve_on_the_shelves():
    assert resolve_config_path("demo.yaml") == (REPO / "configs" / "demo.yaml").resolve()
    # the dataset shelf wins for `dataset: {_base_: modelnet40.yaml}` even though configs/modelnet40.yaml exists
    assert resolve_config_path("modelnet40.yaml", relative_to=REPO / "configs" / "modelnet40.yaml", key="dataset") == (
        REPO / "datasets" / "modelnet40.yaml"
    ).resolve()
    cfg = load_config("modelnet40.yaml")
    assert cfg["dataset"]["name"] == "modelnet40" and cfg["model"]["name"] == "point_mae_s"
    assert cfg["data"]["num_points"] == 1024 and cfg["peft"]["method"] == "clora"


@pytest.mark.parametrize(
    "name, variant",
    [("scanobjectnn", "PB_T50_RS"), ("scanobjectnn_objbg", "OBJ_BG"), ("scanobjectnn_objonly", "OBJ_ONLY")],
)
def test_shipped_scanobjectnn_configs_pick_their_variant(name, variant):
    cfg = load_config(name + ".yaml")
    assert cfg["dataset"]["variant"] == variant  # _replace_ drops the base's dataset instead of merging into it
    assert cfg["model"]["num_groups"] == 128 and cfg["data"]["num_points"] == 2048


@pytest.mark.parametrize(
    "name", ["demo", "fewshot", "shapenetpart", "pretrain_shapenet", "pretrain_demo", "modelnet40", "scanobjectnn"]
)
def test_every_shipped_config_loads(name):
    cfg = load_config(name)
    assert cfg["dataset"].get("name")


def test_replace_marker(tmp_path):
    _write(tmp_path / "base.yaml", "dataset: {name: synthetic, num_classes: 3, seed: 4}\n")
    path = _write(tmp_path / "child.yaml", "_base_: base.yaml\ndataset: {_replace_: true, name: synthetic}\n")
    assert load_config(path)["dataset"] == {"name": "synthetic"}


def test_overrides_parse_yaml_values():
    cfg = load_config("demo.yaml")
    out = apply_overrides(cfg, ["optim.lr=7e-5", "optim.betas=[0.8,0.9]", "model.checkpoint=null", "train.amp=true"])
    assert out["optim"]["lr"] == pytest.approx(7e-5) and out["optim"]["betas"] == [0.8, 0.9]
    assert out["model"]["checkpoint"] is None and out["train"]["amp"] is True
    assert cfg["optim"]["lr"] != out["optim"]["lr"]  # the input is not mutated
    # free-form sections and model constructor keywords are accepted
    out = apply_overrides(cfg, ["dataset.num_samples=10", "peft.r=4", "model.num_groups=16"])
    assert out["dataset"]["num_samples"] == 10 and out["peft"]["r"] == 4 and out["model"]["num_groups"] == 16


@pytest.mark.parametrize(
    "override, suggestion",
    [("optim.lrr=1", "'lr'"), ("schedule.epoch=3", "'epochs'"), ("data.batchsize=2", "'batch_size'"),
     ("optimizer.lr=1", "'optim'"), ("model.num_group=8", "'num_groups'")],
)  # fmt: skip
def test_unknown_override_names_the_closest_key(override, suggestion):
    cfg = load_config("demo.yaml")
    with pytest.raises(ConfigError) as err:
        apply_overrides(cfg, [override])
    msg = str(err.value)
    assert override.split("=")[0] in msg and "did you mean " + suggestion in msg and "--set" in msg


def test_unknown_key_in_a_file_names_the_file(tmp_path):
    path = _write(tmp_path / "bad.yaml", "dataset: {name: synthetic}\nschedule: {epochs: 2, warmup_epoch: 1}\n")
    with pytest.raises(ConfigError, match=r"bad\.yaml.*schedule\.warmup_epoch.*did you mean 'warmup_epochs'"):
        load_config(path)


def test_missing_and_circular_bases(tmp_path):
    path = _write(tmp_path / "a.yaml", "_base_: nowhere.yaml\n")
    with pytest.raises(ConfigError, match=r"nowhere\.yaml.*not found.*a\.yaml"):
        load_config(path)
    _write(tmp_path / "x.yaml", "_base_: ./y.yaml\n")
    _write(tmp_path / "y.yaml", "_base_: ./x.yaml\n")
    with pytest.raises(ConfigError, match="circular"):
        load_config(tmp_path / "x.yaml")


def test_bad_override_syntax():
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        apply_overrides(load_config("demo.yaml"), ["optim.lr"])


def test_dump_round_trip():
    cfg = load_config("demo.yaml")
    text = dump_config(cfg)
    assert config_from_string(text) == cfg
    assert yaml.safe_load(text)["pretrain"]["model"]["name"] == "point_mae_demo"


@pytest.mark.parametrize("key,bad", [("schedule.stepping", "per-step"), ("optim.no_decay", "pointmae"),
                                     ("train.vote_mode", "max")])  # fmt: skip
def test_a_word_outside_a_keys_choices_is_refused_not_defaulted(tmp_path, key, bad):
    section, name = key.split(".")
    path = _write(tmp_path / "bad.yaml", f"dataset: {{name: synthetic}}\n{section}: {{{name}: {bad}}}\n")
    with pytest.raises(ConfigError, match=rf"bad\.yaml.*{key} must be one of .*got '{bad}'"):
        load_config(path)
    with pytest.raises(ConfigError, match=rf"{key} must be one of"):
        apply_overrides(load_config("demo.yaml"), [f"{key}={bad}"])
