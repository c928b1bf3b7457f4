"""Shared fixtures: tiny models and the location of the real data (POINTCLORA_REAL_DATA)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

import pointclora.api  # noqa: F401  (lets tests written against the old Trainer(cfg) find their task)

REPO_ROOT = Path(__file__).resolve().parents[1]


def real_data_root() -> Path:
    """``$POINTCLORA_REAL_DATA`` or ``<repo>/../shared/data``."""
    env = os.environ.get("POINTCLORA_REAL_DATA")
    return Path(env) if env else REPO_ROOT.parent / "shared" / "data"


@pytest.fixture
def real_data() -> Path:
    root = real_data_root()
    if not root.is_dir():
        pytest.skip(f"real data folder not found at {root}; set POINTCLORA_REAL_DATA to the shared/data folder")
    return root


@pytest.fixture(scope="session", autouse=True)
def _private_cache_dir(tmp_path_factory):
    """Derived-data caches (ModelNet40 FPS orders, validation fingerprints) go to a temporary folder, never ~/.cache."""
    old = os.environ.get("POINTCLORA_CACHE")
    os.environ["POINTCLORA_CACHE"] = str(tmp_path_factory.mktemp("pointclora_cache"))
    yield
    if old is None:
        os.environ.pop("POINTCLORA_CACHE", None)
    else:
        os.environ["POINTCLORA_CACHE"] = old


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(0)
    yield
