"""``ensemble_report.png``: every candidate's per-case cross-validation Dice, sorted, in one picture.

Each candidate of ``autoseg ensemble`` is one curve: its per-case foreground-mean Dice
sorted from the worst case (left) to the best (right), so the mean, the spread and the
worst cases of all candidates can be compared at a glance. The chosen candidate is drawn
thick; candidates scored on acquisition folds (``--split-by spacing``) are dashed.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any

from autoseg.utils.files import atomic_path


def _title(candidate: Mapping[str, Any]) -> str:
    return (f"{' + '.join(candidate['configurations'])}: mean {candidate['mean_dice']:.3f}, "
            f"5th pct {candidate['percentile_5']:.3f}, worst {candidate['worst']:.3f}")


def plot_candidates(candidates: Sequence[Mapping[str, Any]], chosen: Sequence[str], path: str | os.PathLike,
                    acquisition_candidates: Sequence[Mapping[str, Any]] = ()) -> None:
    """Write the plot of the module docstring to ``path`` (PNG, written atomically).

    ``candidates``/``acquisition_candidates``: entries with ``"configurations"``, ``"mean_dice"``,
    ``"per_case_dice"`` (``{case: Dice}``) and the fields of
    :func:`autoseg.evaluation.stability.per_case_spread`.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(10, 6))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for index, candidate in enumerate(candidates):
        values = sorted(candidate["per_case_dice"].values())
        is_chosen = list(candidate["configurations"]) == list(chosen)
        axis.plot(range(1, len(values) + 1), values, color=colors[index % len(colors)],
                  linewidth=3 if is_chosen else 1.2, label=("chosen: " if is_chosen else "") + _title(candidate))
        match = next((other for other in acquisition_candidates
                      if list(other["configurations"]) == list(candidate["configurations"])), None)
        if match is not None:
            other_values = sorted(match["per_case_dice"].values())
            axis.plot(range(1, len(other_values) + 1), other_values, color=colors[index % len(colors)],
                      linestyle="--", linewidth=1.2, label="acquisition folds: " + _title(match))
    axis.set_xlabel("case, sorted from worst to best")
    axis.set_ylabel("foreground-mean Dice (cross-validation)")
    axis.set_ylim(0, 1.02)
    axis.grid(alpha=0.3)
    axis.legend(loc="lower right", fontsize=8)
    axis.set_title("per-case Dice of every candidate")
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=80, format="png")
    plt.close(figure)
