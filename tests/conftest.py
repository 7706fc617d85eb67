"""Pytest fixtures shared by all tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import make_raw_dataset


@pytest.fixture
def raw_dataset(tmp_path: Path) -> Path:
    """A valid 3-case, one-channel CT dataset of 8x16x16 voxels at (2, 1, 1) mm."""
    return make_raw_dataset(tmp_path / "Dataset001_Tiny")
