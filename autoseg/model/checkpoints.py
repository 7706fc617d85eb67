"""Checkpoints: state dicts and plain values only, written atomically, read with ``weights_only=True``.

Where they live: :func:`autoseg.workdir.checkpoint_file` / ``WorkDir.checkpoint_path``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from autoseg.errors import AutosegInputError
from autoseg.utils.files import atomic_path


def save_checkpoint(path: str | os.PathLike, content: dict[str, Any]) -> None:
    """``torch.save`` to a temporary name, then rename: an interruption never leaves half a checkpoint."""
    with atomic_path(path) as temporary:
        torch.save(content, temporary)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint without unpickling arbitrary objects (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise AutosegInputError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # corrupt file, or not a checkpoint of plain values
        raise AutosegInputError(f"{path}: cannot be loaded as a checkpoint ({type(error).__name__})") from None
