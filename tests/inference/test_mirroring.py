"""Test-time mirroring only where cross-validation measured that it pays."""

from __future__ import annotations

import pytest

from autoseg.inference.mirroring import (
    MAX_MIRRORING_DICE_LOSS,
    MIN_MIRRORING_DICE_GAIN,
    choose_mirroring,
    configuration_mirroring,
    fold_mirroring_record,
    mirroring_decision,
    per_setting_decision,
)
from autoseg.utils.files import write_json
from autoseg.workdir import WorkDir


def measured(gain, per_setting=None):
    return {"validated_with_mirroring": True, "gain": gain, "dice_per_setting": per_setting}


#: Task04 fold 0 (the 10-minute models of BENCHMARKS.md, "What each test-time mirror axis buys").
TASK04_3D = {"none": 0.8406, "z": 0.8436, "y": 0.8419, "x": 0.8406, "all": 0.8447}
TASK04_2D = {"none": 0.8445, "y": 0.8450, "x": 0.8469, "all": 0.8474}


def test_on_a_cpu_the_cheapest_setting_within_the_allowed_loss_is_chosen():
    setting, reason = per_setting_decision([measured(0.0041, TASK04_3D)])
    assert setting == "z" and "2 pass(es)" in reason and "all 0.8447" in reason
    assert f"within {MAX_MIRRORING_DICE_LOSS}" in reason
    assert per_setting_decision([measured(0.0029, TASK04_2D)])[0] == "x"
    flat = {"none": 0.80, "z": 0.8005, "y": 0.7990, "x": 0.8001, "all": 0.8010}
    assert per_setting_decision([measured(0.001, flat)])[0] is False  # none loses 0.001 <= 0.002: 1 pass
    steep = {"none": 0.70, "z": 0.75, "y": 0.74, "x": 0.76, "all": 0.80}
    assert per_setting_decision([measured(0.1, steep)])[0] is True  # every cheaper one loses more than 0.002


def test_folds_are_averaged_and_a_gpu_takes_the_best_setting():
    first = measured(0.01, {"none": 0.83, "y": 0.849, "x": 0.83, "all": 0.84})
    second = measured(0.01, {"none": 0.83, "y": 0.830, "x": 0.83, "all": 0.84})
    assert per_setting_decision([first])[0] == "y" and per_setting_decision([second])[0] is True
    assert per_setting_decision([first, second])[0] == "y"  # mean y 0.8395: within 0.002 of all's 0.84
    assert per_setting_decision([first, second], device_type="cuda")[0] is True  # passes are cheap: the best


def test_folds_without_single_axes_fall_back_to_the_gain_rule():
    mixed = [measured(0.01, TASK04_3D), measured(0.01)]
    assert per_setting_decision(mixed) is None
    assert configuration_mirroring(mixed) == mirroring_decision(mixed)
    validated_without = [measured(0.0, TASK04_3D), {"validated_with_mirroring": False, "gain": None,
                                                    "dice_per_setting": None}]
    assert configuration_mirroring(validated_without)[0] is False


def test_mirroring_is_kept_only_for_a_measured_gain_of_at_least_the_threshold():
    assert mirroring_decision([measured(0.01), measured(0.02)])[0]
    assert mirroring_decision([measured(MIN_MIRRORING_DICE_GAIN)] * 3)[0]
    use, reason = mirroring_decision([measured(0.001), measured(-0.002)])
    assert not use and "-0.0005" in reason and "--tta" in reason


def test_folds_validated_without_mirroring_predict_without_it():
    use, reason = mirroring_decision([measured(0.05), {"validated_with_mirroring": False, "gain": None,
                                                        "dice_per_setting": None}])
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
    assert fold_mirroring_record(work, "2d", 0) == {"validated_with_mirroring": False, "gain": None,
                                                    "dice_per_setting": None}
    assert fold_mirroring_record(work, "2d", 1) is None
    assert fold_mirroring_record(work, "2d", 4) is None
    assert choose_mirroring(work, ["3d_fullres"])[0] == {"3d_fullres": False}  # mean gain 0.002 < threshold
    assert choose_mirroring(work, ["3d_fullres", "2d"], [0])[0] == {"3d_fullres": False, "2d": False}
    assert choose_mirroring(work, ["2d"], [1])[0] == {"2d": True}
    _validated(work, "3d_lowres", 0, {"mirroring": {"gain": 0.0041, "dice_per_setting": TASK04_3D}})
    settings, reason = choose_mirroring(work, ["3d_lowres", "2d"])
    assert settings == {"3d_lowres": "z", "2d": False} and "3d_lowres: z (2 pass(es)" in reason


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
