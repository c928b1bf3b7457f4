"""Import timm (the `dev` extra) for the openness tests, working around an unloadable torchvision.

PyPI's torchvision wheels are CUDA builds; beside a CPU-only torch (this machine's) their compiled ops cannot load and
``import torchvision`` then fails at ``register_fake("torchvision::nms")`` ("operator torchvision::nms does not
exist"). timm imports torchvision only for data transforms and a FrozenBatchNorm class; a ViT never calls its ops.
So when that exact failure happens, the two detection-op schemas torchvision registers fake kernels for are defined
(schema only, no kernel) and the import is retried. Nothing here changes timm's or torchvision's model code.
"""

import importlib.util
import sys

import pytest
import torch

_TORCHVISION_SHIM = None  # keeps the Library alive: its definitions go away when it is garbage-collected


def _retry_torchvision_without_ops() -> None:
    global _TORCHVISION_SHIM
    for name in [n for n in sys.modules if n == "torchvision" or n.startswith("torchvision.")]:
        del sys.modules[name]
    _TORCHVISION_SHIM = torch.library.Library("torchvision", "DEF")
    _TORCHVISION_SHIM.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    _TORCHVISION_SHIM.define("qnms(Tensor qdets, Tensor scores, float iou_threshold) -> Tensor")
    import torchvision  # noqa: F401


def import_timm():
    """``timm``, or skip when the `dev` extra is not installed."""
    if "timm" in sys.modules:
        return sys.modules["timm"]
    if importlib.util.find_spec("timm") is None or importlib.util.find_spec("torchvision") is None:
        pytest.skip("the timm openness tests need timm and torchvision (pip install -e .[dev])")
    try:
        import torchvision  # noqa: F401
    except RuntimeError as err:
        if "torchvision::nms" not in str(err):
            raise
        _retry_torchvision_without_ops()
    return pytest.importorskip("timm", reason="the timm openness tests need timm (pip install -e .[dev])")
