"""Dataset verification: every problem found, one line each, naming the file.

Nothing is written until a dataset passes. The structural checks (missing files,
numbering) run on file names; the per-case checks read each case once and hand the
arrays on to the fingerprint so the data are not read twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from autoseg.errors import AutosegInputError
from autoseg.io.dataset import DatasetDescription, RawCase, group_channel_files
from autoseg.io.geometry import ImageGeometry, geometry_mismatch
from autoseg.io.images import read_raw

#: Relative tolerance on spacing/direction and (scaled) origin between image channels and label.
GEOMETRY_TOLERANCE = 1e-3


@dataclass
class LoadedCase:
    """A verified case in memory: image ``(C, z, y, x)`` float32, label ``(z, y, x)`` int16."""

    case_id: str
    image: np.ndarray
    label: np.ndarray
    geometry: ImageGeometry


def verify_structure(description: DatasetDescription, cases: list[RawCase]) -> list[str]:
    """File-name level problems: empty dataset, missing/extra channel files, missing labels."""
    problems = []
    images_folder = description.root / "imagesTr"
    labels_folder = description.root / "labelsTr"
    ending = description.file_ending
    if not labels_folder.is_dir():
        problems.append(f"{labels_folder}: folder not found")
    if not cases:
        problems.append(f"{images_folder}: empty dataset: no files named {{case}}_XXXX{ending}")
        return problems
    grouped = group_channel_files(images_folder, ending)
    for case_id, channels in sorted(grouped.items()):
        if -1 in channels:
            problems.append(f"{channels[-1]}: file name lacks the _XXXX channel suffix "
                            f"(expected {case_id}_0000{ending})")
        for channel, name in sorted(description.channel_names.items()):
            if channel not in channels and -1 not in channels:
                problems.append(f"{images_folder / f'{case_id}_{channel:04d}{ending}'}: missing "
                                f"(channel {channel} '{name}')")
        for channel in sorted(channels):
            if channel >= description.num_channels:
                problems.append(f"{channels[channel]}: channel {channel} is not declared in "
                                f"dataset.json channel_names (0..{description.num_channels - 1})")
    for case in cases:
        if case.label_file is None:
            problems.append(f"{labels_folder / f'{case.case_id}{ending}'}: missing label file")
    if labels_folder.is_dir():
        image_ids = set(grouped)
        for path in sorted(labels_folder.iterdir()):
            if path.name.endswith(ending) and not path.name.startswith("."):
                if path.name[: -len(ending)] not in image_ids:
                    problems.append(f"{path}: label without images in imagesTr")
    if description.num_training >= 0 and description.num_training != len(cases):
        problems.append(f"{description.root / 'dataset.json'}: numTraining is {description.num_training} "
                        f"but imagesTr holds {len(cases)} cases")
    return problems


def _read(path: Path, problems: list[str]) -> tuple[np.ndarray, ImageGeometry] | None:
    """The stored voxels and geometry of ``path``, or None with its problem appended."""
    try:
        return read_raw(path)
    except AutosegInputError as error:
        problems.append(str(error))
        return None


def verify_case(case: RawCase, description: DatasetDescription) -> tuple[list[str], LoadedCase | None]:
    """Read one case and check it; returns its problems and, when there are none, its arrays."""
    problems: list[str] = []
    channels = []
    reference_geometry = None
    for path in case.image_files:
        loaded = _read(path, problems)
        if loaded is None:
            continue
        stored, geometry = loaded
        if reference_geometry is None:
            reference_geometry = geometry
        else:
            mismatch = geometry_mismatch(reference_geometry, geometry, GEOMETRY_TOLERANCE)
            if mismatch:
                problems.append(f"{path}: {mismatch} (channel 0: {case.image_files[0].name})")
                continue
        array = stored.astype(np.float32, copy=False)
        if not np.isfinite(array).all():
            problems.append(f"{path}: contains {int(np.count_nonzero(~np.isfinite(array)))} NaN/Inf voxels")
        if np.any(np.asarray(geometry.sitk_spacing) <= 0):
            problems.append(f"{path}: non-positive spacing {list(geometry.sitk_spacing)}")
        channels.append(array)
    if (case.label_file is None or reference_geometry is None or problems
            or len(case.image_files) != description.num_channels):
        return problems, None  # missing files are reported by verify_structure
    loaded_label = _read(case.label_file, problems)
    if loaded_label is None:
        return problems, None
    raw_label, label_geometry = loaded_label
    mismatch = geometry_mismatch(reference_geometry, label_geometry, GEOMETRY_TOLERANCE)
    if mismatch:
        problems.append(f"{case.label_file}: {mismatch} (image {case.image_files[0].name})")
        return problems, None
    if np.issubdtype(raw_label.dtype, np.floating):
        if not np.isfinite(raw_label).all() or not np.array_equal(raw_label, np.rint(raw_label)):
            problems.append(f"{case.label_file}: label map has non-integer values")
            return problems, None
    label = raw_label.astype(np.int16)
    present = np.unique(label)
    undeclared = sorted(set(present.tolist()) - set(description.label_values))
    if undeclared:
        problems.append(f"{case.label_file}: label values {undeclared} are not declared in dataset.json "
                        f"(declared: {description.label_values})")
        return problems, None
    return problems, LoadedCase(case.case_id, np.stack(channels), label, reference_geometry)
