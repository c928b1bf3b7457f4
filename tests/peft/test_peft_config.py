import json

import pytest

from pointclora.models import create_model
from pointclora.models.segmentation import SEG_HEAD_MODULES
from pointclora.peft import (
    CLoRAConfig,
    FullConfig,
    LinearConfig,
    LoRAConfig,
    NoneConfig,
    PeftConfig,
    PeftConfigError,
    inject_adapters,
    make_peft_config,
)


def test_defaults_follow_clora_md():
    cfg = make_peft_config()
    assert isinstance(cfg, CLoRAConfig)
    assert (cfg.r, cfg.num_bases, cfg.alpha, cfg.scaling, cfg.sade_weight) == (8, 4, 8.0, 1.0, 0.1)
    assert cfg.split_qkv and cfg.share == "shape" and cfg.dropout == 0.0 and cfg.q_weight_decay is False
    # targets and trained modules are the model's to declare: None until inject_adapters resolves them
    assert cfg.target_modules is None and cfg.train_modules is None
    model = inject_adapters(create_model("point_mae_tiny", num_classes=3), cfg)
    assert model.peft_config.target_modules == ("attn.qkv", "attn.proj", "mlp.fc1", "mlp.fc2")
    assert model.peft_config.train_modules == ("cls_head_finetune", "cls_token", "cls_pos")
    linear = inject_adapters(create_model("point_mae_tiny", num_classes=3), LinearConfig())
    assert linear.peft_config.train_modules == ("cls_head_finetune",)
    assert make_peft_config("lora", r=4, alpha=8).scaling == 2.0


def test_segmentation_model_declares_its_head():
    seg = create_model("point_mae_tiny_seg", num_classes=4, num_categories=2)
    assert "cls_token" not in seg.default_train_modules and "convs3" in seg.head_modules
    inject_adapters(seg, "lora")
    trained = {n.split(".")[0] for n, p in seg.named_parameters() if p.requires_grad and "lora_" not in n}
    assert trained == set(SEG_HEAD_MODULES)


@pytest.mark.parametrize("method", ["clora", "lora", "full", "linear", "none"])
def test_round_trip_json_yaml(method):
    kwargs = {"clora": dict(r=4, num_bases=2, share="block", target_modules=["re:.*fc1"], sade_weight=0.0),
              "lora": dict(r=16, dropout=0.1, exclude_modules=["blocks.0.attn.qkv"])}.get(method, {})
    cfg = make_peft_config(method, **kwargs)
    again = PeftConfig.from_json(json.dumps(cfg.to_dict()))
    assert type(again) is type(cfg) and again == cfg
    assert PeftConfig.from_yaml(cfg.to_yaml()) == cfg
    assert type(cfg).from_dict(cfg.to_dict()) == cfg
    assert cfg.to_dict()["method"] == method


@pytest.mark.parametrize(
    "kwargs, fragment",
    [
        (dict(r=0), "r must be an integer >= 1, got 0"),
        (dict(r=2.5), "r must be an integer"),
        (dict(num_bases=0), "num_bases must be an integer >= 1"),
        (dict(alpha=-1.0), "alpha must be >= 0.0"),
        (dict(alpha=0), "alpha must be > 0"),
        (dict(dropout=1.0), "dropout must be in [0.0, 1.0)"),
        (dict(share="layer"), "share must be 'shape' or 'block', got 'layer'"),
        (dict(sade_weight=-0.1), "sade_weight must be >= 0.0"),
        (dict(target_modules=[]), "target_modules must name at least one layer"),
        (dict(target_modules=["re:(("]), "not a valid regular expression"),
        (dict(split_qkv="yes"), "split_qkv must be true or false"),
        (dict(q_weight_decay="no"), "q_weight_decay must be true or false"),
        (dict(num_base=2), "unknown option 'num_base' for method 'clora'; did you mean 'num_bases'?"),
    ],
)
def test_bad_config_raises_clear_error(kwargs, fragment):
    with pytest.raises(PeftConfigError) as err:
        make_peft_config("clora", **kwargs)
    assert fragment in str(err.value)


def test_unknown_method_and_cross_method_options():
    with pytest.raises(PeftConfigError, match="did you mean 'clora'"):
        make_peft_config("clor")
    with pytest.raises(PeftConfigError, match="unknown option 'num_bases' for method 'lora'"):
        make_peft_config("lora", num_bases=2)
    with pytest.raises(PeftConfigError, match="method='lora' but CLoRAConfig"):
        CLoRAConfig.from_dict({"method": "lora"})
    assert isinstance(make_peft_config("full"), FullConfig) and isinstance(make_peft_config("none"), NoneConfig)
    assert isinstance(make_peft_config("LoRA"), LoRAConfig)


def test_config_instance_with_overrides():
    base = CLoRAConfig(r=4)
    assert make_peft_config(base) is base
    derived = make_peft_config(base, num_bases=2)
    assert (derived.r, derived.num_bases) == (4, 2) and base.num_bases == 4
