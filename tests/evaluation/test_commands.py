"""``autoseg evaluate`` and ``autoseg ensemble`` through their argparse handlers."""

import argparse
import csv
import json

import numpy as np
import pytest
from helpers import write_volume

from autoseg.commands import ensemble, evaluate
from autoseg.errors import AutosegInputError
from autoseg.io.images import read_label
from autoseg.io.probabilities import save_probabilities
from autoseg.planning.hardware import cpu_budget
from autoseg.planning.planner import plan_experiment
from autoseg.workdir import WorkDir

SPACING = (2.0, 1.0, 1.0)
LABELS = {"background": 0, "liver": 1, "tumour": 2}


def run(argv):
    parser = argparse.ArgumentParser(prog="autoseg")
    subparsers = parser.add_subparsers(dest="command", required=True)
    evaluate.add_parser(subparsers)
    ensemble.add_parser(subparsers)
    args = parser.parse_args([str(a) for a in argv])
    return args.handler(args)


def reference_label():
    label = np.zeros((4, 8, 8), dtype=np.uint8)
    label[1:3, 2:6, 2:6] = 1
    label[1:3, 3:5, 3:5] = 2
    return label


@pytest.fixture
def evaluation_folders(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    (raw / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": LABELS,
                                                  "numTraining": 2, "file_ending": ".nii.gz"}))
    for index in range(2):
        reference = reference_label()
        prediction = reference.copy()
        prediction[1, 2, 2:2 + index + 1] = 0  # miss 1 or 2 liver voxels
        write_volume(tmp_path / "ref" / f"case_{index}.nii.gz", reference, SPACING)
        write_volume(tmp_path / "pred" / f"case_{index}.nii.gz", prediction, SPACING)
    return tmp_path


def test_evaluate_end_to_end(evaluation_folders, capsys):
    root = evaluation_folders
    code = run(["evaluate", "-r", root / "ref", "-p", root / "pred", "-l", root / "raw" / "dataset.json",
                "-o", root / "eval", "--tolerance-mm", "2"])
    assert code == 0
    printed = capsys.readouterr().out
    assert "liver" in printed and "tumour" in printed and "hd95_mm" in printed and "nsd" in printed
    assert "volume agreement" in printed and "95% LoA mL" in printed
    summary = json.loads((root / "eval" / "summary.json").read_text())["summary"]
    liver_dice = [2 * (24 - m) / (24 + 24 - m) for m in (1, 2)]
    assert summary["per_class"]["1"]["dice"]["mean"] == pytest.approx(np.mean(liver_dice))
    assert summary["per_class"]["2"]["dice"]["mean"] == pytest.approx(1.0)
    # Each missed voxel is 2 mm^3 = 0.002 mL.
    volume = summary["per_class"]["1"]["volume_agreement"]["difference_ml"]
    assert volume["mean"] == pytest.approx(-0.003)
    with open(root / "eval" / "per_case.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["case_id"], r["label_name"]) for r in rows] == [
        ("case_0", "liver"), ("case_0", "tumour"), ("case_1", "liver"), ("case_1", "tumour")]


def test_evaluate_defaults_to_the_prediction_folder_and_accepts_the_dataset_folder(evaluation_folders):
    root = evaluation_folders
    assert run(["evaluate", "-r", root / "ref", "-p", root / "pred", "-l", root / "raw"]) == 0
    assert (root / "pred" / "summary.json").is_file() and (root / "pred" / "per_case.csv").is_file()


def test_evaluate_reports_input_problems(evaluation_folders):
    root = evaluation_folders
    (root / "pred" / "case_1.nii.gz").unlink()
    with pytest.raises(AutosegInputError, match=r"no prediction for 1 reference case\(s\): case_1.nii.gz"):
        run(["evaluate", "-r", root / "ref", "-p", root / "pred", "-l", root / "raw"])
    with pytest.raises(AutosegInputError, match="dataset.json not found"):
        run(["evaluate", "-r", root / "ref", "-p", root / "pred", "-l", root / "missing.json"])
    with pytest.raises(AutosegInputError, match="--tolerance-mm"):
        run(["evaluate", "-r", root / "ref", "-p", root / "pred", "-l", root / "raw", "--tolerance-mm", "-1"])


