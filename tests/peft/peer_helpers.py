"""Shared pieces of the peer-method tests: a tiny seeded model with every tensor non-trivial, options that fit it."""

from pathlib import Path

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
