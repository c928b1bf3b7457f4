"""Fixtures of the dataset tests: the real data folder. The file writers live in dataset_files.py."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))  # dataset_files.py beside the tests
from dataset_files import real_data_dir  # noqa: E402


@pytest.fixture(scope="session")
def real_data() -> Path:
    d = real_data_dir()
    if not d.is_dir():
        pytest.skip(
            f"real data folder {d} is absent: set POINTCLORA_REAL_DATA to the shared data folder "
            "(../shared/data) to run the real-file checks"
        )
    return d
