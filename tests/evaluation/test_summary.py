import csv
import json

import numpy as np
import pytest

from autoseg.evaluation.metrics import METRIC_NAMES
from autoseg.evaluation.summary import (
    format_table,
    limits_of_agreement,
    metric_statistics,
    summarize,
    write_results,
)


def entry(dice, hd95, reference_ml, predicted_ml, fp_components=0):
    difference = predicted_ml - reference_ml
    return {
        "dice": dice, "iou": None if dice is None else dice / (2 - dice), "tp": 1, "fp": 0, "fn": 0,
        "hd95_mm": hd95, "msd_mm": None if hd95 is None else hd95 / 2, "nsd": dice,
        "reference_volume_ml": reference_ml, "predicted_volume_ml": predicted_ml,
        "volume_difference_ml": difference,
        "volume_difference_percent": None if reference_ml == 0 else 100 * difference / reference_ml,
        "false_positive_components": fp_components, "false_negative_components": 0,
    }


@pytest.fixture
def per_case():
    return {
        "case_a": {1: entry(0.9, 2.0, 10.0, 11.0), 2: entry(0.5, 8.0, 4.0, 3.0, fp_components=2)},
        "case_b": {1: entry(0.8, 4.0, 20.0, 23.0), 2: entry(0.0, None, 2.0, 0.0)},
        "case_c": {1: entry(0.7, 3.0, 30.0, 35.0), 2: entry(0.0, None, 0.0, 1.0, fp_components=1)},
    }


def test_per_class_statistics_match_numpy(per_case):
    summary = summarize(per_case, [1, 2])
    assert summary["num_cases"] == 3
    dice_1 = summary["per_class"][1]["dice"]
    values = np.array([0.9, 0.8, 0.7])
    assert dice_1["mean"] == pytest.approx(values.mean())
    assert dice_1["std"] == pytest.approx(values.std(ddof=0))
    assert dice_1["median"] == pytest.approx(0.8)
    assert dice_1["worst"] == pytest.approx(0.7) and dice_1["best"] == pytest.approx(0.9)
    assert (dice_1["n"], dice_1["n_undefined"]) == (3, 0)

    hd_1 = summary["per_class"][1]["hd95_mm"]
    assert hd_1["worst"] == 4.0 and hd_1["best"] == 2.0  # distances: worst = max
    assert hd_1["std"] == pytest.approx(np.std([2.0, 4.0, 3.0]))

    # Undefined distances are counted, not averaged.
    hd_2 = summary["per_class"][2]["hd95_mm"]
    assert (hd_2["n"], hd_2["n_undefined"]) == (1, 2)
    assert hd_2["mean"] == 8.0 and hd_2["std"] == 0.0 and hd_2["worst"] == 8.0
    dice_2 = summary["per_class"][2]["dice"]
    assert dice_2["mean"] == pytest.approx(0.5 / 3) and dice_2["worst"] == 0.0 and dice_2["best"] == 0.5
    fp_2 = summary["per_class"][2]["false_positive_components"]
    assert fp_2["mean"] == 1.0 and fp_2["worst"] == 2 and fp_2["best"] == 0


def test_foreground_mean_is_mean_of_class_means(per_case):
    summary = summarize(per_case, [1, 2])
    assert summary["foreground_mean"]["dice"] == pytest.approx((0.8 + 0.5 / 3) / 2)
    assert summary["foreground_mean"]["hd95_mm"] == pytest.approx((3.0 + 8.0) / 2)


def test_all_undefined_metric():
    stats = metric_statistics([None, None], higher_is_better=False)
    assert stats == {"mean": None, "std": None, "median": None, "worst": None, "best": None,
                     "n": 0, "n_undefined": 2}
    summary = summarize({"a": {1: entry(0.0, None, 1.0, 0.0)}}, [1])
    assert summary["foreground_mean"]["hd95_mm"] is None
    assert summary["foreground_mean"]["dice"] == 0.0


