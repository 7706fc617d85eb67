"""2.5D planning: K neighbours from the slice spacing, and a 2.5d configuration wherever 2d is planned."""

from __future__ import annotations

import pytest

from autoseg.planning.slice_context import CONTEXT_MM, MAX_PLANNED_NEIGHBOURS, choose_neighbour_slices


@pytest.mark.parametrize(("spacings", "neighbours"), [
    ([1.0, 1.0, 1.2], 2),        # 1 mm MRI: 5 slices
    ([0.5, 0.6, 0.5], 3),        # thin slices: capped
    ([0.25], MAX_PLANNED_NEIGHBOURS),
    ([2.5, 2.5], 1),             # CT 2.5 mm: the nearest neighbours
    ([5.0, 5.0, 3.0], 1),        # thicker than the context: still one (0 would be 2d)
    ([8.0], 1),
    ([1.25], 2),
])
def test_neighbours_cover_the_context_distance_within_bounds(spacings, neighbours):
    chosen, reason = choose_neighbour_slices(spacings)
    assert chosen == neighbours
    assert f"{2 * chosen + 1} slices per input" in reason and "median slice spacing" in reason


def test_the_reason_says_when_a_bound_decided():
    assert "capped" in choose_neighbour_slices([0.2])[1]
    assert f"more than {CONTEXT_MM:g} mm" in choose_neighbour_slices([6.0])[1]


@pytest.mark.parametrize("bad", [[], [0.0], [-1.0], [float("nan")]])
def test_spacings_must_be_positive(bad):
    with pytest.raises(ValueError, match="slice spacings"):
        choose_neighbour_slices(bad)
