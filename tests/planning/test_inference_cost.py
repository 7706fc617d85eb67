"""Counting the work of predicting a case: windows and network passes."""

from __future__ import annotations

import math

import pytest

from autoseg.inference.sliding_window import sliding_window_starts
from autoseg.planning.inference_cost import count_windows, network_passes, windows_along_axis


@pytest.mark.parametrize(("shape", "patch"), [((40, 56, 40), (40, 56, 40)), ((150, 512, 512), (64, 160, 160)),
                                              ((33, 70, 21), (16, 32, 32)), ((7, 7), (8, 8))])
def test_window_count_is_the_layout_the_predictor_uses(shape, patch):
    padded = [max(size, p) for size, p in zip(shape, patch)]
    assert count_windows(shape, patch) == math.prod(len(axis) for axis in sliding_window_starts(padded, patch))


def test_passes_count_mirrorings_and_2d_slices():
    assert windows_along_axis(100, 40, 0.5) == 4
    assert network_passes((40, 56, 40), (40, 56, 40), [0, 1, 2]) == 8
    assert network_passes((40, 56, 40), (40, 56, 40), None) == 1
    assert network_passes((30, 56, 40), (56, 40), [0, 1]) == 30 * 4  # every slice, 4 mirrorings