def test_limits_of_agreement_by_hand(per_case):
    # differences 1, 3, 5 mL: mean 3, sample sd 2, limits 3 -/+ 3.92
    loa = limits_of_agreement([1.0, 3.0, 5.0])
    assert loa["mean"] == pytest.approx(3.0)
    assert loa["sd"] == pytest.approx(2.0)
    assert loa["loa_lower"] == pytest.approx(-0.92)
    assert loa["loa_upper"] == pytest.approx(6.92)
    assert loa["n"] == 3

    agreement = summarize(per_case, [1, 2])["per_class"][1]["volume_agreement"]
    assert agreement["difference_ml"]["loa_upper"] == pytest.approx(6.92)
    assert agreement["mean_reference_volume_ml"] == pytest.approx(20.0)
    assert agreement["mean_predicted_volume_ml"] == pytest.approx(23.0)
    # percent differences 10, 15, 16.666...
    percent = np.array([10.0, 15.0, 50 / 3])
    assert agreement["difference_percent"]["mean"] == pytest.approx(percent.mean())
    assert agreement["difference_percent"]["sd"] == pytest.approx(percent.std(ddof=1))
    assert agreement["difference_percent"]["loa_lower"] == pytest.approx(
        percent.mean() - 1.96 * percent.std(ddof=1))

    # class 2: the empty reference of case_c has no percent difference
    agreement_2 = summarize(per_case, [1, 2])["per_class"][2]["volume_agreement"]
    assert agreement_2["difference_percent"]["n"] == 2
    assert agreement_2["difference_ml"]["n"] == 3
    assert agreement_2["difference_percent"]["mean"] == pytest.approx((-25.0 + -100.0) / 2)


def test_limits_of_agreement_need_two_values():
    assert limits_of_agreement([2.0]) == {"mean": 2.0, "sd": None, "loa_lower": None, "loa_upper": None,
                                          "n": 1}
    assert limits_of_agreement([None])["mean"] is None


def test_summary_accepts_string_label_keys_after_json_round_trip(per_case):
    reloaded = json.loads(json.dumps(per_case))
    assert summarize(reloaded, [1, 2])["per_class"][2]["hd95_mm"] == summarize(per_case, [1, 2])[
        "per_class"][2]["hd95_mm"]


def test_format_table(per_case):
    summary = summarize(per_case, [1, 2])
    table = format_table(summary, {1: "liver", 2: "tumour"})
    lines = table.splitlines()
    table_lines = [line for line in lines if not line.startswith((" ", "undefined"))]
    assert len({len(line) for line in table_lines}) == 1  # fixed width
    liver = next(line for line in lines if line.startswith("liver"))
    assert "0.800 ± 0.082" in liver  # dice mean ± std
    assert "0.700" in liver  # worst dice
    tumour = next(line for line in lines if line.startswith("tumour"))
    assert "8.000 ± 0.000" in tumour
    foreground = next(line for line in lines if line.startswith("foreground mean"))
    assert f"{(0.8 + 0.5 / 3) / 2:.3f}" in foreground
    assert "dice" in lines[0] and "hd95_mm" in lines[0] and "nsd" in lines[0]
    # without names the label values are used
    assert format_table(summary, metrics=("dice",)).splitlines()[3].startswith("1 ")


def test_write_results(tmp_path, per_case):
    summary = summarize(per_case, [1, 2])
    summary["label_names"] = {1: "liver", 2: "tumour"}
    write_results(per_case, summary, tmp_path / "out" / "summary.json", tmp_path / "out" / "per_case.csv")
    data = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert data["summary"]["per_class"]["1"]["dice"]["mean"] == pytest.approx(0.8)
    assert data["per_case"]["case_b"]["2"]["hd95_mm"] is None
    with open(tmp_path / "out" / "per_case.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 6
    assert list(rows[0]) == ["case_id", "label", "label_name", *METRIC_NAMES]
    row = next(r for r in rows if r["case_id"] == "case_b" and r["label"] == "2")
    assert row["label_name"] == "tumour"
    assert row["hd95_mm"] == "" and float(row["dice"]) == 0.0
    assert [p.name for p in (tmp_path / "out").iterdir() if p.name.startswith(".")] == []


def test_format_table_reports_undefined_counts(per_case):
    table = format_table(summarize(per_case, [1, 2]), {1: "liver", 2: "tumour"})
    assert table.splitlines()[-1] == "undefined (one mask empty), left out: hd95_mm tumour x2"
