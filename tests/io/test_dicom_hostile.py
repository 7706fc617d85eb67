"""Hostile and odd DICOM input: one-slice and multi-frame series, anonymised sources for DICOM-SEG,
truncated pixel data, DICOMDIR and other non-image files beside a series, per-case write failures."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")

from autoseg.errors import AutosegInputError  # noqa: E402
from autoseg.io.dicom import dicom_cases, find_series  # noqa: E402
from autoseg.io.images import read_image  # noqa: E402
from autoseg.synthetic.dicom_series import write_ct_series  # noqa: E402

SPACING = (3.0, 0.5, 0.5)  # (z, y, x) mm
ORIGIN = (-10.0, -12.0, 30.0)  # (x, y, z) mm, patient LPS
PLANS = SimpleNamespace(num_channels=1, configurations={}, evaluated_classes={1: (1,)}, class_names={1: "organ"},
                        regions_class_order=None)


class ThresholdPredictor:
    """Stands in for trained networks (predict_folder's ``predictor``): label 1 where HU > 0."""

    plans = PLANS
    predictors: list = []

    def __init__(self, *args, **kwargs):
        pass

    def predict_arrays(self, image, geometry, keep_probabilities=False):
        return (image[0] > 0).astype(np.uint8), None, {"geometry": geometry.to_dict()}, None


def volume(shape=(4, 8, 8)) -> np.ndarray:
    hu = np.full(shape, -500, np.int32)
    hu[:, 2:5, 3:7] = 100  # 12 foreground voxels per slice
    return hu


def edit(folder: Path, change) -> None:
    """Apply ``change(dataset, index)`` to every file of ``folder`` (sorted by name) and save it."""
    for index, path in enumerate(sorted(folder.glob("*.dcm"))):
        dataset = pydicom.dcmread(path)
        change(dataset, index)
        dataset.save_as(path, enforce_file_format=bool(dataset.file_meta.get("MediaStorageSOPClassUID")))


def blank_sop_class(dataset, index) -> None:
    """No SOP Class UID anywhere: blank in the dataset and in the file meta (a DICOM-SEG cannot be written)."""
    dataset.SOPClassUID = ""
    dataset.file_meta.MediaStorageSOPClassUID = ""


def predict(tmp_path: Path, inputs: Path, **options):
    from autoseg.inference.predict_folder import InferenceChoice, predict_folder

    return predict_folder(tmp_path / "work", inputs, tmp_path / "out", InferenceChoice(["fake"]), progress=False,
                          predictor=ThresholdPredictor(), **options)


# --- one slice: the through-plane spacing comes from the header ---------------------------------
@pytest.mark.parametrize("between, thickness, expected, said", [
    (2.0, 3.0, 2.0, "2 mm from its Spacing Between Slices"),
    (None, 3.0, 3.0, "3 mm from its Slice Thickness"),
    (None, None, 1.0, "warning: "),
])
def test_a_one_slice_series_takes_its_slice_spacing_from_the_header(tmp_path, capsys, between, thickness, expected,
                                                                     said):
    folder = tmp_path / "one"
    write_ct_series(volume((1, 8, 8)), folder, SPACING, ORIGIN)

    def change(dataset, index):
        del dataset.SliceThickness
        if thickness is not None:
            dataset.SliceThickness = thickness
        if between is not None:
            dataset.SpacingBetweenSlices = between

    edit(folder, change)
    array, geometry = read_image(folder)
    assert array.shape == (1, 8, 8) and geometry.spacing == pytest.approx((expected, 0.5, 0.5))
    lines = [line for line in capsys.readouterr().err.splitlines() if str(folder) in line]
    assert len(lines) == 1 and said in lines[0]
    from autoseg.io.dicom import through_plane_spacing

    assert through_plane_spacing(find_series(folder)[0].slices[0])[0] == expected


def test_a_one_slice_series_is_measured_and_written_with_its_slice_thickness(tmp_path):
    """report.json volumes, the NIfTI output and the DICOM-SEG's Pixel Measures follow Slice Thickness 3 mm."""
    pytest.importorskip("highdicom")
    write_ct_series(volume((1, 8, 8)), tmp_path / "in" / "single", SPACING, ORIGIN)
    report = predict(tmp_path, tmp_path / "in")
    assert report.predicted == ["single"] and not report.failed
    entry = json.loads((tmp_path / "out" / "report.json").read_text())["cases"]["single"]
    assert entry["classes"]["organ"]["volume_ml"] == pytest.approx(12 * 3.0 * 0.25 / 1000)
    assert read_image(tmp_path / "out" / "single.nii.gz")[1].spacing == pytest.approx(SPACING)
    shutil.rmtree(tmp_path / "out")
    assert predict(tmp_path, tmp_path / "in", output_format="dicom-seg").predicted == ["single"]
    seg = pydicom.dcmread(tmp_path / "out" / "single.dcm")
    measures = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert float(measures.SpacingBetweenSlices) == 3.0 and float(measures.SliceThickness) == 3.0


def test_a_multi_frame_file_reads_as_one_volume_with_its_spacing(tmp_path, capsys):
    folder = tmp_path / "frames"
    frames = volume((3, 8, 8)) + 1024
    write_ct_series(volume((1, 8, 8)), folder, SPACING, ORIGIN)

    def change(dataset, index):
        dataset.NumberOfFrames = 3
        dataset.PixelData = frames.astype(np.uint16).tobytes()

    edit(folder, change)
    array, geometry = read_image(folder)  # was a 4D (1, 3, 8, 8) array at 1 mm
    np.testing.assert_array_equal(array, frames - 1024)
    assert geometry.spacing == pytest.approx(SPACING)
    assert "one multi-frame file (3 frames); through-plane spacing 3 mm" in capsys.readouterr().err
    write_ct_series(volume((1, 8, 8)), folder, SPACING, ORIGIN, file_prefix="other")
    edit(folder, lambda dataset, index: setattr(dataset, "SeriesInstanceUID", "1.2.3.4"))  # one series of 2 files
    with pytest.raises(AutosegInputError, match=r"slice0000\.dcm is a multi-frame image \(3 frames\) in a series "
                                                r"of 2 files"):
        read_image(folder)  # was stacked into a 4D image


# --- DICOM-SEG of anonymised sources; failures of one case's writing ---------------------------
@pytest.mark.parametrize("attribute", ["PatientBirthDate", "PatientSex", "StudyID", "AccessionNumber",
                                       "ReferringPhysicianName", "StudyDate", "StudyTime", "PatientName",
                                       "SliceThickness"])
def test_a_dicom_seg_is_written_for_sources_without_a_type2_attribute(tmp_path, attribute):
    highdicom = pytest.importorskip("highdicom")
    from autoseg.io.dicom_seg import write_dicom_seg

    folder = tmp_path / "anonymised"
    write_ct_series(volume(), folder, SPACING, ORIGIN)
    edit(folder, lambda dataset, index: delattr(dataset, attribute))
    segmentation = (volume() > 0).astype(np.uint8)
    path = write_dicom_seg(segmentation, folder, {1: (1,)}, {1: "organ"}, tmp_path / "seg.dcm")
    seg = highdicom.seg.segread(path)
    assert seg.NumberOfFrames == 4
    if attribute != "SliceThickness":  # a Patient/Study attribute: present and empty in the SEG
        assert attribute in seg and not str(seg[attribute].value or "")
    assert not list(tmp_path.glob(".*"))  # no temporary left


@pytest.mark.parametrize("change, message", [
    (blank_sop_class, "slice0000.dcm: no SOP Class UID"),  # blank Study/Frame of Reference UIDs: generated
])
def test_a_source_a_dicom_seg_cannot_reference_is_one_line(tmp_path, change, message):
    pytest.importorskip("highdicom")
    from autoseg.io.dicom_seg import write_dicom_seg

    folder = tmp_path / "bad"
    write_ct_series(volume(), folder, SPACING, ORIGIN)
    edit(folder, change)
    with pytest.raises(AutosegInputError) as error:
        write_dicom_seg((volume() > 0).astype(np.uint8), folder, {1: (1,)}, {1: "organ"}, tmp_path / "seg.dcm")
    assert message in str(error.value) and "\n" not in str(error.value) and str(folder) in str(error.value)
    assert not (tmp_path / "seg.dcm").exists()


def test_a_case_whose_output_cannot_be_written_fails_alone(tmp_path):
    """A blank SOP Class UID in one of three series: that case fails with one line (its preview removed),
    the others get their DICOM-SEG and report.json lists all three."""
    pytest.importorskip("highdicom")
    inputs = tmp_path / "in"
    for name in ("a_good", "b_blank", "c_good"):
        write_ct_series(volume(), inputs / name, SPACING, ORIGIN)
    edit(inputs / "b_blank", blank_sop_class)
    report = predict(tmp_path, inputs, output_format="dicom-seg", previews=True)
    assert report.predicted == ["a_good", "c_good"] and list(report.failed) == ["b_blank"]
    reason = report.failed["b_blank"]
    assert "b_blank/slice0000.dcm: no SOP Class UID" in reason and "\n" not in reason
    written = sorted(path.name for path in (tmp_path / "out").iterdir() if not path.name.startswith("."))
    assert written == ["a_good.dcm", "a_good_preview.png", "c_good.dcm", "c_good_preview.png", "report.csv",
                       "report.json"]
    cases = json.loads((tmp_path / "out" / "report.json").read_text())["cases"]
    assert cases["b_blank"] == {"flag": "failed", "error": reason} and cases["c_good"]["flag"] == "unknown"


def test_predict_goes_on_after_a_failed_dicom_seg_and_exits_1(tmp_path, monkeypatch, capsys):
    pytest.importorskip("highdicom")
    import autoseg.inference.predict_folder as predict_folder
    from autoseg.cli import main

    monkeypatch.setattr(predict_folder, "FolderPredictor", ThresholdPredictor)
    monkeypatch.setattr(predict_folder.WorkDir, "load_plans", lambda self: PLANS)
    inputs = tmp_path / "in"
    for name in ("a_anonymised", "b_blank", "c_good"):
        write_ct_series(volume(), inputs / name, SPACING, ORIGIN)
    edit(inputs / "a_anonymised", lambda dataset, index: delattr(dataset, "PatientBirthDate"))
    edit(inputs / "b_blank", blank_sop_class)
    code = main(["predict", "-i", str(inputs), "-o", str(tmp_path / "out"), "-m", str(tmp_path / "work"),
                 "-c", "fake", "--no-tta", "--device", "cpu", "--output-format", "dicom-seg"])
    captured = capsys.readouterr()
    assert code == 1 and "2 predicted" in captured.out and "1 failed" in captured.out
    errors = [line for line in captured.err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "b_blank/slice0000.dcm: no SOP Class UID" in errors[0]
    assert "Traceback" not in captured.err
    assert (tmp_path / "out" / "a_anonymised.dcm").is_file() and (tmp_path / "out" / "c_good.dcm").is_file()


def test_a_bug_while_writing_one_case_fails_that_case_only(tmp_path, monkeypatch):
    import autoseg.inference.predict_folder as predict_folder

    real = predict_folder.write_segmentation

    def failing(segmentation, geometry, target):
        if "b_" in target.name:
            raise KeyError("")  # an error whose str() says nothing
        real(segmentation, geometry, target)

    monkeypatch.setattr(predict_folder, "write_segmentation", failing)
    for name in ("a_one", "b_two"):
        write_ct_series(volume(), tmp_path / "in" / name, SPACING, ORIGIN)
    report = predict(tmp_path, tmp_path / "in")
    assert report.predicted == ["a_one"] and "b_two.nii.gz: cannot be written (KeyError: " in report.failed["b_two"]


# --- truncated pixel data -----------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(3, 8, 8), (3, 40, 40)])  # pixel data under and over pydicom's defer size
def test_truncated_pixel_data_is_one_line_naming_the_file(tmp_path, shape):
    folder = tmp_path / "cut"
    files = write_ct_series(volume(shape), folder, SPACING, ORIGIN)
    content = files[1].read_bytes()
    files[1].write_bytes(content[:-40])
    with pytest.raises(AutosegInputError) as error:
        read_image(folder)
    needed = shape[1] * shape[2] * 2
    text = str(error.value)
    assert f"slice0001.dcm: pixel data is truncated ({needed - 40} of {needed} bytes)" in text
    assert "()" not in text and "\n" not in text and str(folder) in text


def test_an_undecodable_file_is_named_with_the_decoder_reason(tmp_path, monkeypatch):
    """When SimpleITK fails on a series the header checks passed, the file pydicom cannot decode is named."""
    import SimpleITK as sitk

    folder = tmp_path / "odd"
    files = write_ct_series(volume(), folder, SPACING, ORIGIN)
    edit(folder, lambda dataset, index: setattr(dataset, "BitsStored", 20) if index == 2 else None)

    def broken(self):
        raise RuntimeError("")

    monkeypatch.setattr(sitk.ImageSeriesReader, "Execute", broken)
    with pytest.raises(AutosegInputError) as error:
        read_image(folder)
    text = str(error.value)
    assert text.startswith(f"{files[2]}: pixel data cannot be decoded (") and "()" not in text


def test_an_unreadable_header_with_an_empty_message_is_still_one_line(tmp_path, monkeypatch):
    folder = tmp_path / "s"
    write_ct_series(volume(), folder, SPACING, ORIGIN)

    def empty_error(*args, **kwargs):
        raise ValueError()

    monkeypatch.setattr(pydicom, "dcmread", empty_error)
    with pytest.raises(AutosegInputError, match=r"slice0000\.dcm: cannot be read as DICOM \(ValueError\)$"):
        find_series(folder)


# --- non-image files beside a series ---------------------------------------------------------------
def write_dicomdir(series_folder: Path, where: Path) -> None:
    from pydicom.fileset import FileSet

    files = FileSet()
    for path in sorted(series_folder.glob("*.dcm")):
        files.add(path)
    files.write(tmp := where.parent / "fileset")
    shutil.copy(tmp / "DICOMDIR", where)
    shutil.rmtree(tmp)


def non_image_object(path: Path, modality: str, with_pixels: bool = False, series_uid: str | None = None) -> None:
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    classes = {"SEG": "1.2.840.10008.5.1.4.1.1.66.4", "PR": "1.2.840.10008.5.1.4.1.1.11.1",
               "SR": "1.2.840.10008.5.1.4.1.1.88.11", "RTSTRUCT": "1.2.840.10008.5.1.4.1.1.481.3"}
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = classes[modality], generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    dataset = Dataset()
    dataset.file_meta = meta
    dataset.SOPClassUID, dataset.SOPInstanceUID = classes[modality], meta.MediaStorageSOPInstanceUID
    dataset.Modality, dataset.SeriesInstanceUID = modality, series_uid or generate_uid()
    if with_pixels:
        dataset.Rows = dataset.Columns = 8
        dataset.BitsAllocated, dataset.BitsStored, dataset.SamplesPerPixel = 8, 8, 1
        dataset.PixelData = bytes(64)
    pydicom.dcmwrite(path, dataset, enforce_file_format=True)


def test_a_dicomdir_and_non_image_objects_beside_a_series_are_skipped(tmp_path, capsys):
    series = tmp_path / "input" / "patient"
    write_ct_series(volume(), series, SPACING, ORIGIN)
    write_dicomdir(series, series / "DICOMDIR")
    non_image_object(series / "seg.dcm", "SEG", with_pixels=True)
    non_image_object(series / "pr.dcm", "PR")
    non_image_object(series / "sr.dcm", "SR")
    uid = str(pydicom.dcmread(next(series.glob("slice*.dcm"))).SeriesInstanceUID)
    non_image_object(series / "rtstruct.dcm", "RTSTRUCT", series_uid=uid)  # even one claiming the series
    for name in ("Thumbs.db", "README.txt", ".DS_Store"):
        (series / name).write_bytes(b"not dicom " * 20)
    cases, problems = dicom_cases(tmp_path / "input", num_channels=1)
    assert problems == {} and list(cases) == ["patient"]
    array, geometry = read_image(series)
    np.testing.assert_array_equal(array, volume())
    assert geometry.spacing == pytest.approx(SPACING)
    notes = [line for line in capsys.readouterr().err.splitlines() if line.startswith("note: skipping")]
    assert any("DICOMDIR: a DICOMDIR" in line for line in notes)
    assert {"seg.dcm: a SEG", "pr.dcm: a PR", "sr.dcm: a SR", "rtstruct.dcm: a RTSTRUCT"} <= {
        line.split("/")[-1].split(" object")[0] for line in notes}


def test_a_dicomdir_beside_series_folders_is_skipped_in_a_predict_run(tmp_path):
    inputs = tmp_path / "in"
    write_ct_series(volume(), inputs / "patient" / "series1", SPACING, ORIGIN)
    write_dicomdir(inputs / "patient" / "series1", inputs / "patient" / "DICOMDIR")
    write_dicomdir(inputs / "patient" / "series1", inputs / "DICOMDIR")  # directly in the input folder too
    report = predict(tmp_path, inputs)
    assert report.predicted == ["patient"] and not report.failed


@pytest.mark.parametrize("name, media, sop, modality, pixels, rows, skipped", [
    ("DICOMDIR", "", "", "", False, False, "a DICOMDIR (media directory)"),
    ("x.dcm", "1.2.840.10008.1.3.10", "", "", False, False, "a DICOMDIR (media directory)"),
    ("x.dcm", "", "", "sr", False, False, "a SR object, not an image"),
    ("x.dcm", "", "1.2.3", "OT", False, False, "no pixel data (SOP Class 1.2.3: not an image)"),
    ("x.dcm", "", "", "", False, False, None),  # nothing readable: a damaged file, refused later
    ("x.dcm", "", "1.2.3", "CT", False, True, None),  # a CT slice without pixels: a damaged slice, refused later
    ("x.dcm", "", "1.2.3", "CT", True, True, None),
])
def test_which_files_are_not_images_of_a_series(name, media, sop, modality, pixels, rows, skipped):
    from autoseg.io.dicom import non_image_reason

    assert non_image_reason(name, media, sop, modality, pixels, rows) == skipped


# --- malformed geometry: one line naming the file, never a traceback or a silent 1 mm ---------------
@pytest.mark.parametrize("change, message", [
    (lambda dataset, index: setattr(dataset, "PixelSpacing", [0, 0]), "has Pixel Spacing [0.0, 0.0] mm (must be"),
    (lambda dataset, index: setattr(dataset, "ImagePositionPatient", [1.0, 2.0]),
     "has a malformed Image Position (Patient) ([1.0, 2.0]; 3 numbers expected)"),
    (lambda dataset, index: setattr(dataset, "ImageOrientationPatient", [0.0] * 6),
     "has an invalid Image Orientation (Patient) [0.0, 0.0, 0.0, 0.0, 0.0, 0.0]: row and column directions must"),
    (lambda dataset, index: setattr(dataset, "ImageOrientationPatient", [1.0, 0, 0, 1.0, 0, 0]), "not orthogonal"),
    (lambda dataset, index: delattr(dataset, "ImagePositionPatient") if index == 1 else None,
     "slice0001.dcm has no Image Position (Patient)"),
    (lambda dataset, index: (setattr(dataset, "Rows", 4), setattr(dataset, "PixelData", bytes(64)))
     if index == 1 else None, "slices of different sizes (8x8 in slice0000.dcm, 4x8 in slice0001.dcm)"),
])
def test_malformed_slice_geometry_is_one_line_naming_the_file(tmp_path, change, message):
    folder = tmp_path / "odd"
    write_ct_series(volume(), folder, SPACING, ORIGIN)
    edit(folder, change)
    with pytest.raises(AutosegInputError) as error:
        read_image(folder)
    assert message in str(error.value) and str(error.value).startswith(str(folder)) and "\n" not in str(error.value)


def test_a_series_number_that_is_not_a_number_is_ignored(tmp_path):
    from pydicom.dataelem import RawDataElement

    folder = tmp_path / "s"
    write_ct_series(volume(), folder, SPACING, ORIGIN)
    edit(folder, lambda dataset, index: dataset.__setitem__(0x00200011, RawDataElement(
        0x00200011, "IS", 4, b"ab  ", 0, False, True)))
    assert find_series(folder)[0].series_number is None  # was int('ab'): a ValueError traceback
    assert read_image(folder)[0].shape == (4, 8, 8)
