"""Writing a segmentation of a DICOM series as a DICOM Segmentation object (highdicom).

One SEG per case, BINARY, one segment per class (per region for region-based models: regions
may overlap, which SEG allows), frames referencing the source series' instances slice by
slice, so a PACS viewer overlays it on the scan. Segment labels are the label names of
dataset.json; their coded concepts default to SNOMED CT "Anatomical structure"
(:data:`DEFAULT_CONCEPT`) unless a mapping file gives one per label name::

    {"liver": {"category": ["91723000", "SCT", "Anatomical structure"],
               "type": ["10200004", "SCT", "Liver"]}}

The algorithm (name ``autoseg``, its version) is recorded in every segment and the series.
Needs the ``dicom`` extra.

Sources as anonymisers leave them: Type 2 attributes the SEG copies from its source
(:data:`TYPE2_ATTRIBUTES`: patient name, ID, birth date and sex, study ID, date and time,
accession number, referring physician) may be absent; they are written present and empty,
as the standard allows. A source without Slice Thickness gives the SEG's Pixel Measures the
series' slice spacing (mm) as thickness (the SEG's voxels span it; highdicom's reader needs
one). Sources whose UIDs were blanked (:func:`completed_uids`): the SOP Class UID is taken from
the file meta (Media Storage SOP Class UID), the Series Instance UID is the reader's synthetic one
(:func:`autoseg.io.dicom_headers.synthetic_series_uid`), the SOP Instance UID the file meta's,
and Study Instance, Frame of Reference and remaining SOP Instance UIDs are generated
(``pydicom.uid.generate_uid``), on the in-memory copies only; a ``warning:`` line says that the
SEG references UIDs the source files do not carry. A source with no SOP Class UID in its
dataset nor its file meta is a one-line error naming the file.
A one-slice series gets the through-plane spacing the reader gives it
(:func:`autoseg.io.dicom.single_slice_spacing`), not highdicom's default of 1 mm. Anything
else highdicom refuses is one line naming the series; ``predict`` fails that case only.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from autoseg import __version__
from autoseg.errors import AutosegInputError
from autoseg.io.dicom import (
    DICOM_EXTRA,
    DicomSeries,
    checked_slices,
    error_reason,
    note,
    series_at,
    series_slice_spacing,
)
from autoseg.io.labels import class_mask
from autoseg.utils.files import atomic_path, read_json_input

#: Coded concept (value, scheme, meaning) of a segment whose label has no entry in the mapping file.
DEFAULT_CONCEPT = ("91723000", "SCT", "Anatomical structure")
#: Series Number of the written segmentation series.
SEG_SERIES_NUMBER = 900
#: File ending of written DICOM-SEG objects.
DICOM_SEG_ENDING = ".dcm"
#: Type 2 attributes (may be empty, must be present) highdicom copies from the source images.
TYPE2_ATTRIBUTES = ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime",
                    "StudyID", "AccessionNumber", "ReferringPhysicianName")
#: UIDs of every source image a SEG references (keyword, what warnings call it); blank ones are made
#: up on the in-memory copies (:func:`completed_uids`).
SOURCE_UIDS = (("SOPClassUID", "SOP Class UID"), ("StudyInstanceUID", "Study Instance UID"),
               ("SeriesInstanceUID", "Series Instance UID"), ("SOPInstanceUID", "SOP Instance UID"),
               ("FrameOfReferenceUID", "Frame of Reference UID"))


def _highdicom() -> Any:
    try:
        import highdicom
    except ImportError:
        raise AutosegInputError(f"writing DICOM-SEG needs highdicom: {DICOM_EXTRA}") from None
    return highdicom


def read_concept_mapping(path: str | os.PathLike) -> dict[str, dict[str, tuple[str, str, str]]]:
    """Label name -> ``{"category": (value, scheme, meaning), "type": (...)}`` from a JSON file."""
    path = Path(path)
    data = read_json_input(path, expect=dict)
    mapping = {}
    for name, entry in data.items():
        concepts = {}
        for key in ("category", "type"):
            value = entry.get(key) if isinstance(entry, dict) else None
            if not (isinstance(value, list) and len(value) == 3 and all(isinstance(v, str) and v for v in value)):
                raise AutosegInputError(f"{path}: '{name}'.{key} must be [code value, coding scheme, meaning]")
            concepts[key] = tuple(value)
        mapping[str(name)] = concepts
    return mapping


def dicom_seg_problem(path: str | os.PathLike) -> str | None:
    """Why ``path`` is not a complete DICOM Segmentation (one line), or None when it is."""
    import pydicom

    try:
        dataset = pydicom.dcmread(path)
        if dataset.get("Modality") != "SEG" or "PixelData" not in dataset:
            return f"{path}: not a DICOM Segmentation"
        dataset.PixelData  # noqa: B018 - read to its end
    except Exception as error:  # pydicom raises many kinds on damaged files
        return f"{path}: cannot be read as DICOM ({error_reason(error, 120)})"
    return None


def _uid(dataset: Any, keyword: str) -> str:
    return str(dataset.get(keyword, "") or "").strip()


def _media_uid(dataset: Any, keyword: str) -> str:
    meta = getattr(dataset, "file_meta", None)
    return str(meta.get(keyword, "") or "").strip() if meta is not None else ""


def source_problem(dataset: Any, path: str | os.PathLike) -> str | None:
    """Why the source image ``dataset`` (read from ``path``) cannot be referenced by a DICOM-SEG (one
    line naming the file), or None. Missing Type 2 attributes (:func:`completed_source`) and blank UIDs
    other than a SOP Class the file meta does not give either (:func:`completed_uids`) are no problem."""
    if not (_uid(dataset, "SOPClassUID") or _media_uid(dataset, "MediaStorageSOPClassUID")):
        return (f"{path}: no SOP Class UID (blank or missing, in the dataset and its file meta); "
                "a DICOM-SEG must reference it")
    try:
        frames = int(dataset.get("NumberOfFrames") or 1)
    except (TypeError, ValueError):
        return f"{path}: Number of Frames {dataset.get('NumberOfFrames')!r} is not a number"
    if frames > 1:
        return f"{path}: a multi-frame image ({frames} frames); DICOM-SEG output needs single-frame slices"
    return None


def completed_uids(sources: Sequence[Any], series: DicomSeries) -> list[str]:
    """Fill the blank or missing UIDs of the ``sources`` of ``series`` (in-memory copies, changed in place)
    and return what was filled (e.g. ``"Study Instance UID (generated)"``). SOP Class and SOP Instance
    UIDs from the file meta where it has them; the Series Instance UID the reader's (synthetic for a
    series found without one); Study Instance and Frame of Reference UIDs one generated per series;
    other SOP Instance UIDs generated per file (also where two files repeat one)."""
    from pydicom.uid import generate_uid

    shared = {"StudyInstanceUID": generate_uid(), "SeriesInstanceUID": series.series_uid,
              "FrameOfReferenceUID": generate_uid()}
    filled: dict[str, str] = {}
    seen: set[str] = set()
    for dataset in sources:
        for keyword, what in SOURCE_UIDS:
            if _uid(dataset, keyword) and not (keyword == "SOPInstanceUID" and _uid(dataset, keyword) in seen):
                continue
            media = {"SOPClassUID": "MediaStorageSOPClassUID",
                     "SOPInstanceUID": "MediaStorageSOPInstanceUID"}.get(keyword)
            value = _media_uid(dataset, media) if media else ""
            if keyword == "SOPInstanceUID" and value in seen:
                value = ""
            if value:
                how = "from the file meta"
            elif keyword in shared:
                value, how = shared[keyword], "synthetic" if keyword == "SeriesInstanceUID" else "generated"
            else:
                value, how = generate_uid(), "generated"
            setattr(dataset, keyword, value)
            filled.setdefault(what, how)
        seen.add(_uid(dataset, "SOPInstanceUID"))
    return [f"{what} ({how})" for what, how in filled.items()]


def completed_source(dataset: Any, slice_spacing: float, one_slice: bool) -> Any:
    """``dataset`` with each missing Type 2 attribute of :data:`TYPE2_ATTRIBUTES` present and empty (changed
    in place: pass a copy); a missing or empty Slice Thickness set to the series' ``slice_spacing`` (mm);
    for a ``one_slice`` series (no second position to measure it from) Spacing Between Slices too."""
    for keyword in TYPE2_ATTRIBUTES:
        if keyword not in dataset:
            setattr(dataset, keyword, None)
    if dataset.get("SliceThickness") in (None, ""):
        dataset.SliceThickness = f"{slice_spacing:g}"
    if one_slice and dataset.get("SpacingBetweenSlices") in (None, ""):
        dataset.SpacingBetweenSlices = f"{slice_spacing:g}"
    return dataset


def write_dicom_seg(segmentation: np.ndarray, source: str | os.PathLike, classes: Mapping[int, Sequence[int]],
                    names: Mapping[int, str], path: str | os.PathLike,
                    concepts: Mapping[str, Mapping[str, tuple[str, str, str]]] | None = None) -> Path:
    """Write the ``(z, y, x)`` label map of a case read from the DICOM series ``source`` (a series
    folder or ``folder#SeriesInstanceUID``) as a DICOM-SEG at ``path`` (atomic).

    ``classes``: segment key -> label values of its mask (:func:`autoseg.io.labels.class_mask`),
    ``names``: key -> segment label. The label map must be on the series' grid, slices in the
    order the reader sorted them (:func:`autoseg.io.dicom.checked_slices`).
    """
    hd = _highdicom()
    import pydicom

    series = series_at(Path(source))
    files = checked_slices(series)
    sources = []
    for file in files:
        try:
            dataset, problem = pydicom.dcmread(file), None
        except Exception as error:  # pydicom raises many kinds on damaged files
            dataset, problem = None, f"{file}: cannot be read as DICOM ({error_reason(error, 120)})"
        problem = problem or source_problem(dataset, file)
        if problem is not None:  # raised outside the except: an unreadable source is this case's problem,
            raise AutosegInputError(problem)  # not the output folder's (predict_folder.ends_the_run)
        sources.append(dataset)
    filled = completed_uids(sources, series)
    if filled:
        note(f"warning: {series.name}: source without {', '.join(filled)}; the DICOM-SEG references these "
             "new UIDs, which the source files do not carry (a PACS will not link the two)")
    spacing = series_slice_spacing(series)
    sources = [completed_source(dataset, spacing, len(sources) == 1) for dataset in sources]
    rows, columns = int(sources[0].Rows), int(sources[0].Columns)
    if segmentation.shape != (len(sources), rows, columns):
        raise ValueError(f"segmentation shape {segmentation.shape} does not match the series "
                         f"({len(sources)} slices of {rows}x{columns})")
    keys = list(classes)
    masks = np.stack([class_mask(segmentation, classes[key]) for key in keys], axis=-1).astype(np.uint8)
    algorithm = hd.AlgorithmIdentificationSequence(
        name="autoseg", version=__version__, family=hd.sr.CodedConcept("ArtificialIntelligence", "DCM",
                                                                          "Artificial Intelligence"))
    descriptions = []
    for number, key in enumerate(keys, start=1):
        name = names.get(key, str(key))
        mapped = (concepts or {}).get(name, {})
        category = hd.sr.CodedConcept(*mapped.get("category", DEFAULT_CONCEPT))
        kind = hd.sr.CodedConcept(*mapped.get("type", DEFAULT_CONCEPT))
        descriptions.append(hd.seg.SegmentDescription(
            segment_number=number, segment_label=name, segmented_property_category=category,
            segmented_property_type=kind, algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm))
    try:
        seg = hd.seg.Segmentation(
            source_images=sources, pixel_array=masks, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=SEG_SERIES_NUMBER,
            sop_instance_uid=hd.UID(), instance_number=1, manufacturer="autoseg",
            manufacturer_model_name="autoseg", software_versions=__version__, device_serial_number="none",
            series_description=f"autoseg {__version__} segmentation", omit_empty_frames=False)
    except (ValueError, KeyError, AttributeError, TypeError, IndexError) as error:  # highdicom refuses the source
        raise AutosegInputError(f"{series.name}: cannot be written as a DICOM-SEG ({type(error).__name__}: "
                                f"{error_reason(error, 160)})") from None
    path = Path(path)
    with atomic_path(path) as temporary:
        seg.save_as(temporary)
    return path
