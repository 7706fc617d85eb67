"""DICOM series as images: checking their slices, naming one of a folder, making cases, reading one.

A series is the set of files sharing a Series Instance UID, or for files without one (every
UID blanked by an anonymiser) a group of a folder's files with the same geometry and acquisition
attributes under a stable synthetic UID (:mod:`autoseg.io.dicom_headers`, which finds them).
Headers are read with pydicom (the ``dicom`` extra: ``pip install autoseg[dicom]``), voxels
with SimpleITK's GDCM series reader, which applies Rescale Slope/Intercept (CT voxels come
back in Hounsfield units) and decodes the compressed transfer syntaxes; where it fails,
pydicom decodes them (pylibjpeg, pyjpegls, Pillow) and the image is built from the headers'
geometry (:mod:`autoseg.io.dicom_pixels`). An enhanced multi-frame image (one file, geometry in
its functional groups) is read that way too, its frames sorted by their positions. Slices are
sorted by their position along the slice normal (the cross product of the Image Orientation
(Patient) row and column directions), not by file name or Instance Number.

What is refused, as one line naming the series (:func:`series_problem`): slices of
different orientation, size or pixel spacing; slices without position; two slices at one
position; gantry tilt (slices shifted in-plane from one to the next, which a regular voxel
grid cannot hold); a gap of about two or more slice spacings (missing slices); otherwise
uneven slice spacing (more than :data:`SPACING_TOLERANCE` relative spread); a malformed
position, orientation (not two orthogonal unit directions) or pixel spacing (not two
positive numbers: SimpleITK would silently read 1 mm); files without pixel data, or whose
pixel data is shorter than Rows x Columns x frames x bits ("pixel data is truncated (N of M
bytes)"); a multi-frame file among other files of its series; the same checks on the frame
positions of an enhanced multi-frame file. A file that neither SimpleITK nor pydicom can decode
is named with its transfer syntax and the decoder's reason.

What is skipped, with a ``note:`` line on stderr (:func:`non_image_reason`): DICOM files
beside a series that are not images of it: a DICOMDIR (SOP Class
:data:`MEDIA_STORAGE_DIRECTORY`, or a file named ``DICOMDIR``), presentation states,
structured reports, key objects, segmentations, RT structure sets and other non-image
modalities (:data:`NON_IMAGE_MODALITIES`), and files of any SOP Class with neither pixel
data nor Rows. (A file with Rows but no pixel data is a damaged slice, one with neither SOP
Class nor pixels a damaged file: both refused.) Files that are not DICOM at all
(``Thumbs.db``, ``.DS_Store``, ``README.txt``) are never looked at.

A series of one slice (one single-frame file, or one multi-frame file without per-frame
positions) has no second position to measure its through-plane spacing from: it is taken from
Spacing Between Slices, else Slice Thickness (a ``note:`` line says which); with neither, 1 mm
is assumed and a ``warning:`` line says so (:func:`through_plane_spacing`). An enhanced
multi-frame file has a position per frame: its spacing is their gap (:func:`frame_spacing`).
Volumes in ``report.json`` and the DICOM-SEG's Pixel Measures follow that spacing.

Arrays are ``(z, y, x)`` like every image of autoseg (:mod:`autoseg.io.formats`).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from autoseg.errors import AutosegInputError
from autoseg.io.dicom_headers import (  # noqa: F401 - re-exported: other modules import them from here
    BLANK_UID_GROUPING,
    DICOM_EXTRA,
    MEDIA_STORAGE_DIRECTORY,
    NON_IMAGE_MODALITIES,
    DicomSeries,
    SliceHeader,
    dicom_files,
    error_reason,
    find_series,
    frame_geometry,
    is_dicom_file,
    native_pixel_bytes,
    non_image_reason,
    note,
    require_pydicom,
    synthetic_series_uid,
)

#: Slice gaps may differ by this fraction of the median gap before the series is refused.
SPACING_TOLERANCE = 0.01
#: A gap this many median gaps wide (or wider) means slices are missing.
MISSING_SLICE_GAP = 1.5
#: Slices whose positions step off the slice normal by more than this angle (degrees) are tilted.
MAX_TILT_DEGREES = 0.5
#: Separates a folder from the Series Instance UID of one of its series in a series path
#: (``patient1#1.2.840...``): how a folder holding several series names one of them (the synthetic
#: UID of :func:`autoseg.io.dicom_headers.synthetic_series_uid` for files without one).
SERIES_SEPARATOR = "#"
#: A DICOM UID: digits and dots (a '#' followed by anything else is part of a folder name).
UID_PATTERN = re.compile(r"[0-9][0-9.]*")
#: Through-plane spacing (mm) assumed for a one-slice series whose header gives none.
ASSUMED_SLICE_SPACING = 1.0


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
        if first.frame_positions is not None and len(first.frame_positions) > 1:
            problem = positions_problem(first.frame_positions, first.orientation,
                                        [f"frame {index + 1}" for index in range(len(first.frame_positions))])
            return f"{first.path.name}: {problem}" if problem is not None else None
        return None
    ordered = sorted_along_normal(slices)
    return positions_problem([header.position for header in ordered], first.orientation,
                             [header.path.name for header in ordered])


def positions_problem(positions: Sequence[Sequence[float]], orientation: Sequence[float],
                      names: Sequence[str]) -> str | None:
    """Why slice (or frame) ``positions`` (mm, patient LPS; ``names`` theirs, for the message) do not form
    one regular grid along the normal of ``orientation``: two at one position, gantry tilt, missing slices,
    uneven spacing; None when they do. Any order: they are sorted along the normal here."""
    normal = slice_normal(tuple(orientation))
    order = sorted(range(len(positions)), key=lambda index: float(np.dot(positions[index], normal)))
    positions = np.array([positions[index] for index in order], dtype=float)
    names = [names[index] for index in order]
    along = positions @ normal
    gaps = np.diff(along)
    if np.any(gaps < 1e-3):
        index = int(np.argmin(gaps))
        return (f"two slices at one position ({along[index]:.2f} mm along the normal: "
                f"{names[index]}, {names[index + 1]}); mixed series?")
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


def frame_spacing(header: SliceHeader) -> float | None:
    """The through-plane spacing (mm) of an enhanced multi-frame file from its frame positions (median gap
    along the normal), or None for other files and one frame."""
    if header.frame_positions is None or len(header.frame_positions) < 2:
        return None
    along = np.sort(np.array(header.frame_positions) @ slice_normal(header.orientation))
    return float(np.median(np.diff(along)))


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
    ``note:`` line saying where it came from (``warning:`` when assumed); None for several files. An
    enhanced multi-frame file's spacing comes from its frame positions (:func:`frame_spacing`)."""
    if len(series.slices) != 1:
        return None
    header = series.slices[0]
    from_frames = frame_spacing(header)
    if from_frames is not None:
        note(f"note: {series.name}: one enhanced multi-frame file ({header.frames} frames); geometry from its "
             f"functional groups (frame positions {from_frames:g} mm apart)")
        return from_frames
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
            ordered = sorted(found, key=series_order)
            cases[root.name] = {channel: series_path(series, found) for channel, series in enumerate(ordered)}
            note(f"note: {root}: {len(found)} DICOM series are the channels of case {root.name} by Series Number ("
                 + ", ".join(f"{_series_label(series)} -> {channel}" for channel, series in enumerate(ordered)) + ")")
            continue
        names = case_names(root.name, sorted(found, key=series_order))
        for name, series in names.items():
            cases[name] = {0: series_path(series, found)}
        if len(found) > 1:
            note(f"note: {root}: {len(found)} DICOM series, each segmented as its own case ({', '.join(names)})")
    return cases, problems