@pytest.mark.parametrize("argv, message", [
    (["ensemble", "WORK", "-i", "a", "b", "-o", "out"], "not both"),
    (["ensemble"], "give WORK_DIR"),
    (["ensemble", "-i", "a", "b"], "needs both -i/--input and -o/--output"),
    (["ensemble", "-i", "a", "b", "-o", "out", "-c", "2d"], "belongs to model selection"),
    (["ensemble", "WORK", "--save-probabilities"], "belong"),
])
def test_ensemble_modes_are_exclusive(argv, message):
    with pytest.raises(AutosegInputError, match=message):
        run(argv)


def test_ensemble_folders_with_postprocessing_from_an_inference_plan(tmp_path, capsys):
    write_volume(tmp_path / "geometry.nii.gz", np.zeros((2, 4, 4), np.uint8), SPACING)
    _, geometry = read_label(tmp_path / "geometry.nii.gz")
    segmentation = np.zeros((2, 4, 4), dtype=np.int64)
    segmentation[0, 0:2, 0:2] = 1
    segmentation[1, 3, 3] = 1  # spurious
    probabilities = np.eye(3, dtype=np.float16)[segmentation].transpose(3, 0, 1, 2)
    for folder in ("a", "b"):
        save_probabilities(probabilities, geometry, tmp_path / folder / "case_0")
    plan = tmp_path / "inference_plan.json"
    plan.write_text(json.dumps({"configurations": ["2d"], "postprocessing": [
        {"operation": "keep_largest_component", "labels": None}]}))

    code = run(["ensemble", "-i", tmp_path / "a", tmp_path / "b", "-o", tmp_path / "out",
                "--postprocessing", plan, "--save-probabilities"])

    assert code == 0
    assert "ensembled 1 case(s) from 2 folder(s) with 1 postprocessing step(s)" in capsys.readouterr().out
    result, _ = read_label(tmp_path / "out" / "case_0.nii.gz")
    assert np.count_nonzero(result) == 4 and result[1, 3, 3] == 0
    assert (tmp_path / "out" / "case_0.npz").is_file()

    plan.write_text(json.dumps({"steps": []}))
    with pytest.raises(AutosegInputError, match="no 'postprocessing' entry"):
        run(["ensemble", "-i", tmp_path / "a", "-o", tmp_path / "out2", "--postprocessing", plan])


def test_ensemble_work_dir_selects_and_writes_the_inference_plan(tmp_path, capsys):
    raw, work = tmp_path / "raw", tmp_path / "work"
    cases = [f"case_{i}" for i in range(5)]
    reference = reference_label()
    for case in cases:
        write_volume(raw / "labelsTr" / f"{case}.nii.gz", reference, SPACING)
    _, geometry = read_label(raw / "labelsTr" / "case_0.nii.gz")
    fingerprint = {
        "dataset_name": "T", "channel_names": {"0": "CT"}, "labels": LABELS, "file_ending": ".nii.gz",
        "channels": {"0": {"mean": 0.0, "std": 1.0, "median": 0.0, "min": -1.0, "max": 1.0,
                           "percentile_00_5": -1.0, "percentile_99_5": 1.0, "num_samples": 10}},
        "cases": {case: {"shape": [4, 8, 8], "spacing": list(SPACING), "direction": [1, 0, 0, 0, 1, 0, 0, 0, 1],
                         "bounding_box": [[0, 4], [0, 8], [0, 8]], "shape_after_crop": [4, 8, 8],
                         "class_voxels": {"1": 24, "2": 8}} for case in cases}}
    WorkDir(work).save_plans(plan_experiment(fingerprint, str(raw), cpu_budget(8 * 2**30)))
    folds = [{"train": [c for c in cases if c != case], "val": [case]} for case in cases]
    (work / "splits.json").write_text(json.dumps({"mode": "random", "seed": 0, "folds": folds}))
    probabilities = np.eye(3, dtype=np.float16)[reference].transpose(3, 0, 1, 2)
    for k, case in enumerate(cases):
        save_probabilities(probabilities, geometry,
                           work / "results" / "3d_fullres" / f"fold_{k}" / "validation" / case)

    assert run(["ensemble", work]) == 0
    printed = capsys.readouterr().out
    assert "* 3d_fullres" in printed and "inference_plan.json" in printed
    plan = json.loads((work / "inference_plan.json").read_text())
    assert plan["configurations"] == ["3d_fullres"] and plan["postprocessing"] == []
