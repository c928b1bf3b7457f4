"""Base class of the methods that plug into the backbone's extension points (prompt tokens, parallel adapters).

Such a method (IDPT, DAPT, ...) builds :class:`~pointclora.models.extensions.BackboneExtension` /
``BlockExtension`` modules and installs them with ``add_extension`` (:meth:`ExtensionMethod.build`); this class does
the rest the registry asks of a method: every tensor under an ``extensions`` module is an adapter tensor (trained,
counted, saved with its buffers, e.g. BatchNorm statistics), the classifier's head is rebuilt when an extension pools
a feature of another width, and models without extension points get a clear error.
"""

from __future__ import annotations

from typing import ClassVar, List, Tuple

from torch import nn

from .config import PeftConfigError
from .registry import PeftMethod

__all__ = ["ExtensionMethod", "is_extension_tensor"]


def is_extension_tensor(name: str) -> bool:
    """``name`` lies under an ``extensions`` module (``extensions.idpt.prompt_pos``, ``blocks.3.extensions.dapt.*``)."""
    return "extensions" in name.split(".")[:-1]


class ExtensionMethod(PeftMethod):
    """A method made of backbone / block extensions. Subclasses set ``name``, ``config_class`` and :meth:`build`."""

    mergeable: ClassVar[bool] = False
    #: Whether the method has a segmentation variant (else a model without a classifier head is refused).
    supports_segmentation: ClassVar[bool] = False

    def build(self, model: nn.Module) -> None:  # pragma: no cover - abstract
        """Create the method's modules and ``add_extension`` them to ``model`` and its blocks."""
        raise NotImplementedError

    def inject(self, model: nn.Module) -> None:
        if not hasattr(model, "add_extension") or not hasattr(model, "blocks"):
            raise PeftConfigError(
                f"PEFT method {self.name!r} needs a point transformer with extension points "
                f"(pointclora.models.PointTransformerEncoder); {type(model).__name__} has none"
            )
        if not self.supports_segmentation and not hasattr(model, "reset_classifier"):
            raise PeftConfigError(
                f"PEFT method {self.name!r} is ported for classification only (the official segmentation variant "
                f"is not); {type(model).__name__} is not a classifier"
            )
        exts = model._modules.get("extensions")
        if exts is not None and self.name in exts:
            raise PeftConfigError(f"the model already carries {self.name!r}; inject_adapters was called twice")
        self.build(model)
        if hasattr(model, "reset_classifier"):
            # the method may pool another feature (IDPT's [cls, prompt, max] = 3C) or build another head (PPT's
            # GELU head): a fresh head, as the official model builds it (never from the pre-trained checkpoint)
            model.reset_classifier(model.num_classes)

    def adapter_named_parameters(self, model: nn.Module) -> List[Tuple[str, nn.Parameter]]:
        return [(n, p) for n, p in model.named_parameters() if is_extension_tensor(n)]

    def merge(self, model: nn.Module, check_finite: bool = True) -> None:
        raise ValueError(
            f"PEFT method {self.name!r} does not merge into the base weights: its extra tokens and modules stay at "
            "inference (use the run's weights as they are)"
        )

    def saved_state_names(self, model: nn.Module) -> List[str]:
        """The base names plus every extension buffer (BatchNorm statistics of a prompt module) and every
        extension tensor that does not train (IDPT's ``prompt_pos`` keeps its random init: it must travel)."""
        names = set(super().saved_state_names(model))
        state = model.state_dict(keep_vars=True)
        return [n for n in state if n in names or is_extension_tensor(n)]
