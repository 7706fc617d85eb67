"""A legal 250-character case name is predicted like any other, and a run's other cases never depend on it."""

from __future__ import annotations

import shutil

import pytest
from helpers import make_tiny_work_dir

from autoseg.cli import main
from autoseg.plans.training import IterationPlan
from autoseg.training.trainer import Trainer, TrainingOptions

pytestmark = pytest.mark.slow


def test_a_250_character_case_name_is_predicted_with_the_others(tmp_path, capsys):
    dataset, work = make_tiny_work_dir(tmp_path, num_training=5, num_test=2)
    Trainer(work, "3d_fullres", 0, TrainingOptions(num_workers=0, progress=False),
            iteration_plan=IterationPlan(1, 1, 1)).run()
    scans = sorted((dataset / "imagesTs").iterdir())
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    long_case = "c" * 238  # + "_0000.nii.gz" = 250 characters, legal on every common file system
    shutil.copy(scans[0], inputs / f"{long_case}_0000.nii.gz")
    shutil.copy(scans[1], inputs / "short_0000.nii.gz")
    code = main(["predict", "-i", str(inputs), "-o", str(tmp_path / "out"), "-m", str(work), "-c", "3d_fullres",
                 "-f", "0", "--no-tta", "--save-probabilities", "--preview"])
    assert code == 0, capsys.readouterr().err
    assert (tmp_path / "out" / f"{long_case}.nii.gz").is_file() and (tmp_path / "out" / "short.nii.gz").is_file()
    assert not [path for path in (tmp_path / "out").iterdir() if ".tmp-" in path.name]
