"""``autoseg evaluate``: compare a folder of segmentations with reference segmentations.

Like every module of :mod:`autoseg.commands`: ``add_parser`` registers the subcommand,
``run`` takes the parsed arguments and returns the exit code.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from autoseg.errors import AutosegInputError
from autoseg.io.dataset import DatasetDescription, load_dataset_description, parse_dataset_json
from autoseg.utils.files import read_json_input


def add_parser(subparsers) -> None:
    """Register ``autoseg evaluate``."""
    parser = subparsers.add_parser(
        "evaluate", help="compare a folder of segmentations with reference segmentations",
        description=("Match {case}{file_ending} files of the prediction folder with the reference folder, compute "
                     "per class Dice, IoU, HD95, mean surface distance, normalized surface Dice and volumes in "
                     "each file's physical spacing, print a summary table with volume agreement (Bland-Altman) "
                     "and write summary.json and per_case.csv."))
    parser.add_argument("-r", "--reference", required=True, help="folder of reference label maps")
    parser.add_argument("-p", "--prediction", required=True, help="folder of predicted label maps")
    parser.add_argument("-l", "--labels", required=True,
                        help="dataset.json (or its folder) declaring the labels and the file ending")
    parser.add_argument("-o", "--output", default=None,
                        help="folder for summary.json and per_case.csv (default: the prediction folder)")
    parser.add_argument("--tolerance-mm", type=float, default=1.0,
                        help="tolerance of the normalized surface Dice, in mm (default 1.0)")
    parser.add_argument("-j", "--num-workers", type=int, default=1,
                        help="worker processes evaluating cases in parallel (default 1)")
    parser.set_defaults(handler=run)


def read_dataset_labels(path: str | Path) -> DatasetDescription:
    """The :class:`~autoseg.io.dataset.DatasetDescription` of a dataset.json file or of a folder holding one."""
    path = Path(path)
    if path.is_dir():
        return load_dataset_description(path)
    data = read_json_input(path, "dataset.json not found", expect=dict)
    return parse_dataset_json(data, path.parent, str(path))


def _value(value: float | None, digits: int = 2) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def format_volume_agreement(summary: Mapping[str, Any], label_names: Mapping[int, str]) -> str:
    """Per class: mean reference/predicted volume (mL) and the mean difference with its 95% limits of agreement."""
    rows = []
    for label in summary["labels"]:
        per_class = summary["per_class"]
        agreement = (per_class[label] if label in per_class else per_class[str(label)])["volume_agreement"]
        ml, percent = agreement["difference_ml"], agreement["difference_percent"]
        rows.append((label_names.get(int(label), str(label)),
                     _value(agreement["mean_reference_volume_ml"]), _value(agreement["mean_predicted_volume_ml"]),
                     _value(ml["mean"]), f"[{_value(ml['loa_lower'])}, {_value(ml['loa_upper'])}]",
                     _value(percent["mean"], 1), f"[{_value(percent['loa_lower'], 1)}, "
                                                 f"{_value(percent['loa_upper'], 1)}]"))
    header = ("class", "ref mL", "pred mL", "diff mL", "95% LoA mL", "diff %", "95% LoA %")
    widths = [max(len(header[i]), *(len(row[i]) for row in rows)) for i in range(len(header))]
    lines = ["volume agreement (predicted - reference; limits of agreement = mean ± 1.96 sd, need 2+ cases)",
             "  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(header, widths)))]
    lines.append("-" * len(lines[-1]))
    for row in rows:
        lines.append("  ".join(v.ljust(w) if i == 0 else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths))))
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    """Handler of ``autoseg evaluate``."""
    # Deferred for start-up time (autoseg --help must not load SimpleITK or scipy).
    from autoseg.evaluation.evaluate import PER_CASE_FILE, SUMMARY_FILE, evaluate_folders
    from autoseg.evaluation.summary import format_table

    if args.tolerance_mm < 0:
        raise AutosegInputError(f"--tolerance-mm must be >= 0, got {args.tolerance_mm}")
    if args.num_workers < 1:
        raise AutosegInputError(f"-j/--num-workers must be at least 1, got {args.num_workers}")
    description = read_dataset_labels(args.labels)
    output = Path(args.output) if args.output else Path(args.prediction)
    result = evaluate_folders(args.reference, args.prediction, description.labels, description.file_ending,
                              surface_tolerance_mm=args.tolerance_mm, num_workers=args.num_workers,
                              output_dir=output, regions_class_order=description.regions_class_order)
    summary = result["summary"]
    names = {int(value): name for value, name in summary["label_names"].items()}
    print(f"{summary['num_cases']} case(s), NSD tolerance {args.tolerance_mm:g} mm")
    print(format_table(summary, names, metrics=("dice", "hd95_mm", "nsd")))
    print()
    print(format_volume_agreement(summary, names))
    print(f"written: {output / SUMMARY_FILE}, {output / PER_CASE_FILE}")
    return 0
