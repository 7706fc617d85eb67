"""The work folder: every artefact's path, and how each is read and written.

Layout (``WORK`` is the folder given to ``autoseg plan -o``)::

    WORK/dataset_fingerprint.json          planning: what the raw dataset looks like
    WORK/plans.json                        planning: every configuration, with reasons (written by
                                           `autoseg plan` alone)
    WORK/budget/speed/{configuration}.json measured training speed (`plan --benchmark`, time budgets)
    WORK/budget/variants/{name}.json       a configuration scaled down to a time budget (its own name)
    WORK/budget/budget_plan.json           what `plan --time-budget` / `train -c auto` decided
    WORK/splits.json                       cross-validation folds (splits_spacing.json: by acquisition)
    WORK/preprocessed/{data_identifier}/   preprocessed cache: {case}.npy, {case}_seg.npy, {case}.json,
                                           cache.json (index)
    WORK/preprocessed/{id}__from_{prev}/   a cascade's previous-stage segmentations on its grid
    WORK/results/{configuration}/fold_{k}.lock   held while fold k of the configuration trains
    WORK/results/{configuration}/fold_{k}/ checkpoint_{latest,best,final}.pt, training_log.txt,
                                           progress.png, run.json, validation/
                                           ({configuration}__split_spacing/ for acquisition folds)
    WORK/inference_plan.json               what `autoseg ensemble` chose for `autoseg predict`
    WORK/ensemble_report.png               `autoseg ensemble`: every candidate's sorted per-case Dice

Nothing else in autoseg spells these names. JSON is written atomically (see
:mod:`autoseg.utils.files`); reading a missing or invalid artefact raises a one-line
:class:`AutosegInputError` naming the file and what to run.

plans.json is the contract every stage after planning reads, so nothing after planning rewrites it:
what training measures and decides (speeds, budget variants, the budget plan) goes to files of its
own under ``WORK/budget/``, one per configuration or decision, each written atomically, so folds
trained as parallel jobs never lose each other's records. :meth:`WorkDir.load_plans` returns plans.json
with those records applied; planning again (a new plans.json) removes them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from autoseg.errors import AutosegInputError
from autoseg.plans.schema import ConfigurationPlan, Plans
from autoseg.utils.files import read_json, read_json_input, write_json

FINGERPRINT_FILE = "dataset_fingerprint.json"
PLANS_FILE = "plans.json"
INFERENCE_PLAN_FILE = "inference_plan.json"
ENSEMBLE_REPORT_FILE = "ensemble_report.png"
PREPROCESSED_FOLDER = "preprocessed"
CACHE_INDEX_FILE = "cache.json"
RESULTS_FOLDER = "results"
VALIDATION_FOLDER = "validation"
RUN_RECORD_FILE = "run.json"
BUDGET_FOLDER = "budget"
SPEED_FOLDER = "speed"
VARIANTS_FOLDER = "variants"
BUDGET_PLAN_FILE = "budget_plan.json"
#: Folds of cross-validation.
NUM_FOLDS = 5
#: How folds are made: ``random`` (seeded K-fold) or ``spacing`` (by acquisition, for robustness estimates).
SPLIT_MODES = ("random", "spacing")
CHECKPOINT_NAMES = ("latest", "best", "final")


def checkpoint_file(fold_dir: str | os.PathLike, which: str) -> Path:
    """``{fold_dir}/checkpoint_{which}.pt`` for ``which`` in latest, best, final."""
    if which not in CHECKPOINT_NAMES:
        raise ValueError(f"checkpoint must be one of {CHECKPOINT_NAMES}, got {which!r}")
    return Path(fold_dir) / f"checkpoint_{which}.pt"


def cached_case_paths(cache_folder: str | os.PathLike, case_id: str) -> tuple[Path, Path, Path]:
    """(image ``.npy``, label ``_seg.npy``, properties ``.json``) of a case in a preprocessed cache folder."""
    folder = Path(cache_folder)
    return folder / f"{case_id}.npy", folder / f"{case_id}_seg.npy", folder / f"{case_id}.json"


def _read_json_artefact(path: Path, what: str, hint: str) -> Any:
    return read_json_input(path, f"not found ({hint})" if hint else "not found", what)


class WorkDir:
    """A work folder (see the module docstring). ``WorkDir(path)``; ``WorkDir.of(x)`` accepts either."""

    def __init__(self, path: str | os.PathLike):
        self.root = Path(path)

    @classmethod
    def of(cls, work_dir: str | os.PathLike | WorkDir) -> WorkDir:
        return work_dir if isinstance(work_dir, WorkDir) else cls(work_dir)

    def __repr__(self) -> str:
        return f"WorkDir({str(self.root)!r})"

    def __fspath__(self) -> str:
        return str(self.root)

    # ------------------------------------------------------------------ planning
    @property
    def fingerprint_path(self) -> Path:
        return self.root / FINGERPRINT_FILE

    def read_fingerprint(self) -> dict:
        return _read_json_artefact(self.fingerprint_path, "fingerprint", "run `autoseg plan` first")

    def write_fingerprint(self, fingerprint: dict) -> None:
        write_json(self.fingerprint_path, fingerprint)

    @property
    def plans_path(self) -> Path:
        return self.root / PLANS_FILE

    def load_plans(self) -> Plans:
        """Read plans.json and validate every field, with the budget records of ``WORK/budget/`` applied
        (variants as configurations, measured speeds, the budget plan); errors name the file and the field."""
        data = _read_json_artefact(self.plans_path, "plans", "run `autoseg plan` first")
        try:
            plans = Plans.from_dict(data)
        except (KeyError, TypeError, ValueError) as error:
            raise AutosegInputError(f"{self.plans_path}: {error}") from None
        return self._with_budget_records(plans)

    def save_plans(self, plans: Plans) -> None:
        """Write plans.json (``autoseg plan`` alone does: see the module docstring) and remove the budget
        records made for earlier plans."""
        plans.validate()
        write_json(self.plans_path, plans.to_dict())
        self.remove_budget_records()

    # ------------------------------------------------------------------ budget records (after planning)
    @property
    def budget_folder(self) -> Path:
        return self.root / BUDGET_FOLDER

    def speed_path(self, configuration: str) -> Path:
        return self.budget_folder / SPEED_FOLDER / f"{configuration}.json"

    def variant_path(self, configuration: str) -> Path:
        return self.budget_folder / VARIANTS_FOLDER / f"{configuration}.json"

    @property
    def budget_plan_path(self) -> Path:
        return self.budget_folder / BUDGET_PLAN_FILE

    def record_measured_speed(self, configuration: str, speed: dict) -> None:
        """Keep a configuration's measured speed (``SpeedMeasurement.to_dict()``) for later folds and runs."""
        write_json(self.speed_path(configuration), speed)

    def record_budget_variant(self, variant: ConfigurationPlan) -> None:
        """Keep a budget variant (its ``variant_of`` a configuration of plans.json) under its own name."""
        write_json(self.variant_path(variant.name), variant.to_dict())

    def write_budget_plan(self, record: dict) -> None:
        write_json(self.budget_plan_path, record)

    def remove_budget_records(self) -> None:
        for folder in (self.budget_folder / SPEED_FOLDER, self.budget_folder / VARIANTS_FOLDER):
            for path in folder.glob("*.json") if folder.is_dir() else ():
                path.unlink(missing_ok=True)
        self.budget_plan_path.unlink(missing_ok=True)

    def _with_budget_records(self, plans: Plans) -> Plans:
        variants = sorted((self.budget_folder / VARIANTS_FOLDER).glob("*.json"))
        for path in variants:
            try:
                variant = ConfigurationPlan.from_dict(_read_json_artefact(path, "budget variant", ""), path.stem)
            except (KeyError, TypeError, ValueError) as error:
                raise AutosegInputError(f"{path}: {error}") from None
            if variant.variant_of in plans.configurations:  # else made for other plans: not applied
                plans.configurations[variant.name] = variant
        for path in sorted((self.budget_folder / SPEED_FOLDER).glob("*.json")):
            if path.stem in plans.configurations:
                speed = _read_json_artefact(path, "measured speed", "")
                plans.configurations[path.stem].measured_speed = speed if isinstance(speed, dict) else None
        if self.budget_plan_path.is_file():
            plans.budget_plan = _read_json_artefact(self.budget_plan_path, "budget plan", "")
        if variants:
            try:
                plans.validate()
            except ValueError as error:
                raise AutosegInputError(f"{self.budget_folder}: {error}") from None
        return plans

    # ------------------------------------------------------------------ cross-validation folds
    def splits_path(self, mode: str = "random") -> Path:
        check_split_mode(mode)
        return self.root / ("splits.json" if mode == "random" else f"splits_{mode}.json")

    def read_splits(self, mode: str = "random") -> list[dict] | None:
        """The folds ``[{"train": [...], "val": [...]}, ...]``, or None when none were made yet."""
        path = self.splits_path(mode)
        if not path.is_file():
            return None
        data = _read_json_artefact(path, "splits", "")
        try:
            folds = data["folds"]
            if not folds or not all(isinstance(fold["train"], list) and isinstance(fold["val"], list)
                                    for fold in folds):
                raise ValueError("empty or malformed folds")
        except (KeyError, TypeError, ValueError) as error:
            raise AutosegInputError(f"{path}: invalid splits ({error}); delete it to re-split") from None
        return folds

    def write_splits(self, mode: str, folds: list[dict], seed: int) -> None:
        write_json(self.splits_path(mode), {"mode": mode, "seed": seed, "folds": folds})

    # ------------------------------------------------------------------ preprocessed cache
    def cache_folder(self, data_identifier: str) -> Path:
        return self.root / PREPROCESSED_FOLDER / data_identifier

    def cache_index_path(self, data_identifier: str) -> Path:
        return self.cache_folder(data_identifier) / CACHE_INDEX_FILE

    def read_cache_index(self, data_identifier: str) -> dict:
        """``{"data_identifier", "cache_key", "configuration", "cases"}`` of a filled cache."""
        return _read_json_artefact(self.cache_index_path(data_identifier), "cache index",
                                   f"run `autoseg plan` to preprocess {data_identifier}")

    def write_cache_index(self, data_identifier: str, index: dict) -> None:
        write_json(self.cache_index_path(data_identifier), index)

    def previous_stage_folder(self, data_identifier: str, previous_stage: str) -> Path:
        """Where a cascade's previous-stage segmentations are stored on its own grid."""
        return self.root / PREPROCESSED_FOLDER / f"{data_identifier}__from_{previous_stage}"

    # ------------------------------------------------------------------ trained models
    def results_dir(self, configuration: str, split_mode: str = "random") -> Path:
        """Where a configuration's folds are trained: ``results/{configuration}[__split_{mode}]``."""
        check_split_mode(split_mode)
        suffix = "" if split_mode == "random" else f"__split_{split_mode}"
        return self.root / RESULTS_FOLDER / f"{configuration}{suffix}"

    def fold_dir(self, configuration: str, fold: int, split_mode: str = "random") -> Path:
        return self.results_dir(configuration, split_mode) / f"fold_{fold}"

    def training_lock_path(self, configuration: str, fold: int, split_mode: str = "random") -> Path:
        """The lock held while a fold of ``configuration`` (as asked for, before any budget variant) trains."""
        return self.results_dir(configuration, split_mode) / f"fold_{fold}.lock"

    def checkpoint_path(self, configuration: str, fold: int, which: str, split_mode: str = "random") -> Path:
        return checkpoint_file(self.fold_dir(configuration, fold, split_mode), which)

    def validation_dir(self, configuration: str, fold: int, split_mode: str = "random") -> Path:
        """The fold's validation cases predicted in their original geometry (+ probabilities, summary.json)."""
        return self.fold_dir(configuration, fold, split_mode) / VALIDATION_FOLDER

    def run_record_path(self, configuration: str, fold: int, split_mode: str = "random") -> Path:
        """``run.json``: what a time-budgeted training run decided and did."""
        return self.fold_dir(configuration, fold, split_mode) / RUN_RECORD_FILE

    def write_run_record(self, configuration: str, fold: int, record: dict, split_mode: str = "random") -> None:
        write_json(self.run_record_path(configuration, fold, split_mode), record)

    def read_run_record(self, configuration: str, fold: int, split_mode: str = "random") -> dict:
        return _read_json_artefact(self.run_record_path(configuration, fold, split_mode), "run record",
                                   "written by a time-budgeted `autoseg train`")

    def all_run_records(self) -> list[dict]:
        """Every readable ``run.json`` of the work folder (all configurations, folds and split modes)."""
        records = []
        for path in sorted((self.root / RESULTS_FOLDER).glob(f"*/fold_*/{RUN_RECORD_FILE}")):
            try:
                record = read_json(path)
            except (OSError, ValueError):
                continue  # a damaged record is no evidence; the fold it belongs to reports it when used
            if isinstance(record, dict):
                records.append(record)
        return records

    def trained_folds(self, configuration: str, checkpoint: str = "final", split_mode: str = "random") -> list[int]:
        """Folds of ``configuration`` that have ``checkpoint_{checkpoint}.pt``."""
        return [fold for fold in range(NUM_FOLDS)
                if self.checkpoint_path(configuration, fold, checkpoint, split_mode).is_file()]

    def has_checkpoints(self, configuration: str, split_mode: str = "random") -> bool:
        """Whether any fold of ``configuration`` has any checkpoint (trained or interrupted)."""
        folder = self.results_dir(configuration, split_mode)
        return folder.is_dir() and any(folder.glob("fold_*/checkpoint_*.pt"))

    # ------------------------------------------------------------------ model selection
    @property
    def inference_plan_path(self) -> Path:
        return self.root / INFERENCE_PLAN_FILE

    def read_inference_plan(self) -> dict | None:
        """What ``autoseg ensemble`` chose, or None when it has not run."""
        if not self.inference_plan_path.is_file():
            return None
        return _read_json_artefact(self.inference_plan_path, "inference plan", "")

    def write_inference_plan(self, plan: dict) -> None:
        write_json(self.inference_plan_path, plan)

    @property
    def ensemble_report_path(self) -> Path:
        return self.root / ENSEMBLE_REPORT_FILE


def check_split_mode(mode: str) -> None:
    if mode not in SPLIT_MODES:
        raise AutosegInputError(f"--split-by: unknown mode {mode!r} (expected one of {', '.join(SPLIT_MODES)})")
