import json

import numpy as np
import pytest
import SimpleITK as sitk

from autoseg.errors import AutosegInputError
from autoseg.evaluation.evaluate import evaluate_arrays, evaluate_folders
from autoseg.evaluation.metrics import compute_case_metrics

LABELS = {"background": 0, "liver": 1, "tumour": 2}
SITK_SPACING = (0.5, 1.0, 3.0)  # SimpleITK (x, y, z) order
SPACING = (3.0, 1.0, 0.5)  # array (z, y, x) order


def write(path, array, spacing=SITK_SPACING, origin=(0.0, 0.0, 0.0)):
    image = sitk.GetImageFromArray(array.astype(np.uint8))
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))


def make_case(seed):
    rng = np.random.default_rng(seed)
    reference = np.zeros((6, 12, 14), dtype=np.uint8)
    reference[1:4, 2:7, 2:8] = 1
    reference[2:5, 7:10, 8:12] = 2
    prediction = reference.copy()
    prediction[1:4, 2:7, 2 + seed % 2:4] = 0
    prediction[rng.integers(0, 6), rng.integers(0, 12), rng.integers(0, 14)] = 2
    return reference, prediction


@pytest.fixture
def folders(tmp_path):
    cases = {f"case_{i:03d}": make_case(i) for i in range(3)}
    for case_id, (reference, prediction) in cases.items():
        write(tmp_path / "ref" / f"{case_id}.nii.gz", reference)
        write(tmp_path / "pred" / f"{case_id}.nii.gz", prediction)
    return tmp_path / "ref", tmp_path / "pred", cases


def test_evaluate_folders_matches_array_metrics(folders, tmp_path):
    reference_dir, prediction_dir, cases = folders
    result = evaluate_folders(reference_dir, prediction_dir, LABELS, output_dir=tmp_path / "eval")
    assert sorted(result["per_case"]) == sorted(cases)
    for case_id, (reference, prediction) in cases.items():
        expected = compute_case_metrics(reference, prediction, SPACING, [1, 2])
        assert result["per_case"][case_id] == expected
    case_0 = result["per_case"]["case_000"][1]
    assert case_0["fn"] == 3 * 5 * 2 and case_0["fp"] == 0
    assert case_0["reference_volume_ml"] == pytest.approx(90 * 1.5 / 1000)
    summary = result["summary"]
    assert summary["label_names"] == {1: "liver", 2: "tumour"}
    dice_1 = [result["per_case"][c][1]["dice"] for c in cases]
    assert summary["per_class"][1]["dice"]["mean"] == pytest.approx(np.mean(dice_1))
    saved = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert saved["summary"]["foreground_mean"]["dice"] == pytest.approx(summary["foreground_mean"]["dice"])
    assert len((tmp_path / "eval" / "per_case.csv").read_text().splitlines()) == 1 + 3 * 2


def test_evaluate_folders_with_worker_processes(folders):
    reference_dir, prediction_dir, _ = folders
    serial = evaluate_folders(reference_dir, prediction_dir, LABELS)
    parallel = evaluate_folders(reference_dir, prediction_dir, LABELS, num_workers=2)
    assert parallel["per_case"] == serial["per_case"]
    assert list(parallel["per_case"]) == list(serial["per_case"])


def test_missing_prediction_is_named(folders):
    reference_dir, prediction_dir, _ = folders
    (prediction_dir / "case_001.nii.gz").unlink()
    with pytest.raises(AutosegInputError) as error:
        evaluate_folders(reference_dir, prediction_dir, LABELS)
    message = str(error.value)
    assert "case_001.nii.gz" in message and "no prediction" in message
    assert "\n" not in message


def test_missing_reference_is_named(folders):
    reference_dir, prediction_dir, cases = folders
    write(prediction_dir / "extra.nii.gz", cases["case_000"][1])
    with pytest.raises(AutosegInputError, match=r"no reference for 1 prediction\(s\): extra.nii.gz"):
        evaluate_folders(reference_dir, prediction_dir, LABELS)


