"""Model selection on crafted cross-validation probabilities in a fake work folder."""

import copy
import json

import numpy as np
import pytest
from helpers import write_volume

from autoseg.errors import AutosegInputError
from autoseg.evaluation.selection import complete_configurations, format_candidates, select_model
from autoseg.io.images import read_label
from autoseg.io.probabilities import save_probabilities
from autoseg.planning.hardware import cpu_budget
from autoseg.planning.planner import plan_experiment
from autoseg.workdir import WorkDir

SHAPE = (4, 8, 8)
SPACING = (2.0, 1.0, 1.0)
NUM_CASES = 10
LABELS = {"background": 0, "organ": 1, "tumour": 2}
CASES = [f"case_{i:03d}" for i in range(NUM_CASES)]
#: Organ voxels that configuration "2d" gets wrong in make_work's pair test (4) and "3d_fullres" (8).
REGION_A = (slice(1, 2), slice(2, 3), slice(2, 6))
REGION_B = (slice(1, 3), slice(5, 6), slice(2, 6))


def reference_label():
    label = np.zeros(SHAPE, dtype=np.uint8)
    label[1:3, 2:6, 2:6] = 1  # 32 voxels, 24 of them organ
    label[1:3, 3:5, 3:5] = 2  # 8 voxels
    return label


def fingerprint():
    cases = {case: {"shape": list(SHAPE), "spacing": list(SPACING), "direction": [1, 0, 0, 0, 1, 0, 0, 0, 1],
                    "bounding_box": [[0, s] for s in SHAPE], "shape_after_crop": list(SHAPE),
                    "class_voxels": {"1": 24, "2": 8}} for case in CASES}
    stats = {"mean": 100.0, "std": 50.0, "median": 90.0, "min": -1000.0, "max": 2000.0,
             "percentile_00_5": -50.0, "percentile_99_5": 300.0, "num_samples": 1000}
    return {"dataset_name": "Test", "channel_names": {"0": "CT"}, "labels": LABELS, "file_ending": ".nii.gz",
            "channels": {"0": stats}, "cases": cases}


def soft_probabilities(reference, wrong_region=None, wrong_label=0, wrong_p=0.6, confidence=0.9):
    """Probabilities favouring the reference (``confidence``), except ``wrong_label`` with ``wrong_p`` in a region."""
    num_classes = len(LABELS)
    probabilities = np.full((num_classes, *reference.shape), (1 - confidence) / (num_classes - 1), np.float32)
    np.put_along_axis(probabilities, reference[None].astype(np.int64), confidence, axis=0)
    if wrong_region is not None:
        for k in range(num_classes):
            probabilities[k][wrong_region] = np.where(reference[wrong_region] == k, 1 - wrong_p, 0.0)
        probabilities[wrong_label][wrong_region] = wrong_p
    return probabilities


def make_work(tmp_path, predictions, missing_folds=None):
    """A work folder whose configurations' validation probabilities are ``predictions[name](reference)``.

    Plans have "2d", "3d_fullres" and a copy "3d_lowres"; ``missing_folds[name]`` lists folds left out.
    """
    raw, work = tmp_path / "raw", tmp_path / "work"
    reference = reference_label()
    for case in CASES:
        write_volume(raw / "labelsTr" / f"{case}.nii.gz", reference, SPACING)
    _, geometry = read_label(raw / "labelsTr" / f"{CASES[0]}.nii.gz")
    plans = plan_experiment(fingerprint(), str(raw), cpu_budget(8 * 2**30))
    lowres = copy.deepcopy(plans.configurations["3d_fullres"])
    lowres.name = "3d_lowres"
    plans.configurations["3d_lowres"] = lowres
    WorkDir(work).save_plans(plans)
    folds = [{"val": CASES[2 * k: 2 * k + 2], "train": CASES[: 2 * k] + CASES[2 * k + 2:]} for k in range(5)]
    (work / "splits.json").write_text(json.dumps({"mode": "random", "seed": 0, "folds": folds}))
    for name, predict in predictions.items():
        for k, fold in enumerate(folds):
            if k in (missing_folds or {}).get(name, []):
                continue
            for case in fold["val"]:
                save_probabilities(predict(reference), geometry,
                                   work / "results" / name / f"fold_{k}" / "validation" / case)
    return work


def by_members(result):
    return {tuple(c["configurations"]): c for c in result["candidates"]}


