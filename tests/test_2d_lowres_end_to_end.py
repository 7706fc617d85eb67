"""2d_lowres end to end: planned for large slices, preprocessed to its own cache, trained, and its
predictions restored to the original grid of the scan."""

from __future__ import annotations

import pytest
import SimpleITK as sitk
from helpers import make_tiny_work_dir

import autoseg.planning.planner as planner
from autoseg.cli import main
from autoseg.workdir import WorkDir

pytestmark = pytest.mark.slow


def test_2d_lowres_trains_and_predicts_on_the_original_grid(tmp_path, monkeypatch):
    monkeypatch.setattr(planner, "LOWRES_2D_MAX_SLICE_EDGE", 12)  # the tiny 24x24 slices count as large
    dataset, work = make_tiny_work_dir(tmp_path, num_training=5, num_test=1)
    plans = WorkDir(work).load_plans()
    full, coarse = plans.configurations["2d"], plans.configurations["2d_lowres"]
    assert coarse.target_spacing == pytest.approx([2 * v for v in full.target_spacing], rel=0.05)
    assert (WorkDir(work).root / "preprocessed" / "2d_lowres").is_dir()
    assert main(["train", str(work), "-c", "2d_lowres", "-f", "0", "--epochs", "1", "--iterations-per-epoch", "2",
                 "--num-workers", "0"]) == 0
    out = tmp_path / "out"
    assert main(["predict", "-i", str(dataset / "imagesTs"), "-o", str(out), "-m", str(work), "-c", "2d_lowres",
                 "-f", "0", "--no-tta"]) == 0
    [image_path] = sorted((dataset / "imagesTs").glob("*_0000.nii.gz"))
    prediction = sitk.ReadImage(str(out / image_path.name.replace("_0000", "")))
    image = sitk.ReadImage(str(image_path))
    assert prediction.GetSize() == image.GetSize()
    assert prediction.GetSpacing() == pytest.approx(image.GetSpacing())
