"""Shared test helpers (importable as ``helpers``): tiny raw datasets written with SimpleITK."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def write_volume(path: Path, array: np.ndarray, spacing_zyx=(1.0, 1.0, 1.0), origin_xyz=(0.0, 0.0, 0.0),
                 direction=None) -> Path:
    """Write a (z, y, x) array with the given spacing (array order) and origin (SimpleITK order)."""
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(v) for v in spacing_zyx[::-1]))
    image.SetOrigin(tuple(float(v) for v in origin_xyz))
    if direction is not None:
        image.SetDirection(tuple(float(v) for v in direction))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return path


def make_raw_dataset(root: Path, num_cases: int = 3, shape=(8, 16, 16), spacing=(2.0, 1.0, 1.0),
                     channel_names=None, labels=None, file_ending=".nii.gz", seed: int = 0) -> Path:
    """A tiny valid dataset: a bright box (label 1) with a core (label 2) in noise."""
    channel_names = channel_names or {"0": "CT"}
    labels = labels or {"background": 0, "organ": 1, "core": 2}
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(json.dumps({
        "name": root.name, "channel_names": channel_names, "labels": labels,
        "numTraining": num_cases, "file_ending": file_ending}))
    for index in range(num_cases):
        label = np.zeros(shape, dtype=np.uint8)
        z, y, x = shape
        label[z // 4: 3 * z // 4, y // 4: 3 * y // 4, x // 4: 3 * x // 4] = 1
        label[z // 2 - 1: z // 2 + 1, y // 2 - 2: y // 2 + 2, x // 2 - 2: x // 2 + 2] = 2
        for channel in channel_names:
            image = (rng.normal(0, 20, shape) + 100 * label - 500).astype(np.float32)
            write_volume(root / "imagesTr" / f"case_{index:03d}_{int(channel):04d}{file_ending}", image, spacing)
        write_volume(root / "labelsTr" / f"case_{index:03d}{file_ending}", label, spacing)
    return root


def shared_dataset(name: str) -> Path:
    """Path to a dataset in ../shared/data, or skip the test when it is absent."""
    path = SHARED_DATA / name
    if not (path / "dataset.json").is_file():
        pytest.skip(f"{path} not available")
    return path
