"""Helpers for the tests in tests/peft (a uniquely named module: tests/ has no __init__.py)."""

import torch

from pointclora.models import create_model


def tiny(num_classes: int = 5, seed: int = 0, **kw):
    torch.manual_seed(seed)
    return create_model("point_mae_tiny", num_classes=num_classes, **kw)


def randomize_adapters(model, seed: int = 1, scale: float = 0.1):
    """Move every adapter tensor away from its init (B from zero, Q from identity) so merges do something."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("clora_banks.") or name.endswith((".Q", ".lora_A", ".lora_B")):
                p.add_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * scale)
    return model
