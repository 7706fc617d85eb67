"""2.5d end to end: planned beside 2d, trained, validated, predicted on the original grid, ensembled with
2d, and shipped in a bundle that every backend runs."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from helpers import make_tiny_work_dir

from autoseg.cli import main
from autoseg.workdir import WorkDir

pytestmark = pytest.mark.slow

TRAIN = ["--epochs", "1", "--iterations-per-epoch", "2", "--num-workers", "0"]


def test_2p5d_trains_predicts_ensembles_and_exports(tmp_path, monkeypatch):
    dataset, work = make_tiny_work_dir(tmp_path, num_training=5, num_test=1)
    plans = WorkDir(work).load_plans()
    stacked = plans.configurations["2.5d"]
    assert stacked.neighbour_slices >= 1 and plans.input_channels("2.5d") == 2 * stacked.neighbour_slices + 1
    for configuration in ("2d", "2.5d"):
        assert main(["train", str(work), "-c", configuration, "-f", "all", *TRAIN]) == 0
    for fold in range(5):
        assert (WorkDir(work).validation_dir("2.5d", fold) / "summary.json").is_file()
    assert main(["ensemble", str(work), "-c", "2d", "2.5d"]) == 0
    inference_plan = json.loads((work / "inference_plan.json").read_text())
    assert any(set(candidate["configurations"]) == {"2d", "2.5d"} for candidate in inference_plan["candidates"])

    [image_path] = sorted((dataset / "imagesTs").glob("*_0000.nii.gz"))
    image = sitk.ReadImage(str(image_path))
    outputs = {}
    for name, extra in (("torch", []), ("onnxruntime", ["--backend", "onnxruntime"]),
                        ("openvino", ["--backend", "openvino"])):
        if name != "torch":
            pytest.importorskip(name)
        out = tmp_path / f"out_{name}"
        model = str(work) if name == "torch" else str(tmp_path / "model.zip")
        if name == "onnxruntime":
            monkeypatch.setenv("AUTOSEG_CACHE", str(tmp_path / "cache"))
            assert main(["export", str(work), "-o", model, "-c", "2.5d", "--onnx"]) == 0
        assert main(["predict", "-i", str(dataset / "imagesTs"), "-o", str(out), "-m", model, "-c", "2.5d",
                     "-f", "all", "--no-tta", *extra]) == 0
        prediction = sitk.ReadImage(str(out / image_path.name.replace("_0000", "")))
        assert prediction.GetSize() == image.GetSize()
        assert prediction.GetSpacing() == pytest.approx(image.GetSpacing())
        assert prediction.GetOrigin() == pytest.approx(image.GetOrigin())
        outputs[name] = sitk.GetArrayFromImage(prediction)
    for name, labels in outputs.items():  # the exported networks give the torch network's labels
        assert np.mean(labels == outputs["torch"]) > 0.999, name
