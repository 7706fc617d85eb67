"""Cross-validation splits, created once per work folder and reused by every configuration.

``splits.json`` (random folds) or ``splits_spacing.json`` (folds by acquisition):
``{"mode": ..., "seed": ..., "folds": [{"train": [...], "val": [...]}, ...]}``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sklearn.model_selection import KFold

from autoseg.errors import AutosegInputError
from autoseg.utils.files import read_json, write_json

NUM_FOLDS = 5
SPLIT_SEED = 12345
SPLIT_MODES = ("random", "spacing")


def random_splits(case_ids: Sequence[str], num_folds: int = NUM_FOLDS, seed: int = SPLIT_SEED) -> list[dict]:
    """Seeded shuffled K-fold over the sorted case ids."""
    case_ids = sorted(case_ids)
    if len(case_ids) < num_folds:
        raise AutosegInputError(f"{len(case_ids)} training cases are too few for {num_folds}-fold cross-validation")
    folds = []
    for train_index, val_index in KFold(num_folds, shuffle=True, random_state=seed).split(case_ids):
        folds.append({"train": [case_ids[i] for i in train_index], "val": [case_ids[i] for i in val_index]})
    return folds


def acquisition_splits(case_ids: Sequence[str], slice_counts: Sequence[int], slice_thicknesses: Sequence[float],
                       num_folds: int = NUM_FOLDS) -> list[dict]:
    """Folds by acquisition: cases sorted by (slice count, slice thickness) and cut into contiguous groups.

    Each validation fold then holds acquisitions unlike most of its training data
    (e.g. the thinnest, most-sliced scans), a worst-case estimate of robustness
    to unseen protocols (Kloenne et al., "Domain specific cues improve robustness").
    """
    if len(case_ids) < num_folds:
        raise AutosegInputError(f"{len(case_ids)} training cases are too few for {num_folds}-fold cross-validation")
    order = sorted(range(len(case_ids)), key=lambda i: (slice_counts[i], slice_thicknesses[i], case_ids[i]))
    groups = np.array_split(np.array(order), num_folds)
    folds = []
    for group in groups:
        val = sorted(case_ids[i] for i in group)
        held_out = set(val)
        folds.append({"train": sorted(c for c in case_ids if c not in held_out), "val": val})
    return folds


def splits_path(work_dir: str | os.PathLike, mode: str) -> Path:
    return Path(work_dir) / ("splits.json" if mode == "random" else f"splits_{mode}.json")


def load_or_create_splits(work_dir: str | os.PathLike, case_ids: Sequence[str], mode: str = "random",
                          fingerprint: dict | None = None) -> list[dict]:
    """The folds of ``work_dir``: read if they exist (and cover these cases), else created and saved."""
    if mode not in SPLIT_MODES:
        raise AutosegInputError(f"--split-by: unknown mode {mode!r} (expected one of {SPLIT_MODES})")
    path = splits_path(work_dir, mode)
    if path.is_file():
        data = read_json(path)
        listed = {case for fold in data["folds"] for case in fold["val"]}
        if listed == set(case_ids):
            return data["folds"]
        raise AutosegInputError(f"{path}: lists other cases than the preprocessed dataset; delete it to re-split")
    if mode == "random":
        folds = random_splits(case_ids)
    else:
        if fingerprint is None:
            raise ValueError("acquisition splits need the dataset fingerprint")
        cases = fingerprint["cases"]
        folds = acquisition_splits(list(case_ids), [cases[c]["shape"][0] for c in case_ids],
                                   [cases[c]["spacing"][0] for c in case_ids])
    write_json(path, {"mode": mode, "seed": SPLIT_SEED, "folds": folds})
    return folds
