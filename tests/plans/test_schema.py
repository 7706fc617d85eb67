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
