"""DICOM headers: finding the DICOM files of a folder, reading what checking a slice needs, grouping
the files into series.

A series is the set of files sharing a Series Instance UID. Anonymisers (and some public data
sets) blank every UID: files without one are grouped by what still identifies them
(:data:`BLANK_UID_GROUPING`): their folder, then their Study Instance UID if any, Modality,
Series Number, Series Description, Image Orientation (Patient), Rows x Columns, Pixel Spacing
and (MR) Echo Time; each multi-frame file is a group of its own. Such a group gets a stable
synthetic identifier (:func:`synthetic_series_uid`: ``2.25.`` and a hash of folder and grouping
key, a valid UID), so ``folder#ID`` series paths name it like a real UID, and a ``warning:``
line names the folder and the grouping. Acquisition Number is not part of the key: CT scanners
in step-and-shoot mode number each rotation of one series, and two acquisitions of one series
at the same positions are refused later ("two slices at one position") rather than split
silently.

An enhanced multi-frame image (Enhanced CT/MR, Legacy Converted Enhanced) keeps its geometry in
functional groups, not in the top-level header: Image Position (Patient) per frame in the
Per-frame Functional Groups' Plane Position, orientation and Pixel Spacing (mm) in the Shared
(or per-frame) Plane Orientation and Pixel Measures (:func:`frame_geometry`).

Needs pydicom (the ``dicom`` extra: :data:`DICOM_EXTRA`).
"""

from __future__ import annotations

import hashlib
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from autoseg.errors import AutosegInputError

#: What installs the DICOM readers and writers.
DICOM_EXTRA = "pip install 'autoseg[dicom]'"
#: A DICOM Part 10 file has "DICM" at this byte offset.
_PREAMBLE_LENGTH = 128
#: SOP Class UID of a DICOMDIR (Media Storage Directory Storage).
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
#: Modalities of DICOM objects that are not images to segment (skipped beside a series).
NON_IMAGE_MODALITIES = frozenset({"SEG", "RTSTRUCT", "RTPLAN", "RTDOSE", "RTRECORD", "SR", "PR", "KO", "REG",
                                  "DOC", "FID", "PLAN", "RWV", "AU", "ECG", "HD"})
#: What groups files without Series Instance UID into series (after their folder), as warnings word it.
BLANK_UID_GROUPING = ("Study Instance UID", "Modality", "Series Number", "Series Description",
                      "Image Orientation (Patient)", "Rows x Columns", "Pixel Spacing", "Echo Time")
_noted: set[str] = set()


def note(message: str) -> None:
    """Print a ``note:``/``warning:`` line to stderr once per process (series are looked at several times)."""
    if message not in _noted:
        _noted.add(message)
        print(message, file=sys.stderr)


