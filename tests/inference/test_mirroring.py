"""Test-time mirroring only where cross-validation measured that it pays."""

from __future__ import annotations

import pytest

from autoseg.inference.mirroring import (
    MIN_MIRRORING_DICE_GAIN,
    choose_mirroring,
    fold_mirroring_record,
    mirroring_decision,
)
from autoseg.utils.files import write_json
from autoseg.workdir import WorkDir


def measured(gain):
    return {"validated_with_mirroring": True, "gain": gain}


def test_mirroring_is_kept_only_for_a_measured_gain_of_at_least_the_threshold():
    assert mirroring_decision([measured(0.01), measured(0.02)])[0]
    assert mirroring_decision([measured(MIN_MIRRORING_DICE_GAIN)] * 3)[0]
    use, reason = mirroring_decision([measured(0.001), measured(-0.002)])
    assert not use and "-0.0005" in reason and "--tta" in reason


def test_folds_validated_without_mirroring_predict_without_it():
    use, reason = mirroring_decision([measured(0.05), {"validated_with_mirroring": False, "gain": None}])
    assert not use and "validated without it" in reason


def test_unmeasured_folds_keep_nnunets_default():
    assert mirroring_decision([None, measured(0.0)]) == mirroring_decision([None])
    assert mirroring_decision([None])[0] and mirroring_decision([])[0]
    assert mirroring_decision([measured(None)])[0]  # Dice undefined (no foreground anywhere)


def _validated(work: WorkDir, configuration: str, fold: int, summary: dict, run: dict | None = None) -> None:
    folder = work.validation_dir(configuration, fold)
    folder.mkdir(parents=True)
    write_json(folder / "summary.json", {"summary": summary, "per_case": {}})
    work.checkpoint_path(configuration, fold, "final").write_bytes(b"")
    if run is not None:
        work.write_run_record(configuration, fold, run)


def test_records_are_read_from_the_validation_summaries_of_trained_folds(tmp_path):
    work = WorkDir(tmp_path)
    _validated(work, "3d_fullres", 0, {"mirroring": {"gain": 0.001}})
    _validated(work, "3d_fullres", 1, {"mirroring": {"gain": 0.003}})
    _validated(work, "2d", 0, {}, {"validation_mirroring": False})
    _validated(work, "2d", 1, {})  # validated before the measurement existed
    assert fold_mirroring_record(work, "3d_fullres", 0) == measured(0.001)
    assert fold_mirroring_record(work, "2d", 0) == {"validated_with_mirroring": False, "gain": None}
    assert fold_mirroring_record(work, "2d", 1) is None
    assert fold_mirroring_record(work, "2d", 4) is None
    assert choose_mirroring(work, ["3d_fullres"])[0] is False  # mean gain 0.002 < threshold
    assert choose_mirroring(work, ["3d_fullres", "2d"], [0])[0] is False
    assert choose_mirroring(work, ["2d"], [1])[0] is True


def test_tta_axes_name_array_axes_for_2d_and_3d_configurations():
    from autoseg.commands.predict import mirroring_setting
    from autoseg.errors import AutosegInputError
    from autoseg.inference.predictor import patch_axes_of

    assert patch_axes_of("zyx", 3) == [0, 1, 2] and patch_axes_of("yx", 3) == [1, 2]
    assert patch_axes_of("zyx", 2) == [0, 1] and patch_axes_of("z", 2) == []  # 2D patches are (y, x)
    assert mirroring_setting(None) is False and mirroring_setting("none") is False
    assert mirroring_setting("all") is True and mirroring_setting("XY") == "yx"
    with pytest.raises(AutosegInputError, match="give all, none or array axes"):
        mirroring_setting("w")
