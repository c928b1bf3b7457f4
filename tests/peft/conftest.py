import pytest
import torch


@pytest.fixture
def points():
    """(3, 128, 3) random clouds in [-1, 1]."""
    gen = torch.Generator().manual_seed(123)
    return torch.rand(3, 128, 3, generator=gen) * 2 - 1
