"""DICOM as hospitals and public archives send it: every UID blanked by an anonymiser (SOP Class only in
the file meta), compressed transfer syntaxes, several series in one folder, enhanced multi-frame CT,
and DICOM-SEG output for such sources."""

from __future__ import annotations

import io
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

pydicom = pytest.importorskip("pydicom")

from pydicom import uid as uids  # noqa: E402

from autoseg.errors import AutosegInputError  # noqa: E402
from autoseg.io.dicom import SERIES_SEPARATOR, dicom_cases, find_series, series_at  # noqa: E402
from autoseg.io.images import read_image  # noqa: E402
from autoseg.synthetic.dicom_series import write_ct_series  # noqa: E402

SPACING = (2.5, 0.7, 0.6)  # (z, y, x) mm
ORIGIN = (-11.0, -12.0, 30.0)  # (x, y, z) mm, patient LPS
UID_KEYWORDS = ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID", "FrameOfReferenceUID")
SHUFFLED = [3, 1, 0, 7, 2, 4, 6, 5]


def noisy(shape=(8, 32, 32), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(-1024, 2000, size=shape)


def smooth(shape=(8, 32, 32)) -> np.ndarray:
    """A volume lossy codecs keep within a few HU: a ramp with a bright block."""
    z, y, x = np.indices(shape)
    hu = -400 + 10 * x + 6 * y + 20 * z
    hu[:, 8:20, 10:22] = 300
    return hu


def anonymise(path: Path, syntax: str | None = None, **compress_options) -> None:
    """Blank every UID of ``path`` like the public series (SOP Class kept in the file meta), then compress it."""
    dataset = pydicom.dcmread(path)
    if syntax == uids.DeflatedExplicitVRLittleEndian:
        dataset.file_meta.TransferSyntaxUID = syntax
    elif syntax == uids.JPEGBaseline8Bit:
        jpeg_baseline(dataset)
    elif syntax is not None:
        dataset.compress(syntax, **compress_options)  # gives a new SOP Instance UID: blanked after
    for keyword in UID_KEYWORDS:
        setattr(dataset, keyword, "")
    dataset.save_as(path, enforce_file_format=True)


def jpeg_baseline(dataset) -> None:
    """Re-encode an unsigned 16-bit slice as 8-bit JPEG baseline (Pillow): stored = HU/8 + 128."""
    from PIL import Image
    from pydicom.encaps import encapsulate

    hu = dataset.pixel_array.astype(float) + float(dataset.RescaleIntercept)
    stored = np.clip(np.rint(hu / 8 + 128), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(stored).save(buffer, format="JPEG", quality=95)
    dataset.BitsAllocated = dataset.BitsStored = 8
    dataset.HighBit = 7
    dataset.RescaleSlope, dataset.RescaleIntercept = 8.0, -1024.0
    dataset.PixelData = encapsulate([buffer.getvalue()])
    dataset["PixelData"].VR = "OB"
    dataset.file_meta.TransferSyntaxUID = uids.JPEGBaseline8Bit


def public_series(volume: np.ndarray, folder: Path, syntax: str | None = uids.JPEG2000Lossless,
                  series_number: int = 1, spacing=SPACING, origin=ORIGIN, prefix: str = "IMG",
                  **compress_options) -> list[Path]:
    files = write_ct_series(volume, folder, spacing, origin, series_number=series_number, file_prefix=prefix,
                            file_order=SHUFFLED[: len(volume)] if len(volume) == 8 else None)
    for path in files:
        anonymise(path, syntax, **compress_options)
    return files


# --- 1. blank UIDs: grouped by folder and attributes, a stable synthetic UID, one warning line -------
def test_a_public_series_with_every_uid_blank_and_jpeg2000_reads(tmp_path, capsys):
    folder = tmp_path / "in" / "LIDC-like"
    volume = noisy()
    files = public_series(volume, folder)
    header = pydicom.dcmread(files[0])
    assert header.SeriesInstanceUID == "" and header.SOPClassUID == "" and header.file_meta.TransferSyntaxUID == \
        uids.JPEG2000Lossless and header.file_meta.MediaStorageSOPClassUID == uids.CTImageStorage
    array, geometry = read_image(folder)  # was: "no Series Instance UID (not an image of a DICOM series ...)"
    np.testing.assert_array_equal(array, volume)
    assert geometry.spacing == pytest.approx(SPACING) and geometry.sitk_origin == pytest.approx(ORIGIN)
    warnings = [line for line in capsys.readouterr().err.splitlines() if "without Series Instance UID" in line]
    assert len(warnings) == 1 and warnings[0].startswith(f"warning: {folder}: 8 DICOM file(s) without Series ")
    assert "grouped by folder, Study Instance UID, Modality, Series Number" in warnings[0]
    (series,) = find_series(folder)
    assert series.grouped_by and series.series_uid.startswith("2.25.")
    assert find_series(folder)[0].series_uid == series.series_uid  # stable: the same on every reading
    cases, problems = dicom_cases(tmp_path / "in", num_channels=1)
    assert problems == {} and cases == {"LIDC-like": {0: folder}}
    by_id = Path(f"{folder}{SERIES_SEPARATOR}{series.series_uid}")
    assert series_at(by_id).series_uid == series.series_uid
    np.testing.assert_array_equal(read_image(by_id)[0], volume)


def test_interleaved_series_without_uids_are_kept_apart_by_series_number(tmp_path, capsys):
    """Two series of one folder, slices interleaved (1.25 mm apart together), all UIDs blank: two volumes of
    2.5 mm, each its own case, never one volume of uneven spacing."""
    folder = tmp_path / "in" / "patient"
    first, second = noisy(seed=1), noisy(seed=2)
    public_series(first, folder, series_number=2, prefix="a")
    public_series(second, folder, series_number=3, prefix="b",
                  origin=(ORIGIN[0], ORIGIN[1], ORIGIN[2] + SPACING[0] / 2))
    found = find_series(folder)
    assert [(s.series_number, len(s.slices)) for s in found] == [(2, 8), (3, 8)]
    assert found[0].series_uid != found[1].series_uid
    cases, problems = dicom_cases(tmp_path / "in", num_channels=1)
    assert problems == {} and sorted(cases) == ["patient_s2", "patient_s3"]
    for name, expected in (("patient_s2", first), ("patient_s3", second)):
        array, geometry = read_image(cases[name][0])
        np.testing.assert_array_equal(array, expected)
        assert geometry.spacing == pytest.approx(SPACING)
    err = capsys.readouterr().err
    assert "grouped by folder" in err and "into 2 series (#2 2.25." in err
    assert f"note: {folder}: 2 DICOM series, each segmented as its own case (patient_s2, patient_s3)" in err


def test_series_without_uids_and_one_series_number_are_split_by_geometry_into_distinct_cases(tmp_path):
    folder = tmp_path / "in" / "patient"
    public_series(noisy((4, 32, 32)), folder, series_number=4, prefix="a")
    public_series(noisy((3, 16, 16)), folder, uids.RLELossless, series_number=4, prefix="b")
    cases, problems = dicom_cases(tmp_path / "in", num_channels=1)
    assert problems == {} and sorted(cases) == ["patient_s4", "patient_s4_2"]  # was one case overwriting the other
    assert sorted(read_image(cases[name][0])[0].shape for name in cases) == [(3, 16, 16), (4, 32, 32)]


def test_several_series_with_uids_become_channels_by_series_number_and_say_so(tmp_path, capsys):
    folder = tmp_path / "in" / "mr"
    write_ct_series(noisy((3, 8, 8), 1), folder, SPACING, ORIGIN, series_number=7, file_prefix="t2")
    write_ct_series(noisy((3, 8, 8), 2), folder, SPACING, ORIGIN, series_number=5, file_prefix="t1")
    cases, _ = dicom_cases(tmp_path / "in", num_channels=2)
    np.testing.assert_array_equal(read_image(cases["mr"][0])[0], noisy((3, 8, 8), 2))
    assert f"note: {folder}: 2 DICOM series are the channels of case mr by Series Number (#5 -> 0, #7 -> 1)" in \
        capsys.readouterr().err


@pytest.mark.parametrize("damage, message", [("missing", "about 1 missing slice(s)"),
                                             ("uneven", "uneven slice spacing")])
def test_a_series_without_uids_with_a_missing_slice_or_uneven_spacing_is_one_line(tmp_path, damage, message):
    folder = tmp_path / "gap"
    files = public_series(noisy(), folder)
    by_position = sorted(files, key=lambda path: float(pydicom.dcmread(path).ImagePositionPatient[2]))
    if damage == "missing":
        by_position[3].unlink()
    else:
        for path in by_position[5:]:
            dataset = pydicom.dcmread(path)
            dataset.ImagePositionPatient[2] = float(dataset.ImagePositionPatient[2]) + 0.4
            dataset.save_as(path, enforce_file_format=True)
    with pytest.raises(AutosegInputError) as error:
        read_image(folder)
    assert str(error.value).startswith(f"{folder} (DICOM series #1 'synthetic CT'): ")
    assert message in str(error.value) and "\n" not in str(error.value)


# --- 4. compressed transfer syntaxes -----------------------------------------------------------------
@pytest.mark.parametrize("syntax, options, tolerance", [
    (uids.RLELossless, {}, 0),
    (uids.JPEG2000Lossless, {}, 0),
    (uids.JPEG2000, {"j2k_psnr": [80]}, 64),
    (uids.JPEGLSLossless, {}, 0),
    (uids.JPEGLSNearLossless, {"jls_error": 3}, 3),
    (uids.DeflatedExplicitVRLittleEndian, {}, 0),
    (uids.JPEGBaseline8Bit, {}, 64),  # 8-bit stored values of 8 HU, lossy
])
def test_compressed_transfer_syntaxes_read(tmp_path, syntax, options, tolerance):
    from pydicom.pixels import get_encoder

    if syntax not in (uids.DeflatedExplicitVRLittleEndian, uids.JPEGBaseline8Bit) and \
            not get_encoder(syntax).is_available:
        pytest.skip(f"no {syntax.name} encoder installed")
    if syntax == uids.JPEGBaseline8Bit:
        pytest.importorskip("PIL")
    folder = tmp_path / "ct"
    volume = smooth()
    files = public_series(volume, folder, syntax, **options)
    assert pydicom.dcmread(files[0]).file_meta.TransferSyntaxUID == syntax
    array, geometry = read_image(folder)
    assert np.abs(array.astype(int) - volume).max() <= tolerance
    assert geometry.spacing == pytest.approx(SPACING) and geometry.sitk_origin == pytest.approx(ORIGIN)


@pytest.mark.parametrize("syntax", [uids.JPEG2000Lossless, uids.RLELossless, None])
def test_pydicom_decodes_a_series_simpleitk_cannot_read(tmp_path, monkeypatch, capsys, syntax):
    import SimpleITK as sitk

    folder = tmp_path / "ct"
    volume = noisy()
    public_series(volume, folder, syntax)
    expected = read_image(folder)[1]

    def broken(self):
        raise RuntimeError("itk::ERROR: GDCMImageIO: cannot decode")

    monkeypatch.setattr(sitk.ImageSeriesReader, "Execute", broken)
    array, geometry = read_image(folder)
    np.testing.assert_array_equal(array, volume)
    assert geometry.spacing == pytest.approx(expected.spacing)
    assert geometry.sitk_origin == pytest.approx(expected.sitk_origin)
    assert geometry.sitk_direction == pytest.approx(expected.sitk_direction)
    name = syntax.name if syntax else "Explicit VR Little Endian"
    assert f"SimpleITK cannot read it (itk::ERROR: GDCMImageIO: cannot decode); decoded with pydicom instead " \
           f"({name})" in capsys.readouterr().err


def test_a_syntax_no_decoder_reads_is_one_line_naming_it(tmp_path, monkeypatch):
    import SimpleITK as sitk
    from pydicom.encaps import encapsulate

    folder = tmp_path / "ct"
    files = write_ct_series(noisy((3, 8, 8)), folder, SPACING, ORIGIN)
    dataset = pydicom.dcmread(files[1])
    dataset.PixelData = encapsulate([b"\xff\xd8 not really a jpeg \xff\xd9 "])
    dataset["PixelData"].VR = "OB"
    dataset.file_meta.TransferSyntaxUID = uids.JPEGLosslessSV1
    dataset.save_as(files[1], enforce_file_format=True)

    def broken(self):
        raise RuntimeError("")

    monkeypatch.setattr(sitk.ImageSeriesReader, "Execute", broken)
    with pytest.raises(AutosegInputError) as error:
        read_image(folder)
    text = str(error.value)
    assert text.startswith(f"{files[1]}: pixel data cannot be decoded (JPEG Lossless, Non-Hierarchical, First-Order "
                           "Prediction") and "\n" not in text


# --- 5. enhanced multi-frame CT: geometry from the functional groups ----------------------------------
def enhanced_ct(volume_hu: np.ndarray, path: Path, spacing=SPACING, origin=ORIGIN, frame_order=None,
                positions_z=None, syntax: str | None = None) -> Path:
    """One Enhanced CT Image Storage file: frames in ``frame_order`` (default shuffled), Plane Position per
    frame, Pixel Measures, Plane Orientation and Pixel Value Transformation shared, nothing at top level."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    order = list(frame_order) if frame_order is not None else list(np.random.default_rng(5).permutation(
        len(volume_hu)))
    zs = positions_z if positions_z is not None else [origin[2] + k * spacing[0] for k in range(len(volume_hu))]
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = uids.EnhancedCTImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = uids.EnhancedCTImageStorage, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = generate_uid(), generate_uid(), generate_uid()
    ds.Modality, ds.SeriesNumber, ds.SeriesDescription, ds.InstanceNumber = "CT", 3, "enhanced", 1
    ds.PatientName, ds.PatientID = "Synthetic^Enhanced", "SYN0002"
    ds.Rows, ds.Columns, ds.NumberOfFrames = volume_hu.shape[1], volume_hu.shape[2], len(order)
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    shared = Dataset()
    measures, orientation, transformation = Dataset(), Dataset(), Dataset()
    measures.PixelSpacing, measures.SliceThickness = [spacing[1], spacing[2]], spacing[0]
    orientation.ImageOrientationPatient = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0]
    transformation.RescaleIntercept, transformation.RescaleSlope, transformation.RescaleType = -1024, 1, "HU"
    shared.PixelMeasuresSequence = Sequence([measures])
    shared.PlaneOrientationSequence = Sequence([orientation])
    shared.PixelValueTransformationSequence = Sequence([transformation])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    per_frame = []
    for k in order:
        frame, plane = Dataset(), Dataset()
        plane.ImagePositionPatient = [origin[0], origin[1], float(zs[k])]
        frame.PlanePositionSequence = Sequence([plane])
        per_frame.append(frame)
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    ds.PixelData = (volume_hu[order] + 1024).astype(np.uint16).tobytes()
    if syntax is not None:
        ds.compress(syntax)
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(path, enforce_file_format=True)
    return path


@pytest.mark.parametrize("syntax", [None, uids.JPEG2000Lossless])
def test_an_enhanced_ct_file_reads_with_its_functional_group_geometry(tmp_path, capsys, syntax):
    volume = noisy((6, 32, 40))  # OpenJPEG's encoder needs 32 pixels or more per side
    enhanced_ct(volume, tmp_path / "enh" / "ct.dcm", syntax=syntax)
    array, geometry = read_image(tmp_path / "enh")  # was: "ct.dcm has no Image Position (Patient)"
    np.testing.assert_array_equal(array, volume)  # frames sorted by position, HU from the shared transformation
    assert geometry.spacing == pytest.approx(SPACING)  # 2.5 mm from the frame positions, not 1 mm
    assert geometry.sitk_origin == pytest.approx(ORIGIN)
    assert "one enhanced multi-frame file (6 frames); geometry from its functional groups (frame positions 2.5 mm" \
        in capsys.readouterr().err


def test_an_enhanced_ct_file_with_a_missing_frame_is_one_line(tmp_path):
    zs = [30.0, 32.5, 35.0, 40.0, 42.5]  # 37.5 missing
    enhanced_ct(noisy((5, 8, 8)), tmp_path / "enh" / "ct.dcm", positions_z=zs)
    with pytest.raises(AutosegInputError) as error:
        read_image(tmp_path / "enh")
    text = str(error.value)
    assert "ct.dcm: about 1 missing slice(s) between 35.00 and 40.00 mm" in text and "\n" not in text


# --- 6. DICOM-SEG for a source without UIDs -----------------------------------------------------------
def test_a_dicom_seg_of_a_source_without_uids_references_new_ones_with_a_warning(tmp_path, capsys):
    highdicom = pytest.importorskip("highdicom")
    from autoseg.io.dicom_seg import write_dicom_seg

    folder = tmp_path / "public"
    volume = smooth()
    public_series(volume, folder)
    segmentation = (volume > 0).astype(np.uint8)
    path = write_dicom_seg(segmentation, folder, {1: (1,)}, {1: "organ"}, tmp_path / "seg.dcm")
    seg = highdicom.seg.segread(path)
    series = find_series(folder)[0]
    referenced = seg.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == series.series_uid and len(referenced.ReferencedInstanceSequence) == 8
    assert seg.StudyInstanceUID and seg.FrameOfReferenceUID  # generated: the sources have none
    assert seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPClassUID == uids.CTImageStorage
    np.testing.assert_array_equal(seg.get_volume(combine_segments=True).array.sum(), segmentation.sum())
    line = next(line for line in capsys.readouterr().err.splitlines() if "DICOM-SEG references" in line)
    assert line.startswith(f"warning: {folder} (DICOM series #1 'synthetic CT'): source without SOP Class UID (from "
                           "the file meta), Study Instance UID (generated), Series Instance UID (synthetic), "
                           "SOP Instance UID (from the file meta), Frame of Reference UID (generated); the DICOM-SEG "
                           "references")
    assert "which the source files do not carry" in line


@pytest.mark.parametrize("keyword, said", [("StudyInstanceUID", "Study Instance UID (generated)"),
                                           ("FrameOfReferenceUID", "Frame of Reference UID (generated)")])
def test_a_dicom_seg_is_written_for_a_source_without_study_or_frame_of_reference_uid(tmp_path, capsys, keyword,
                                                                                      said):
    pytest.importorskip("highdicom")
    from autoseg.io.dicom_seg import write_dicom_seg

    folder = tmp_path / "s"
    for path in write_ct_series(smooth((3, 8, 8)), folder, SPACING, ORIGIN):
        dataset = pydicom.dcmread(path)
        delattr(dataset, keyword)
        dataset.save_as(path, enforce_file_format=True)
    write_dicom_seg((smooth((3, 8, 8)) > 0).astype(np.uint8), folder, {1: (1,)}, {1: "organ"}, tmp_path / "seg.dcm")
    assert pydicom.dcmread(tmp_path / "seg.dcm").get(keyword)
    assert f"source without {said}; the DICOM-SEG references" in capsys.readouterr().err


def test_predict_writes_a_dicom_seg_for_a_public_series(tmp_path):
    pytest.importorskip("highdicom")
    from autoseg.inference.predict_folder import InferenceChoice, predict_folder

    plans = SimpleNamespace(num_channels=1, configurations={}, evaluated_classes={1: (1,)},
                            class_names={1: "organ"}, regions_class_order=None)

    class Threshold:
        predictors: list = []

        def __init__(self, *args, **kwargs):
            self.plans = plans

        def predict_arrays(self, image, geometry, keep_probabilities=False):
            return (image[0] > 0).astype(np.uint8), None, {"geometry": geometry.to_dict()}, None

    public_series(smooth(), tmp_path / "in" / "anon")
    report = predict_folder(tmp_path / "work", tmp_path / "in", tmp_path / "out", InferenceChoice(["fake"]),
                            progress=False, predictor=Threshold(), output_format="dicom-seg")
    assert report.predicted == ["anon"] and not report.failed
    assert pydicom.dcmread(tmp_path / "out" / "anon.dcm").Modality == "SEG"


def test_a_dicom_seg_generates_sop_instance_uids_missing_from_the_file_meta_too(tmp_path, capsys):
    highdicom = pytest.importorskip("highdicom")
    from autoseg.io.dicom_seg import write_dicom_seg

    folder = tmp_path / "bare"
    for path in public_series(smooth(), folder):
        dataset = pydicom.dcmread(path)
        dataset.file_meta.MediaStorageSOPInstanceUID = ""
        dataset.save_as(path, enforce_file_format=False)
    seg = highdicom.seg.segread(write_dicom_seg((smooth() > 0).astype(np.uint8), folder, {1: (1,)}, {1: "organ"},
                                                tmp_path / "seg.dcm"))
    instances = {item.ReferencedSOPInstanceUID for item in seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence}
    assert len(instances) == 8 and all(instances)
    assert "SOP Instance UID (generated)" in capsys.readouterr().err
