"""Cross-validation splits: random K-fold and folds by acquisition."""

import pytest

from autoseg.errors import AutosegInputError
from autoseg.training.splits import acquisition_splits, load_or_create_splits, random_splits

CASES = [f"case_{i:02d}" for i in range(23)]


def test_random_folds_partition_the_cases():
    folds = random_splits(CASES)
    assert len(folds) == 5
    validation = [case for fold in folds for case in fold["val"]]
    assert sorted(validation) == CASES
    for fold in folds:
        assert not set(fold["train"]) & set(fold["val"])
        assert len(fold["train"]) + len(fold["val"]) == len(CASES)


def test_random_folds_are_seeded():
    assert random_splits(CASES) == random_splits(list(reversed(CASES)))


def test_acquisition_folds_group_similar_scans():
    slice_counts = list(range(23))
    thickness = [5.0] * 23
    folds = acquisition_splits(CASES, slice_counts, thickness)
    assert folds[0]["val"] == CASES[:5]  # the 5 cases with fewest slices are held out together
    assert folds[-1]["val"] == CASES[-4:]
    assert sorted(case for fold in folds for case in fold["val"]) == CASES


def test_splits_are_created_once_and_reused(tmp_path):
    first = load_or_create_splits(tmp_path, CASES)
    assert (tmp_path / "splits.json").is_file()
    assert load_or_create_splits(tmp_path, CASES) == first
    with pytest.raises(AutosegInputError, match="other cases"):
        load_or_create_splits(tmp_path, CASES[:-1])


def test_spacing_mode_uses_the_fingerprint(tmp_path):
    fingerprint = {"cases": {case: {"shape": [10 + i, 64, 64], "spacing": [3.0, 1.0, 1.0]}
                             for i, case in enumerate(CASES)}}
    folds = load_or_create_splits(tmp_path, CASES, "spacing", fingerprint)
    assert (tmp_path / "splits_spacing.json").is_file()
    assert folds[0]["val"] == CASES[:5]


def test_too_few_cases():
    with pytest.raises(AutosegInputError, match="too few"):
        random_splits(CASES[:3])
