"""DICOM series as images: finding the series in a folder, checking their slices, reading one.

A series is the set of files sharing a Series Instance UID. Headers are read with pydicom
(the ``dicom`` extra: ``pip install autoseg[dicom]``), voxels with SimpleITK's GDCM series
reader, which applies Rescale Slope/Intercept (CT voxels come back in Hounsfield units)
and decodes the compressed transfer syntaxes. Slices are sorted by their position along
the slice normal (the cross product of the Image Orientation (Patient) row and column
directions), not by file name or Instance Number.

What is refused, as one line naming the series (:func:`series_problem`): slices of
different orientation, size or pixel spacing; slices without position; two slices at one
position; gantry tilt (slices shifted in-plane from one to the next, which a regular voxel
grid cannot hold); a gap of about two or more slice spacings (missing slices); otherwise
uneven slice spacing (more than :data:`SPACING_TOLERANCE` relative spread); a malformed
position, orientation (not two orthogonal unit directions) or pixel spacing (not two
positive numbers: SimpleITK would silently read 1 mm); files without pixel data, or whose
pixel data is shorter than Rows x Columns x frames x bits ("pixel data is truncated (N of M
bytes)"); a multi-frame file among other files of its series. A file that SimpleITK still
cannot decode is named with the decoder's reason.

What is skipped, with a ``note:`` line on stderr (:func:`non_image_reason`): DICOM files
beside a series that are not images of it: a DICOMDIR (SOP Class
:data:`MEDIA_STORAGE_DIRECTORY`, or a file named ``DICOMDIR``), presentation states,
structured reports, key objects, segmentations, RT structure sets and other non-image
modalities (:data:`NON_IMAGE_MODALITIES`), and files of any SOP Class with neither pixel
data nor Rows. (A file with Rows but no pixel data is a damaged slice, one with neither SOP
Class nor pixels a damaged file: both refused.) Files that are not DICOM at all
(``Thumbs.db``, ``.DS_Store``, ``README.txt``) are never looked at.

A series of one slice (one single-frame file, or one multi-frame file) has no second
position to measure its through-plane spacing from: it is taken from Spacing Between Slices,
else Slice Thickness (a ``note:`` line says which); with neither, 1 mm is assumed and a
``warning:`` line says so (:func:`through_plane_spacing`). Volumes in ``report.json`` and the
DICOM-SEG's Pixel Measures follow that spacing.

Arrays are ``(z, y, x)`` like every image of autoseg (:mod:`autoseg.io.formats`).
"""

from __future__ import annotations

import re
import sys
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from autoseg.errors import AutosegInputError

#: What installs the DICOM readers and writers.
DICOM_EXTRA = "pip install 'autoseg[dicom]'"
#: Slice gaps may differ by this fraction of the median gap before the series is refused.
SPACING_TOLERANCE = 0.01
#: A gap this many median gaps wide (or wider) means slices are missing.
MISSING_SLICE_GAP = 1.5
#: Slices whose positions step off the slice normal by more than this angle (degrees) are tilted.
MAX_TILT_DEGREES = 0.5
#: Separates a folder from the Series Instance UID of one of its series in a series path
#: (``patient1#1.2.840...``): how a folder holding several series names one of them.
SERIES_SEPARATOR = "#"
#: A DICOM UID: digits and dots (a '#' followed by anything else is part of a folder name).
UID_PATTERN = re.compile(r"[0-9][0-9.]*")
#: A DICOM Part 10 file has "DICM" at this byte offset.
_PREAMBLE_LENGTH = 128
#: SOP Class UID of a DICOMDIR (Media Storage Directory Storage).
MEDIA_STORAGE_DIRECTORY = "1.2.840.10008.1.3.10"
#: Modalities of DICOM objects that are not images to segment (skipped beside a series).
NON_IMAGE_MODALITIES = frozenset({"SEG", "RTSTRUCT", "RTPLAN", "RTDOSE", "RTRECORD", "SR", "PR", "KO", "REG",
                                  "DOC", "FID", "PLAN", "RWV", "AU", "ECG", "HD"})
