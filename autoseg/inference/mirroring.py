"""Whether ``autoseg predict`` mirrors at test time: only where cross-validation measured that it pays.

Test-time mirroring averages the network over every flip of the mirrored axes: 8 passes
per window in 3D, 4 in 2D, the main cost of predicting on a CPU. Its benefit is measured,
not assumed: a fold validated with mirroring also scores its cases without it
(:func:`autoseg.evaluation.cross_validation.mirroring_measurement`). The rule
(:func:`mirroring_decision`), over the folds of the configurations that predict:

1. a fold validated without mirroring (a short time budget had no room for it): predict
   without, as the model was validated (its cross-validation Dice says nothing about mirroring);
2. every fold measured: mirror when the mean gain in foreground Dice is at least
   :data:`MIN_MIRRORING_DICE_GAIN`, else not;
3. nothing recorded (folds validated before the measurement existed, or not validated):
   mirror, as nnU-Net does.

``--tta`` / ``--no-tta`` on the command line override the rule.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from autoseg.utils.files import read_json
from autoseg.workdir import WorkDir

#: Mirroring must raise the mean foreground Dice of cross-validation by at least this much to be
#: used at prediction time: half a Dice point is below the fold-to-fold spread of a trained model,
#: and mirroring costs 4x (2D) or 8x (3D) the network time.
MIN_MIRRORING_DICE_GAIN = 0.005


def fold_mirroring_record(work: WorkDir, configuration: str, fold: int, split_mode: str = "random") -> dict | None:
    """What a fold's validation says about mirroring: ``{"validated_with_mirroring": bool, "gain": float|None}``,
    or None when the fold has no validation summary (or one from before the measurement)."""
    path = work.validation_dir(configuration, fold, split_mode) / "summary.json"
    if not path.is_file():
        return None
    summary = read_json(path).get("summary", {})
    if "mirroring" in summary:
        return {"validated_with_mirroring": True, "gain": summary["mirroring"].get("gain")}
    run = work.run_record_path(configuration, fold, split_mode)
    if run.is_file() and work.read_run_record(configuration, fold, split_mode).get("validation_mirroring") is False:
        return {"validated_with_mirroring": False, "gain": None}
    return None


def mirroring_decision(records: Sequence[dict | None]) -> tuple[bool, str]:
    """Mirror at prediction time or not, and why (the rule of the module docstring)."""
    if any(record and not record["validated_with_mirroring"] for record in records):
        return False, ("no test-time mirroring: the models were validated without it (their time budget had no "
                       "room for it); --tta forces it")
    gains = [record["gain"] for record in records if record and record["gain"] is not None]
    if not records or len(gains) < len(records) or any(not math.isfinite(gain) for gain in gains):
        return True, "test-time mirroring: its gain was not measured in cross-validation (--no-tta skips it)"
    mean_gain = sum(gains) / len(gains)
    if mean_gain >= MIN_MIRRORING_DICE_GAIN:
        return True, (f"test-time mirroring: it raised cross-validation Dice by {mean_gain:+.4f} (>= "
                      f"{MIN_MIRRORING_DICE_GAIN}; --no-tta skips it)")
    return False, (f"no test-time mirroring: it changed cross-validation Dice by {mean_gain:+.4f} (< "
                   f"{MIN_MIRRORING_DICE_GAIN}), not worth 4-8x the time (--tta forces it)")


def choose_mirroring(work_dir: str | WorkDir, configurations: Sequence[str], folds: Sequence[int] | None = None,
                     checkpoint: str = "final", split_mode: str = "random") -> tuple[bool, str]:
    """:func:`mirroring_decision` over the folds (None: every trained fold) of the configurations."""
    work = WorkDir.of(work_dir)
    return mirroring_decision([fold_mirroring_record(work, name, fold, split_mode)
                               for name in configurations
                               for fold in (folds if folds is not None else work.trained_folds(name, checkpoint))])
