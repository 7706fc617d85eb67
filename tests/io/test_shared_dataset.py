"""The real Task04 Hippocampus dataset (../shared/data) passes verification as it is.

Its quirks are kept on purpose: images are float32 in some cases and uint8 in others,
and two label files are stored as float32. Skipped when ../shared is absent.
"""

from __future__ import annotations

import pytest
from helpers import shared_dataset

from autoseg.io.dataset import load_dataset_description
from autoseg.planning.fingerprint import extract_fingerprint

pytestmark = pytest.mark.shared_data


def test_hippocampus_verifies_and_fingerprints():
    dataset = shared_dataset("Dataset004_Hippocampus")
    fingerprint = extract_fingerprint(load_dataset_description(dataset), num_workers=1, progress=False)
    assert fingerprint["num_cases"] == 260
    assert fingerprint["median_spacing"] == [1.0, 1.0, 1.0]
    assert {c["num_cases_present"] for c in fingerprint["classes"].values()} == {260}
    assert fingerprint["channels"]["0"]["name"] == "MRI"