#: Through-plane spacing (mm) assumed for a one-slice series whose header gives none.
ASSUMED_SLICE_SPACING = 1.0
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
    """What sorting and checking a slice needs from its header (positions in mm, patient LPS)."""

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


@dataclass
class DicomSeries:
    """One series found in a folder: its files sorted along the slice normal once checked."""

    series_uid: str
    folder: Path
    description: str = ""
    series_number: int | None = None
    modality: str = ""
    slices: list[SliceHeader] = field(default_factory=list)

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


def find_series(folder: str | Path, recursive: bool = True) -> list[DicomSeries]:
    """The DICOM series under ``folder``, grouped by Series Instance UID, ordered by folder, then
    Series Number, then UID. Non-image DICOM files (:func:`non_image_reason`) are skipped with a
    ``note:`` line. Slices are not yet checked (see :func:`checked_slices`)."""
    pydicom = require_pydicom()
    folder = Path(folder)
    series: dict[str, DicomSeries] = {}
    for path in dicom_files(folder, recursive):
        try:
            with warnings.catch_warnings():  # pydicom warns about sloppy headers real scanners write
                warnings.simplefilter("ignore")
                header = pydicom.dcmread(path, defer_size="1 KB")
                meta = getattr(header, "file_meta", None)
                media_class = str(meta.get("MediaStorageSOPClassUID", "")) if meta is not None else ""
                skip = non_image_reason(path.name, media_class, str(header.get("SOPClassUID", "") or ""),
                                        str(header.get("Modality", "") or ""), "PixelData" in header,
                                        "Rows" in header)
                if skip is not None:
                    note(f"note: skipping {path}: {skip}")
                    continue
                uid = str(header.get("SeriesInstanceUID", "") or "")
                if not uid:
                    raise AutosegInputError(f"{path}: no Series Instance UID (not an image of a DICOM series, "
                                            "or damaged)")
                entry = series.get(uid)
                if entry is None:
                    entry = series[uid] = DicomSeries(uid, path.parent,
                                                      str(header.get("SeriesDescription", "") or "").strip(),
                                                      _integer(header.get("SeriesNumber")),
                                                      str(header.get("Modality", "") or ""))
                entry.slices.append(SliceHeader(
                    path, _floats(header.get("ImagePositionPatient")), _floats(header.get("ImageOrientationPatient")),
                    _floats(header.get("PixelSpacing")), _integer(header.get("Rows")),
                    _integer(header.get("Columns")), "PixelData" in header,
                    _integer(header.get("NumberOfFrames")) or 1, _positive(header.get("SpacingBetweenSlices")),
                    _positive(header.get("SliceThickness")), _pixel_problem(header, path)))
        except AutosegInputError:
            raise
        except Exception as error:  # pydicom raises many kinds on damaged files
            raise AutosegInputError(f"{path}: cannot be read as DICOM ({error_reason(error, 120)})") from None
    return sorted(series.values(), key=lambda s: (str(s.folder), s.series_number or 0, s.series_uid))


def orientation_problem(orientation: Sequence[float]) -> str | None:
    """Why six Image Orientation (Patient) numbers are not two orthogonal unit directions (row,
    column; patient LPS), or None. Allows the rounding scanners write (1% length, 0.01 cosine)."""
    row, column = np.asarray(orientation[:3], dtype=float), np.asarray(orientation[3:6], dtype=float)
    if not (abs(np.linalg.norm(row) - 1) < 0.01 and abs(np.linalg.norm(column) - 1) < 0.01):
        return "row and column directions must be unit vectors"
    if abs(float(row @ column)) > 0.01:
        return "row and column directions are not orthogonal"
    return None


def slice_normal(orientation: tuple[float, ...]) -> np.ndarray:
    """Unit normal of the slices: row direction x column direction (patient LPS, unitless)."""
    row, column = np.asarray(orientation[:3]), np.asarray(orientation[3:6])
    normal = np.cross(row, column)
    return normal / np.linalg.norm(normal)


