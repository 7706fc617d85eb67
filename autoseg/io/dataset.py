"""The nnU-Net v2 raw dataset layout: ``dataset.json``, ``imagesTr``, ``labelsTr``, ``imagesTs``.

A case ``{case}`` has one image file per channel, ``imagesTr/{case}_{XXXX}{file_ending}``
(``XXXX`` = channel index, 4 digits), and one label map ``labelsTr/{case}{file_ending}``.

Labels follow the rules of :mod:`autoseg.io.labels` (consecutive values, the ``ignore``
label, regions with ``regions_class_order``), checked here when dataset.json is read.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path

from autoseg.errors import AutosegInputError
from autoseg.io.labels import (
    foreground_values,
    ignore_value,
    is_region_based,
    label_definition_problem,
    map_values,
    num_network_outputs,
)
from autoseg.utils.files import read_json_input


@dataclass(frozen=True)
class DatasetDescription:
    """The content of ``dataset.json``.

    Attributes:
        root: the dataset folder.
        name: dataset name (the folder name when dataset.json has none).
        channel_names: channel index -> modality name, e.g. ``{0: "CT"}``.
        labels: label name -> integer value, or a list of values for a region; background
            is 0 and the values are consecutive (0..N-1, as nnU-Net requires).
        num_training: ``numTraining`` as declared.
        file_ending: e.g. ``".nii.gz"``.
        regions_class_order: for a region-based dataset, the value written for each region
            (:mod:`autoseg.io.labels`); None otherwise.
    """

    root: Path
    name: str
    channel_names: dict[int, str]
    labels: dict[str, int | list[int]]
    num_training: int
    file_ending: str
    regions_class_order: list[int] | None = None

    @property
    def num_channels(self) -> int:
        return len(self.channel_names)

    @property
    def label_values(self) -> list[int]:
        """Sorted values label maps may hold, background 0 and the ignore value (when declared) included."""
        return map_values(self.labels)

    @property
    def foreground_labels(self) -> list[int]:
        return foreground_values(self.labels)

    @property
    def num_classes(self) -> int:
        """Number of network outputs (:func:`autoseg.io.labels.num_network_outputs`)."""
        return num_network_outputs(self.labels)

    @property
    def ignore_label(self) -> int | None:
        return ignore_value(self.labels)

    def to_dict(self) -> dict:
        return {"name": self.name, "channel_names": {str(k): v for k, v in self.channel_names.items()},
                "labels": dict(self.labels), "numTraining": self.num_training,
                "file_ending": self.file_ending,
                **({"regions_class_order": self.regions_class_order} if self.regions_class_order else {})}


@dataclass
class RawCase:
    """One case of a raw dataset: its image file per channel and its label file (if any)."""

    case_id: str
    image_files: list[Path] = field(default_factory=list)
    label_file: Path | None = None


def parse_dataset_json(data: dict, root: Path, source: str) -> DatasetDescription:
    """Validate the content of a dataset.json (``source`` names the file in errors)."""
    for key in ("channel_names", "labels", "file_ending"):
        if key not in data:
            alternative = " (found 'modality': rename it to 'channel_names')" if (
                key == "channel_names" and "modality" in data) else ""
            raise AutosegInputError(f"{source}: missing required key '{key}'{alternative}")
    try:
        channel_names = {int(k): str(v) for k, v in data["channel_names"].items()}
    except (ValueError, AttributeError):
        raise AutosegInputError(f"{source}: 'channel_names' must map channel indices "
                                "('0', '1', ...) to names") from None
    if sorted(channel_names) != list(range(len(channel_names))) or not channel_names:
        raise AutosegInputError(f"{source}: 'channel_names' keys must be 0..N-1, got {sorted(channel_names)}")
    if not isinstance(data["labels"], dict):
        raise AutosegInputError(f"{source}: 'labels' must map label names to values")
    regions_class_order = data.get("regions_class_order")
    if is_region_based(data["labels"]) or regions_class_order is not None:
        problem = label_definition_problem(data["labels"], regions_class_order)
        if problem is not None:
            raise AutosegInputError(f"{source}: {problem}")
    labels = {}
    for name, value in dict(data["labels"]).items():
        if isinstance(value, list):
            labels[str(name)] = [int(v) for v in value]
            continue
        if isinstance(value, bool) or not isinstance(value, int):
            raise AutosegInputError(f"{source}: label '{name}' must be an integer or a list of integers "
                                    f"(a region), got {value!r}")
        if value < 0:
            raise AutosegInputError(f"{source}: label '{name}' has negative value {value}")
        labels[str(name)] = value
    if 0 not in labels.values():
        raise AutosegInputError(f"{source}: 'labels' must declare background with value 0")
    if regions_class_order is not None:  # checked above with the regions
        return DatasetDescription(root=root, name=str(data.get("name") or root.name),
                                  channel_names=channel_names, labels=labels,
                                  num_training=_num_training(data, source),
                                  file_ending=_file_ending(data, source),
                                  regions_class_order=[int(v) for v in regions_class_order])
    if len(set(labels.values())) != len(labels):
        raise AutosegInputError(f"{source}: 'labels' has duplicate values")
    values = sorted(labels.values())
    if values != list(range(len(values))):
        missing = sorted(set(range(max(values) + 1)) - set(values))
        raise AutosegInputError(f"{source}: label values must be consecutive 0..{len(values) - 1} (as in nnU-Net), "
                                f"got {values}, missing {missing}: renumber dataset.json and the label files")
    ignore = ignore_value(labels)
    if ignore is not None and ignore != values[-1]:
        raise AutosegInputError(f"{source}: label 'ignore' must have the highest value (as in nnU-Net), got "
                                f"{ignore} below {values[-1]}")
    if not foreground_values(labels):
        raise AutosegInputError(f"{source}: 'labels' must declare at least one foreground label"
                                + (" besides 'ignore'" if ignore is not None else ""))
    return DatasetDescription(root=root, name=str(data.get("name") or root.name),
                              channel_names=channel_names, labels=labels,
                              num_training=_num_training(data, source), file_ending=_file_ending(data, source))


def _file_ending(data: dict, source: str) -> str:
    file_ending = str(data["file_ending"])
    if not file_ending.startswith("."):
        raise AutosegInputError(f"{source}: 'file_ending' must start with '.', got {file_ending!r}")
    return file_ending


def _num_training(data: dict, source: str) -> int:
    num_training = data.get("numTraining", -1)
    if not isinstance(num_training, int):
        raise AutosegInputError(f"{source}: 'numTraining' must be an integer")
    return num_training


def load_dataset_description(root: str | os.PathLike) -> DatasetDescription:
    """Read ``{root}/dataset.json``; raise :class:`AutosegInputError` naming the problem."""
    root = Path(root)
    if not root.is_dir():
        raise AutosegInputError(f"{root}: dataset folder not found")
    path = root / "dataset.json"
    data = read_json_input(path, "file not found (every dataset needs a dataset.json)", expect=dict)
    return parse_dataset_json(data, root, str(path))


def group_channel_files(folder: str | os.PathLike, file_ending: str) -> dict[str, dict[int, Path]]:
    """Group ``{case}_{XXXX}{file_ending}`` files of ``folder`` by case id, then channel index.

    Files with the right ending but no ``_XXXX`` channel suffix are returned under
    channel -1 so the caller can report them. A folder named ``{case}_{XXXX}`` (no ending) is
    a channel too: a DICOM series (:class:`autoseg.io.formats.DicomSeriesFormat` reads it).
    """
    folder = Path(folder)
    pattern = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})" + re.escape(file_ending) + r"$")
    series_folder = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
    cases: dict[str, dict[int, Path]] = {}
    for path in sorted(folder.iterdir()):
        match = series_folder.match(path.name) if path.is_dir() and not path.name.startswith(".") else None
        if match is not None:
            cases.setdefault(match["case"], {})[int(match["channel"])] = path
            continue
        if not path.name.endswith(file_ending) or path.name.startswith("."):
            continue
        match = pattern.match(path.name)
        if match is None:
            cases.setdefault(path.name[: -len(file_ending)], {})[-1] = path
            continue
        cases.setdefault(match["case"], {})[int(match["channel"])] = path
    return cases


def list_training_cases(description: DatasetDescription) -> list[RawCase]:
    """Cases found in ``imagesTr`` (and their label in ``labelsTr``), sorted by case id.

    Missing channel or label files are not checked here (see
    :mod:`autoseg.io.verification`); missing ones are left out of ``image_files`` /
    set to None for the verifier to report.
    """
    images_folder = description.root / "imagesTr"
    if not images_folder.is_dir():
        raise AutosegInputError(f"{images_folder}: folder not found")
    grouped = group_channel_files(images_folder, description.file_ending)
    labels_folder = description.root / "labelsTr"
    cases = []
    for case_id, channels in sorted(grouped.items()):
        label = labels_folder / f"{case_id}{description.file_ending}"
        cases.append(RawCase(
            case_id=case_id,
            image_files=[channels[c] for c in sorted(channels) if c >= 0],
            label_file=label if label.is_file() else None,
        ))
    return cases
