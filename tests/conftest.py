"""Pytest fixtures shared by all tests."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from helpers import make_raw_dataset


def pytest_configure(config):
    # One compute thread: tests run next to other processes, and OpenMP threads that
    # wait for a descheduled sibling make small operations 10-100x slower.
    os.environ.setdefault("AUTOSEG_NUM_THREADS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")
    import torch

    torch.set_num_threads(int(os.environ["AUTOSEG_NUM_THREADS"]))


@pytest.fixture
def raw_dataset(tmp_path: Path) -> Path:
    """A valid 3-case, one-channel CT dataset of 8x16x16 voxels at (2, 1, 1) mm."""
    return make_raw_dataset(tmp_path / "Dataset001_Tiny")
