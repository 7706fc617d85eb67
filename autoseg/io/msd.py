"""Medical Segmentation Decathlon datasets as downloaded -> the nnU-Net v2 raw layout.

An MSD task (``Task01_BrainTumour`` ... ``Task10_Colon``) is unpacked as::

    TaskXX_Name/dataset.json      "modality": {"0": "FLAIR", ...}, "labels": {"0": "background", "1": ...},
                                  "training": [{"image": "./imagesTr/x.nii.gz", "label": "./labelsTr/x.nii.gz"}],
                                  "test": ["./imagesTs/y.nii.gz"]
    TaskXX_Name/imagesTr/x.nii.gz one file per case; several channels make a 4D NIfTI (x, y, z, channel)
    TaskXX_Name/labelsTr/x.nii.gz
    TaskXX_Name/imagesTs/y.nii.gz

plus, when the tar archive was made on macOS, an AppleDouble file ``._x.nii.gz`` beside
every file, which is not an image and is skipped. Every listed file must lie inside the task
folder: an absolute path, a ``..`` component, or a symbolic link resolving outside the task folder
is refused in one line (a downloaded dataset.json must not pull other files into a training set);
links that stay inside it are followed, and the task folder itself may be a link. The v2 layout
(:mod:`autoseg.io.dataset`) has one file per channel (``imagesTr/x_0000.nii.gz``, ...),
the label maps as they are, and a dataset.json with ``channel_names`` (MSD's
``modality``), ``labels`` (name -> value, MSD's inverted), ``numTraining`` and
``file_ending``. A channel keeps the spacing, origin and direction of the 4D image's three
spatial axes. Written here with SimpleITK: nnU-Net's own converter does the same with nibabel.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path, PurePath
from typing import Any

import numpy as np
import SimpleITK as sitk

from autoseg.errors import AutosegInputError
from autoseg.io.file_integrity import check_image_file
from autoseg.io.formats import sitk_geometry
from autoseg.io.images import write_image
from autoseg.utils.files import atomic_path, read_json_input

#: The file ending of every MSD task.
MSD_FILE_ENDING = ".nii.gz"
#: Prefix of the AppleDouble files macOS puts into tar archives.
APPLE_DOUBLE_PREFIX = "._"


@dataclass(frozen=True)
class MsdCase:
    """One case of an MSD task: its id (the file name without ``.nii.gz``) and files (label None in imagesTs)."""

    case_id: str
    image: Path
    label: Path | None


@dataclass(frozen=True)
class MsdTask:
    """An MSD task's dataset.json: name, channel names (index -> name), labels (name -> value), cases."""

    root: Path
    name: str
    channel_names: dict[int, str]
    labels: dict[str, int]
    training: list[MsdCase]
    test: list[MsdCase]


def _case_id(path: Path) -> str:
    return path.name[: -len(MSD_FILE_ENDING)] if path.name.endswith(MSD_FILE_ENDING) else path.stem


def outside_task_problem(entry: str) -> str | None:
    """Why the file ``entry`` (as dataset.json lists it) is not inside the task folder, or None.

    Pure rule on the path's text: an absolute path or a ``..`` component leaves the folder. Symlinks are
    judged by :func:`_listed_file` after resolving."""
    pure = PurePath(entry.replace("\\", "/"))
    if pure.is_absolute() or pure.drive or entry.startswith(("/", "\\")):
        return "is an absolute path"
    if ".." in pure.parts:
        return "climbs out with '..'"
    return None


def _listed_file(root: Path, entry: Any, source: str, section: str) -> Path:
    if not isinstance(entry, str) or not entry.endswith(MSD_FILE_ENDING):
        raise AutosegInputError(f"{source}: listed file {entry!r} is not a {MSD_FILE_ENDING} path")
    problem = outside_task_problem(entry)
    if problem:
        raise AutosegInputError(f"{source}: '{section}' entry {entry!r} {problem}: every file must be inside the "
                                f"task folder {root}; refused")
    path = root / entry
    if not path.is_file():
        raise AutosegInputError(f"{path}: listed in {source} but not found")
    resolved, inside = path.resolve(), root.resolve()
    if not resolved.is_relative_to(inside):
        raise AutosegInputError(f"{source}: '{section}' entry {entry!r} is a symbolic link to {resolved}, outside "
                                f"the task folder {root}; refused (copy the file in, or link the whole task "
                                "folder instead)")
    return path


