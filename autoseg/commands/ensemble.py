"""``autoseg ensemble``: choose the best configuration(s) by cross-validation, or average prediction folders."""

from __future__ import annotations

import argparse
from pathlib import Path

from autoseg.errors import AutosegInputError
from autoseg.utils.files import output_folder_problem, read_json_input
from autoseg.workdir import NUM_FOLDS, WorkDir

DEFAULT_FILE_ENDING = ".nii.gz"


def add_parser(subparsers) -> None:
    """Register ``autoseg ensemble``."""
    parser = subparsers.add_parser(
        "ensemble", help="choose the best configuration(s) by cross-validation, or average prediction folders",
        description=("Two modes. `autoseg ensemble WORK_DIR`: score every fully trained configuration and every "
                     f"pair of them (averaged probabilities) on the {NUM_FOLDS}-fold cross-validation predictions, "
                     "pick the best, learn connected-component postprocessing for it and write WORK_DIR/"
                     "inference_plan.json, which `autoseg predict` uses, with a report (Dice, HD95, NSD, the spread "
                     "over cases, the best single configuration against the ensemble, and the Dice lost on folds "
                     "by acquisition when --split-by spacing folds were trained) and WORK_DIR/ensemble_report.png. "
                     "`autoseg ensemble -i DIR1 DIR2 -o OUT`: "
                     "average the probabilities ({case}.npz + {case}.json, from `autoseg predict "
                     "--save-probabilities`) of the same cases in several folders and write the segmentations."))
    parser.add_argument("work_dir", nargs="?", default=None,
                        help="work folder with trained folds (model selection mode)")
    parser.add_argument("-c", "--configurations", nargs="+", default=None,
                        help="model selection: only consider these configurations (default: every configuration "
                             f"with all {NUM_FOLDS} folds trained)")
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
    parser.set_defaults(handler=run)


def read_postprocessing(path: str | Path) -> list[dict]:
    """Postprocessing steps from an inference_plan.json (its ``"postprocessing"``) or a JSON list of steps."""
    from autoseg.postprocessing.components import check_postprocessing_steps  # start-up time (scipy)

    path = Path(path)
    data = read_json_input(path)
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
        problem = output_folder_problem(args.input, args.output, inside_too=False)
        if problem:
            raise AutosegInputError(f"ensemble: {problem}")
        return "folders"
    used = [option for option, value in (("--save-probabilities", args.save_probabilities),
                                         ("--postprocessing", args.postprocessing),
                                         ("--file-ending", args.file_ending)) if value]
    if used:
        raise AutosegInputError(f"ensemble: {', '.join(used)} belong(s) to folder ensembling (-i/-o), "
                                "not to model selection (WORK_DIR)")
    return "selection"


def run(args: argparse.Namespace) -> int:
    """Handler of ``autoseg ensemble``."""
    if args.num_workers < 1:
        raise AutosegInputError(f"-j/--num-workers must be at least 1, got {args.num_workers}")
    mode = _check_ensemble_mode(args)
    # Deferred for start-up time (autoseg --help must not load SimpleITK or scipy).
    from autoseg.evaluation.ensemble import ensemble_folders
    from autoseg.evaluation.selection import format_candidates, select_model

    if mode == "selection":
        result = select_model(args.work_dir, args.configurations, num_workers=args.num_workers)
        print(format_candidates(result))
        work = WorkDir(args.work_dir)
        print(f"written: {work.inference_plan_path}, {work.ensemble_report_path} (per-case Dice of every candidate)")
        return 0

    steps = read_postprocessing(args.postprocessing) if args.postprocessing else None
    cases = ensemble_folders(args.input, args.output, save_probabilities=args.save_probabilities,
                             postprocessing=steps, file_ending=args.file_ending or DEFAULT_FILE_ENDING,
                             num_workers=args.num_workers)
    print(f"ensembled {len(cases)} case(s) from {len(args.input)} folder(s)"
          + (f" with {len(steps)} postprocessing step(s)" if steps else "") + f" -> {args.output}")
    return 0
