"""Normalization schemes on hand-made arrays."""

import numpy as np
import pytest

from autoseg.plans import ChannelNormalization
from autoseg.plans.normalization import normalize_channel, normalize_image


def test_ct_clips_then_uses_dataset_statistics():
    scheme = ChannelNormalization(0, "CT", "ct", clip_low=-100, clip_high=300, mean=100, std=50)
    result = normalize_channel(np.array([-1000.0, 0.0, 100.0, 2000.0], np.float32), scheme)
    np.testing.assert_allclose(result, [-4.0, -2.0, 0.0, 4.0])


def test_ct_window_maps_the_window_to_minus_one_one():
    scheme = ChannelNormalization(0, "CT", "ct_window", clip_low=-200, clip_high=500)
    result = normalize_channel(np.array([-1000.0, -200.0, 150.0, 500.0, 3000.0], np.float32), scheme)
    np.testing.assert_allclose(result, [-1.0, -1.0, 0.0, 1.0, 1.0])


def test_zscore_per_image():
    data = np.random.default_rng(0).normal(50, 7, (4, 5, 6)).astype(np.float32)
    result = normalize_channel(data, ChannelNormalization(0, "MRI", "zscore"))
    assert result.mean() == pytest.approx(0, abs=1e-5)
    assert result.std() == pytest.approx(1, abs=1e-5)


def test_zscore_inside_nonzero_mask_keeps_background_zero():
    data = np.zeros((4, 6, 6), np.float32)
    data[:, 1:5, 1:5] = np.random.default_rng(1).normal(300, 20, (4, 4, 4))
    mask = data != 0
    result = normalize_channel(data, ChannelNormalization(0, "T1", "zscore", use_nonzero_mask=True), mask)
    assert np.all(result[~mask] == 0)
    assert result[mask].mean() == pytest.approx(0, abs=1e-5)
    assert result[mask].std() == pytest.approx(1, abs=1e-4)


def test_channel_count_must_match():
    with pytest.raises(ValueError, match="channels"):
        normalize_image(np.zeros((2, 3, 3, 3), np.float32), [ChannelNormalization(0, "CT", "none")])
