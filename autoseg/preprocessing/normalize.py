"""Intensity normalization per channel, as chosen in the plans (see ``ChannelNormalization``)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from autoseg.planning.plans import ChannelNormalization


def normalize_channel(channel: np.ndarray, scheme: ChannelNormalization,
                      nonzero: np.ndarray | None = None) -> np.ndarray:
    """Normalize one channel ``(z, y, x)``; returns a new float32 array.

    ``nonzero`` is the case's nonzero mask, used by ``zscore`` with ``use_nonzero_mask``
    (voxels outside it are set to 0).
    """
    data = channel.astype(np.float32, copy=True)
    if scheme.scheme == "none":
        return data
    if scheme.scheme == "ct":
        np.clip(data, scheme.clip_low, scheme.clip_high, out=data)
        data -= np.float32(scheme.mean)
        data /= np.float32(max(scheme.std, 1e-8))
        return data
    if scheme.scheme == "ct_window":
        low, high = float(scheme.clip_low), float(scheme.clip_high)
        np.clip(data, low, high, out=data)
        data -= np.float32((low + high) / 2)
        data /= np.float32((high - low) / 2)
        return data
    if scheme.scheme == "zscore":
        if scheme.use_nonzero_mask and nonzero is not None and nonzero.any():
            values = data[nonzero]
            mean, std = float(values.mean()), float(values.std())
            data -= np.float32(mean)
            data /= np.float32(max(std, 1e-8))
            data[~nonzero] = 0
            return data
        mean, std = float(data.mean()), float(data.std())
        data -= np.float32(mean)
        data /= np.float32(max(std, 1e-8))
        return data
    raise ValueError(f"unknown normalization scheme {scheme.scheme!r}")


def normalize_image(image: np.ndarray, schemes: Sequence[ChannelNormalization],
                    nonzero: np.ndarray | None = None) -> np.ndarray:
    """Normalize a ``(C, z, y, x)`` image channel by channel; returns float32."""
    if len(schemes) != image.shape[0]:
        raise ValueError(f"image has {image.shape[0]} channels but the plans normalize {len(schemes)}")
    return np.stack([normalize_channel(image[c], schemes[c], nonzero) for c in range(image.shape[0])])
