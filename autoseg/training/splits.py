"""Cross-validation splits: the rules, and creating them once per work folder.

Stored by :class:`autoseg.workdir.WorkDir` (``splits.json`` for random folds,
``splits_spacing.json`` for folds by acquisition) and reused by every configuration.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from sklearn.model_selection import KFold

from autoseg.errors import AutosegInputError
from autoseg.workdir import NUM_FOLDS, WorkDir, check_split_mode

SPLIT_SEED = 12345


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


def load_or_create_splits(work_dir: str | os.PathLike | WorkDir, case_ids: Sequence[str], mode: str = "random",
                          fingerprint: dict | None = None) -> list[dict]:
    """The folds of the work folder: read if they exist (and cover these cases), else created and saved."""
    check_split_mode(mode)
    work = WorkDir.of(work_dir)
    folds = work.read_splits(mode)
    if folds is not None:
        listed = {case for fold in folds for case in fold["val"]}
        if listed == set(case_ids):
            return folds
        raise AutosegInputError(f"{work.splits_path(mode)}: lists other cases than the preprocessed dataset; "
                                "delete it to re-split")
    if mode == "random":
        folds = random_splits(case_ids)
    else:
        if fingerprint is None:
            raise ValueError("acquisition splits need the dataset fingerprint")
        cases = fingerprint["cases"]
        folds = acquisition_splits(list(case_ids), [cases[c]["shape"][0] for c in case_ids],
                                   [cases[c]["spacing"][0] for c in case_ids])
    work.write_splits(mode, folds, SPLIT_SEED)
    return folds
