"""Shared pieces of the peer-method tests: a tiny seeded model with every tensor non-trivial, options that fit it."""

from pathlib import Path
from typing import Callable

import torch

from pointclora.models import create_model
from pointclora.peft import inject_adapters, load_adapter, make_peft_config, save_adapter

#: Options that fit point_mae_tiny (2 blocks, 16 groups, width 32) for each peer method.
TINY_OPTIONS = {
    "idpt": {"prompt_layer": 1, "k": 4},
    "dapt": {"rank": 4},
    "ppt": {"prompt_num_group": 8, "prompt_group_size": 8},
    "pointgst": {"rank": 4, "local": 8},
    "gaprompt": {"prompt_depth": 1, "num_tokens": 2, "point_number": 3},
    "pointlora": {
        "r": 2,
        "num_group_scales": [8, 4],
        "group_size_scales": [8, 16],
        "topk_scales": [4, 2],
        "official_slices": False,
    },
}


def head_params(in_dim: int, hidden: int, classes: int) -> int:
    """Parameters of a Point-MAE classification head: (Linear, BatchNorm, ReLU, Dropout) x 2, then Linear."""
    return in_dim * hidden + hidden + 2 * hidden + hidden * hidden + hidden + 2 * hidden + hidden * classes + classes


def seeded_tiny(method: str, seed: int = 0, **options) -> torch.nn.Module:
    """point_mae_tiny (5 classes) with ``method`` injected, every float tensor drawn from ``seed`` (zero-initialised
    adapters included, so the recorded logits exercise them), in eval mode."""
    torch.manual_seed(seed)
    model = create_model("point_mae_tiny", num_classes=5)
    inject_adapters(model, make_peft_config(method, **{**TINY_OPTIONS[method], **options}))
    _randomize(model, seed)
    return model.eval()


def cloud(batch: int = 2, n: int = 128, seed: int = 3) -> torch.Tensor:
    return torch.rand(batch, n, 3, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def seeded_tiny_seg(method: str, seed: int = 0) -> torch.nn.Module:
    """point_mae_tiny_seg (10 parts, 3 categories) with ``method``'s segmentation variant, every float tensor drawn
    from ``seed`` as in :func:`seeded_tiny`, in eval mode."""
    torch.manual_seed(seed)
    model = create_model("point_mae_tiny_seg", num_classes=10, num_categories=3)
    inject_adapters(model, make_peft_config(method))
    _randomize(model, seed)
    return model.eval()


def _randomize(model: torch.nn.Module, seed: int) -> None:
    """Every float tensor drawn from ``seed``: weights scaled by fan-in, norms' weights near 1, variances in
    [0.5, 1.5), the rest small (so no factor is a neutral 1 or 0)."""
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if not t.is_floating_point():
                continue
            r = torch.randn(t.shape, generator=gen)
            if name.endswith("running_var"):
                t.copy_(0.5 + torch.rand(t.shape, generator=gen))
            elif t.dim() >= 2:
                t.copy_(r / t[0].numel() ** 0.5)
            elif name.endswith(("weight", "gamma")):
                t.copy_(1 + 0.1 * r)
            else:
                t.copy_(0.1 * r)


def assert_adapter_round_trip(model: torch.nn.Module, folder: Path) -> None:
    """``save_adapter`` then ``load_adapter`` into a fresh tiny model holding only the backbone tensors (wrapped
    layers' ``base_layer`` keys mapped back to the plain names) gives bit-identical logits."""
    with torch.no_grad():
        before = model(cloud())
    save_adapter(model, folder)
    fresh = create_model("point_mae_tiny", num_classes=5)
    base = {k.replace(".base_layer.", "."): v for k, v in model.state_dict().items()}
    fresh.load_state_dict({k: v for k, v in base.items()
                           if k in fresh.state_dict() and not k.startswith("cls_head")}, strict=False)  # fmt: skip
    load_adapter(fresh, folder)
    with torch.no_grad():
        torch.testing.assert_close(fresh.eval()(cloud()), before, rtol=0, atol=0)


def die_after_first_checkpoint(monkeypatch) -> Callable[[], None]:
    """From now on the Trainer raises KeyboardInterrupt right after writing epoch 1's ``last.pth`` (a kill that still
    leaves a checkpoint). Returns the function that ends it."""
    from pointclora.engine import trainer as trainer_mod

    real_save = trainer_mod.atomic_save

    def save_then_die(obj, path):
        real_save(obj, path)
        if Path(path).name == "last.pth" and obj["epoch"] == 1:
            raise KeyboardInterrupt("simulated kill")

    monkeypatch.setattr(trainer_mod, "atomic_save", save_then_die)
    return lambda: monkeypatch.setattr(trainer_mod, "atomic_save", real_save)


def assert_segment_tool_resumes_and_evaluates(method: str, tmp_path: Path, monkeypatch) -> None:
    """``tools/segment.py --peft method`` on a tiny cattle-like folder: killed after epoch 1 and resumed (from another
    RNG state) it ends with the uninterrupted run's tensors and mIoU; ``tools/evaluate.py`` on the run returns it."""
    import json
    import sys

    import yaml

    from pointclora.cli import evaluate
    from pointclora.cli.segment import main

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
    from test_segment_tool import _cattle_like, _cfg

    cfg = _cfg(_cattle_like(tmp_path / "d"), method=method)
    cfg["peft"] = {"method": method}
    cfg_path = tmp_path / "seg.yaml"
    cfg_path.write_text(
        yaml.safe_dump({k: cfg[k] for k in ("task", "dataset", "model", "peft", "data", "optim", "schedule", "train")})
    )
    full, killed = tmp_path / "full", tmp_path / "killed"
    assert main(["--cfg", str(cfg_path), "--output", str(full), "--quiet", "--peft", method]) == 0
    metrics = json.loads((full / "metrics.json").read_text())
    assert metrics["method"] == method and 0 <= metrics["instance_miou"] <= 100

    live_again = die_after_first_checkpoint(monkeypatch)
    # the CLI turns the kill into "error: interrupted" and a non-zero exit
    assert main(["--cfg", str(cfg_path), "--output", str(killed), "--quiet", "--peft", method]) != 0
    live_again()
    torch.manual_seed(1234)
    assert main(["--cfg", str(cfg_path), "--output", str(killed), "--quiet", "--peft", method, "--resume"]) == 0
    a = torch.load(full / "checkpoints" / "last.pth", weights_only=True)["model"]
    b = torch.load(killed / "checkpoints" / "last.pth", weights_only=True)["model"]
    assert a.keys() == b.keys() and any(k.startswith(f"extensions.{method}.") for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert json.loads((killed / "metrics.json").read_text())["instance_miou"] == metrics["instance_miou"]

    out = tmp_path / "eval.json"
    assert evaluate.main([str(full), "--device", "cpu", "--quiet", "--output", str(out)]) == 0
    res = json.loads(out.read_text())
    assert abs(res["instance_miou"] - metrics["instance_miou"]) < 1e-9
    assert abs(res["class_miou"] - metrics["class_miou"]) < 1e-9