def test_many_missing_files_are_abbreviated(folders):
    reference_dir, prediction_dir, cases = folders
    for i in range(10, 18):
        write(reference_dir / f"case_{i:03d}.nii.gz", cases["case_000"][0])
    with pytest.raises(AutosegInputError) as error:
        evaluate_folders(reference_dir, prediction_dir, LABELS)
    message = str(error.value)
    assert "8 reference case(s)" in message
    assert "case_014.nii.gz" in message and "case_015.nii.gz" not in message
    assert message.endswith("and 3 more")


def test_geometry_mismatch_names_the_prediction(folders):
    reference_dir, prediction_dir, cases = folders
    write(prediction_dir / "case_002.nii.gz", cases["case_002"][1], spacing=(0.5, 1.0, 2.0))
    with pytest.raises(AutosegInputError) as error:
        evaluate_folders(reference_dir, prediction_dir, LABELS)
    message = str(error.value)
    assert message.startswith(str(prediction_dir / "case_002.nii.gz") + ": spacing")
    assert str(reference_dir / "case_002.nii.gz") in message


@pytest.mark.parametrize("side", ["ref", "pred"])
def test_label_values_that_dataset_json_does_not_declare_are_refused(folders, side):
    reference_dir, prediction_dir, cases = folders
    undeclared = cases["case_001"][0 if side == "ref" else 1].copy()
    undeclared[0, 0, :3] = [3, 7, 3]
    write(reference_dir.parent / side / "case_001.nii.gz", undeclared)
    with pytest.raises(AutosegInputError, match=rf"{side}/case_001.nii.gz: label values \[3, 7\] are not declared in "
                                                r"dataset.json \(declared: 0..2\)"):
        evaluate_folders(reference_dir, prediction_dir, LABELS)


def test_shape_mismatch_and_empty_folder(folders, tmp_path):
    reference_dir, prediction_dir, _ = folders
    write(prediction_dir / "case_001.nii.gz", np.zeros((6, 12, 13), dtype=np.uint8))
    with pytest.raises(AutosegInputError, match="case_001.nii.gz: shape"):
        evaluate_folders(reference_dir, prediction_dir, LABELS)
    (tmp_path / "empty_ref").mkdir()
    (tmp_path / "empty_pred").mkdir()
    with pytest.raises(AutosegInputError, match="no \\*.nii.gz files"):
        evaluate_folders(tmp_path / "empty_ref", tmp_path / "empty_pred", LABELS)
    with pytest.raises(AutosegInputError, match="folder not found"):
        evaluate_folders(tmp_path / "nowhere", prediction_dir, LABELS)


def test_two_dimensional_files(tmp_path):
    reference = np.zeros((10, 10), dtype=np.uint8)
    prediction = np.zeros_like(reference)
    reference[2:6, 2:6] = 1
    prediction[2:6, 4:8] = 1
    for folder, array in (("ref", reference), ("pred", prediction)):
        write(tmp_path / folder / "img.nii.gz", array, spacing=(0.5, 1.0), origin=(0.0, 0.0))
    result = evaluate_folders(tmp_path / "ref", tmp_path / "pred", {"background": 0, "a": 1})
    metrics = result["per_case"]["img"][1]
    assert metrics["dice"] == pytest.approx(0.5)
    assert metrics["hd95_mm"] == pytest.approx(1.0)  # in-plane contour distance


def test_evaluate_arrays():
    pairs = [(f"c{i}", *make_case(i), SPACING) for i in range(2)]
    result = evaluate_arrays(pairs, [0, 1, 2])
    assert sorted(result["per_case"]) == ["c0", "c1"]
    assert result["per_case"]["c1"] == compute_case_metrics(pairs[1][1], pairs[1][2], SPACING, [1, 2])
    assert result["summary"]["labels"] == [1, 2]
    named = evaluate_arrays(pairs, LABELS)
    assert named["summary"]["label_names"] == {1: "liver", 2: "tumour"}
    assert named["per_case"] == result["per_case"]
    with pytest.raises(ValueError, match="twice"):
        evaluate_arrays(pairs + pairs[:1], [1, 2])
