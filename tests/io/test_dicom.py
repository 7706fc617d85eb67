"""DICOM series input: discovery by Series Instance UID, sorting, HU, geometry and one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("pydicom")

from autoseg.errors import AutosegInputError  # noqa: E402
from autoseg.io.dicom import dicom_cases, find_series, series_problem  # noqa: E402
from autoseg.io.images import image_file_problem, read_image  # noqa: E402
from autoseg.synthetic.dicom_series import write_ct_series  # noqa: E402

SPACING = (2.5, 0.7, 0.6)  # (z, y, x) mm
ORIGIN = (-90.0, -110.0, 35.0)  # (x, y, z) mm, patient LPS


def ct_volume(shape=(7, 9, 11), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(-1024, 2000, size=shape)


def test_a_shuffled_series_reads_in_hounsfield_units_with_its_geometry(tmp_path):
    volume = ct_volume()
    write_ct_series(volume, tmp_path / "ct", SPACING, ORIGIN, intercept=-1024,
                    file_order=np.random.default_rng(3).permutation(volume.shape[0]))
    array, geometry = read_image(tmp_path / "ct")
    np.testing.assert_array_equal(array, volume)  # stored + intercept, slices sorted by position
    assert geometry.shape == volume.shape and geometry.spacing == pytest.approx(SPACING)
    assert geometry.sitk_origin == pytest.approx(ORIGIN)
    assert image_file_problem(tmp_path / "ct") is None


def test_two_series_in_one_folder_are_two_cases_found_by_uid(tmp_path):
    folder = tmp_path / "input" / "patient1"
    write_ct_series(ct_volume(seed=1), folder, SPACING, ORIGIN, series_number=3, file_prefix="a")
    write_ct_series(ct_volume((4, 9, 11), seed=2), folder, SPACING, ORIGIN, series_number=5, file_prefix="b")
    assert [len(series.slices) for series in find_series(folder)] == [7, 4]
    cases, problems = dicom_cases(tmp_path / "input", num_channels=1)
    assert problems == {} and sorted(cases) == ["patient1_s3", "patient1_s5"]
    array, _ = read_image(cases["patient1_s5"][0])  # folder#SeriesInstanceUID names one of them
    np.testing.assert_array_equal(array, ct_volume((4, 9, 11), seed=2))
    two_channels, _ = dicom_cases(tmp_path / "input", num_channels=2)  # one case, channels by Series Number
    assert list(two_channels) == ["patient1"] and read_image(two_channels["patient1"][1])[0].shape == (4, 9, 11)
    _, wrong = dicom_cases(tmp_path / "input", num_channels=3)
    assert "holds 2 DICOM series, the model needs one per channel (3" in wrong["patient1"]
    with pytest.raises(AutosegInputError, match="holds 2 DICOM series"):
        read_image(folder)


def remove_slice(folder: Path, index: int) -> None:
    sorted(folder.glob("*.dcm"))[index].unlink()


@pytest.mark.parametrize("damage, message", [
    ("missing", "about 1 missing slice(s) between"),
    ("uneven", "uneven slice spacing"),
    ("no_pixels", "has no pixel data"),
    ("tilt", "gantry tilt of"),
    ("duplicate", "two slices at one position"),
])
def test_bad_series_are_one_line_errors_naming_the_series(tmp_path, damage, message):
    import pydicom

    folder = tmp_path / "bad"
    write_ct_series(ct_volume(), folder, SPACING, ORIGIN, series_number=7, description="abdomen")
    files = sorted(folder.glob("*.dcm"))
    if damage == "missing":
        files[3].unlink()
    else:
        for index, path in enumerate(files):
            ds = pydicom.dcmread(path)
            if damage == "uneven" and index >= 4:
                ds.ImagePositionPatient[2] = float(ds.ImagePositionPatient[2]) + 0.3
            elif damage == "no_pixels" and index == 2:
                del ds.PixelData
            elif damage == "tilt":
                ds.ImagePositionPatient[1] = float(ds.ImagePositionPatient[1]) + index * 0.5
            elif damage == "duplicate" and index == 2:
                ds.ImagePositionPatient = list(pydicom.dcmread(files[1]).ImagePositionPatient)
            ds.save_as(path, enforce_file_format=True)
    assert message in series_problem(find_series(folder)[0].slices)
    with pytest.raises(AutosegInputError) as error:
        read_image(folder)
    text = str(error.value)
    assert text.startswith(f"{folder} (DICOM series #7 'abdomen'): ") and message in text and "\n" not in text
    assert message in image_file_problem(folder)


def test_a_damaged_folder_is_a_problem_of_its_case_and_the_others_go_on(tmp_path):
    write_ct_series(ct_volume(), tmp_path / "input" / "good", SPACING, ORIGIN)
    broken = tmp_path / "input" / "broken"
    broken.mkdir()
    (broken / "x.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\xff" * 20)  # a preamble, then garbage
    cases, problems = dicom_cases(tmp_path / "input", num_channels=1)
    assert list(cases) == ["good"] and "x.dcm: no Series Instance UID" in problems["broken"]


def test_a_dataset_whose_images_are_dicom_series_plans_and_preprocesses(tmp_path):
    """imagesTr/{case}_0000/ series folders with NIfTI labels: autoseg plan reads them like files."""
    from autoseg.commands.plan import run_planning
    from autoseg.synthetic import SyntheticDatasetSpec, generate_synthetic_dataset
    from autoseg.workdir import WorkDir

    dataset = generate_synthetic_dataset(tmp_path, SyntheticDatasetSpec(num_training=3, num_test=0,
                                                                        in_plane_shape=(16, 16),
                                                                        field_of_view_z_mm=(30.0, 40.0)))
    for image_path in sorted((dataset / "imagesTr").glob("*_0000.nii.gz")):
        volume, geometry = read_image(image_path)
        hu = np.clip(np.rint(volume), -1024, 3000)
        write_ct_series(hu, dataset / "imagesTr" / image_path.name[: -len(".nii.gz")], geometry.spacing,
                        geometry.sitk_origin, direction=geometry.sitk_direction)
        image_path.unlink()
    run_planning(dataset, tmp_path / "work", num_workers=1, progress=False)
    fingerprint = WorkDir(tmp_path / "work").read_fingerprint()
    assert fingerprint["num_cases"] == 3 and fingerprint["channels"]["0"]["percentile_00_5"] >= -1024


def test_a_hash_sign_in_a_folder_name_is_not_a_series_path(tmp_path):
    from autoseg.io.dicom import is_series_path

    folder = tmp_path / "scan#1"
    write_ct_series(ct_volume(), folder, SPACING, ORIGIN)
    assert is_series_path(folder) and read_image(folder)[0].shape == (7, 9, 11)
    plain = tmp_path / "data#old" / "case_0000.nii.gz"
    plain.parent.mkdir()
    plain.write_bytes(b"")
    assert not is_series_path(plain)
