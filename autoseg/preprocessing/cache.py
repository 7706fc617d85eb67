"""The preprocessed cache that training reads.

Layout: ``{work_dir}/preprocessed/{data_identifier}/`` with per case
``{case}.npy`` (image ``(C, z, y, x)`` float32), ``{case}_seg.npy`` (label
``(z, y, x)`` int8/int16) — uncompressed so training can memory-map them — and
``{case}.json`` (properties, written last: its presence with the right
``cache_key`` marks the case as done). Re-running skips cases whose key matches the
current plans; changing anything that affects preprocessing changes the key.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from autoseg.errors import AutosegInputError
from autoseg.io.dataset import RawCase, list_training_cases, load_dataset_description
from autoseg.io.images import read_case_images, read_label
from autoseg.plans.schema import Plans
from autoseg.preprocessing.preprocess import preprocess_case
from autoseg.utils.files import read_json, save_npy, write_json
from autoseg.utils.parallel import default_case_workers, process_pool
from autoseg.utils.progress_bars import progress_bar
from autoseg.workdir import WorkDir, cached_case_paths

#: The array orientation rule cached cases follow (:mod:`autoseg.io.orientation`); part of the key,
#: so caches made before the rule existed are rebuilt.
CANONICAL_ORIENTATION = "closest to patient S, P, L (z, y, x)"


def cache_key(plans: Plans, configuration_name: str) -> str:
    """Hash of everything that changes a configuration's preprocessed data."""
    configuration = plans.configuration(configuration_name)
    relevant = {
        "plans_version": plans.version,
        "dimension": configuration.dimension,
        "target_spacing": configuration.target_spacing,
        "resampling": asdict(configuration.resampling),
        "normalization": [asdict(entry) | {"reason": ""} for entry in plans.normalization],
        "labels": plans.labels,
        "orientation": CANONICAL_ORIENTATION,
    }
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


#: Advice in the one-line errors about damaged cache files.
REBUILD_HINT = "run `autoseg plan` again: it rebuilds damaged cache files"


def cached_case_problem(folder: Path, case_id: str) -> str | None:
    """Why a case's cache files cannot be used (one line naming the file), or None when they can.

    Only the .npy headers are read: the image must be a float ``(C, z, y, x)`` array, the label an
    integer ``(z, y, x)`` array on the same grid (object arrays are refused without being unpickled).
    """
    image_path, label_path, properties_path = cached_case_paths(folder, case_id)
    for path in (image_path, label_path, properties_path):
        if not path.is_file():
            return f"{path}: missing"
    arrays = []
    for path in (image_path, label_path):
        try:
            arrays.append(np.load(path, mmap_mode="r", allow_pickle=False))
        except (OSError, ValueError, EOFError):
            return f"{path}: not a numpy array file (damaged or replaced)"
    image, label = arrays
    if image.ndim != 4 or image.dtype.kind != "f":
        return f"{image_path}: {image.dtype} array of shape {list(image.shape)}, expected float (C, z, y, x)"
    if label.dtype.kind not in "iu" or tuple(label.shape) != tuple(image.shape[1:]):
        return (f"{label_path}: {label.dtype} array of shape {list(label.shape)}, expected an integer label map "
                f"of shape {list(image.shape[1:])}")
    return None


def is_case_done(folder: Path, case_id: str, key: str) -> bool:
    """Whether the case's cache files exist, are intact (:func:`cached_case_problem`) and match ``key``."""
    image_path, label_path, properties_path = cached_case_paths(folder, case_id)
    if not (properties_path.is_file() and image_path.is_file() and label_path.is_file()):
        return False
    try:
        if read_json(properties_path).get("cache_key") != key:
            return False
    except (OSError, ValueError):
        return False
    return cached_case_problem(folder, case_id) is None


def load_cached_case(folder: Path, case_id: str, memory_map: bool = True) -> tuple[np.ndarray, np.ndarray, dict]:
    """Image ``(C, z, y, x)``, label ``(z, y, x)`` (memory-mapped by default) and properties; a one-line
    :class:`AutosegInputError` when the files are damaged."""
    problem = cached_case_problem(folder, case_id)
    if problem:
        raise AutosegInputError(f"{problem}; {REBUILD_HINT}")
    image_path, label_path, properties_path = cached_case_paths(folder, case_id)
    mode = "r" if memory_map else None
    return np.load(image_path, mmap_mode=mode), np.load(label_path, mmap_mode=mode), read_json(properties_path)


def _preprocess_one(job: tuple) -> str:
    raw_case, plans_dict, configuration_name, folder, key, seed = job
    torch.set_num_threads(1)  # parallelism comes from the worker processes
    plans = Plans.from_dict(plans_dict)
    configuration = plans.configuration(configuration_name)
    image, geometry = read_case_images(raw_case.image_files)
    label, _ = read_label(raw_case.label_file)
    case = preprocess_case(image, geometry, plans, configuration, label, seed=seed)
    image_path, label_path, properties_path = cached_case_paths(Path(folder), raw_case.case_id)
    save_npy(image_path, case.image)
    save_npy(label_path, case.label)
    write_json(properties_path, {"case_id": raw_case.case_id, "cache_key": key, **case.properties}, indent=None)
    return raw_case.case_id


def preprocess_dataset(plans: Plans, work_dir: str | os.PathLike | WorkDir, configuration_names: list[str],
                       num_workers: int | None = None, progress: bool = True,
                       cases: list[RawCase] | None = None) -> dict[str, dict]:
    """Fill the cache of every data identifier the given configurations use.

    Returns per data identifier the counts of cases preprocessed and skipped.
    """
    if cases is None:
        cases = list_training_cases(load_dataset_description(plans.raw_dataset))
    work = WorkDir.of(work_dir)
    num_workers = num_workers or default_case_workers()
    report = {}
    done_identifiers = set()
    for name in configuration_names:
        configuration = plans.configuration(name)
        identifier = configuration.data_identifier
        if identifier in done_identifiers:
            continue
        done_identifiers.add(identifier)
        # The configuration owning the identifier defines its preprocessing.
        owner = identifier if identifier in plans.configurations else name
        key = cache_key(plans, owner)
        folder = work.cache_folder(identifier)
        folder.mkdir(parents=True, exist_ok=True)
        todo = [case for case in cases if not is_case_done(folder, case.case_id, key)]
        jobs = [(case, plans.to_dict(), owner, str(folder), key, index)
                for index, case in enumerate(todo)]
        bar = progress_bar(total=len(jobs), desc=f"preprocess {identifier}", unit="case", disable=not progress)
        if num_workers > 1 and len(jobs) > 1:
            with process_pool(min(num_workers, len(jobs))) as pool:
                for _ in pool.imap_unordered(_preprocess_one, jobs, chunksize=1):
                    bar.update(1)
        else:
            for job in jobs:
                _preprocess_one(job)
                bar.update(1)
        bar.close()
        work.write_cache_index(identifier, {"data_identifier": identifier, "cache_key": key,
                                            "configuration": owner,
                                            "cases": sorted(case.case_id for case in cases)})
        report[identifier] = {"preprocessed": len(todo), "skipped": len(cases) - len(todo)}
    return report