def test_pair_with_complementary_errors_is_chosen(tmp_path):
    work = make_work(tmp_path, {
        "2d": lambda ref: soft_probabilities(ref, REGION_A),
        "3d_fullres": lambda ref: soft_probabilities(ref, REGION_B),
    })
    result = select_model(work, progress=False)

    assert result["configurations"] == ["2d", "3d_fullres"]
    candidates = by_members(result)
    assert list(candidates) == [("2d",), ("3d_fullres",), ("2d", "3d_fullres")]
    organ_a, organ_b = 2 * 20 / (24 + 20), 2 * 16 / (24 + 16)
    assert candidates[("2d",)]["per_class"] == pytest.approx({"organ": organ_a, "tumour": 1.0})
    assert candidates[("2d",)]["mean_dice"] == pytest.approx((organ_a + 1) / 2)
    assert candidates[("3d_fullres",)]["mean_dice"] == pytest.approx((organ_b + 1) / 2)
    assert candidates[("2d", "3d_fullres")]["mean_dice"] == pytest.approx(1.0)
    assert candidates[("2d",)]["std"] == pytest.approx(0.0)
    assert candidates[("2d",)]["worst"] == pytest.approx((organ_a + 1) / 2)
    assert result["folds"] == [0, 1, 2, 3, 4] and result["checkpoint"] == "final"
    assert result["postprocessing"] == []
    assert result["cross_validation_dice"] == {"before_postprocessing": pytest.approx(1.0),
                                               "after_postprocessing": pytest.approx(1.0)}
    assert json.loads((work / "inference_plan.json").read_text()) == result

    table = format_candidates(result)
    assert "* 2d + 3d_fullres" in table
    assert "organ" in table and "tumour" in table and "before postprocessing" in table


def test_single_configuration_wins_when_the_other_is_confidently_wrong(tmp_path):
    work = make_work(tmp_path, {
        "2d": lambda ref: soft_probabilities(ref),
        "3d_fullres": lambda ref: soft_probabilities(ref, REGION_B, wrong_p=1.0),
    })
    result = select_model(work, progress=False)
    candidates = by_members(result)
    assert result["configurations"] == ["2d"]
    assert candidates[("2d",)]["mean_dice"] == pytest.approx(1.0)
    # The pair keeps the confident errors: averaged, background 0.525 beats organ 0.45.
    assert candidates[("2d", "3d_fullres")]["mean_dice"] == pytest.approx(candidates[("3d_fullres",)]["mean_dice"])
    assert candidates[("3d_fullres",)]["mean_dice"] < 1.0


def test_ties_go_to_the_single_configuration(tmp_path):
    work = make_work(tmp_path, {"2d": soft_probabilities, "3d_fullres": soft_probabilities})
    result = select_model(work, progress=False)
    assert result["configurations"] == ["2d"]
    assert all(c["mean_dice"] == pytest.approx(1.0) for c in result["candidates"])


def test_incomplete_configurations_are_excluded(tmp_path):
    work = make_work(tmp_path, {
        "2d": lambda ref: soft_probabilities(ref, REGION_A),
        "3d_fullres": lambda ref: soft_probabilities(ref, REGION_B),
        "3d_lowres": soft_probabilities,  # would be perfect, but fold 2 is missing
    }, missing_folds={"3d_lowres": [2]})
    assert complete_configurations(work) == ["2d", "3d_fullres"]
    result = select_model(work, progress=False)
    assert [c["configurations"] for c in result["candidates"]] == [["2d"], ["3d_fullres"], ["2d", "3d_fullres"]]
    # A configuration trained on the spacing splits is not a candidate either.
    (work / "results" / "3d_fullres__split_spacing").mkdir()
    assert complete_configurations(work) == ["2d", "3d_fullres"]

    with pytest.raises(AutosegInputError, match=r"3d_lowres: fold\(s\) 2 not trained"):
        select_model(work, ["3d_lowres"], progress=False)
    with pytest.raises(AutosegInputError, match="no configuration '4d'"):
        select_model(work, ["4d"], progress=False)


def test_error_when_no_configuration_is_complete(tmp_path):
    work = make_work(tmp_path, {"2d": soft_probabilities}, missing_folds={"2d": [3, 4]})
    with pytest.raises(AutosegInputError) as error:
        select_model(work, progress=False)
    message = str(error.value)
    assert "2d: fold(s) 3, 4" in message and "3d_fullres: fold(s) 0, 1, 2, 3, 4" in message
    assert "all 5 folds must be trained" in message and "-c 2d -f all" in message


def test_largest_component_postprocessing_is_learned(tmp_path):
    def with_blob(reference):
        probabilities = soft_probabilities(reference, REGION_A)
        blob = (slice(0, 1), slice(7, 8), slice(0, 2))  # spurious organ voxels far from the object
        probabilities[:, blob[0], blob[1], blob[2]] = np.array([0.05, 0.9, 0.05], np.float32)[:, None, None, None]
        return probabilities

    work = make_work(tmp_path, {"2d": with_blob, "3d_fullres": with_blob}, missing_folds={"3d_fullres": [0]})
    result = select_model(work, progress=False)

    assert result["configurations"] == ["2d"]
    assert {"operation": "keep_largest_component", "labels": None} in result["postprocessing"]
    dice = result["cross_validation_dice"]
    organ_before, organ_after = 2 * 20 / (24 + 22), 2 * 20 / (24 + 20)
    assert dice["before_postprocessing"] == pytest.approx((organ_before + 1) / 2)
    assert dice["after_postprocessing"] == pytest.approx((organ_after + 1) / 2)
    assert dice["before_postprocessing"] == pytest.approx(result["candidates"][0]["mean_dice"])
    assert result["postprocessing_report"]["tried"][0]["kept"] is True
    assert "keep_largest_component (whole foreground)" in format_candidates(result)


