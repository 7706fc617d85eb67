"""Spread of per-case Dice, best single configuration against the ensemble, acquisition-split gap."""

import numpy as np
import pytest

from autoseg.evaluation.stability import (
    acquisition_gap,
    compare_spread,
    per_case_spread,
    stability_comparison,
)


def candidate(members, per_case):
    return {"configurations": list(members), "mean_dice": float(np.mean(list(per_case.values()))),
            **per_case_spread(per_case)}


def test_spread_lists_the_worst_cases_with_their_size():
    dice = {f"case_{i:02d}": value for i, value in enumerate([0.9, 0.5, 0.8, 0.5, 0.95, 0.7, 0.85])}
    sizes = {case: {"shape": [4, 8, 8], "foreground_ml": float(i)} for i, case in enumerate(dice)}
    spread = per_case_spread(dice, sizes, worst_listed=3)
    values = np.array(list(dice.values()))
    assert spread["std"] == pytest.approx(values.std(ddof=0))
    assert spread["percentile_5"] == pytest.approx(np.percentile(values, 5))
    assert spread["worst"] == 0.5
    # lowest first, ties by name
    assert [c["case"] for c in spread["worst_cases"]] == ["case_01", "case_03", "case_05"]
    assert spread["worst_cases"][0] == {"case": "case_01", "dice": 0.5, "shape": [4, 8, 8], "foreground_ml": 1.0}
    with pytest.raises(ValueError):
        per_case_spread({})


def test_an_ensemble_with_a_higher_floor_is_more_stable():
    single = candidate(["3d_fullres"], {"a": 0.9, "b": 0.9, "c": 0.4})
    ensemble = candidate(["2d", "3d_fullres"], {"a": 0.88, "b": 0.88, "c": 0.7})
    result = compare_spread(single, ensemble)
    assert result["ensemble_more_stable"] is True
    assert result["worst"] == [0.4, 0.7]
    assert "2d + 3d_fullres is more stable than 3d_fullres" in result["verdict"]

    worse = candidate(["2d", "3d_fullres"], {"a": 0.95, "b": 0.95, "c": 0.3})
    result = compare_spread(single, worse)
    assert result["ensemble_more_stable"] is False
    assert "neither its worst case nor its 5th percentile is higher" in result["verdict"]


def test_the_best_single_is_compared_with_the_chosen_pair_or_the_best_pair():
    a = candidate(["2d"], {"x": 0.8, "y": 0.6})
    b = candidate(["3d_fullres"], {"x": 0.9, "y": 0.7})
    c = candidate(["3d_lowres"], {"x": 0.5, "y": 0.5})
    ab = candidate(["2d", "3d_fullres"], {"x": 0.9, "y": 0.8})
    bc = candidate(["3d_fullres", "3d_lowres"], {"x": 0.85, "y": 0.75})
    chosen_pair = stability_comparison([a, b, c, ab, bc], ["3d_fullres", "3d_lowres"])
    assert chosen_pair["single"] == ["3d_fullres"] and chosen_pair["ensemble"] == ["3d_fullres", "3d_lowres"]
    chosen_single = stability_comparison([a, b, c, ab, bc], ["3d_fullres"])
    assert chosen_single["ensemble"] == ["2d", "3d_fullres"]  # the best pair
    assert stability_comparison([a], ["2d"]) is None


def test_acquisition_gap_per_candidate_and_for_the_chosen_one():
    random = [candidate(["2d"], {"x": 0.9, "y": 0.8}), candidate(["3d_fullres"], {"x": 0.95, "y": 0.85}),
              candidate(["2d", "3d_fullres"], {"x": 0.95, "y": 0.9})]
    acquisition = [candidate(["2d"], {"x": 0.8, "y": 0.7})]
    gap = acquisition_gap(random, acquisition, ["2d", "3d_fullres"])
    assert gap["per_candidate"] == [{"configurations": ["2d"], "random": pytest.approx(0.85),
                                     "acquisition": pytest.approx(0.75), "gap": pytest.approx(0.10)}]
    assert gap["chosen"] is None
    assert acquisition_gap(random, acquisition, ["2d"])["chosen"]["gap"] == pytest.approx(0.10)
