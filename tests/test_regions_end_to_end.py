"""Region-based datasets end to end: plan, train, ensemble, predict and evaluate on regions."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import shrink_networks, task04_subset
from test_sparse_labels import ignore_half_of_the_slices

from autoseg.cli import main
from autoseg.io.images import read_label
from autoseg.io.probabilities import load_probabilities, probability_regions
from autoseg.synthetic import SyntheticDatasetSpec, generate_synthetic_dataset
from autoseg.workdir import NUM_FOLDS, WorkDir

#: Issue 15's dataset (a): "hippocampus" = anterior + posterior, "posterior" alone.
REGION_LABELS = {"background": 0, "hippocampus": [1, 2], "posterior": [2]}
REGION_ORDER = [1, 2]


def declare_regions(dataset: Path, labels: dict = REGION_LABELS, order: list = REGION_ORDER) -> None:
    """Rewrite dataset.json's labels as regions (the label files stay as they are)."""
    content = json.loads((dataset / "dataset.json").read_text())
    ignore = content["labels"].get("ignore")
    content["labels"] = {**labels, **({"ignore": ignore} if ignore is not None else {})}
    content["regions_class_order"] = order
    (dataset / "dataset.json").write_text(json.dumps(content))


def plan_and_check(dataset: Path, work: Path) -> None:
    assert main(["plan", str(dataset), "-o", str(work), "-j", "1"]) == 0
    shrink_networks(work)
    plans = WorkDir(work).load_plans()
    assert plans.is_region_based and plans.num_classes == 2 and plans.regions_class_order == REGION_ORDER
    assert plans.regions == [(1, 2), (2,)]
    assert "sigmoid" in plans.reasons["network_outputs"]


def train(work: Path, configuration: str, folds: list[int]) -> None:
    assert main(["train", str(work), "-c", configuration, "-f", *map(str, folds), "--epochs", "1",
                 "--iterations-per-epoch", "2", "--num-workers", "0"]) == 0


def predict_and_evaluate(dataset: Path, work: Path, output: Path, capsys, *arguments: str) -> dict:
    assert main(["predict", "-i", str(dataset / "imagesTs"), "-o", str(output), "-m", str(work),
                 "--save-probabilities", *arguments]) == 0
    for path in output.glob("*.nii.gz"):
        assert set(np.unique(read_label(path)[0])) <= {0, *REGION_ORDER}
        base = output / path.name[: -len(".nii.gz")]
        probabilities, _ = load_probabilities(base)
        assert probabilities.shape[0] == 2 and probability_regions(base) == REGION_ORDER
    capsys.readouterr()
    assert main(["evaluate", "-r", str(dataset / "labelsTs"), "-p", str(output),
                 "-l", str(dataset / "dataset.json")]) == 0
    printed = capsys.readouterr().out
    assert "hippocampus" in printed and "posterior" in printed
    summary = json.loads((output / "summary.json").read_text())["summary"]
    assert summary["labels"] == REGION_ORDER
    assert summary["label_names"] == {"1": "hippocampus", "2": "posterior"}
    return summary


@pytest.mark.slow
def test_synthetic_regions_every_fold_ensemble_predict_evaluate(tmp_path, capsys):
    """Nested synthetic regions (organ = organ + lesion, lesion) through all five folds, model
    selection with learned per-region postprocessing, prediction and folder ensembling."""
    dataset = generate_synthetic_dataset(tmp_path, SyntheticDatasetSpec(
        num_training=5, num_test=2, in_plane_shape=(24, 24), field_of_view_z_mm=(40.0, 50.0)))
    declare_regions(dataset)
    work = tmp_path / "work"
    plan_and_check(dataset, work)
    train(work, "3d_fullres", list(range(NUM_FOLDS)))
    summary = json.loads((WorkDir(work).validation_dir("3d_fullres", 0) / "summary.json").read_text())["summary"]
    assert set(summary["per_class"]) == {"1", "2"}
    assert main(["ensemble", str(work)]) == 0
    plan = json.loads(WorkDir(work).inference_plan_path.read_text())
    assert plan["configurations"] == ["3d_fullres"] and plan["label_names"] == {"1": "hippocampus", "2": "posterior"}
    tried = [entry["step"]["labels"] for entry in plan["postprocessing_report"]["tried"]]
    assert tried == [None, [[1, 2]], [2]]  # whole foreground, then each region
    predict_and_evaluate(dataset, work, tmp_path / "predictions", capsys)
    assert main(["ensemble", "-i", str(tmp_path / "predictions"), "-o", str(tmp_path / "again")]) == 0
    for path in (tmp_path / "again").glob("*.nii.gz"):
        unprocessed = read_label(path)[0]
        assert set(np.unique(unprocessed)) <= {0, 1, 2}


@pytest.mark.slow
@pytest.mark.shared_data
@pytest.mark.parametrize("sparse", [False, True], ids=["regions", "regions_and_ignore"])
def test_task04_regions(tmp_path, capsys, sparse):
    """Issue 15's datasets (a) regions and (c) regions with half of the slices unannotated."""
    dataset = task04_subset(tmp_path, "Dataset905_HippocampusRegions")
    if sparse:
        assert ignore_half_of_the_slices(dataset) == 3
    declare_regions(dataset)
    work = tmp_path / "work"
    plan_and_check(dataset, work)
    assert WorkDir(work).load_plans().ignore_label == (3 if sparse else None)
    for configuration in ("2d", "3d_fullres"):
        train(work, configuration, [0])
    predict_and_evaluate(dataset, work, tmp_path / "predictions", capsys, "-c", "3d_fullres", "-f", "0")