def test_report_has_surface_metrics_spread_stability_and_plot(tmp_path):
    work = make_work(tmp_path, {
        "2d": lambda ref: soft_probabilities(ref, REGION_A),
        "3d_fullres": lambda ref: soft_probabilities(ref, REGION_B),
    })
    result = select_model(work, progress=False)
    candidates = by_members(result)
    single = candidates[("2d",)]
    organ = single["per_class_metrics"]["organ"]
    assert organ["dice"]["mean"] == pytest.approx(single["per_class"]["organ"])
    # 4 organ voxels of one row missed: every surface voxel of the prediction lies on the reference's
    assert organ["hd95_mm"]["mean"] > 0 and organ["hd95_mm"]["n_undefined"] == 0
    assert 0 < organ["nsd"]["mean"] < 1
    assert single["per_class_metrics"]["tumour"]["hd95_mm"]["mean"] == 0.0
    assert single["percentile_5"] == pytest.approx(single["worst"])  # every case is alike
    assert len(single["worst_cases"]) == 5
    assert single["worst_cases"][0] == {"case": "case_000", "dice": pytest.approx(single["worst"]),
                                        "shape": list(SHAPE), "foreground_ml": pytest.approx(32 * 2.0 / 1000)}
    assert set(single["per_case_dice"]) == set(CASES)

    stability = result["stability"]
    assert stability["single"] == ["2d"] and stability["ensemble"] == ["2d", "3d_fullres"]
    assert stability["ensemble_more_stable"] is True
    assert result["acquisition_split"] is None

    png = (work / "ensemble_report.png").read_bytes()
    assert png.startswith(b"\x89PNG")
    table = format_candidates(result)
    for text in ("HD95 mm", "NSD", "5th pct", "stability of the per-case Dice", "is more stable than 2d",
                 "worst cases of 2d + 3d_fullres (Dice, image voxels, reference foreground):\n"
                 "  case_000: 1.0000, 4x8x8, 0.1 mL", "new scanner/protocol: not measured",
                 "changed 0 of 10 cases"):
        assert text in table, text


def add_acquisition_folds(work, predictions):
    """Folds by acquisition (other validation groups than the random ones) with these predictions."""
    reference = reference_label()
    _, geometry = read_label(work.parent / "raw" / "labelsTr" / f"{CASES[0]}.nii.gz")
    folds = [{"val": [CASES[k], CASES[k + 5]], "train": [c for c in CASES if c not in (CASES[k], CASES[k + 5])]}
             for k in range(5)]
    WorkDir(work).write_splits("spacing", folds, 0)
    for name, predict in predictions.items():
        for k, fold in enumerate(folds):
            for case in fold["val"]:
                save_probabilities(predict(reference), geometry,
                                   work / "results" / f"{name}__split_spacing" / f"fold_{k}" / "validation" / case)


def test_folds_by_acquisition_give_the_gap_and_do_not_change_the_choice(tmp_path):
    work = make_work(tmp_path, {"2d": soft_probabilities, "3d_fullres": lambda ref: soft_probabilities(ref, REGION_B)})
    # On folds by acquisition 3d_fullres would be perfect and 2d worse: the choice still follows the random folds.
    add_acquisition_folds(work, {"2d": lambda ref: soft_probabilities(ref, REGION_A), "3d_fullres": soft_probabilities})
    result = select_model(work, progress=False)
    assert result["configurations"] == ["2d"]
    split = result["acquisition_split"]
    assert split["num_cases"] == NUM_CASES
    rows = {tuple(row["configurations"]): row for row in split["per_candidate"]}
    assert set(rows) == {("2d",), ("3d_fullres",), ("2d", "3d_fullres")}
    organ_a = 2 * 20 / (24 + 20)
    assert rows[("2d",)]["random"] == pytest.approx(1.0)
    assert rows[("2d",)]["acquisition"] == pytest.approx((organ_a + 1) / 2)
    assert split["chosen"]["gap"] == pytest.approx(1.0 - (organ_a + 1) / 2)
    assert rows[("3d_fullres",)]["gap"] < 0
    table = format_candidates(result)
    assert f"2d is expected to lose about {1.0 - (organ_a + 1) / 2:.3f} mean Dice" in table


def test_incomplete_acquisition_folds_are_reported_as_not_measured(tmp_path):
    work = make_work(tmp_path, {"2d": soft_probabilities, "3d_fullres": lambda ref: soft_probabilities(ref, REGION_B)})
    add_acquisition_folds(work, {"3d_fullres": soft_probabilities})
    (work / "results" / "3d_fullres__split_spacing" / "fold_4" / "validation" / f"{CASES[4]}.npz").unlink()
    result = select_model(work, progress=False)
    assert result["configurations"] == ["2d"] and result["acquisition_split"] is None

    add_acquisition_folds(work, {"3d_fullres": soft_probabilities})
    result = select_model(work, progress=False)
    assert [row["configurations"] for row in result["acquisition_split"]["per_candidate"]] == [["3d_fullres"]]
    assert "not measured for 2d (folds by acquisition complete for: 3d_fullres)" in format_candidates(result)