def read_msd_task(root: str | os.PathLike) -> MsdTask:
    """Read ``{root}/dataset.json`` in the MSD format; one-line errors name the file and the problem."""
    root = Path(root)
    source = root / "dataset.json"
    if not root.is_dir():
        raise AutosegInputError(f"{root}: folder not found")
    data = read_json_input(source)
    if not isinstance(data, dict):
        raise AutosegInputError(f"{source}: expected a JSON object")
    if "channel_names" in data and "modality" not in data:
        raise AutosegInputError(f"{source}: already in the nnU-Net v2 format (it has 'channel_names'): use the "
                                "folder as it is")
    for key in ("modality", "labels", "training"):
        if key not in data:
            raise AutosegInputError(f"{source}: missing '{key}' (not a Medical Segmentation Decathlon dataset.json)")
    try:
        channel_names = {int(index): str(name) for index, name in dict(data["modality"]).items()}
        labels = {str(name): int(value) for value, name in dict(data["labels"]).items()}
    except (TypeError, ValueError):
        raise AutosegInputError(f"{source}: 'modality' and 'labels' must map indices ('0', '1', ...) to "
                                "names") from None
    if sorted(channel_names) != list(range(len(channel_names))) or not channel_names:
        raise AutosegInputError(f"{source}: 'modality' keys must be 0..N-1, got {sorted(channel_names)}")
    if len(labels) != len(data["labels"]):
        raise AutosegInputError(f"{source}: two labels have the same name")
    if not isinstance(data["training"], list):
        raise AutosegInputError(f"{source}: 'training' must be a list of cases")
    training = []
    for entry in data["training"]:
        if not isinstance(entry, dict) or "image" not in entry or "label" not in entry:
            raise AutosegInputError(f"{source}: every 'training' entry needs 'image' and 'label', got {entry!r}")
        if Path(str(entry["image"])).name.startswith(APPLE_DOUBLE_PREFIX):
            continue
        image = _listed_file(root, entry["image"], str(source), "training")
        training.append(MsdCase(_case_id(image), image, _listed_file(root, entry["label"], str(source), "training")))
    if not isinstance(data.get("test", []), list):
        raise AutosegInputError(f"{source}: 'test' must be a list of files")
    test = [MsdCase(_case_id(image), image, None)
            for image in (_listed_file(root, entry, str(source), "test") for entry in data.get("test", [])
                          if not Path(str(entry)).name.startswith(APPLE_DOUBLE_PREFIX))]
    ids = [case.case_id for case in training]
    if len(set(ids)) != len(ids):
        raise AutosegInputError(f"{source}: a training case is listed twice")
    if not training:
        raise AutosegInputError(f"{source}: 'training' lists no cases")
    return MsdTask(root, str(data.get("name") or root.name), channel_names, labels, training, test)


def v2_dataset_json(task: MsdTask) -> dict[str, Any]:
    """The nnU-Net v2 dataset.json of ``task``."""
    return {"name": task.name, "channel_names": {str(index): name for index, name in task.channel_names.items()},
            "labels": dict(sorted(task.labels.items(), key=lambda item: item[1])),
            "numTraining": len(task.training), "file_ending": MSD_FILE_ENDING,
            "converted_from": f"Medical Segmentation Decathlon {task.root.name}"}


def split_channels(image: sitk.Image, path: Path, num_channels: int) -> list[sitk.Image]:
    """A 3D image, or a 4D image's channels (its last axis) as 3D images with the spatial geometry."""
    if image.GetDimension() == 3 and num_channels == 1:
        return [image]
    size = image.GetSize()
    if image.GetDimension() != 4 or size[3] != num_channels:
        found = f"{size[3]} channels" if image.GetDimension() == 4 else f"a {image.GetDimension()}D image"
        raise AutosegInputError(f"{path}: dataset.json declares {num_channels} modalities, the file holds {found}")
    voxels = sitk.GetArrayViewFromImage(image)  # (channel, z, y, x)
    direction = np.asarray(image.GetDirection()).reshape(4, 4)[:3, :3]
    channels = []
    for channel in range(num_channels):
        volume = sitk.GetImageFromArray(np.ascontiguousarray(voxels[channel]))
        volume.SetSpacing(image.GetSpacing()[:3])
        volume.SetOrigin(image.GetOrigin()[:3])
        volume.SetDirection(tuple(direction.ravel().tolist()))
        channels.append(volume)
    return channels


def convert_case(task: tuple[MsdCase, int, Path, Path | None]) -> str:
    """Write one case's channel files (and copy its label map) into the v2 layout; returns its id."""
    case, num_channels, images_folder, labels_folder = task
    check_image_file(case.image)
    try:
        image = sitk.ReadImage(str(case.image))
    except RuntimeError:
        raise AutosegInputError(f"{case.image}: cannot be read as an image") from None
    for channel, volume in enumerate(split_channels(image, case.image, num_channels)):
        write_image(sitk.GetArrayFromImage(volume), sitk_geometry(volume),
                    images_folder / f"{case.case_id}_{channel:04d}{MSD_FILE_ENDING}")
    if case.label is not None and labels_folder is not None:
        check_image_file(case.label)
        with atomic_path(labels_folder / case.label.name, needed_bytes=case.label.stat().st_size) as temporary:
            shutil.copyfile(case.label, temporary)
    return case.case_id
