"""The per-case report of a prediction run: what was found, and how much the models agreed on it.

For every case and class (per region for region-based models): the volume in mL, the number
of connected components (full connectivity), and one quality figure per case, the
**agreement** of the ensemble's members: the mean pairwise Dice between the label maps that
each member network (each fold of each configuration) predicts alone, on its configuration's
grid, averaged over the classes either map holds and over the pairs (configurations averaged
alike). Members trained on different folds agree with each other about as well as they
agree with the truth, so low agreement marks a case the models find hard or unusual (another
scanner, an artefact, an unexpected anatomy). ``flag`` is ``"review"`` below
:data:`AGREEMENT_THRESHOLD`, ``"ok"`` at or above it, and ``"unknown"`` when one network
predicted alone (nothing to compare). Written as ``report.json`` and ``report.csv`` in the
output folder (rows of earlier runs kept for cases not predicted again). A case that failed in
the run is listed in ``report.json`` as ``{"flag": "failed", "error": "<one line>"}`` (no CSV rows).
"""

from __future__ import annotations

import csv
import itertools
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from scipy import ndimage

from autoseg.errors import AutosegInputError
from autoseg.io.labels import class_mask
from autoseg.postprocessing.components import component_structure
from autoseg.utils.files import atomic_path, read_json, write_json
from autoseg.utils.locks import FileLock

#: Agreement (mean pairwise Dice of the members) below which a case is flagged for review. Task04's
#: folds reach 0.85-0.90 Dice against the truth; agreement under 0.8 means the members disagree on
#: about a fifth of what they segment, worse than a typical error of one of them.
AGREEMENT_THRESHOLD = 0.8
REPORT_JSON = "report.json"
REPORT_CSV = "report.csv"
REPORT_LOCK = ".report.lock"
#: How long a part of a sharded run waits for another one writing the report.
REPORT_LOCK_WAIT_SECONDS = 120


def mean_pairwise_dice(label_maps: Sequence[np.ndarray], classes: Mapping[int, Sequence[int]]) -> float | None:
    """Mean Dice over the pairs of ``label_maps`` (and over the classes either map of a pair holds;
    a pair where neither holds any counts as full agreement); None for fewer than two maps."""
    if len(label_maps) < 2:
        return None
    scores = []
    for first, second in itertools.combinations(label_maps, 2):
        per_class = []
        for values in classes.values():
            a, b = class_mask(first, values), class_mask(second, values)
            total = int(np.count_nonzero(a)) + int(np.count_nonzero(b))
            if total:
                per_class.append(2.0 * np.count_nonzero(a & b) / total)
        scores.append(float(np.mean(per_class)) if per_class else 1.0)
    return float(np.mean(scores))


def quality_flag(agreement: float | None) -> str:
    """``"review"``, ``"ok"`` or ``"unknown"`` (see the module docstring)."""
    if agreement is None:
        return "unknown"
    return "review" if agreement < AGREEMENT_THRESHOLD else "ok"


def case_findings(segmentation: np.ndarray, spacing: Sequence[float], classes: Mapping[int, Sequence[int]],
                  names: Mapping[int, str]) -> dict[str, dict[str, Any]]:
    """Per class name: volume (mL) and connected components of a ``(z, y, x)`` label map with ``spacing`` (mm)."""
    voxel_ml = float(np.prod([float(s) for s in spacing])) / 1000.0
    structure = component_structure(segmentation.ndim)
    findings = {}
    for key, values in classes.items():
        mask = class_mask(segmentation, values)
        findings[names.get(key, str(key))] = {
            "volume_ml": float(np.count_nonzero(mask) * voxel_ml),
            "components": int(ndimage.label(mask, structure=structure)[1]),
        }
    return findings


def case_entry(segmentation: np.ndarray, spacing: Sequence[float], classes: Mapping[int, Sequence[int]],
               names: Mapping[int, str], agreement: float | None) -> dict[str, Any]:
    """The report of one case: findings per class, agreement and flag."""
    return {"classes": case_findings(segmentation, spacing, classes, names), "agreement": agreement,
            "flag": quality_flag(agreement)}


def write_case_report(output_dir: str | os.PathLike, entries: Mapping[str, dict[str, Any]]) -> None:
    """Write ``report.json`` and ``report.csv`` (atomic), keeping earlier runs' entries of other cases;
    parts of a sharded run writing at once take turns (a lock file beside them)."""
    output_dir = Path(output_dir)
    deadline = time.monotonic() + REPORT_LOCK_WAIT_SECONDS
    while True:
        try:
            with FileLock(output_dir / REPORT_LOCK, "writing report.json"):
                _merge_and_write(output_dir, entries)
            return
        except AutosegInputError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def _merge_and_write(output_dir: Path, entries: Mapping[str, dict[str, Any]]) -> None:
    cases: dict[str, Any] = {}
    previous = output_dir / REPORT_JSON
    if previous.is_file():
        try:
            cases = dict(read_json(previous).get("cases", {}))
        except (OSError, ValueError, AttributeError):
            cases = {}  # a damaged report is rewritten from what this run knows
    cases.update(entries)
    cases = dict(sorted(cases.items()))
    write_json(previous, {"agreement_threshold": AGREEMENT_THRESHOLD,
                          "agreement": "mean pairwise Dice of the member networks' label maps; flag 'review' below "
                                       "the threshold, 'unknown' with a single network", "cases": cases})
    with atomic_path(output_dir / REPORT_CSV) as temporary, open(temporary, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["case", "class", "volume_ml", "components", "agreement", "flag"])
        for case, entry in cases.items():
            agreement = "" if entry.get("agreement") is None else f"{entry['agreement']:.4f}"
            for name, finding in entry.get("classes", {}).items():
                writer.writerow([case, name, f"{finding['volume_ml']:.3f}", finding["components"], agreement,
                                 entry.get("flag", "")])