def _series_label(series: DicomSeries) -> str:
    return f"#{series.series_number}" if series.series_number is not None else series.series_uid[:14] + "..."


def case_names(root: str, ordered: Sequence[DicomSeries]) -> dict[str, DicomSeries]:
    """Case name -> series for the series of folder ``root`` (in :func:`series_order`): the folder's name for
    one, else ``{root}_s{Series Number}`` (the index without one), ``_2``, ``_3``... after a repeated name."""
    if len(ordered) == 1:
        return {root: ordered[0]}
    names: dict[str, DicomSeries] = {}
    for index, series in enumerate(ordered):
        base = f"{root}_s{series.series_number if series.series_number is not None else index}"
        name, count = base, 1
        while name in names:
            count += 1
            name = f"{base}_{count}"
        names[name] = series
    return names


def decoder_reason(error: BaseException) -> str:
    """SimpleITK/GDCM's error as one line: its line mentioning an error, else its last line, else its type."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    line = next((line for line in lines if "rror" in line), lines[-1] if lines else type(error).__name__)
    return line[:160]


def read_series(series: DicomSeries) -> tuple[np.ndarray, Any]:
    """Voxels ``(z, y, x)`` with Rescale Slope/Intercept applied (HU for CT) and the SimpleITK image
    (spacing in mm; one-slice series as :func:`single_slice_spacing` says). SimpleITK's GDCM reads it;
    where it fails, and for an enhanced multi-frame file, pydicom decodes it
    (:func:`autoseg.io.dicom_pixels.pydicom_image`)."""
    import SimpleITK as sitk

    from autoseg.io.dicom_pixels import pydicom_image

    files = checked_slices(series)
    headers = sorted_along_normal(series.slices)
    spacing = single_slice_spacing(series)
    image = None
    if len(files) == 1 and headers[0].frame_positions is not None:  # geometry in the functional groups
        image = pydicom_image(series.name, files, headers, spacing)
    else:
        try:
            if len(files) == 1:  # one (possibly multi-frame) file: a 3D image, not a series of one 2D slice
                reader = sitk.ImageFileReader()
                reader.SetFileName(str(files[0]))
                image = reader.Execute()
            if image is None or image.GetDimension() == 2:
                reader = sitk.ImageSeriesReader()
                reader.SetFileNames([str(path) for path in files])
                image = reader.Execute()
        except RuntimeError as error:  # pydicom decodes it, or names the file it cannot decode
            image = pydicom_image(series.name, files, headers, spacing if spacing is not None
                                  else series_slice_spacing(series))
            note(f"note: {series.name}: SimpleITK cannot read it ({decoder_reason(error)}); decoded with pydicom "
                 f"instead ({_syntax_names(headers)})")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise AutosegInputError(f"{series.name}: {image.GetNumberOfComponentsPerPixel()} components per voxel "
                                "(colour images are not scans)")
    if image.GetDimension() != 3:
        raise AutosegInputError(f"{series.name}: read as a {image.GetDimension()}D image; expected one 3D volume")
    if spacing is not None:
        image.SetSpacing((*image.GetSpacing()[:2], spacing))
    return sitk.GetArrayFromImage(image), image


def _syntax_names(headers: Sequence[SliceHeader]) -> str:
    """The transfer syntaxes of ``headers`` by name (UIDs pydicom does not know as they are)."""
    from pydicom.uid import UID

    return ", ".join(sorted({UID(header.transfer_syntax).name if header.transfer_syntax else "no transfer syntax"
                             for header in headers}))