def sorted_along_normal(slices: list[SliceHeader]) -> list[SliceHeader]:
    """Slices by their position along the first slice's normal (stable; one slice as it is). Every
    slice must have an orientation and a position (:func:`series_problem` checks)."""
    if len(slices) < 2:
        return list(slices)
    normal = slice_normal(slices[0].orientation)
    return sorted(slices, key=lambda header: float(np.dot(header.position, normal)))


def series_problem(slices: Iterable[SliceHeader]) -> str | None:
    """Why these slices do not form one regular volume (one line without the series name), or None."""
    slices = list(slices)
    if not slices:
        return "no slices"
    first = slices[0]
    for header in slices:
        if not header.has_pixels:
            return f"{header.path.name} has no pixel data"
        if header.pixel_problem is not None:
            return f"{header.path.name}: {header.pixel_problem}"
        if header.frames > 1 and len(slices) > 1:
            return (f"{header.path.name} is a multi-frame image ({header.frames} frames) in a series of "
                    f"{len(slices)} files; give each multi-frame file its own folder")
        for attribute, what, count in (("orientation", "Image Orientation (Patient)", 6),
                                       ("pixel_spacing", "Pixel Spacing", 2),
                                       ("position", "Image Position (Patient)", 3)):
            value = getattr(header, attribute)
            if value is None:
                return f"{header.path.name} has no {what}"
            if len(value) != count or not all(np.isfinite(value)):
                return f"{header.path.name} has a malformed {what} ({list(value)}; {count} numbers expected)"
        if not all(v > 0 for v in header.pixel_spacing):
            return f"{header.path.name} has Pixel Spacing {list(header.pixel_spacing)} mm (must be positive)"
        problem = orientation_problem(header.orientation)
        if problem is not None:
            return (f"{header.path.name} has an invalid Image Orientation (Patient) {list(header.orientation)}: "
                    f"{problem}")
        if (header.rows, header.columns) != (first.rows, first.columns):
            return (f"slices of different sizes ({first.rows}x{first.columns} in {first.path.name}, "
                    f"{header.rows}x{header.columns} in {header.path.name})")
        if not np.allclose(header.orientation, first.orientation, atol=1e-4):
            return f"slices of different orientation ({first.path.name} and {header.path.name})"
        if not np.allclose(header.pixel_spacing, first.pixel_spacing, rtol=1e-4):
            return (f"slices of different pixel spacing ({list(first.pixel_spacing)} and "
                    f"{list(header.pixel_spacing)} mm)")
    if len(slices) == 1:
        return None
    normal = slice_normal(first.orientation)
    slices = sorted_along_normal(slices)
    positions = np.array([header.position for header in slices])
    along = positions @ normal
    gaps = np.diff(along)
    if np.any(gaps < 1e-3):
        index = int(np.argmin(gaps))
        return (f"two slices at one position ({along[index]:.2f} mm along the normal: "
                f"{slices[index].path.name}, {slices[index + 1].path.name}); mixed series?")
    steps = np.diff(positions, axis=0)
    cosines = np.clip((steps @ normal) / np.linalg.norm(steps, axis=1), -1.0, 1.0)
    tilt = float(np.degrees(np.arccos(cosines.min())))
    if tilt > MAX_TILT_DEGREES:
        return f"gantry tilt of {tilt:.1f} degrees (slices shifted in-plane); resample it to a regular grid first"
    median = float(np.median(gaps))
    widest = int(np.argmax(gaps))
    if gaps[widest] >= MISSING_SLICE_GAP * median:
        missing = round(gaps[widest] / median) - 1
        return (f"about {missing} missing slice(s) between {along[widest]:.2f} and {along[widest + 1]:.2f} mm "
                f"(gap {gaps[widest]:.2f} mm, slice spacing {median:.2f} mm)")
    if (gaps.max() - gaps.min()) > SPACING_TOLERANCE * median:
        return f"uneven slice spacing ({gaps.min():.3f} to {gaps.max():.3f} mm)"
    return None


def checked_slices(series: DicomSeries) -> list[Path]:
    """The series' files sorted along the slice normal; a one-line error naming the series when the
    slices do not form one regular volume (:func:`series_problem`)."""
    problem = series_problem(series.slices)
    if problem is not None:
        raise AutosegInputError(f"{series.name}: {problem}")
    return [header.path for header in sorted_along_normal(series.slices)]


