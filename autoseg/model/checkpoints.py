"""Checkpoints: state dicts and plain values only, written atomically, read with ``weights_only=True``.

Where they live: :func:`autoseg.workdir.checkpoint_file` / ``WorkDir.checkpoint_path``.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path
from typing import Any

import torch

from autoseg.errors import AutosegInputError
from autoseg.utils.files import atomic_path, free_bytes


def checkpoint_bytes(content: dict[str, Any]) -> int:
    """About how many bytes a checkpoint of ``content`` takes (its tensors; nested dicts and lists)."""
    if isinstance(content, torch.Tensor):
        return content.numel() * content.element_size()
    if isinstance(content, dict):
        return sum(checkpoint_bytes(value) for value in content.values())
    if isinstance(content, (list, tuple)):
        return sum(checkpoint_bytes(value) for value in content)
    return 0


def save_checkpoint(path: str | os.PathLike, content: dict[str, Any]) -> None:
    """``torch.save`` to a temporary name, then rename: an interruption never leaves half a checkpoint;
    a full disk is a one-line error naming the file and the space needed."""
    needed = checkpoint_bytes(content)
    with atomic_path(path, needed_bytes=needed) as temporary:
        try:
            torch.save(content, temporary)
        except RuntimeError:  # torch's writer reports a full disk as a RuntimeError
            free = free_bytes(temporary)
            if free is not None and free < needed:
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path)) from None
            raise


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint without unpickling arbitrary objects (``weights_only=True``)."""
    path = Path(path)
    if not path.is_file():
        raise AutosegInputError(f"{path}: checkpoint not found")
    try:
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # corrupt file, or not a checkpoint of plain values
        raise AutosegInputError(f"{path}: cannot be loaded as a checkpoint ({type(error).__name__})") from None
