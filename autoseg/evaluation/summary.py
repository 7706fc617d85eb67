"""Summaries of per-case metrics: per-class statistics, foreground means, volume agreement.

``per_case`` maps case id -> label -> metric -> value, as returned per case by
:func:`autoseg.evaluation.metrics.compute_case_metrics` (label keys may be ints or,
after a JSON round trip, strings). Undefined values (None) are counted, not averaged.

Statistics per class and metric: ``mean``, ``std`` (population standard deviation,
ddof=0), ``median``, ``worst`` and ``best`` (min/max for Dice, IoU and NSD; max/min
for distances and component counts), ``n`` (defined values) and ``n_undefined``.
``foreground_mean[metric]`` is the mean over classes of the per-class means (classes
whose mean is undefined are skipped).

Volume agreement per class (Bland-Altman): mean and standard deviation of the
predicted - reference volume difference in mL and in % of the reference volume, and
95% limits of agreement ``mean +/- 1.96 sd``. Here sd is the *sample* standard
deviation (ddof=1), the usual Bland-Altman choice; it needs at least two cases
(otherwise sd and limits are None).
"""

from __future__ import annotations

import csv
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from autoseg.evaluation.metrics import METRIC_NAMES
from autoseg.utils.files import atomic_path, write_json

#: Metrics where a larger value is better.
HIGHER_IS_BETTER = ("dice", "iou", "nsd")
#: Metrics where a smaller value is better.
LOWER_IS_BETTER = ("hd95_mm", "msd_mm", "false_positive_components", "false_negative_components")
#: Metrics that get per-class statistics, in report order.
SUMMARY_METRICS = ("dice", "iou", "nsd", "hd95_mm", "msd_mm", "false_positive_components",
                   "false_negative_components")

#: z value of the 95% limits of agreement.
LIMITS_OF_AGREEMENT_Z = 1.96


def _label_entry(case: Mapping, label: int) -> Mapping | None:
    if label in case:
        return case[label]
    return case.get(str(label))


def _values(per_case: Mapping[str, Mapping], label: int, metric: str) -> list[float | None]:
    values = []
    for case in per_case.values():
        entry = _label_entry(case, label)
        values.append(None if entry is None else entry.get(metric))
    return values


def metric_statistics(values: Sequence[float | None], higher_is_better: bool) -> dict[str, Any]:
    """mean, std (ddof=0), median, worst, best, n and n_undefined of ``values`` (None = undefined)."""
    defined = np.array([v for v in values if v is not None], dtype=float)
    n_undefined = len(values) - int(defined.size)
    if defined.size == 0:
        return {"mean": None, "std": None, "median": None, "worst": None, "best": None,
                "n": 0, "n_undefined": n_undefined}
    low, high = float(defined.min()), float(defined.max())
    return {
        "mean": float(defined.mean()),
        "std": float(defined.std(ddof=0)),
        "median": float(np.median(defined)),
        "worst": low if higher_is_better else high,
        "best": high if higher_is_better else low,
        "n": int(defined.size),
        "n_undefined": n_undefined,
    }


def limits_of_agreement(differences: Sequence[float | None]) -> dict[str, Any]:
    """Bland-Altman statistics of ``differences``: mean, sample sd (ddof=1), mean -/+ 1.96 sd, n."""
    defined = np.array([d for d in differences if d is not None], dtype=float)
    result: dict[str, Any] = {"mean": None, "sd": None, "loa_lower": None, "loa_upper": None,
                              "n": int(defined.size)}
    if defined.size >= 1:
        result["mean"] = float(defined.mean())
    if defined.size >= 2:
        sd = float(defined.std(ddof=1))
        result["sd"] = sd
        result["loa_lower"] = result["mean"] - LIMITS_OF_AGREEMENT_Z * sd
        result["loa_upper"] = result["mean"] + LIMITS_OF_AGREEMENT_Z * sd
    return result


def volume_agreement(per_case: Mapping[str, Mapping], label: int) -> dict[str, Any]:
    """Volume agreement of one class: mean volumes (mL) and limits of agreement in mL and %."""
    reference = [v for v in _values(per_case, label, "reference_volume_ml") if v is not None]
    predicted = [v for v in _values(per_case, label, "predicted_volume_ml") if v is not None]
    return {
        "mean_reference_volume_ml": float(np.mean(reference)) if reference else None,
        "mean_predicted_volume_ml": float(np.mean(predicted)) if predicted else None,
        "difference_ml": limits_of_agreement(_values(per_case, label, "volume_difference_ml")),
        "difference_percent": limits_of_agreement(_values(per_case, label, "volume_difference_percent")),
    }


