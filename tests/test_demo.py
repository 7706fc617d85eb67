"""``autoseg demo`` runs every step end to end (on a tiny dataset and a seconds-long budget here)."""

from __future__ import annotations

import pytest

from autoseg.cli import main
from autoseg.synthetic import SyntheticDatasetSpec, generate_synthetic_dataset

pytestmark = pytest.mark.slow


def test_demo_on_a_given_dataset(tmp_path, capsys):
    dataset = generate_synthetic_dataset(tmp_path, SyntheticDatasetSpec(
        num_training=5, num_test=2, in_plane_shape=(24, 24), field_of_view_z_mm=(50.0, 70.0)))
    output = tmp_path / "demo"
    assert main(["demo", "--data", str(dataset), "-o", str(output), "--time-budget", "10s",
                 "--num-workers", "0"]) == 0
    printed = capsys.readouterr().out
    assert "Dice on held-out cases" in printed
    assert "organ" in printed and "lesion" in printed
    assert "time per step" in printed
    assert sorted(p.name for p in (output / "predictions").glob("*.nii.gz")) == ["case_005.nii.gz",
                                                                                "case_006.nii.gz"]
    # 10 s are too short for the planned network: fold 0 trains as a budget variant (3d_fullres_fX_b2)
    trained = [path.parent.parent.name for path in (output / "work" / "results").glob("*/fold_0/progress.png")]
    assert len(trained) == 1 and trained[0].startswith("3d_fullres")
    assert str(output / "work" / "results" / trained[0] / "fold_0") in printed
    # a second run reuses the trained model instead of training again
    assert main(["demo", "--data", str(dataset), "-o", str(output), "--time-budget", "10s",
                 "--num-workers", "0"]) == 0
