"""Intensity normalization: the plans.json entry per channel and one class per scheme, in a registry.

A scheme class is the meaning of ``"scheme": NAME`` in plans.json: which parameters
the entry needs (checked when plans.json is loaded) and what it does to a channel
(applied by :mod:`autoseg.preprocessing.preprocess` to training cases and new scans
alike). The planner chooses ``ct`` for channels named CT and ``zscore`` otherwise;
``ct_window`` and ``none`` can be chosen by hand or with ``autoseg plan --ct-window``.

To add a scheme: subclass :class:`NormalizationScheme` and register it with
``@NORMALIZATION_SCHEMES.register("name")``; plans.json may then name it.
Arrays are ``(z, y, x)`` per channel, ``(C, z, y, x)`` per image; CT values in HU.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from autoseg.utils.registry import Registry

#: Largest magnitude of a normalization parameter (clip bounds, mean, std): CT is -1024..~30000 HU,
#: MRI and PET intensities reach 1e5-1e6; past 1e9 a float32 image loses all precision.
MAX_INTENSITY = 1e9


@dataclass
class ChannelNormalization:
    """How one input channel is normalized (an entry of ``"normalization"`` in plans.json).

    Attributes:
        channel, channel_name: which channel.
        scheme: a name registered in :data:`NORMALIZATION_SCHEMES`.
        use_nonzero_mask: ``zscore``: statistics inside the nonzero region only
            (voxels outside are set to 0).
        clip_low, clip_high: HU bounds of ``ct`` and ``ct_window``.
        mean, std: dataset foreground statistics (HU) of ``ct``.
        reason: why this scheme was chosen.
    """

    channel: int
    channel_name: str
    scheme: str
    use_nonzero_mask: bool = False
    clip_low: float | None = None
    clip_high: float | None = None
    mean: float | None = None
    std: float | None = None
    reason: str = ""

    def validate(self, where: str = "normalization") -> None:
        """Raise ValueError naming the field when the scheme is unknown or lacks a parameter."""
        if not isinstance(self.channel, int) or isinstance(self.channel, bool) or self.channel < 0:
            raise ValueError(f"{where}.channel must be a channel index, got {self.channel!r}")
        if not isinstance(self.use_nonzero_mask, bool):
            raise ValueError(f"{where}.use_nonzero_mask must be true or false, got {self.use_nonzero_mask!r}")
        for name in ("clip_low", "clip_high", "mean", "std"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, (int, float)) or isinstance(value, bool)
                                      or not math.isfinite(value) or abs(value) > MAX_INTENSITY):
                raise ValueError(f"{where}.{name} must be a finite number of at most {MAX_INTENSITY:g} in "
                                 f"magnitude (or null), got {value!r}")
        if not isinstance(self.scheme, str) or self.scheme not in NORMALIZATION_SCHEMES:
            raise ValueError(f"{where}.scheme: unknown normalization scheme {self.scheme!r} "
                             f"(known: {', '.join(NORMALIZATION_SCHEMES.names())})")
        problem = NORMALIZATION_SCHEMES.get(self.scheme)().check(self)
        if problem:
            raise ValueError(f"{where}: scheme {self.scheme!r} {problem}")


class NormalizationScheme:
    """One normalization scheme: its parameter check and its arithmetic."""

    def check(self, entry: ChannelNormalization) -> str | None:
        """A problem with ``entry``'s parameters (e.g. ``"needs clip_low < clip_high"``), or None."""
        return None

    def normalize(self, channel: np.ndarray, entry: ChannelNormalization,
                  nonzero: np.ndarray | None) -> np.ndarray:
        """Normalize ``channel`` (``(z, y, x)``, already a float32 copy that may be modified in place)."""
        raise NotImplementedError


def _needs_clip_range(entry: ChannelNormalization) -> str | None:
    if entry.clip_low is None or entry.clip_high is None or entry.clip_low >= entry.clip_high:
        return "needs clip_low < clip_high"
    return None


#: Scheme name (``"scheme"`` in plans.json) -> its class.
NORMALIZATION_SCHEMES: Registry[type[NormalizationScheme]] = Registry("normalization scheme")


@NORMALIZATION_SCHEMES.register("ct")
class CTNormalization(NormalizationScheme):
    """Clip to ``[clip_low, clip_high]`` HU (dataset foreground 0.5/99.5 percentiles), then
    subtract ``mean`` and divide by ``std`` (dataset foreground statistics, HU)."""

    def check(self, entry: ChannelNormalization) -> str | None:
        if entry.mean is None or entry.std is None or not entry.std > 0:
            return "needs mean and a positive std"
        return _needs_clip_range(entry)

    def normalize(self, channel, entry, nonzero):
        np.clip(channel, entry.clip_low, entry.clip_high, out=channel)
        channel -= np.float32(entry.mean)
        channel /= np.float32(max(entry.std, 1e-8))
        return channel


@NORMALIZATION_SCHEMES.register("ct_window")
class CTWindowNormalization(NormalizationScheme):
    """Clip to the fixed window ``[clip_low, clip_high]`` HU (e.g. [-200, 500]), then map it linearly to [-1, 1]."""

    def check(self, entry: ChannelNormalization) -> str | None:
        return _needs_clip_range(entry)

    def normalize(self, channel, entry, nonzero):
        low, high = float(entry.clip_low), float(entry.clip_high)
        np.clip(channel, low, high, out=channel)
        channel -= np.float32((low + high) / 2)
        channel /= np.float32((high - low) / 2)
        return channel


@NORMALIZATION_SCHEMES.register("zscore")
class ZScoreNormalization(NormalizationScheme):
    """Per image: subtract its mean, divide by its std; with ``use_nonzero_mask`` the statistics
    come from the nonzero region and voxels outside it are set to 0."""

    def normalize(self, channel, entry, nonzero):
        if entry.use_nonzero_mask and nonzero is not None and nonzero.any():
            values = channel[nonzero]
            channel -= np.float32(values.mean())
            channel /= np.float32(max(float(values.std()), 1e-8))
            channel[~nonzero] = 0
            return channel
        mean, std = float(channel.mean()), float(channel.std())
        channel -= np.float32(mean)
        channel /= np.float32(max(std, 1e-8))
        return channel


@NORMALIZATION_SCHEMES.register("none")
class NoNormalization(NormalizationScheme):
    """Intensities are left as they are."""

    def normalize(self, channel, entry, nonzero):
        return channel


def normalize_channel(channel: np.ndarray, entry: ChannelNormalization,
                      nonzero: np.ndarray | None = None) -> np.ndarray:
    """Normalize one channel ``(z, y, x)`` with its plans entry; returns a new float32 array.

    ``nonzero`` is the case's nonzero mask (used by ``zscore`` with ``use_nonzero_mask``).
    """
    scheme = NORMALIZATION_SCHEMES.get(entry.scheme)()
    return scheme.normalize(channel.astype(np.float32, copy=True), entry, nonzero)


def normalize_image(image: np.ndarray, entries: Sequence[ChannelNormalization],
                    nonzero: np.ndarray | None = None) -> np.ndarray:
    """Normalize a ``(C, z, y, x)`` image channel by channel; returns float32."""
    if len(entries) != image.shape[0]:
        raise ValueError(f"image has {image.shape[0]} channels but the plans normalize {len(entries)}")
    return np.stack([normalize_channel(image[c], entries[c], nonzero) for c in range(image.shape[0])])
