"""Parameter-efficient fine-tuning: CLoRA (shared bases + SADE), the LoRA baseline, full / linear / none.

Typical use::

    model = create_model("point_mae_s", num_classes=15, num_groups=128)
    load_pretrained(model, "checkpoints/pretrain.pth")          # base weights first: wrappers rename them
    cfg = make_peft_config("clora", r=8, num_bases=4)
    inject_adapters(model, cfg)                                  # in place; freezes all but adapters + train_modules
    loss = task_loss + cfg.sade_weight * sade_loss(model)        # CLoRA only; other configs have no sade_weight
    save_adapter(model, "runs/x/adapter")                        # small file; load_adapter(fresh_model, dir)
    plain = merge_and_unload(model)                              # frozen-backbone FLOPs, plain state_dict
"""

from .base import AdapterLinear, PeftMergeError
from .clora import CLoRABank, CLoRALinear, sade_loss, sade_loss_naive
from .config import (
    CLoRAConfig,
    FullConfig,
    LinearConfig,
    LoRAConfig,
    NoneConfig,
    PeftConfig,
    PeftConfigError,
    make_peft_config,
    peft_config_from_dict,
)
from .inject import (
    adapter_layers,
    adapter_parameter_groups,
    format_parameter_summary,
    inject_adapters,
    merge_adapters,
    merge_and_unload,
    trainable_parameter_summary,
    unmerge_adapters,
)
from .io import AdapterMismatchError, load_adapter, read_adapter_config, save_adapter
from .lora import LoRALinear

__all__ = [
    "AdapterLinear",
    "AdapterMismatchError",
    "CLoRABank",
    "CLoRAConfig",
    "CLoRALinear",
    "FullConfig",
    "LinearConfig",
    "LoRAConfig",
    "LoRALinear",
    "NoneConfig",
    "PeftConfig",
    "PeftConfigError",
    "PeftMergeError",
    "adapter_layers",
    "adapter_parameter_groups",
    "format_parameter_summary",
    "inject_adapters",
    "load_adapter",
    "make_peft_config",
    "merge_adapters",
    "merge_and_unload",
    "peft_config_from_dict",
    "read_adapter_config",
    "sade_loss",
    "sade_loss_naive",
    "save_adapter",
    "trainable_parameter_summary",
    "unmerge_adapters",
]
