"""Intensity helpers shared by the anatomies: per-case tissue values, blur, bias field and noise.

CT intensities are Hounsfield units (HU), clipped to the int16 range; MRI intensities have no
unit. Images are float32 ``(z, y, x)`` arrays; blur sigmas are in voxels.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

#: CT values are clipped to the int16 range scanners store.
CT_MIN_HU, CT_MAX_HU = -1024.0, 3071.0

#: MRI noise is proportional to the signal: relative std = noise_std / this (10 % by default).
MRI_NOISE_REFERENCE = 250.0
#: Partial-volume blur (Gaussian sigma in voxels, every axis) of the main channel.
PARTIAL_VOLUME_SIGMA_VOXELS = 0.5
#: Blur of derived channels (sigma in voxels, (z, y, x)).
DERIVED_SIGMA_VOXELS = (0.5, 1.0, 1.0)

#: Noise of large volumes is drawn in z slabs of about this many voxels (bounds the temporary memory).
_NOISE_CHUNK_VOXELS = 1 << 22


def _bias_field(rng: np.random.Generator, grid: tuple[np.ndarray, ...]) -> np.ndarray:
    """Smooth multiplicative MRI bias field (about 0.7-1.4): exp of a random quadratic polynomial."""
    unit = [g / max(float(np.abs(g).max()), 1e-6) for g in grid]
    terms = [unit[0], unit[1], unit[2], unit[0] * unit[1], unit[0] * unit[2], unit[1] * unit[2],
             unit[0] ** 2, unit[1] ** 2, unit[2] ** 2]
    coefficients = rng.normal(0.0, 0.12, size=len(terms))
    log_field = sum(c * t for c, t in zip(coefficients, terms, strict=True))
    return np.exp(np.clip(np.broadcast_to(log_field, np.broadcast_shapes(*(g.shape for g in grid))),
                          -0.35, 0.35))


def _table_values(rng: np.random.Generator, table: dict[int, tuple[float, float]]) -> np.ndarray:
    """float32 intensity per tissue class: the table's mean plus a per-case uniform jitter."""
    return np.array([table[c][0] + rng.uniform(-table[c][1], table[c][1]) for c in range(len(table))],
                    dtype=np.float32)


def _add_noise(rng: np.random.Generator, image: np.ndarray, std: float, relative: bool) -> None:
    """Add Gaussian noise of ``std`` in place (``relative``: multiply by ``1 + std * N(0, 1)``), in z slabs."""
    if std <= 0:
        return
    step = max(1, _NOISE_CHUNK_VOXELS // max(1, image[0].size))
    for start in range(0, image.shape[0], step):
        block = image[start:start + step]
        noise = rng.standard_normal(block.shape, dtype=np.float32)
        noise *= std
        if relative:
            noise += 1.0
            block *= noise
        else:
            block += noise


def _bias_field_float32(coefficients: np.ndarray, coords: list[np.ndarray]) -> np.ndarray:
    """Smooth multiplicative MR bias field (float32, about 0.7-1.4): exp of a quadratic polynomial."""
    z, y, x = (c / max(float(np.abs(c).max()), 1e-6) for c in coords)
    z = z.astype(np.float32)[:, None, None]
    y = y.astype(np.float32)[None, :, None]
    x = x.astype(np.float32)[None, None, :]
    c = [float(v) for v in coefficients]
    in_plane = c[1] * y + c[2] * x + c[5] * (y * x) + c[7] * (y * y) + c[8] * (x * x)
    field = z * (c[3] * y + c[4] * x)
    field += in_plane
    field += c[0] * z + c[6] * (z * z)
    np.clip(field, -0.35, 0.35, out=field)
    return np.exp(field, out=field)


def _blur_in_place(image: np.ndarray) -> None:
    """Partial-volume blur (Gaussian, :data:`PARTIAL_VOLUME_SIGMA_VOXELS`) of a float32 ``(z, y, x)`` array.

    scipy filters one axis at a time through line buffers, so input and output may be the same array.
    """
    ndimage.gaussian_filter(image, sigma=PARTIAL_VOLUME_SIGMA_VOXELS, mode="nearest", output=image)