def error_reason(error: BaseException, limit: int = 160) -> str:
    """A library error as one short line: its first non-empty line, else its type name (never empty)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return lines[0][:limit] if lines else type(error).__name__


def require_pydicom() -> Any:
    """The pydicom module, or a one-line error naming the extra that installs it."""
    try:
        import pydicom
    except ImportError:
        raise AutosegInputError(f"reading DICOM needs pydicom: {DICOM_EXTRA}") from None
    return pydicom


def is_dicom_file(path: Path) -> bool:
    """Whether ``path`` is a DICOM Part 10 file (``DICM`` after the 128-byte preamble)."""
    try:
        with open(path, "rb") as handle:
            handle.seek(_PREAMBLE_LENGTH)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def dicom_files(folder: Path, recursive: bool = True) -> list[Path]:
    """The DICOM files under ``folder`` (hidden and macOS ``._`` files skipped), sorted by path."""
    pattern = "**/*" if recursive else "*"
    return [path for path in sorted(folder.glob(pattern))
            if path.is_file() and not any(part.startswith(".") for part in path.relative_to(folder).parts)
            and is_dicom_file(path)]


@dataclass
class SliceHeader:
    """What sorting and checking a slice needs from its header (positions in mm, patient LPS).

    ``frame_positions``: for an enhanced multi-frame file, Image Position (Patient) of each frame in
    stored order (``position`` is the first's); None for other files."""

    path: Path
    position: tuple[float, ...] | None
    orientation: tuple[float, ...] | None
    pixel_spacing: tuple[float, ...] | None
    rows: int | None
    columns: int | None
    has_pixels: bool
    frames: int = 1
    spacing_between_slices: float | None = None
    slice_thickness: float | None = None
    pixel_problem: str | None = None  # e.g. truncated pixel data (one line without the file name)
    frame_positions: tuple[tuple[float, ...], ...] | None = None
    transfer_syntax: str = ""


@dataclass
class DicomSeries:
    """One series found in a folder: its files sorted along the slice normal once checked.

    ``grouped_by``: None for a series found by its Series Instance UID; for files without one, how
    they were grouped (``series_uid`` is then synthetic, :func:`synthetic_series_uid`)."""

    series_uid: str
    folder: Path
    description: str = ""
    series_number: int | None = None
    modality: str = ""
    slices: list[SliceHeader] = field(default_factory=list)
    grouped_by: str | None = None

    @property
    def name(self) -> str:
        """How errors name the series: folder, number and description."""
        number = f" #{self.series_number}" if self.series_number is not None else ""
        description = f" '{self.description}'" if self.description else ""
        return f"{self.folder} (DICOM series{number}{description})"


def _floats(value: Any) -> tuple[float, ...] | None:
    try:
        return tuple(float(v) for v in value) if value is not None else None
    except (TypeError, ValueError):
        return None


def _positive(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if number > 0 and np.isfinite(number) else None


def _integer(value: Any) -> int | None:
    try:
        return int(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None


def _text(header: Any, keyword: str) -> str:
    return str(header.get(keyword, "") or "").strip()


def non_image_reason(name: str, media_sop_class: str, sop_class: str, modality: str, has_pixels: bool,
                     has_rows: bool) -> str | None:
    """Why a DICOM file is not an image of a series (skipped beside one), or None when it is one.

    ``name``: the file name; the others from its header (``media_sop_class`` from the file meta).
    A file with a SOP Class but neither pixel data nor Rows is a non-image object; one with Rows but no
    pixel data is a damaged slice, and one without SOP Class and pixels a damaged file (both refused).
    """
    if name.upper() == "DICOMDIR" or MEDIA_STORAGE_DIRECTORY in (media_sop_class, sop_class):
        return "a DICOMDIR (media directory)"
    if modality.upper() in NON_IMAGE_MODALITIES:
        return f"a {modality.upper()} object, not an image"
    sop_class = sop_class or media_sop_class
    if not has_pixels and not has_rows and sop_class:
        return f"no pixel data (SOP Class {sop_class}: not an image)"
    return None


def native_pixel_bytes(rows: int, columns: int, samples: int, bits_allocated: int, frames: int) -> int:
    """Bytes of uncompressed pixel data of ``frames`` frames of ``rows x columns`` (1-bit data packed)."""
    bits = rows * columns * samples * frames * bits_allocated
    return (bits + 7) // 8


def _pixel_problem(header: Any, path: Path) -> str | None:
    """Truncated native pixel data: fewer bytes in the file (or declared) than the image needs."""
    try:
        element = header.get_item("PixelData", keep_deferred=True)
    except (KeyError, TypeError):
        return None
    syntax = header.file_meta.get("TransferSyntaxUID") if element is not None else None
    if syntax is None or syntax.is_encapsulated or syntax.is_deflated:
        return None  # compressed: the decoder tells (read_series names the file)
    rows, columns = _integer(header.get("Rows")), _integer(header.get("Columns"))
    bits = _integer(header.get("BitsAllocated"))
    if not (rows and columns and bits):
        return None
    needed = native_pixel_bytes(rows, columns, _integer(header.get("SamplesPerPixel")) or 1, bits,
                                _integer(header.get("NumberOfFrames")) or 1)
    length = getattr(element, "length", None)
    value = getattr(element, "value", None)
    if isinstance(value, (bytes, bytearray)):
        present = len(value)
    elif length is not None and getattr(element, "value_tell", None) is not None:
        present = min(length, max(0, path.stat().st_size - element.value_tell))
    else:
        return None
    if present < needed:
        return f"pixel data is truncated ({present} of {needed} bytes)"
    return None


def functional_group(header: Any, frame: int, sequence: str) -> Any:
    """The first item of functional group macro ``sequence`` (e.g. ``"PlanePositionSequence"``) for
    ``frame`` (0-based) of an enhanced multi-frame ``header``: per-frame, else shared; None if neither."""
    per_frame = header.get("PerFrameFunctionalGroupsSequence") or []
    shared = header.get("SharedFunctionalGroupsSequence") or []
    for item in ([per_frame[frame]] if frame < len(per_frame) else []) + ([shared[0]] if len(shared) else []):
        value = item.get(sequence)
        if value is not None and len(value) > 0:
            return value[0]
    return None


def frame_geometry(header: Any, frames: int) -> dict[str, Any] | None:
    """Geometry of an enhanced multi-frame image from its functional groups: ``positions`` (one per
    frame, mm, None where a frame has none), ``orientation``, ``pixel_spacing`` (mm, row then column),
    ``spacing_between_slices``/``slice_thickness`` (mm) and ``problem`` (a frame disagreeing on
    orientation or pixel spacing, one line); None for a file without Per-frame Functional Groups."""
    per_frame = header.get("PerFrameFunctionalGroupsSequence")
    if per_frame is None:
        return None
    positions, problem = [], None
    if len(per_frame) != frames:
        problem = f"{len(per_frame)} Per-frame Functional Groups for {frames} frames"
    orientation = pixel_spacing = measures = None
    for frame in range(min(frames, len(per_frame))):
        plane = functional_group(header, frame, "PlanePositionSequence")
        positions.append(_floats(plane.get("ImagePositionPatient")) if plane is not None else None)
        oriented = functional_group(header, frame, "PlaneOrientationSequence")
        measured = functional_group(header, frame, "PixelMeasuresSequence")
        this_orientation = _floats(oriented.get("ImageOrientationPatient")) if oriented is not None else None
        this_spacing = _floats(measured.get("PixelSpacing")) if measured is not None else None
        if frame == 0:
            orientation, pixel_spacing, measures = this_orientation, this_spacing, measured
        elif problem is None and this_orientation != orientation:
            problem = f"frames of different orientation (frames 1 and {frame + 1})"
        elif problem is None and this_spacing != pixel_spacing:
            problem = f"frames of different pixel spacing (frames 1 and {frame + 1})"
    return {"positions": positions, "orientation": orientation, "pixel_spacing": pixel_spacing, "problem": problem,
            "spacing_between_slices": _positive(measures.get("SpacingBetweenSlices")) if measures else None,
            "slice_thickness": _positive(measures.get("SliceThickness")) if measures else None}


def slice_header(header: Any, path: Path) -> SliceHeader:
    """What checking and sorting needs from the pydicom ``header`` of ``path`` (functional groups for an
    enhanced multi-frame image, :func:`frame_geometry`)."""
    frames = _integer(header.get("NumberOfFrames")) or 1
    meta = getattr(header, "file_meta", None)
    syntax = str(meta.get("TransferSyntaxUID", "")) if meta is not None else ""
    entry = SliceHeader(
        path, _floats(header.get("ImagePositionPatient")), _floats(header.get("ImageOrientationPatient")),
        _floats(header.get("PixelSpacing")), _integer(header.get("Rows")), _integer(header.get("Columns")),
        "PixelData" in header, frames, _positive(header.get("SpacingBetweenSlices")),
        _positive(header.get("SliceThickness")), _pixel_problem(header, path), None, syntax)
    geometry = frame_geometry(header, frames) if frames > 1 else None
    if geometry is not None:
        entry.orientation = geometry["orientation"] or entry.orientation
        entry.pixel_spacing = geometry["pixel_spacing"] or entry.pixel_spacing
        entry.spacing_between_slices = geometry["spacing_between_slices"] or entry.spacing_between_slices
        entry.slice_thickness = geometry["slice_thickness"] or entry.slice_thickness
        entry.pixel_problem = entry.pixel_problem or geometry["problem"]
        missing = [index for index, position in enumerate(geometry["positions"]) if position is None]
        if missing:
            entry.pixel_problem = entry.pixel_problem or f"frame {missing[0] + 1} has no Plane Position (Patient)"
        else:
            entry.frame_positions = tuple(geometry["positions"])
            entry.position = geometry["positions"][0] if geometry["positions"] else entry.position
    return entry


def _rounded(values: tuple[float, ...] | None, digits: int) -> tuple[float, ...] | None:
    return None if values is None else tuple(round(value, digits) for value in values)


def grouping_key(header: Any, path: Path) -> tuple:
    """What identifies the series of a file without Series Instance UID, within its folder
    (:data:`BLANK_UID_GROUPING`); a multi-frame file is a group of its own."""
    frames = _integer(header.get("NumberOfFrames")) or 1
    echo = _floats([header.get("EchoTime")]) if header.get("EchoTime") not in (None, "") else None
    return (_text(header, "StudyInstanceUID"), _text(header, "Modality").upper(),
            _integer(header.get("SeriesNumber")), _text(header, "SeriesDescription"),
            _rounded(_floats(header.get("ImageOrientationPatient")), 4), _integer(header.get("Rows")),
            _integer(header.get("Columns")), _rounded(_floats(header.get("PixelSpacing")), 5),
            _rounded(echo, 3), path.name if frames > 1 else "")


def synthetic_series_uid(folder: Path, key: tuple) -> str:
    """A stable UID for the files of ``folder`` without Series Instance UID that share ``key``
    (:func:`grouping_key`): ``2.25.`` and 128 bits of a SHA-256 of both (the same on every reading)."""
    digest = hashlib.sha256(repr((str(folder.resolve()), key)).encode()).hexdigest()
    return f"2.25.{int(digest[:32], 16)}"


def find_series(folder: str | Path, recursive: bool = True) -> list[DicomSeries]:
    """The DICOM series under ``folder``, grouped by Series Instance UID (files without one as the
    module says, with a ``warning:`` line per folder), ordered by folder, then Series Number, then UID.
    Non-image DICOM files (:func:`non_image_reason`) are skipped with a ``note:`` line. Slices are not
    yet checked (see :func:`autoseg.io.dicom.checked_slices`)."""
    pydicom = require_pydicom()
    folder = Path(folder)
    series: dict[tuple, DicomSeries] = {}
    blank: dict[Path, int] = {}  # folder -> files without Series Instance UID
    for path in dicom_files(folder, recursive):
        try:
            with warnings.catch_warnings():  # pydicom warns about sloppy headers real scanners write
                warnings.simplefilter("ignore")
                header = pydicom.dcmread(path, defer_size="1 KB")
                meta = getattr(header, "file_meta", None)
                media_class = str(meta.get("MediaStorageSOPClassUID", "") or "").strip() if meta is not None else ""
                skip = non_image_reason(path.name, media_class, _text(header, "SOPClassUID"),
                                        _text(header, "Modality"), "PixelData" in header, "Rows" in header)
                if skip is not None:
                    note(f"note: skipping {path}: {skip}")
                    continue
                uid = _text(header, "SeriesInstanceUID")
                if uid:
                    key, grouped_by = ("uid", uid), None
                else:
                    if not (media_class or _text(header, "SOPClassUID")) and "PixelData" not in header:
                        raise AutosegInputError(f"{path}: no Series Instance UID, SOP Class or pixel data (not an "
                                                "image of a DICOM series, or damaged)")
                    key = ("blank", path.parent, grouping_key(header, path))
                    uid, grouped_by = synthetic_series_uid(path.parent, key[2]), "folder, " + ", ".join(
                        BLANK_UID_GROUPING)
                    blank[path.parent] = blank.get(path.parent, 0) + 1
                entry = series.get(key)
                if entry is None:
                    entry = series[key] = DicomSeries(uid, path.parent, _text(header, "SeriesDescription"),
                                                      _integer(header.get("SeriesNumber")),
                                                      _text(header, "Modality"), grouped_by=grouped_by)
                entry.slices.append(slice_header(header, path))
        except AutosegInputError:
            raise
        except Exception as error:  # pydicom raises many kinds on damaged files
            raise AutosegInputError(f"{path}: cannot be read as DICOM ({error_reason(error, 120)})") from None
    found = sorted(series.values(), key=lambda s: (str(s.folder), s.series_number or 0, s.series_uid))
    for where, count in blank.items():
        groups = [s for s in found if s.folder == where and s.grouped_by is not None]
        listed = ", ".join(f"#{s.series_number} {s.series_uid[:14]}..." if s.series_number is not None
                           else f"{s.series_uid[:14]}..." for s in groups[:3])
        note(f"warning: {where}: {count} DICOM file(s) without Series Instance UID, grouped by "
             f"{groups[0].grouped_by} into {len(groups)} series ({listed}{', ...' if len(groups) > 3 else ''})")
    return found