def through_plane_spacing(header: SliceHeader) -> tuple[float, str]:
    """Through-plane spacing (mm) of a one-slice series and where it came from: Spacing Between
    Slices, else Slice Thickness, else :data:`ASSUMED_SLICE_SPACING` (``"assumed"``)."""
    if header.spacing_between_slices is not None:
        return header.spacing_between_slices, "Spacing Between Slices"
    if header.slice_thickness is not None:
        return header.slice_thickness, "Slice Thickness"
    return ASSUMED_SLICE_SPACING, "assumed"


def single_slice_spacing(series: DicomSeries) -> float | None:
    """The through-plane spacing (mm) of a series of one file (:func:`through_plane_spacing`), with a
    ``note:`` line saying where it came from (``warning:`` when assumed); None for several files."""
    if len(series.slices) != 1:
        return None
    header = series.slices[0]
    spacing, source = through_plane_spacing(header)
    what = "one slice" if header.frames == 1 else f"one multi-frame file ({header.frames} frames)"
    if source == "assumed":
        note(f"warning: {series.name}: {what} without Spacing Between Slices or Slice Thickness; "
             f"{spacing:g} mm through-plane spacing assumed (volumes in report.json scale with it)")
    else:
        note(f"note: {series.name}: {what}; through-plane spacing {spacing:g} mm from its {source}")
    return spacing


def series_slice_spacing(series: DicomSeries) -> float:
    """The series' through-plane spacing (mm): the median gap between slice positions along the
    normal, or for one file :func:`single_slice_spacing`. The slices must pass :func:`series_problem`."""
    if len(series.slices) == 1:
        return single_slice_spacing(series)
    ordered = sorted_along_normal(series.slices)
    along = np.array([header.position for header in ordered]) @ slice_normal(ordered[0].orientation)
    return float(np.median(np.diff(along)))


def only_series(folder: Path) -> DicomSeries:
    """The one series of a folder (its files directly in it); a one-line error for none or several."""
    found = find_series(folder, recursive=False)
    if len(found) != 1:
        listed = ", ".join(s.name for s in found[:3])
        raise AutosegInputError(f"{folder}: holds {len(found)} DICOM series" + (f" ({listed})" if found else "")
                                + "; give each series its own folder")
    return found[0]


def series_path(series: DicomSeries, found: list[DicomSeries]) -> Path:
    """A path naming ``series``: its folder when no other series of ``found`` shares it, else
    ``folder#SeriesInstanceUID``."""
    alone = sum(other.folder == series.folder for other in found) == 1
    return series.folder if alone else Path(f"{series.folder}{SERIES_SEPARATOR}{series.series_uid}")


def series_at(path: Path) -> DicomSeries:
    """The series a path names: a folder holding one series, or ``folder#SeriesInstanceUID``."""
    folder, separator, uid = str(path).rpartition(SERIES_SEPARATOR)
    if Path(path).is_dir() or not separator or not UID_PATTERN.fullmatch(uid):
        return only_series(Path(path))
    for series in find_series(Path(folder), recursive=False):
        if series.series_uid == uid:
            return series
    raise AutosegInputError(f"{path}: no DICOM series with this Series Instance UID in {folder}")


def is_series_path(path: Path) -> bool:
    """Whether ``path`` names a series: ``folder#UID`` of an existing folder, or a folder with DICOM files
    directly in it (the first few files are looked at)."""
    if path.is_dir():
        return any(is_dicom_file(child) for child in sorted(path.iterdir())[:8]
                   if child.is_file() and child.name.upper() != "DICOMDIR")
    folder, separator, uid = str(path).rpartition(SERIES_SEPARATOR)
    return bool(separator) and UID_PATTERN.fullmatch(uid) is not None and Path(folder).is_dir()


def series_order(series: DicomSeries) -> tuple:
    """The rule that gives the series of a multi-channel case their channels: Series Number, then
    Series Description, then UID (channel 0 first)."""
    return (series.series_number if series.series_number is not None else 1 << 30, series.description,
            series.series_uid)