def summarize(per_case: Mapping[str, Mapping], labels: Sequence[int]) -> dict[str, Any]:
    """Summarize per-case metrics over cases (see the module docstring).

    Returns ``{"num_cases", "labels", "metrics", "per_class", "foreground_mean"}`` where
    ``per_class[label][metric]`` holds the statistics of :func:`metric_statistics` and
    ``per_class[label]["volume_agreement"]`` those of :func:`volume_agreement`.
    """
    labels = [int(label) for label in labels]
    per_class: dict[int, dict[str, Any]] = {}
    for label in labels:
        per_class[label] = {
            metric: metric_statistics(_values(per_case, label, metric), metric in HIGHER_IS_BETTER)
            for metric in SUMMARY_METRICS
        }
        per_class[label]["volume_agreement"] = volume_agreement(per_case, label)
    foreground_mean: dict[str, float | None] = {}
    for metric in SUMMARY_METRICS:
        means = [per_class[label][metric]["mean"] for label in labels]
        means = [m for m in means if m is not None]
        foreground_mean[metric] = float(np.mean(means)) if means else None
    return {
        "num_cases": len(per_case),
        "labels": labels,
        "metrics": list(SUMMARY_METRICS),
        "per_class": per_class,
        "foreground_mean": foreground_mean,
    }


def _number(value: float | None, width: int) -> str:
    if value is None:
        return "-".rjust(width)
    return f"{value:.4g}".rjust(width) if abs(value) >= 1000 else f"{value:.3f}".rjust(width)


def _class_entry(summary: Mapping, label: int) -> Mapping:
    per_class = summary["per_class"]
    return per_class[label] if label in per_class else per_class[str(label)]


def format_table(summary: Mapping[str, Any], label_names: Mapping[int, str] | None = None,
                 metrics: Sequence[str] = ("dice", "hd95_mm", "nsd")) -> str:
    """A fixed-width text table: one row per class and a foreground-mean row.

    Columns per metric: ``mean ± std``, ``median`` and ``worst``. The foreground-mean
    row shows the mean over classes of the class means only. ``label_names`` maps label
    values to names (default: ``summary["label_names"]`` if present, else the value).
    """
    if label_names is None:
        label_names = summary.get("label_names") or {}
    names = {int(k): str(v) for k, v in label_names.items()}
    rows = [(names.get(int(label), str(label)), _class_entry(summary, int(label)))
            for label in summary["labels"]]
    name_width = max([len("foreground mean"), len("class")] + [len(name) for name, _ in rows])
    mean_width, cell_width = 17, 8

    header_1 = " " * name_width
    header_2 = "class".ljust(name_width)
    for metric in metrics:
        group_width = mean_width + 2 * (cell_width + 1)
        header_1 += " | " + metric.center(group_width)
        header_2 += " | " + "mean ± std".rjust(mean_width) + " " + "median".rjust(cell_width) + " " + \
            "worst".rjust(cell_width)
    lines = [header_1.rstrip(), header_2, "-" * len(header_2)]
    for name, entry in rows:
        line = name.ljust(name_width)
        for metric in metrics:
            stats = entry[metric]
            if stats["mean"] is None:
                mean_std = "-"
            else:
                mean_std = f"{_number(stats['mean'], 0)} ± {_number(stats['std'], 0)}"
            line += " | " + mean_std.rjust(mean_width) + " " + _number(stats["median"], cell_width) + " " + \
                _number(stats["worst"], cell_width)
        lines.append(line)
    lines.append("-" * len(header_2))
    line = "foreground mean".ljust(name_width)
    for metric in metrics:
        value = summary["foreground_mean"].get(metric)
        line += " | " + _number(value, mean_width) + " " + "-".rjust(cell_width) + " " + "-".rjust(cell_width)
    lines.append(line)
    undefined = [f"{metric} {name} x{entry[metric]['n_undefined']}" for metric in metrics
                 for name, entry in rows if entry[metric]["n_undefined"]]
    if undefined:
        lines.append("undefined (one mask empty), left out: " + ", ".join(undefined))
    return "\n".join(lines)


def write_results(per_case: Mapping[str, Mapping], summary: Mapping[str, Any],
                  json_path: str | os.PathLike, csv_path: str | os.PathLike) -> None:
    """Write ``{"summary", "per_case"}`` as JSON and one CSV row per case and class, atomically.

    CSV columns: ``case_id, label, label_name`` and every metric of
    :data:`~autoseg.evaluation.metrics.METRIC_NAMES`; undefined values are empty cells.
    """
    write_json(json_path, {"summary": summary, "per_case": per_case})
    names = {int(k): str(v) for k, v in (summary.get("label_names") or {}).items()}
    labels = [int(label) for label in summary["labels"]]
    with atomic_path(csv_path) as temporary:
        with open(temporary, "w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle)
            writer.writerow(["case_id", "label", "label_name", *METRIC_NAMES])
            for case_id, case in per_case.items():
                for label in labels:
                    entry = _label_entry(case, label)
                    if entry is None:
                        continue
                    values = ["" if entry.get(m) is None else entry[m] for m in METRIC_NAMES]
                    writer.writerow([case_id, label, names.get(label, ""), *values])
