"""``autoseg convert-msd``: a Medical Segmentation Decathlon task as downloaded -> the nnU-Net v2 layout.

The conversion (:mod:`autoseg.io.msd`) is written to ``OUT.partial`` beside the output,
verified as ``autoseg plan`` verifies a dataset (every file complete and readable, geometry
of channels and labels matching, label values declared, no NaN/Inf), and only then renamed
to ``OUT``: a failed or interrupted conversion leaves no half-written dataset.
"""

from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from autoseg.errors import AutosegInputError, DatasetVerificationError


def add_parser(subparsers) -> None:
    """Register ``autoseg convert-msd``."""
    parser = subparsers.add_parser(
        "convert-msd", help="convert a Medical Segmentation Decathlon task to the nnU-Net v2 layout",
        description=("Convert a Medical Segmentation Decathlon task as downloaded (TaskXX_Name: 4D multi-channel "
                     "NIfTI images, dataset.json in the MSD format, macOS '._' files) into the nnU-Net v2 raw "
                     "layout that `autoseg plan` reads: one file per channel (imagesTr/{case}_0000.nii.gz, ...), "
                     "the label maps, imagesTs likewise, and a v2 dataset.json (channel names and labels carried "
                     "over). The result is verified like `autoseg plan` verifies a dataset before it is written."))
    parser.add_argument("task", help="the MSD task folder (with dataset.json, imagesTr, labelsTr)")
    parser.add_argument("-o", "--output", required=True, help="dataset folder to write, e.g. Dataset004_Hippocampus")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing dataset at -o")
    parser.add_argument("-j", "--num-workers", type=int, default=None,
                        help="worker processes converting cases (default: the cores, at most 8)")
    parser.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Handler of ``autoseg convert-msd``."""
    # Deferred for start-up time (autoseg --help must not load SimpleITK).
    from autoseg.io.dataset import parse_dataset_json
    from autoseg.io.msd import convert_case, read_msd_task, v2_dataset_json
    from autoseg.planning.fingerprint import extract_fingerprint
    from autoseg.utils.files import write_json
    from autoseg.utils.parallel import default_case_workers, process_pool
    from autoseg.utils.progress_bars import progress_bar

    if args.num_workers is not None and args.num_workers < 1:
        raise AutosegInputError(f"-j/--num-workers must be at least 1, got {args.num_workers}")
    task = read_msd_task(args.task)
    output = Path(args.output)
    source = Path(args.task).resolve()
    if output.resolve() == source or output.resolve() in source.parents:
        raise AutosegInputError(f"-o {output}: holds the MSD task {args.task}, which the conversion would replace; "
                                "write the dataset to another folder")
    if output.is_file():
        raise AutosegInputError(f"{output}: exists and is a file, not a folder; give -o a folder")
    if output.exists() and any(output.iterdir()) and not args.overwrite:
        raise AutosegInputError(f"{output}: exists and is not empty; use --overwrite to replace it")
    partial = output.with_name(output.name + ".partial")
    if partial.exists():
        print(f"removing {partial}, left by an interrupted conversion")
        shutil.rmtree(partial)
    workers = args.num_workers or default_case_workers()
    jobs = ([(case, len(task.channel_names), partial / "imagesTr", partial / "labelsTr") for case in task.training]
            + [(case, len(task.channel_names), partial / "imagesTs", None) for case in task.test])
    try:
        with progress_bar(total=len(jobs), desc="convert", unit="case") as bar:
            if workers > 1 and len(jobs) > 1:
                with process_pool(min(workers, len(jobs))) as pool:
                    for _ in pool.imap_unordered(convert_case, jobs):
                        bar.update(1)
            else:
                for job in jobs:
                    convert_case(job)
                    bar.update(1)
        content = v2_dataset_json(task)
        try:
            extract_fingerprint(parse_dataset_json(content, partial, str(output / "dataset.json")), workers)
        except DatasetVerificationError as error:  # name the converted files as they would have been called
            raise DatasetVerificationError([problem.replace(str(partial), f"{output} (converted from {task.root})")
                                            for problem in error.problems]) from None
        write_json(partial / "dataset.json", content)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    if output.exists():
        shutil.rmtree(output)
    partial.rename(output)
    labels = ", ".join(f"{value} {name}" for name, value in content["labels"].items())
    print(f"converted {task.root.name}: {len(task.training)} training and {len(task.test)} test cases, "
          f"{len(task.channel_names)} channel(s) ({', '.join(task.channel_names.values())}), labels {labels} -> "
          f"{output}\nverified like `autoseg plan` does; next: autoseg plan {output} -o WORKDIR")
    return 0
