"""Shared pieces of the peer-method tests: a tiny seeded model with every tensor non-trivial, options that fit it."""

import torch

from pointclora.models import create_model
from pointclora.peft import inject_adapters, make_peft_config

#: Options that fit point_mae_tiny (2 blocks, 16 groups, width 32) for each peer method.
TINY_OPTIONS = {
    "idpt": {"prompt_layer": 1, "k": 4},
    "dapt": {"rank": 4},
    "ppt": {"prompt_num_group": 8, "prompt_group_size": 8},
    "pointgst": {"rank": 4, "local": 8},
    "gaprompt": {"prompt_depth": 1, "num_tokens": 2, "point_number": 3},
    "pointlora": {"r": 2, "num_group_scales": [8, 4], "group_size_scales": [8, 16], "topk_scales": [4, 2],
                  "official_slices": False},
}


def seeded_tiny(method: str, seed: int = 0, **options) -> torch.nn.Module:
    """point_mae_tiny (5 classes) with ``method`` injected, every float tensor drawn from ``seed`` (zero-initialised
    adapters included, so the recorded logits exercise them), in eval mode."""
    torch.manual_seed(seed)
    model = create_model("point_mae_tiny", num_classes=5)
    inject_adapters(model, make_peft_config(method, **{**TINY_OPTIONS[method], **options}))
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
    return model.eval()


def cloud(batch: int = 2, n: int = 128, seed: int = 3) -> torch.Tensor:
    return torch.rand(batch, n, 3, generator=torch.Generator().manual_seed(seed)) * 2 - 1
