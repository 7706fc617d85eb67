"""Rules for a machine shared with other busy processes: threads, noisy timings, the demo's floor."""

from __future__ import annotations

import pytest

from autoseg.model.device import threads_for
from autoseg.planning.training_cost import extended_time_budget
from autoseg.training.speed import robust_step_seconds
from autoseg.utils.parallel import busy_cores


@pytest.mark.parametrize("cores, busy, threads", [(2, 0.0, 2), (2, 0.4, 2), (2, 1.0, 1), (2, 2.0, 1), (2, 3.5, 1),
                                                  (16, 3.2, 13)])
def test_compute_threads_are_the_free_cores(cores, busy, threads):
    assert threads_for(cores, busy) == threads


def test_busy_cores_is_a_share_of_the_machine():
    import os

    assert 0.0 <= busy_cores(0.05) <= (os.cpu_count() or 1) + 1e-6


def test_a_noisy_measurement_takes_the_lower_quartile():
    assert robust_step_seconds([1.0, 1.1, 0.9, 1.0, 1.05]) == pytest.approx(1.0)  # quiet: the median
    noisy = [0.4, 0.41, 1.2, 0.42, 1.8, 0.4, 0.9, 0.43, 1.5, 0.41]  # another process came and went
    assert robust_step_seconds(noisy) == pytest.approx(0.4075)


def test_the_budget_grows_to_reach_a_minimum_of_iterations_within_its_cap():
    assert extended_time_budget(480, 1250, 1000, 960) == 480  # enough fit
    assert extended_time_budget(480, 600, 1000, 960) == pytest.approx(800)  # half the speed: 800 s for 1,000
    assert extended_time_budget(480, 300, 1000, 960) == 960  # capped at twice the budget
    assert extended_time_budget(480, 300, None, None) == 480
