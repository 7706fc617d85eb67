"""Sparse annotations end to end: an ``ignore`` label through plan, train, predict and evaluate."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from helpers import shrink_networks, task04_subset, write_volume

from autoseg.cli import main
from autoseg.evaluation.metrics import compute_case_metrics, without_ignored
from autoseg.io.images import read_label
from autoseg.synthetic import SyntheticDatasetSpec, generate_synthetic_dataset
from autoseg.workdir import WorkDir


def ignore_half_of_the_slices(dataset: Path, seed: int = 0) -> int:
    """Declare ``ignore`` (the next value) and replace a random half of each training label's slices with it."""
    content = json.loads((dataset / "dataset.json").read_text())
    ignore = max(content["labels"].values()) + 1
    content["labels"]["ignore"] = ignore
    (dataset / "dataset.json").write_text(json.dumps(content))
    rng = np.random.default_rng(seed)
    for path in sorted((dataset / "labelsTr").glob(f"*{content['file_ending']}")):
        label, geometry = read_label(path)
        slices = rng.choice(label.shape[0], label.shape[0] // 2, replace=False)
        label[slices] = ignore
        write_volume(path, label.astype(np.uint8), geometry.spacing, geometry.sitk_origin, geometry.sitk_direction)
    return ignore


def test_metrics_leave_ignored_voxels_out():
    reference = np.zeros((2, 4, 4), np.int16)
    reference[:, 1:3, 1:3] = 1
    reference[1] = 3  # second slice unannotated
    prediction = np.zeros_like(reference)
    prediction[0, 1:3, 1:3] = 1
    prediction[1] = 1  # whatever the network says there counts for nothing
    metrics = compute_case_metrics(reference, prediction, (1.0, 1.0, 1.0), [1], ignore_label=3)[1]
    assert metrics["dice"] == 1.0 and metrics["fp"] == 0 and metrics["reference_volume_ml"] == pytest.approx(0.004)
    assert compute_case_metrics(reference, prediction, (1.0, 1.0, 1.0), [1])[1]["fp"] == 16  # without: all wrong
    same = without_ignored(reference, prediction, None)
    assert same[0] is reference and same[1] is prediction


def run_sparse_pipeline(dataset: Path, work: Path, test_images: Path, test_labels: Path, ignore: int,
                        capsys) -> dict:
    assert main(["plan", str(dataset), "-o", str(work), "-j", "1"]) == 0
    shrink_networks(work)
    plans = WorkDir(work).load_plans()
    assert plans.ignore_label == ignore and plans.num_classes == ignore
    for configuration in ("2d", "3d_fullres"):
        assert main(["train", str(work), "-c", configuration, "-f", "0", "--epochs", "1",
                     "--iterations-per-epoch", "3", "--num-workers", "0"]) == 0
    summary = json.loads((WorkDir(work).validation_dir("3d_fullres", 0) / "summary.json").read_text())["summary"]
    assert set(summary["per_class"]) == {str(value) for value in plans.foreground_labels}
    predictions = work.parent / "predictions"
    assert main(["predict", "-i", str(test_images), "-o", str(predictions), "-m", str(work), "-c", "3d_fullres",
                 "-f", "0"]) == 0
    for path in predictions.glob("*.nii.gz"):
        assert read_label(path)[0].max() < ignore  # predictions never hold the ignore value
    capsys.readouterr()
    assert main(["evaluate", "-r", str(test_labels), "-p", str(predictions), "-l", str(dataset / "dataset.json")]) == 0
    output = capsys.readouterr().out
    assert "ignore" not in output.split("foreground mean")[0].split("class")[-1]  # no row for the ignore label
    return json.loads((predictions / "summary.json").read_text())


@pytest.mark.slow
def test_synthetic_sparse_labels_plan_train_predict_evaluate(tmp_path, capsys):
    dataset = generate_synthetic_dataset(tmp_path, SyntheticDatasetSpec(
        num_training=5, num_test=2, in_plane_shape=(24, 24), field_of_view_z_mm=(50.0, 70.0)))
    ignore = ignore_half_of_the_slices(dataset)
    summary = run_sparse_pipeline(dataset, tmp_path / "work", dataset / "imagesTs", dataset / "labelsTs", ignore,
                                  capsys)
    assert summary["summary"]["labels"] == [1, 2]


@pytest.mark.slow
def test_task04_with_half_of_the_slices_unannotated(tmp_path, capsys):
    """Issue 15's dataset (b), on 10 Task04 cases: half of each training label's slices ignored."""
    dataset = task04_subset(tmp_path, "Dataset904_HippocampusSparse")
    ignore = ignore_half_of_the_slices(dataset)
    assert ignore == 3
    summary = run_sparse_pipeline(dataset, tmp_path / "work", dataset / "imagesTs", dataset / "labelsTs", ignore,
                                  capsys)
    assert summary["summary"]["labels"] == [1, 2]
