"""Parameter-efficient fine-tuning: a method registry with CLoRA (shared bases + SADE), the LoRA baseline,
full / linear / none.

Typical use::

    model = create_model("point_mae_s", num_classes=15, num_groups=128)
    load_pretrained(model, "checkpoints/pretrain.pth")          # base weights first: wrappers rename them
    cfg = make_peft_config("clora", r=8, num_bases=4)            # any name in list_peft_methods()
    inject_adapters(model, cfg)                                  # in place; targets / trained modules from the model
    aux = auxiliary_loss(model)                                  # CLoRA: sade_weight * SADE; None for other methods
    loss = task_loss if aux is None else task_loss + aux
    save_adapter(model, "runs/x/adapter")                        # what the method saves; load_adapter(fresh, dir)
    plain = merge_and_unload(model)                              # frozen-backbone FLOPs, plain state_dict

A new method is one class registered with :func:`register_peft_method` (see :mod:`pointclora.peft.registry`).
"""

# Importing clora, lora and simple registers the built-in methods (list_peft_methods() lists them in that order).
from .base import AdapterLinear, PeftMergeError
from .clora import CLoRABank, CLoRAConfig, CLoRALinear, CLoRAMethod, sade_loss, sade_loss_naive
from .config import (
    AdapterConfig,
    LowRankConfig,
    PeftConfig,
    PeftConfigError,
    make_peft_config,
    peft_config_from_dict,
)
from .inject import (
    adapter_layers,
    adapter_named_parameters,
    adapter_parameter_groups,
    format_parameter_summary,
    inject_adapters,
    merge_adapters,
    merge_and_unload,
    trainable_parameter_summary,
    unmerge_adapters,
)
from .io import AdapterMismatchError, load_adapter, read_adapter_config, save_adapter
from .lora import LoRAConfig, LoRALinear, LoRAMethod
from .multi import active_adapter, delete_adapter, list_adapters, set_adapter
from .registry import (
    AdapterMethod,
    AuxLoss,
    PeftMethod,
    get_peft_method,
    list_peft_methods,
    model_adapter_targets,
    model_head_modules,
    model_train_modules,
    register_peft_method,
    unregister_peft_method,
)
from .simple import FullConfig, FullMethod, LinearConfig, LinearMethod, NoneConfig, NoneMethod
from .training import (
    adapter_state_dict,
    adapter_state_names,
    auxiliary_loss,
    auxiliary_losses,
    can_merge,
    load_adapter_state_dict,
    method_name,
    no_weight_decay_names,
    saves_every_tensor,
    write_method_files,
)

__all__ = [
    "GAPromptConfig",
    "GAPromptMethod",
    "PointGSTConfig",
    "PointGSTMethod",
    "PointLoRAConfig",
    "PointLoRAMethod",
    "PPTConfig",
    "PPTMethod",
    "DAPTConfig",
    "DAPTMethod",
    "IDPTConfig",
    "IDPTMethod",
    "AdapterConfig",
    "AdapterLinear",
    "AdapterMethod",
    "AdapterMismatchError",
    "AuxLoss",
    "CLoRABank",
    "CLoRAConfig",
    "CLoRALinear",
    "CLoRAMethod",
    "FullConfig",
    "FullMethod",
    "LinearConfig",
    "LinearMethod",
    "LoRAConfig",
    "LoRALinear",
    "LoRAMethod",
    "LowRankConfig",
    "NoneConfig",
    "NoneMethod",
    "PeftConfig",
    "PeftConfigError",
    "PeftMergeError",
    "PeftMethod",
    "active_adapter",
    "adapter_layers",
    "adapter_named_parameters",
    "adapter_parameter_groups",
    "adapter_state_dict",
    "adapter_state_names",
    "auxiliary_loss",
    "auxiliary_losses",
    "can_merge",
    "delete_adapter",
    "format_parameter_summary",
    "get_peft_method",
    "inject_adapters",
    "list_adapters",
    "list_peft_methods",
    "load_adapter",
    "load_adapter_state_dict",
    "make_peft_config",
    "merge_adapters",
    "method_name",
    "merge_and_unload",
    "model_adapter_targets",
    "model_head_modules",
    "model_train_modules",
    "no_weight_decay_names",
    "peft_config_from_dict",
    "read_adapter_config",
    "register_peft_method",
    "sade_loss",
    "sade_loss_naive",
    "save_adapter",
    "saves_every_tensor",
    "set_adapter",
    "trainable_parameter_summary",
    "unmerge_adapters",
    "unregister_peft_method",
    "write_method_files",
]

# The published peer methods (docs/PEERS.md), imported last so they register after the built-ins.
from .dapt import DAPTConfig, DAPTMethod  # noqa: E402
from .gaprompt import GAPromptConfig, GAPromptMethod  # noqa: E402
from .idpt import IDPTConfig, IDPTMethod  # noqa: E402
from .pointgst import PointGSTConfig, PointGSTMethod  # noqa: E402
from .pointlora import PointLoRAConfig, PointLoRAMethod  # noqa: E402
from .ppt import PPTConfig, PPTMethod  # noqa: E402
