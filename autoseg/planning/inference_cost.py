"""How much work predicting a case is: sliding windows and network passes (no I/O, no torch).

Used to plan (the expected time to predict a case, the time validation takes within a
training budget) and by the sliding-window predictor itself, which lays its windows out
with the same count and the same window (:func:`inference_window`). Shapes in voxels in
the patch's axis order.

The inference window: a U-Net is fully convolutional, so it can predict a window larger
than the patch it was trained on. With windows overlapping by half, a 563x563 slice
predicted with a 512x512 patch takes 2x2 windows (3.3x the slice's voxels); one 640x640
window covering it takes 1.3x. :func:`inference_window` picks the window that computes
the fewest voxels, at most :data:`MAX_WINDOW_VOXELS_FACTOR` times the patch's voxels
(inference keeps no activations for a backward pass, so such a window needs less memory
than one training step of a batch of two). Only for 2D networks: their time per voxel is
the same for 256x256 to 640x640 windows, while a 3D network's grows with the window
(2 cores: a 144x128x128 window took 5.2x the time of a 48x128x128 patch for 3x the
voxels; BENCHMARKS.md, "One large CT: seconds per case and peak memory"), so 3D predicts
with the patch.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

#: An inference window holds at most this many times the voxels of the training patch, by the
#: network's dimension (3D: the patch itself, see the module docstring).
MAX_WINDOW_VOXELS_FACTOR = {2: 4, 3: 1}
#: A 2D network predicts up to 16 slices per call, fewer where 16 windows would exceed this many
#: voxels (16 slices of 512x512), so a larger window does not raise the memory of a call.
MAX_SLICE_BATCH = 16
MAX_SLICE_BATCH_VOXELS = 16 * 512 * 512


def windows_along_axis(size: int, patch: int, step_size: float = 0.5) -> int:
    """Windows along one axis: ``ceil((size - patch) / (patch * step_size)) + 1`` (1 when the patch covers it)."""
    return math.ceil(max(0, int(size) - int(patch)) / (int(patch) * step_size)) + 1


def count_windows(shape: Sequence[int], patch_size: Sequence[int], step_size: float = 0.5) -> int:
    """Sliding windows over a volume of ``shape`` (the patch's dimensions: 3D, or 2D per slice)."""
    return math.prod(windows_along_axis(size, patch, step_size) for size, patch in zip(shape, patch_size))


def window_candidates(size: int, patch: int, divisor: int) -> list[int]:
    """Window lengths along one axis: the patch, then larger multiples of ``divisor`` up to the first
    that covers ``size`` (voxels)."""
    lengths = [int(patch)]
    while lengths[-1] < size:
        lengths.append((lengths[-1] // divisor + 1) * divisor)
    return lengths


def computed_voxels(shape: Sequence[int], window: Sequence[int], step_size: float = 0.5) -> int:
    """Voxels the network computes to cover ``shape`` (padded up to the window) with ``window``."""
    padded = [max(int(size), int(length)) for size, length in zip(shape, window)]
    return count_windows(padded, window, step_size) * math.prod(window)


def inference_window(shape: Sequence[int], patch_size: Sequence[int], divisors: Sequence[int],
                     step_size: float = 0.5, max_voxels_factor: float | None = None) -> list[int]:
    """The sliding window (voxels, the patch's axis order) that computes the fewest voxels for an image of
    ``shape`` (for a 2D patch: one slice, ``(y, x)``): the patch itself, or a larger window whose lengths
    are multiples of the network's ``divisors`` (its total downsampling) and which holds at most
    ``max_voxels_factor`` (default: :data:`MAX_WINDOW_VOXELS_FACTOR` of the patch's dimension) times the
    patch's voxels. Ties go to the smaller window."""
    if max_voxels_factor is None:
        max_voxels_factor = MAX_WINDOW_VOXELS_FACTOR[len(patch_size)]
    limit = max_voxels_factor * math.prod(patch_size)
    options = [window_candidates(size, patch, divisor)
               for size, patch, divisor in zip(shape, patch_size, divisors, strict=True)]
    best, best_cost = list(patch_size), computed_voxels(shape, patch_size, step_size)
    for window in itertools.product(*options):
        voxels = math.prod(window)
        if voxels > limit:
            continue
        cost = computed_voxels(shape, window, step_size)
        if cost < best_cost or (cost == best_cost and voxels < math.prod(best)):
            best, best_cost = list(window), cost
    return best


def case_cost_in_patches(shape: Sequence[int], patch_size: Sequence[int], divisors: Sequence[int],
                         mirror_axes: Sequence[int] | None, step_size: float = 0.5) -> float:
    """Network work to predict a ``(z, y, x)`` case in units of one forward pass of the training patch:
    windows x mirrorings x the window's voxels relative to the patch's (a 2D patch runs on every slice)."""
    mirrorings = 2 ** len(mirror_axes or [])
    spatial = shape[1:] if len(patch_size) == 2 else shape
    window = inference_window(spatial, patch_size, divisors, step_size)
    slices = int(shape[0]) if len(patch_size) == 2 else 1
    return slices * mirrorings * computed_voxels(spatial, window, step_size) / math.prod(patch_size)


def slices_per_call(window: Sequence[int]) -> int:
    """Slices a 2D network predicts per call with a ``(y, x)`` window (:data:`MAX_SLICE_BATCH_VOXELS`)."""
    return max(1, min(MAX_SLICE_BATCH, MAX_SLICE_BATCH_VOXELS // math.prod(window)))
