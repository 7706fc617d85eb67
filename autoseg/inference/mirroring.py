"""How ``autoseg predict`` mirrors at test time: only over the axes that cross-validation measured to pay.

Test-time mirroring averages the network over every flip of the mirrored axes: 8 passes
per window in 3D, 4 in 2D, the main cost of predicting on a CPU. Its benefit is measured,
not assumed: a fold validated with mirroring also scores its cases without it and with each
single axis (``summary["mirroring"]["dice_per_setting"]``, from the same network passes; see
:mod:`autoseg.evaluation.cross_validation`). The rule, per configuration, over its folds
(:func:`configuration_mirroring`):

1. a fold validated without mirroring (a short time budget had no room for it): predict
   without, as the model was validated (its cross-validation Dice says nothing about mirroring);
2. every fold measured per setting: on a CPU the cheapest setting (fewest passes: none 1,
   one axis 2, all 4 or 8) whose mean Dice is within :data:`MAX_MIRRORING_DICE_LOSS` of the
   best measured one (on Task04: x alone for 2d, z alone for 3d); on a GPU, where passes are
   cheap, the best one;
3. folds measured before single axes were (all vs none only): mirror when the mean gain is
   at least :data:`MIN_MIRRORING_DICE_GAIN` (:func:`mirroring_decision`);
4. nothing recorded (not validated, or validated before any measurement): mirror, as nnU-Net does.

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
#: On a CPU, the cheapest mirroring setting whose cross-validation Dice is at most this much below the
#: best setting's is used (each axis costs twice the passes; BENCHMARKS.md, "What each test-time mirror axis buys").
MAX_MIRRORING_DICE_LOSS = 0.002
#: A setting's name in ``dice_per_setting`` -> what a Predictor takes (True: all axes, False: none,
#: letters: those array axes).
SETTING_NAMES = {"all": True, "none": False}


def fold_mirroring_record(work: WorkDir, configuration: str, fold: int, split_mode: str = "random") -> dict | None:
    """What a fold's validation says about mirroring: ``{"validated_with_mirroring": bool, "gain": float|None}``,
    or None when the fold has no validation summary (or one from before the measurement)."""
    path = work.validation_dir(configuration, fold, split_mode) / "summary.json"
    if not path.is_file():
        return None
    summary = read_json(path).get("summary", {})
    if "mirroring" in summary:
        return {"validated_with_mirroring": True, "gain": summary["mirroring"].get("gain"),
                "dice_per_setting": summary["mirroring"].get("dice_per_setting")}
    run = work.run_record_path(configuration, fold, split_mode)
    if run.is_file() and work.read_run_record(configuration, fold, split_mode).get("validation_mirroring") is False:
        return {"validated_with_mirroring": False, "gain": None, "dice_per_setting": None}
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


def setting_passes(name: str, names: Sequence[str]) -> int:
    """Network passes per window of a mirroring setting among the measured ``names``: ``none`` 1, one axis
    2, ``all`` 2 ** (number of single axes measured; at least 2 passes when none were)."""
    if name == "none":
        return 1
    if name != "all":
        return 2 ** len(name)
    return 2 ** max(1, sum(1 for other in names if other not in SETTING_NAMES))


def per_setting_decision(records: Sequence[dict], device_type: str = "cpu") -> tuple[bool | str, str] | None:
    """Rule 2 of the module docstring for one configuration's folds, or None when not every fold
    measured the same settings. Returns the setting (True, False or axis letters) and why."""
    measured = [record.get("dice_per_setting") for record in records]
    if not measured or any(not m for m in measured):
        return None
    names = set(measured[0])
    if any(set(m) != names for m in measured) or not {"all", "none"} <= names:
        return None
    values = {name: [m[name] for m in measured] for name in names}
    if any(v is None or not math.isfinite(v) for vs in values.values() for v in vs):
        return None
    mean = {name: sum(vs) / len(vs) for name, vs in values.items()}
    cost = {name: setting_passes(name, list(names)) for name in names}
    best = max(mean, key=lambda name: (mean[name], -cost[name]))
    if device_type == "cpu":
        within = [name for name in mean if mean[name] >= mean[best] - MAX_MIRRORING_DICE_LOSS]
        chosen = min(within, key=lambda name: (cost[name], -mean[name]))
        why = (f"the cheapest within {MAX_MIRRORING_DICE_LOSS} of the best cross-validation Dice ({best} "
               f"{mean[best]:.4f})")
    else:
        chosen, why = best, "the best cross-validation Dice"
    measured_text = ", ".join(f"{name} {mean[name]:.4f}" for name in sorted(mean, key=lambda n: (cost[n], n)))
    return SETTING_NAMES.get(chosen, chosen), (f"{chosen} ({cost[chosen]} pass(es) per window; {why}; "
                                               f"measured {measured_text})")


def configuration_mirroring(records: Sequence[dict | None], device_type: str = "cpu") -> tuple[bool | str, str]:
    """The mirroring of one configuration from its folds' records (the module docstring's rule)."""
    if records and all(record and record["validated_with_mirroring"] for record in records):
        decided = per_setting_decision(records, device_type)  # type: ignore[arg-type]
        if decided is not None:
            return decided
    return mirroring_decision(records)


def choose_mirroring(work_dir: str | WorkDir, configurations: Sequence[str], folds: Sequence[int] | None = None,
                     checkpoint: str = "final", split_mode: str = "random", device_type: str = "cpu"
                     ) -> tuple[dict[str, bool | str], str]:
    """Each configuration's mirroring setting (True, False or array-axis letters) over its folds
    (None: every trained fold), on ``device_type``, and why (one line)."""
    work = WorkDir.of(work_dir)
    settings, reasons = {}, []
    for name in configurations:
        records = [fold_mirroring_record(work, name, fold, split_mode)
                   for fold in (folds if folds is not None else work.trained_folds(name, checkpoint))]
        settings[name], reason = configuration_mirroring(records, device_type)
        reasons.append(f"{name}: {reason}")
    return settings, "test-time mirroring by configuration: " + "; ".join(reasons)
