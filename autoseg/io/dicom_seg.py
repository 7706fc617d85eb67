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
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from autoseg import __version__
from autoseg.errors import AutosegInputError
from autoseg.io.dicom import DICOM_EXTRA, checked_slices, series_at
from autoseg.io.labels import class_mask
from autoseg.utils.files import atomic_path, read_json_input

#: Coded concept (value, scheme, meaning) of a segment whose label has no entry in the mapping file.
DEFAULT_CONCEPT = ("91723000", "SCT", "Anatomical structure")
#: Series Number of the written segmentation series.
SEG_SERIES_NUMBER = 900
#: File ending of written DICOM-SEG objects.
DICOM_SEG_ENDING = ".dcm"


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
        return f"{path}: cannot be read as DICOM ({str(error).splitlines()[0][:120]})"
    return None


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

    files = checked_slices(series_at(Path(source)))
    sources = [pydicom.dcmread(file) for file in files]
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
    seg = hd.seg.Segmentation(
        source_images=sources, pixel_array=masks, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions, series_instance_uid=hd.UID(), series_number=SEG_SERIES_NUMBER,
        sop_instance_uid=hd.UID(), instance_number=1, manufacturer="autoseg",
        manufacturer_model_name="autoseg", software_versions=__version__, device_serial_number="none",
        series_description=f"autoseg {__version__} segmentation", omit_empty_frames=False)
    path = Path(path)
    with atomic_path(path) as temporary:
        seg.save_as(temporary)
    return path
