"""plans.json is validated completely on load: one-line errors naming the file and the field."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from autoseg.cli import main
from autoseg.errors import AutosegInputError
from autoseg.workdir import WorkDir

LEGACY_PLANS = Path(__file__).resolve().parents[1] / "data" / "legacy_plans_v1.json"


@pytest.fixture
def work(tmp_path) -> Path:
    """A work folder holding the plans.json written by autoseg before the plans schema moved (version 1)."""
    shutil.copy(LEGACY_PLANS, tmp_path / "plans.json")
    return tmp_path


def edit(work: Path, change) -> None:
    data = json.loads((work / "plans.json").read_text())
    change(data)
    (work / "plans.json").write_text(json.dumps(data))


def test_plans_of_the_previous_version_still_load(work):
    plans = WorkDir(work).load_plans()
    assert list(plans.configurations) == ["2d", "3d_fullres"]
    fullres = plans.configurations["3d_fullres"]
    assert fullres.variant_of is None and fullres.training.trainer == "default"
    assert plans.normalization[0].scheme == "ct"
    WorkDir(work).save_plans(plans)  # and round-trip
    assert WorkDir(work).load_plans().to_dict() == plans.to_dict()


def fullres(data):
    return data["configurations"]["3d_fullres"]


@pytest.mark.parametrize(("change", "field"), [
    (lambda d: fullres(d).update(patch_size=[21, 24, 24]), "configurations.3d_fullres.patch_size"),
    (lambda d: fullres(d).update(batch_size=0), "configurations.3d_fullres.batch_size"),
    (lambda d: fullres(d).update(patch_size=[20, 24]), "configurations.3d_fullres.patch_size"),
    (lambda d: fullres(d)["network"].update(architecture="vnet"), "configurations.3d_fullres.network.architecture"),
    (lambda d: fullres(d)["network"].update(strides=[[1, 1, 1]]), "configurations.3d_fullres.network.strides"),
    (lambda d: d["normalization"][0].update(scheme="minmax"), "normalization[0].scheme"),
    (lambda d: d["normalization"][0].update(std=0), "normalization[0]"),
    (lambda d: fullres(d).update(previous_stage="3d_lowres"), "configurations.3d_fullres.previous_stage"),
    (lambda d: fullres(d)["resampling"].update(image_order=2), "configurations.3d_fullres.resampling.image_order"),
    (lambda d: fullres(d)["training"].update(epochs=0), "configurations.3d_fullres.training.epochs"),
    (lambda d: fullres(d)["training"]["augmentation"].update(mirror_axes=[0, 3]),
     "configurations.3d_fullres.training.augmentation.mirror_axes"),
    (lambda d: fullres(d)["training"].update(learning_rate=0.1), "configurations.3d_fullres.training"),
    (lambda d: d.pop("labels"), "labels"),
    (lambda d: d.update(version=7), "version"),
])
def test_invalid_fields_are_named(work, change, field):
    edit(work, change)
    with pytest.raises(AutosegInputError) as error:
        WorkDir(work).load_plans()
    message = str(error.value)
    assert message.startswith(f"{work / 'plans.json'}: {field}"), message
    assert "\n" not in message


def test_a_broken_plans_file_is_one_line_from_every_command(work, capsys):
    edit(work, lambda d: fullres(d).update(batch_size=-2))
    assert main(["train", str(work), "-c", "3d_fullres", "--epochs", "1"]) == 1
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "configurations.3d_fullres.batch_size must be a positive integer" in error


def test_missing_plans_say_what_to_run(tmp_path):
    with pytest.raises(AutosegInputError, match="run `autoseg plan` first"):
        WorkDir(tmp_path).load_plans()


def test_saving_invalid_plans_is_refused(work):
    plans = WorkDir(work).load_plans()
    plans.configurations["3d_fullres"].previous_stage = "missing"
    with pytest.raises(ValueError, match="previous_stage"):
        WorkDir(work).save_plans(plans)
    assert WorkDir(work).load_plans().configurations["3d_fullres"].previous_stage is None


@pytest.mark.parametrize(("change", "field"), [
    (lambda d: fullres(d).update(patch_size=[100000, 100000, 100000]),
     "configurations.3d_fullres.patch_size [100000, 100000, 100000]: at most 2048 voxels per axis and 268435456"),
    (lambda d: fullres(d).update(patch_size=[1024, 1024, 1024]), "configurations.3d_fullres.patch_size"),
    (lambda d: fullres(d).update(batch_size=10**6), "configurations.3d_fullres.batch_size 1000000: at most 4096"),
    (lambda d: fullres(d).update(target_spacing=[0.0, 1.0, 1.0]), "configurations.3d_fullres.target_spacing"),
    (lambda d: fullres(d).update(target_spacing=[1e5, 1.0, 1.0]), "configurations.3d_fullres.target_spacing"),
    (lambda d: fullres(d).update(target_spacing=[float("inf"), 1.0, 1.0]), "configurations.3d_fullres.target_spacing"),
    (lambda d: fullres(d).update(median_image_shape=[10**9, 24, 24]), "configurations.3d_fullres.median_image_shape"),
    (lambda d: fullres(d).update(data_identifier="../../escape"), "configurations.3d_fullres.data_identifier"),
    (lambda d: d["configurations"].update({"../x": d["configurations"].pop("2d") | {"name": "../x"}}),
     "configurations: name '../x' is not a folder name"),
    (lambda d: fullres(d)["network"].update(features_per_stage=[4, 8, 16, 10**6]),
     "configurations.3d_fullres.network.features_per_stage must be integers 1..2048"),
    (lambda d: fullres(d)["network"].update(features_per_stage=[2048, 2048, 2048, 2048],
                                             kernel_sizes=[[9, 9, 9]] * 4), "configurations.3d_fullres.network:"),
    (lambda d: fullres(d)["network"].update(kernel_sizes=[[1, 3, 3], [3, 3, 3], [3, 3, 99], [3, 3, 3]]),
     "configurations.3d_fullres.network.kernel_sizes must be odd, 1..9"),
    (lambda d: fullres(d)["network"].update(strides=[[1, 1, 1], [1, 2, 2], [2, 2, 2], [8, 1, 1]]),
     "configurations.3d_fullres.network.strides must be 1..4"),
    (lambda d: fullres(d)["network"].update(kernel_sizes=[[3, "3", 3]] * 4), "configurations.3d_fullres.network"),
    (lambda d: fullres(d)["network"].update(negative_slope=float("nan")), "configurations.3d_fullres.network"),
    (lambda d: fullres(d)["network"].update(n_conv_per_stage_decoder=[10**6] * 3), "configurations.3d_fullres.network"),
    (lambda d: fullres(d)["training"].update(epochs=10**9), "configurations.3d_fullres.training.epochs"),
    (lambda d: fullres(d)["training"].update(initial_lr=float("nan")), "configurations.3d_fullres.training.initial_lr"),
    (lambda d: d["normalization"][0].update(std=-5.0), "normalization[0]: scheme 'ct' needs mean and a positive std"),
    (lambda d: d["normalization"][0].update(clip_high=float("nan")), "normalization[0].clip_high must be finite"),
    (lambda d: d["labels"].update(huge=10**6), "labels: values must be at most 65535"),
    (lambda d: d["channel_names"].update({str(i): "T1" for i in range(1, 100)}), "channel_names must name 1 to 64"),
    (lambda d: d.update(normalization="zscore"), "normalization must be a list"),
])
def test_values_past_their_physical_bounds_are_named(work, change, field):
    edit(work, change)
    with pytest.raises(AutosegInputError) as error:
        WorkDir(work).load_plans()
    message = str(error.value)
    assert message.startswith(f"{work / 'plans.json'}: {field.split(' must ')[0]}"), message
    assert field.replace("must be finite", "must be a finite number") in message or field in message, message
    assert "\n" not in message and len(message) < 400


@pytest.mark.parametrize(("shape", "spacing", "budget_gib"), [
    ((100, 512, 512), (1.0, 0.8, 0.8), 80),  # abdominal CT on an 80 GB GPU: a 20 M voxel patch
    ((1, 2048, 2048), (1.0, 0.2, 0.2), 192),  # large 2D images on the biggest GPU
    ((600, 512, 512), (0.02, 0.02, 0.02), 24),  # micro-CT spacing
    ((20, 320, 320), (10.0, 0.5, 0.5), 8),  # thick slices
])
def test_what_the_planner_chooses_stays_within_the_bounds(shape, spacing, budget_gib):
    from autoseg.planning.hardware import gpu_budget
    from autoseg.planning.planner import plan_experiment
    from autoseg.plans import Plans

    cases = {f"case_{i}": {"shape": list(shape), "spacing": list(spacing), "direction": [1, 0, 0, 0, 1, 0, 0, 0, 1],
                           "bounding_box": [[0, s] for s in shape], "shape_after_crop": list(shape),
                           "class_voxels": {"1": 100, "2": 10}} for i in range(400)}
    stats = {"mean": 100.0, "std": 50.0, "median": 90.0, "min": -1000.0, "max": 2000.0,
             "percentile_00_5": -50.0, "percentile_99_5": 300.0, "num_samples": 1000}
    fingerprint = {"dataset_name": "Test", "channel_names": {"0": "CT"}, "file_ending": ".nii.gz",
                   "labels": {"background": 0, "organ": 1, "tumour": 2}, "channels": {"0": stats}, "cases": cases}
    for architecture in ("unet", "residual_encoder_unet"):
        plans = plan_experiment(fingerprint, "/raw", gpu_budget(budget_gib * 2**30, "gpu", "test"), architecture)
        Plans.from_dict(json.loads(json.dumps(plans.to_dict())))  # as plans.json is read back