def dicom_cases(folder: Path, num_channels: int, skip: Sequence[Path] = ()
                ) -> tuple[dict[str, dict[int, Path]], dict[str, str]]:
    """Cases of DICOM series under ``folder``: ``({case: {channel: series path}}, {case: problem})``.

    Each subfolder of ``folder`` (and ``folder`` itself, for files directly in it) is searched
    recursively. With a one-channel model every series is a case, named by its folder (plus
    ``_s{Series Number}`` when the folder holds several). With ``num_channels`` > 1 a subfolder is
    one case and must hold exactly that many series, given channels by :func:`series_order`.
    A folder whose files cannot be read is a problem of that case; the others go on. Subfolders
    in ``skip`` (series folders named ``{case}_{XXXX}``, handled like image files) are left out.
    """
    cases: dict[str, dict[int, Path]] = {}
    problems: dict[str, str] = {}
    direct = [path for path in sorted(folder.iterdir()) if path.is_file() and is_dicom_file(path)]
    roots = ([folder] if direct else []) + [path for path in sorted(folder.iterdir())
                                            if path.is_dir() and not path.name.startswith(".") and path not in skip]
    for root in roots:
        try:
            found = find_series(root, recursive=root is not folder)
        except AutosegInputError as error:
            problems[root.name] = str(error)
            continue
        if not found:
            continue
        if num_channels > 1:
            if len(found) != num_channels:
                problems[root.name] = (f"{root}: holds {len(found)} DICOM series, the model needs one per channel "
                                       f"({num_channels}; channels follow Series Number)")
                continue
            cases[root.name] = {channel: series_path(series, found)
                                for channel, series in enumerate(sorted(found, key=series_order))}
            continue
        for index, series in enumerate(sorted(found, key=series_order)):
            number = series.series_number if series.series_number is not None else index
            cases[root.name if len(found) == 1 else f"{root.name}_s{number}"] = {0: series_path(series, found)}
    return cases, problems


def decoder_reason(error: BaseException) -> str:
    """SimpleITK/GDCM's error as one line: its line mentioning an error, else its last line, else its type."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    line = next((line for line in lines if "rror" in line), lines[-1] if lines else type(error).__name__)
    return line[:160]


def _undecodable_file(files: Sequence[Path]) -> tuple[Path, str] | None:
    """The first file that pydicom cannot decode the pixels of, and why (after SimpleITK failed)."""
    pydicom = require_pydicom()
    for path in files:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                pydicom.dcmread(path).pixel_array  # noqa: B018 - decoded to find the culprit
        except Exception as error:  # pydicom and its decoders raise many kinds
            return path, error_reason(error, 120)
    return None


def read_series(series: DicomSeries) -> tuple[np.ndarray, Any]:
    """Voxels ``(z, y, x)`` with Rescale Slope/Intercept applied (HU for CT) and the SimpleITK image
    (spacing in mm; one-slice series as :func:`single_slice_spacing` says)."""
    import SimpleITK as sitk

    files = checked_slices(series)
    try:
        image = None
        if len(files) == 1:  # one (possibly multi-frame) file: a 3D image, not a series of one 2D slice
            reader = sitk.ImageFileReader()
            reader.SetFileName(str(files[0]))
            image = reader.Execute()
        if image is None or image.GetDimension() == 2:
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames([str(path) for path in files])
            image = reader.Execute()
    except RuntimeError as error:
        culprit = _undecodable_file(files)
        if culprit is not None:
            raise AutosegInputError(f"{culprit[0]}: pixel data cannot be decoded ({culprit[1]})") from None
        raise AutosegInputError(f"{series.name}: cannot be read by SimpleITK ({decoder_reason(error)})") from None
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise AutosegInputError(f"{series.name}: {image.GetNumberOfComponentsPerPixel()} components per voxel "
                                "(colour images are not scans)")
    if image.GetDimension() != 3:
        raise AutosegInputError(f"{series.name}: read as a {image.GetDimension()}D image; expected one 3D volume")
    spacing = single_slice_spacing(series)
    if spacing is not None:
        image.SetSpacing((*image.GetSpacing()[:2], spacing))
    return sitk.GetArrayFromImage(image), image
