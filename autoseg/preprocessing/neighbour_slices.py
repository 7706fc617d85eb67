"""2.5D network input: the slice to segment and its neighbours along z, stacked as channels.

A 2.5D configuration (``neighbour_slices`` K > 0 in plans.json) is a 2D network whose input for
slice ``z`` of a ``(C, Z, y, x)`` image is the slices ``z - K .. z + K`` of every image channel,
``C * (2K + 1)`` channels in this order (channel-major, slices in increasing z)::

    [c0 z-K, ..., c0 z, ..., c0 z+K, c1 z-K, ..., c1 z+K, ...]

so channel ``c * (2K + 1) + K`` is the slice itself. The label is that of slice ``z`` only.
Neighbours past the first or last slice are, by the configuration's ``neighbour_slice_padding``:

- ``replicate``: the end slice repeated (the default: the network never sees an input it could
  not see inside the volume, only one with less change between slices);
- ``zero``: zeros, the normalized image's mean (the input says where the volume ends).

Training (:class:`autoseg.training.sampling.PatchSampler`) and prediction
(:mod:`autoseg.inference.sliding_window`) both stack with the functions here, so the rule has one
owner. Works on numpy arrays (memory maps of the cache included) and torch tensors.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np

from autoseg.plans.schema import NEIGHBOUR_SLICE_PADDINGS

Array = TypeVar("Array")


def neighbour_slice_indices(z: np.ndarray | int, num_slices: int, neighbours: int) -> tuple[np.ndarray, np.ndarray]:
    """The slices stacked for each of the slices ``z`` of a volume of ``num_slices`` slices.

    Returns ``(indices, inside)``, both shaped ``(*z.shape, 2 * neighbours + 1)``: the slice index of
    each neighbour, clipped into ``0 .. num_slices - 1`` (what ``replicate`` reads), and whether the
    neighbour lies inside the volume (``zero`` zeroes the others).
    """
    if neighbours < 0:
        raise ValueError(f"neighbours must be >= 0, got {neighbours}")
    if num_slices < 1:
        raise ValueError(f"num_slices must be >= 1, got {num_slices}")
    offsets = np.arange(-neighbours, neighbours + 1)
    wanted = np.asarray(z, dtype=np.int64)[..., None] + offsets
    return np.clip(wanted, 0, num_slices - 1), (wanted >= 0) & (wanted < num_slices)


def stack_neighbour_slices(image: Array, z: slice | int, neighbours: int, padding: str = "replicate") -> Array:
    """The 2.5D input of the slices ``z`` (a range, or one slice) of ``image`` ``(C, Z, *in_plane)``.

    Returns ``(C * (2K + 1), n, *in_plane)`` for a slice range of ``n`` slices, ``(C * (2K + 1),
    *in_plane)`` for one slice (channel order in the module docstring), of the image's type (numpy
    array or torch tensor) and dtype. ``neighbours`` = 0 returns ``image[:, z]``.
    """
    if padding not in NEIGHBOUR_SLICE_PADDINGS:
        raise ValueError(f"padding must be one of {NEIGHBOUR_SLICE_PADDINGS}, got {padding!r}")
    if neighbours == 0:
        return image[:, z]
    num_slices = int(image.shape[1])
    single = not isinstance(z, slice)
    z_values = np.array([int(z)]) if single else np.arange(num_slices)[z]
    indices, inside = neighbour_slice_indices(z_values, num_slices, neighbours)  # (n, S)
    channels, n, width = int(image.shape[0]), len(z_values), indices.shape[1]
    in_plane = tuple(image.shape[2:])
    if _is_torch(image):
        import torch  # deferred: numpy callers (the sampler's memory maps) need no torch here

        index = torch.as_tensor(indices.reshape(-1), device=image.device)
        stacked = image.index_select(1, index).reshape(channels, n, width, *in_plane)
        if padding == "zero" and not inside.all():
            mask = torch.as_tensor(inside, dtype=image.dtype, device=image.device)
            stacked = stacked * mask.reshape(1, n, width, *(1,) * len(in_plane))
        stacked = stacked.transpose(1, 2).reshape(channels * width, n, *in_plane)
    else:
        stacked = np.asarray(image[:, indices.reshape(-1)]).reshape(channels, n, width, *in_plane)
        if padding == "zero" and not inside.all():
            stacked = stacked * inside.reshape(1, n, width, *(1,) * len(in_plane)).astype(stacked.dtype)
        stacked = np.ascontiguousarray(stacked.transpose(0, 2, 1, *range(3, 3 + len(in_plane))))
        stacked = stacked.reshape(channels * width, n, *in_plane)
    return stacked[:, 0] if single else stacked


def _is_torch(value: object) -> bool:
    return type(value).__module__.startswith("torch")
