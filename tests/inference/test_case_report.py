"""The per-case report: volumes, components, member agreement and its flag; the preview PNG."""

from __future__ import annotations

import json

import numpy as np
import pytest

from autoseg.inference.case_report import (
    AGREEMENT_THRESHOLD,
    case_entry,
    mean_pairwise_dice,
    quality_flag,
    write_case_report,
)
from autoseg.inference.preview import largest_structure_centre, write_preview
from autoseg.io.geometry import ImageGeometry

CLASSES = {1: (1,), 2: (2,)}
NAMES = {1: "organ", 2: "lesion"}


def test_volumes_components_and_agreement():
    segmentation = np.zeros((4, 10, 10), np.uint8)
    segmentation[0:2, 0:2, 0:2] = 1  # 8 voxels
    segmentation[3, 8:10, 8:10] = 1  # a second organ component, 4 voxels
    segmentation[2, 5, 5] = 2
    entry = case_entry(segmentation, (2.0, 0.5, 0.5), CLASSES, NAMES, agreement=0.9)
    assert entry["classes"]["organ"] == {"volume_ml": pytest.approx(12 * 0.5 / 1000), "components": 2}
    assert entry["classes"]["lesion"]["components"] == 1 and entry["flag"] == "ok"
    shifted = np.roll(segmentation, 1, axis=2)
    assert mean_pairwise_dice([segmentation, segmentation], CLASSES) == 1.0
    organ = 2 * 6 / 24  # 8-voxel block shifted by one keeps 4, 4-voxel block keeps 2 of its 4
    lesion = 0.0
    assert mean_pairwise_dice([segmentation, shifted], CLASSES) == pytest.approx((organ + lesion) / 2)
    assert mean_pairwise_dice([segmentation], CLASSES) is None
    empty = np.zeros_like(segmentation)
    assert mean_pairwise_dice([empty, empty], CLASSES) == 1.0  # agreeing that nothing is there
    assert quality_flag(None) == "unknown" and quality_flag(AGREEMENT_THRESHOLD - 0.01) == "review"


def test_report_files_keep_other_cases_of_earlier_runs(tmp_path):
    segmentation = np.zeros((2, 3, 3), np.uint8)
    segmentation[0, 0, 0] = 1
    write_case_report(tmp_path, {"a": case_entry(segmentation, (1, 1, 1), CLASSES, NAMES, 0.5)})
    write_case_report(tmp_path, {"b": case_entry(segmentation, (1, 1, 1), CLASSES, NAMES, None)})
    report = json.loads((tmp_path / "report.json").read_text())
    assert sorted(report["cases"]) == ["a", "b"] and report["cases"]["a"]["flag"] == "review"
    rows = (tmp_path / "report.csv").read_text().splitlines()
    assert rows[0] == "case,class,volume_ml,components,agreement,flag"
    assert rows[1] == "a,organ,0.001,1,0.5000,review" and rows[4] == "b,lesion,0.000,0,,unknown"


def test_preview_is_centred_on_the_largest_structure(tmp_path):
    segmentation = np.zeros((20, 30, 30), np.uint8)
    segmentation[2:4, 2:4, 2:4] = 2  # small
    segmentation[10:16, 15:25, 5:11] = 1  # large
    assert largest_structure_centre(segmentation) == (12, 20, 8)  # 12.5, 19.5, 7.5 rounded half to even
    assert largest_structure_centre(np.zeros((4, 6, 8), np.uint8)) == (2, 3, 4)
    geometry = ImageGeometry((20, 30, 30), (3.0, 0.8, 0.8), (0.8, 0.8, 3.0), (0, 0, 0),
                             (-1, 0, 0, 0, -1, 0, 0, 0, 1), 3)
    image = np.random.default_rng(0).normal(size=(20, 30, 30)).astype(np.float32)
    path = write_preview(image, segmentation, geometry, tmp_path / "case_preview.png", CLASSES, NAMES)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 5000
