"""How stable a model is across cases, and how much it loses on unseen acquisitions (pure functions).

A mean Dice hides the cases a model fails on. For model selection (``autoseg ensemble``)
every candidate's per-case foreground-mean Dice (mean over foreground classes, one value
per cross-validation case) is summarised by its spread: standard deviation (ddof=0), the
5th percentile (numpy's linear interpolation) and the worst cases, named with their size.
Ensembles of 2D and 3D models are reported to reduce exactly this spread (the domain
digest, seed 000), so the best single configuration is compared with the ensemble.

The acquisition-split gap: the same candidate's mean Dice on folds split by acquisition
(``autoseg train --split-by spacing``: each validation fold holds slice counts and
thicknesses unlike its training data) subtracted from its mean Dice on random folds. It
estimates what a model loses on a new scanner or protocol.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

#: How many of the worst cases are listed by name.
WORST_CASES_LISTED = 5
#: The low percentile of the per-case Dice reported beside the worst case.
LOW_PERCENTILE = 5.0


def per_case_spread(per_case_dice: Mapping[str, float], case_sizes: Mapping[str, Mapping[str, Any]] | None = None,
                    worst_listed: int = WORST_CASES_LISTED) -> dict[str, Any]:
    """Spread of one candidate's per-case Dice.

    Args:
        per_case_dice: ``{case: foreground-mean Dice}``.
        case_sizes: ``{case: {"shape": [z, y, x] voxels, "foreground_ml": reference foreground in mL}}``,
            copied into the listed worst cases.
        worst_listed: how many of the worst cases to list (lowest Dice first; ties by name).

    Returns:
        ``{"std", "percentile_5", "worst", "worst_cases": [{"case", "dice", "shape", "foreground_ml"}]}``.
    """
    if not per_case_dice:
        raise ValueError("per_case_spread needs at least one case")
    ranked = sorted(per_case_dice, key=lambda case: (per_case_dice[case], case))
    values = np.array([per_case_dice[case] for case in ranked], dtype=np.float64)
    sizes = case_sizes or {}
    return {
        "std": float(values.std(ddof=0)),
        "percentile_5": float(np.percentile(values, LOW_PERCENTILE)),
        "worst": float(values[0]),
        "worst_cases": [{"case": case, "dice": float(per_case_dice[case]), **dict(sizes.get(case, {}))}
                        for case in ranked[:worst_listed]],
    }


def compare_spread(single: Mapping[str, Any], ensemble: Mapping[str, Any]) -> dict[str, Any]:
    """The best single configuration against an ensemble, by the spread of their per-case Dice.

    ``single`` and ``ensemble`` are candidate entries with ``"configurations"`` and the fields of
    :func:`per_case_spread`. The ensemble is *more stable* when both its worst case and its
    5th percentile are higher than the single configuration's.
    """
    a, b = single, ensemble
    worst_better = b["worst"] > a["worst"]
    low_better = b["percentile_5"] > a["percentile_5"]
    more_stable = worst_better and low_better
    names = " + ".join(ensemble["configurations"]), " + ".join(single["configurations"])
    if more_stable:
        verdict = f"{names[0]} is more stable than {names[1]}: higher worst case and 5th percentile"
    elif worst_better or low_better:
        better, worse = ("worst case", "5th percentile") if worst_better else ("5th percentile", "worst case")
        verdict = f"{names[0]} has a higher {better} but not a higher {worse} than {names[1]}"
    else:
        verdict = (f"{names[0]} is not more stable than {names[1]}: neither its worst case nor its 5th "
                   "percentile is higher")
    return {
        "single": list(single["configurations"]), "ensemble": list(ensemble["configurations"]),
        "std": [a["std"], b["std"]], "percentile_5": [a["percentile_5"], b["percentile_5"]],
        "worst": [a["worst"], b["worst"]], "ensemble_more_stable": more_stable, "verdict": verdict,
    }


def stability_comparison(candidates: Sequence[Mapping[str, Any]], chosen: Sequence[str]) -> dict[str, Any] | None:
    """The best single configuration against the chosen ensemble (or, when a single configuration
    was chosen, against the best pair); None when there is no pair to compare with."""
    singles = [c for c in candidates if len(c["configurations"]) == 1]
    ensembles = [c for c in candidates if len(c["configurations"]) > 1]
    if not singles or not ensembles:
        return None
    best_single = max(singles, key=lambda c: c["mean_dice"])
    chosen_entry = next((c for c in ensembles if list(c["configurations"]) == list(chosen)), None)
    ensemble = chosen_entry or max(ensembles, key=lambda c: c["mean_dice"])
    return compare_spread(best_single, ensemble)


def acquisition_gap(random_candidates: Sequence[Mapping[str, Any]],
                    acquisition_candidates: Sequence[Mapping[str, Any]], chosen: Sequence[str]) -> dict[str, Any]:
    """Mean Dice on random folds minus mean Dice on acquisition folds, per candidate scored on both.

    Returns ``{"per_candidate": [{"configurations", "random", "acquisition", "gap"}], "chosen": entry or None}``:
    ``chosen`` is the chosen candidate's entry when it was scored on both kinds of folds.
    """
    by_members = {tuple(c["configurations"]): c for c in acquisition_candidates}
    rows = []
    for candidate in random_candidates:
        other = by_members.get(tuple(candidate["configurations"]))
        if other is not None:
            rows.append({"configurations": list(candidate["configurations"]), "random": candidate["mean_dice"],
                         "acquisition": other["mean_dice"], "gap": candidate["mean_dice"] - other["mean_dice"]})
    chosen_row = next((row for row in rows if row["configurations"] == list(chosen)), None)
    return {"per_candidate": rows, "chosen": chosen_row}
