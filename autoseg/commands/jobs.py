"""``autoseg jobs``: the trainings a plan still needs, one command per line, for a cluster or ``xargs -P``.

Every (configuration, fold) is an independent job: ``autoseg train WORKDIR -c C -f K``. A fold
counts as done when its validation summary exists (for the configuration or the budget variant
it was trained as). A cascade stage is listed only once every fold of the stage it refines is
done (it trains on their cross-validation predictions); until then a comment on stderr says so.
The per-fold lock of ``train`` keeps two jobs from training the same fold; ``autoseg ensemble``
then uses every configuration whose folds are all complete.
"""

from __future__ import annotations

import argparse
import shlex
import sys

from autoseg.errors import AutosegInputError
from autoseg.workdir import NUM_FOLDS, SPLIT_MODES, WorkDir


def add_parser(subparsers) -> None:
    """Register ``autoseg jobs``."""
    parser = subparsers.add_parser(
        "jobs", help="print the training jobs a plan still needs, one `autoseg train` command per line",
        description=("Print one `autoseg train WORKDIR -c CONFIG -f FOLD` command per configuration and fold not "
                     "yet trained and validated, for a SLURM array (sed -n \"${SLURM_ARRAY_TASK_ID}p\" jobs.txt | "
                     "bash) or `xargs -P`. Cascade stages appear once the stage they refine has every fold."))
    parser.add_argument("work_dir", help="work folder made by `autoseg plan` (on storage every machine sees)")
    parser.add_argument("-c", "--configurations", nargs="+", default=None,
                        help="only these configurations (default: every planned one)")
    parser.add_argument("--time-budget", default=None, help="passed on to every train command, e.g. 30m")
    parser.add_argument("--split-by", choices=list(SPLIT_MODES), default="random",
                        help="folds to list (passed on to every train command)")
    parser.set_defaults(handler=run)


def fold_done(work: WorkDir, configuration: str, fold: int, split_mode: str) -> bool:
    """Whether the fold was trained and validated, as the configuration or one of its budget variants."""
    plans = work.load_plans()
    return any((work.validation_dir(name, fold, split_mode) / "summary.json").is_file()
               for name in [configuration, *plans.variants_of(configuration)])


def pending_jobs(work: WorkDir, configurations: list[str] | None, split_mode: str
                 ) -> tuple[list[tuple[str, int]], list[str]]:
    """``([(configuration, fold) still to train], [notes about configurations that must wait])``."""
    plans = work.load_plans()
    names = configurations or [name for name, plan in plans.configurations.items() if plan.variant_of is None]
    for name in names:
        plans.configuration(name)
    jobs, notes = [], []
    for name in names:
        previous = plans.configurations[name].previous_stage
        if previous and not all(fold_done(work, previous, fold, split_mode) for fold in range(NUM_FOLDS)):
            notes.append(f"{name} waits for every fold of {previous} (run `autoseg jobs` again when they are done)")
            continue
        jobs += [(name, fold) for fold in range(NUM_FOLDS) if not fold_done(work, name, fold, split_mode)]
    return jobs, notes


def run(args: argparse.Namespace) -> int:
    """Handler of ``autoseg jobs``."""
    work = WorkDir(args.work_dir)
    if not work.plans_path.is_file():
        raise AutosegInputError(f"{work.plans_path}: not found; run `autoseg plan` first")
    jobs, notes = pending_jobs(work, args.configurations, args.split_by)
    extra = []
    if args.time_budget:
        extra += ["--time-budget", args.time_budget]
    if args.split_by != "random":
        extra += ["--split-by", args.split_by]
    for name, fold in jobs:
        print(shlex.join(["autoseg", "train", str(work.root), "-c", name, "-f", str(fold), *extra]))
    for note in notes:
        print(f"# {note}", file=sys.stderr)
    print(f"# {len(jobs)} job(s); when all are done: autoseg ensemble {shlex.quote(str(work.root))}", file=sys.stderr)
    return 0
