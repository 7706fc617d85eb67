"""Class probability files: ``{case}.npz`` (float16 ``(K, z, y, x)``) + ``{case}.json`` (geometry).

Written for validation cases by training (for model selection) and by ``autoseg
predict --save-probabilities`` (for ensembling); read by ``autoseg ensemble``. The
JSON holds the image geometry so ensembles can check that cases match, and, for the
sigmoid probabilities of a region-based model, ``regions_class_order`` (how they become a
label map, :mod:`autoseg.io.labels`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from autoseg.errors import AutosegInputError
from autoseg.io.geometry import ImageGeometry
from autoseg.utils.files import read_json, save_npz_compressed, write_json


def probability_paths(base_path: str | os.PathLike) -> tuple[Path, Path]:
    """``({base}.npz, {base}.json)`` for a base path without ending (names may contain dots)."""
    base = Path(base_path)
    return base.with_name(base.name + ".npz"), base.with_name(base.name + ".json")


def save_probabilities(probabilities: np.ndarray, geometry: dict | ImageGeometry,
                       base_path: str | os.PathLike, regions_class_order: list[int] | None = None
                       ) -> tuple[Path, Path]:
    """Save ``(K, z, y, x)`` probabilities as ``{base}.npz`` (float16) and the geometry as ``{base}.json``
    (with ``regions_class_order`` when they are region probabilities)."""
    npz_path, json_path = probability_paths(base_path)
    geometry_dict = geometry.to_dict() if isinstance(geometry, ImageGeometry) else dict(geometry)
    save_npz_compressed(npz_path, probabilities=np.asarray(probabilities).astype(np.float16))
    metadata = {"geometry": geometry_dict, "num_classes": int(probabilities.shape[0])}
    if regions_class_order is not None:
        metadata["regions_class_order"] = [int(v) for v in regions_class_order]
    write_json(json_path, metadata)
    return npz_path, json_path


def probability_regions(base_path: str | os.PathLike) -> list[int] | None:
    """The ``regions_class_order`` of a saved case's region probabilities (None for class probabilities)."""
    _, json_path = probability_paths(base_path)
    try:
        order = read_json(json_path).get("regions_class_order")
    except (OSError, ValueError, AttributeError) as error:
        raise AutosegInputError(f"{json_path}: invalid probability metadata ({error})") from None
    if order is not None and (not isinstance(order, list) or not all(isinstance(v, int) for v in order)):
        raise AutosegInputError(f"{json_path}: 'regions_class_order' must be a list of label values")
    return order


def load_probabilities(base_path: str | os.PathLike, dtype: type = np.float32) -> tuple[np.ndarray, ImageGeometry]:
    """Read ``{base}.npz`` + ``{base}.json``: ``(K, z, y, x)`` probabilities and their geometry.

    ``dtype`` is float32 by default; ``np.float16`` keeps the stored precision at half the memory.

    Raises:
        AutosegInputError: a file is missing or unreadable, or the array does not match
            the geometry's shape or the declared number of classes.
    """
    npz_path, json_path = probability_paths(base_path)
    for path in (npz_path, json_path):
        if not path.is_file():
            raise AutosegInputError(f"{path}: file not found")
    try:
        with np.load(npz_path) as data:
            if "probabilities" not in data:
                raise AutosegInputError(f"{npz_path}: no 'probabilities' array (found {', '.join(data.files)})")
            probabilities = data["probabilities"].astype(dtype, copy=False)
    except (OSError, ValueError) as error:
        raise AutosegInputError(f"{npz_path}: cannot be read ({error})") from None
    try:
        metadata = read_json(json_path)
        geometry = ImageGeometry.from_dict(metadata["geometry"])
        num_classes = int(metadata.get("num_classes", probabilities.shape[0]))
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise AutosegInputError(f"{json_path}: invalid probability metadata ({error})") from None
    if probabilities.ndim != len(geometry.shape) + 1 or tuple(probabilities.shape[1:]) != geometry.shape:
        raise AutosegInputError(f"{npz_path}: probabilities of shape {list(probabilities.shape)} do not match "
                                f"the image shape {list(geometry.shape)} in {json_path.name}")
    if probabilities.shape[0] != num_classes:
        raise AutosegInputError(f"{npz_path}: {probabilities.shape[0]} classes, {json_path.name} "
                                f"declares {num_classes}")
    return probabilities, geometry


def list_probability_cases(folder: str | os.PathLike) -> list[str]:
    """Case names of the ``*.npz`` files of ``folder`` (hidden temporary files are skipped), sorted."""
    folder = Path(folder)
    if not folder.is_dir():
        raise AutosegInputError(f"{folder}: folder not found")
    return sorted(path.name[: -len(".npz")] for path in folder.iterdir()
                  if path.is_file() and path.name.endswith(".npz") and not path.name.startswith(".")
                  and len(path.name) > len(".npz"))
