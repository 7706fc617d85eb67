"""The whole pipeline through the command line on tiny synthetic data:
plan -> train (5 folds, two configurations) -> ensemble -> predict (inference plan) -> evaluate."""

from __future__ import annotations

import json

import pytest
from helpers import shrink_networks

from autoseg.cli import main
from autoseg.synthetic import SyntheticDatasetSpec, generate_synthetic_dataset

pytestmark = pytest.mark.slow


def test_command_line_pipeline(tmp_path, capsys):
    dataset = generate_synthetic_dataset(tmp_path, SyntheticDatasetSpec(
        num_training=5, num_test=2, in_plane_shape=(24, 24), field_of_view_z_mm=(50.0, 70.0)))
    work = tmp_path / "work"
    assert main(["plan", str(dataset), "-o", str(work), "-j", "1"]) == 0
    shrink_networks(work)
    for configuration in ("2d", "3d_fullres"):
        assert main(["train", str(work), "-c", configuration, "-f", "all", "--epochs", "1",
                     "--iterations-per-epoch", "2", "--num-workers", "0"]) == 0
    assert main(["ensemble", str(work)]) == 0
    plan = json.loads((work / "inference_plan.json").read_text())
    assert len(plan["candidates"]) == 3  # 2d, 3d_fullres, and the pair
    predictions = tmp_path / "predictions"
    capsys.readouterr()
    assert main(["predict", "-i", str(dataset / "imagesTs"), "-o", str(predictions), "-m", str(work)]) == 0
    assert "mirroring" in capsys.readouterr().out  # on or off as cross-validation measured, with the reason
    assert sorted(p.name for p in predictions.iterdir()) == ["case_005.nii.gz", "case_006.nii.gz", "report.csv",
                                                              "report.json"]
    capsys.readouterr()
    assert main(["evaluate", "-r", str(dataset / "labelsTs"), "-p", str(predictions), "-l",
                 str(dataset / "dataset.json")]) == 0
    output = capsys.readouterr().out
    assert "dice" in output and "organ" in output
    assert (predictions / "summary.json").is_file()
