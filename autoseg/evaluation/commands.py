"""Command-line wiring of ``autoseg evaluate`` and ``autoseg ensemble``.

``add_evaluate_parser`` and ``add_ensemble_parser`` register the subcommands on an
``argparse`` subparsers object; each handler takes the parsed arguments and returns
the exit code. Input problems are raised as :class:`AutosegInputError` (the CLI
prints them and exits with 1).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from autoseg.errors import AutosegInputError

DEFAULT_FILE_ENDING = ".nii.gz"


# ---------------------------------------------------------------------- evaluate
def add_evaluate_parser(subparsers) -> None:
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
    parser.set_defaults(handler=run_evaluate)


def read_dataset_labels(path: str | Path):
    """The :class:`~autoseg.io.dataset.DatasetDescription` of a dataset.json file or of a folder holding one."""
    from autoseg.io.dataset import load_dataset_description, parse_dataset_json

    path = Path(path)
    if path.is_dir():
        return load_dataset_description(path)
    if not path.is_file():
        raise AutosegInputError(f"{path}: dataset.json not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise AutosegInputError(f"{path}: invalid JSON ({error})") from None
    if not isinstance(data, dict):
        raise AutosegInputError(f"{path}: expected a JSON object")
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


def run_evaluate(args: argparse.Namespace) -> int:
    """Handler of ``autoseg evaluate``."""
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
                              output_dir=output)
    summary = result["summary"]
    names = {int(value): name for value, name in summary["label_names"].items()}
    print(f"{summary['num_cases']} case(s), NSD tolerance {args.tolerance_mm:g} mm")
    print(format_table(summary, names, metrics=("dice", "hd95_mm", "nsd")))
    print()
    print(format_volume_agreement(summary, names))
    print(f"written: {output / SUMMARY_FILE}, {output / PER_CASE_FILE}")
    return 0


# ---------------------------------------------------------------------- ensemble
def add_ensemble_parser(subparsers) -> None:
    """Register ``autoseg ensemble``."""
    parser = subparsers.add_parser(
        "ensemble", help="choose the best configuration(s) by cross-validation, or average prediction folders",
        description=("Two modes. `autoseg ensemble WORK_DIR`: score every fully trained configuration and every "
                     "pair of them (averaged probabilities) on the 5-fold cross-validation predictions, pick the "
                     "best, learn connected-component postprocessing for it and write WORK_DIR/"
                     "inference_plan.json, which `autoseg predict` uses. `autoseg ensemble -i DIR1 DIR2 -o OUT`: "
                     "average the probabilities ({case}.npz + {case}.json, from `autoseg predict "
                     "--save-probabilities`) of the same cases in several folders and write the segmentations."))
    parser.add_argument("work_dir", nargs="?", default=None,
                        help="work folder with trained folds (model selection mode)")
    parser.add_argument("-c", "--configurations", nargs="+", default=None,
                        help="model selection: only consider these configurations (default: every configuration "
                             "with all 5 folds trained)")
    parser.add_argument("-i", "--input", nargs="+", default=None,
                        help="folder ensembling: folders with {case}.npz + {case}.json probabilities")
    parser.add_argument("-o", "--output", default=None, help="folder ensembling: output folder")
    parser.add_argument("--save-probabilities", action="store_true",
                        help="folder ensembling: also write the averaged probabilities ({case}.npz + .json)")
    parser.add_argument("--postprocessing", default=None, metavar="JSON",
                        help="folder ensembling: apply the postprocessing of this inference_plan.json "
                             "(or a JSON list of steps)")
    parser.add_argument("--file-ending", default=None,
                        help=f"folder ensembling: format of the written segmentations (default {DEFAULT_FILE_ENDING})")
    parser.add_argument("-j", "--num-workers", type=int, default=1,
                        help="worker processes handling cases in parallel (default 1)")
    parser.set_defaults(handler=run_ensemble)


def read_postprocessing(path: str | Path) -> list[dict]:
    """Postprocessing steps from an inference_plan.json (its ``"postprocessing"``) or a JSON list of steps."""
    from autoseg.evaluation.ensemble import check_postprocessing_steps

    path = Path(path)
    if not path.is_file():
        raise AutosegInputError(f"{path}: file not found")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise AutosegInputError(f"{path}: invalid JSON ({error})") from None
    if isinstance(data, dict):
        if "postprocessing" not in data:
            raise AutosegInputError(f"{path}: no 'postprocessing' entry (expected an inference_plan.json)")
        data = data["postprocessing"]
    return check_postprocessing_steps(data, str(path))


def _check_ensemble_mode(args: argparse.Namespace) -> str:
    folder_mode = args.input is not None or args.output is not None
    if args.work_dir is not None and folder_mode:
        raise AutosegInputError("ensemble: give either WORK_DIR (model selection) or -i/-o (folder ensembling), "
                                "not both")
    if args.work_dir is None and not folder_mode:
        raise AutosegInputError("ensemble: give WORK_DIR (model selection) or -i DIR1 DIR2 ... -o OUT "
                                "(folder ensembling)")
    if folder_mode:
        if args.input is None or args.output is None:
            raise AutosegInputError("ensemble: folder ensembling needs both -i/--input and -o/--output")
        if args.configurations:
            raise AutosegInputError("ensemble: -c/--configurations belongs to model selection (WORK_DIR), "
                                    "not to -i/-o")
        return "folders"
    used = [option for option, value in (("--save-probabilities", args.save_probabilities),
                                         ("--postprocessing", args.postprocessing),
                                         ("--file-ending", args.file_ending)) if value]
    if used:
        raise AutosegInputError(f"ensemble: {', '.join(used)} belong(s) to folder ensembling (-i/-o), "
                                "not to model selection (WORK_DIR)")
    return "selection"


def run_ensemble(args: argparse.Namespace) -> int:
    """Handler of ``autoseg ensemble``."""
    if args.num_workers < 1:
        raise AutosegInputError(f"-j/--num-workers must be at least 1, got {args.num_workers}")
    mode = _check_ensemble_mode(args)
    if mode == "selection":
        from autoseg.evaluation.selection import INFERENCE_PLAN_FILE, format_candidates, select_model

        result = select_model(args.work_dir, args.configurations, num_workers=args.num_workers)
        print(format_candidates(result))
        print(f"written: {Path(args.work_dir) / INFERENCE_PLAN_FILE}")
        return 0

    from autoseg.evaluation.ensemble import ensemble_folders

    steps = read_postprocessing(args.postprocessing) if args.postprocessing else None
    cases = ensemble_folders(args.input, args.output, save_probabilities=args.save_probabilities,
                             postprocessing=steps, file_ending=args.file_ending or DEFAULT_FILE_ENDING,
                             num_workers=args.num_workers)
    print(f"ensembled {len(cases)} case(s) from {len(args.input)} folder(s)"
          + (f" with {len(steps)} postprocessing step(s)" if steps else "") + f" -> {args.output}")
    return 0
