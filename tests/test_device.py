import pytest
import torch

import pointclora
from pointclora.utils import resolve_device


def test_auto_picks_cuda_only_when_available():
    expected = "cuda" if torch.cuda.is_available() else None
    dev = resolve_device("auto")
    if expected:
        assert dev.type == "cuda"
    else:
        assert dev.type in {"cpu", "mps"}


def test_explicit_devices_and_errors():
    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ValueError, match="unknown device 'gpu0'"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA is not available"):
            resolve_device("cuda")


def test_version_is_exposed():
    assert pointclora.__version__.count(".") == 2


def test_no_hard_coded_cuda_calls_in_library():
    from pathlib import Path

    root = Path(pointclora.__file__).parent
    offenders = [str(p) for p in root.rglob("*.py") if ".cuda()" in p.read_text()]
    assert offenders == []
