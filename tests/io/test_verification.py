"""Every dataset verification error is reported as one line naming the file, and nothing is written."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from helpers import make_raw_dataset, write_volume

from autoseg.cli import main
from autoseg.errors import AutosegInputError, DatasetVerificationError
from autoseg.io.dataset import list_training_cases, load_dataset_description
from autoseg.planning.fingerprint import extract_fingerprint


def problems_of(root: Path) -> list[str]:
    description = load_dataset_description(root)
    with pytest.raises(DatasetVerificationError) as caught:
        extract_fingerprint(description, num_workers=1, progress=False)
    return caught.value.problems


def single_problem(root: Path, *fragments: str) -> str:
    problems = problems_of(root)
    assert len(problems) == 1, problems
    for fragment in fragments:
        assert fragment in problems[0], problems[0]
    return problems[0]


def test_valid_dataset_passes(raw_dataset):
    fingerprint = extract_fingerprint(load_dataset_description(raw_dataset), num_workers=1, progress=False)
    assert fingerprint["num_cases"] == 3


def test_unreadable_file(raw_dataset):
    (raw_dataset / "imagesTr" / "case_001_0000.nii.gz").write_bytes(b"not an image")
    single_problem(raw_dataset, "case_001_0000.nii.gz", "cannot be read")


def test_missing_channel_file(tmp_path):
    root = make_raw_dataset(tmp_path / "D", channel_names={"0": "CT", "1": "PET"})
    (root / "imagesTr" / "case_002_0001.nii.gz").unlink()
    single_problem(root, "case_002_0001.nii.gz", "missing", "channel 1")


def test_missing_label_file(raw_dataset):
    (raw_dataset / "labelsTr" / "case_000.nii.gz").unlink()
    single_problem(raw_dataset, "labelsTr/case_000.nii.gz", "missing label")


def test_undeclared_label_value(raw_dataset):
    label = np.zeros((8, 16, 16), np.uint8)
    label[2:4, 2:4, 2:4] = 7
    write_volume(raw_dataset / "labelsTr" / "case_001.nii.gz", label, (2.0, 1.0, 1.0))
    single_problem(raw_dataset, "case_001.nii.gz", "[7]", "not declared")


@pytest.mark.parametrize("change, fragment", [
    ({"shape": (8, 16, 15)}, "shape"),
    ({"spacing": (2.5, 1.0, 1.0)}, "spacing"),
    ({"origin": (0.0, 0.0, 5.0)}, "origin"),
    ({"direction": (-1, 0, 0, 0, -1, 0, 0, 0, 1)}, "direction"),
])
def test_image_label_geometry_mismatch(raw_dataset, change, fragment):
    shape = change.get("shape", (8, 16, 16))
    write_volume(raw_dataset / "labelsTr" / "case_002.nii.gz", np.zeros(shape, np.uint8),
                 change.get("spacing", (2.0, 1.0, 1.0)), change.get("origin", (0.0, 0.0, 0.0)),
                 change.get("direction"))
    single_problem(raw_dataset, "labelsTr/case_002.nii.gz", fragment)


def test_small_geometry_differences_are_tolerated(raw_dataset):
    write_volume(raw_dataset / "labelsTr" / "case_002.nii.gz", np.zeros((8, 16, 16), np.uint8),
                 (2.0000001, 1.0, 1.0), (0.0, 0.0, 1e-5))
    extract_fingerprint(load_dataset_description(raw_dataset), num_workers=1, progress=False)


def test_nan_voxels(tmp_path):
    # NIfTI writers drop NaN, so this dataset uses MetaImage (.mha), another supported format.
    root = make_raw_dataset(tmp_path / "D", file_ending=".mha")
    image = np.zeros((8, 16, 16), np.float32)
    image[1, 2, 3] = np.nan
    image[1, 2, 4] = np.inf
    write_volume(root / "imagesTr" / "case_000_0000.mha", image, (2.0, 1.0, 1.0))
    single_problem(root, "case_000_0000.mha", "2 NaN/Inf")


def test_empty_dataset(tmp_path):
    root = make_raw_dataset(tmp_path / "D", num_cases=0)
    (root / "imagesTr").mkdir()
    (root / "labelsTr").mkdir()
    assert any("empty dataset" in problem for problem in problems_of(root))


def test_4d_image(raw_dataset):
    image = sitk.JoinSeries([sitk.GetImageFromArray(np.zeros((8, 16, 16), np.float32))] * 2)
    sitk.WriteImage(image, str(raw_dataset / "imagesTr" / "case_001_0000.nii.gz"))
    single_problem(raw_dataset, "case_001_0000.nii.gz", "4D")


def test_float_label_files_with_integer_values_are_accepted(raw_dataset):
    label = np.zeros((8, 16, 16), np.float32)
    label[2:5, 4:8, 4:8] = 1.0
    write_volume(raw_dataset / "labelsTr" / "case_001.nii.gz", label, (2.0, 1.0, 1.0))
    extract_fingerprint(load_dataset_description(raw_dataset), num_workers=1, progress=False)


def test_float_label_with_fractions_is_rejected(raw_dataset):
    label = np.zeros((8, 16, 16), np.float32)
    label[2, 4, 4] = 0.5
    write_volume(raw_dataset / "labelsTr" / "case_001.nii.gz", label, (2.0, 1.0, 1.0))
    single_problem(raw_dataset, "case_001.nii.gz", "non-integer")


def test_several_problems_are_all_reported(raw_dataset):
    (raw_dataset / "labelsTr" / "case_000.nii.gz").unlink()
    (raw_dataset / "imagesTr" / "case_001_0000.nii.gz").write_bytes(b"garbage")
    assert len(problems_of(raw_dataset)) == 2


def test_dataset_json_errors(tmp_path):
    root = tmp_path / "D"
    root.mkdir()
    with pytest.raises(AutosegInputError, match="dataset.json: file not found"):
        load_dataset_description(root)
    (root / "dataset.json").write_text("{broken")
    with pytest.raises(AutosegInputError, match="invalid JSON"):
        load_dataset_description(root)
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "labels": {"organ": 1},
                                                   "file_ending": ".nii.gz"}))
    with pytest.raises(AutosegInputError, match="background"):
        load_dataset_description(root)
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "CT"}, "file_ending": ".nii.gz",
                                                   "labels": {"background": 0, "organ": 1, "tumour": 5}}))
    with pytest.raises(AutosegInputError, match=r"dataset.json: label values must be consecutive 0..2 \(as in "
                                                r"nnU-Net\), got \[0, 1, 5\], missing \[2, 3, 4\]"):
        load_dataset_description(root)


def test_cli_reports_problems_and_writes_nothing(raw_dataset, tmp_path, capsys):
    (raw_dataset / "labelsTr" / "case_000.nii.gz").unlink()
    work = tmp_path / "work"
    assert main(["plan", str(raw_dataset), "-o", str(work), "-j", "1"]) == 1
    error = capsys.readouterr().err
    assert "case_000.nii.gz: missing label file" in error
    assert not work.exists()


def test_list_cases_groups_channels(tmp_path):
    root = make_raw_dataset(tmp_path / "D", channel_names={"0": "T1", "1": "T2"})
    cases = list_training_cases(load_dataset_description(root))
    assert [case.case_id for case in cases] == ["case_000", "case_001", "case_002"]
    assert [path.name for path in cases[0].image_files] == ["case_000_0000.nii.gz", "case_000_0001.nii.gz"]
