"""plans.json is written by `autoseg plan` alone: what training measures and decides (speeds, budget
variants, the budget plan) goes to files of its own, safe when folds run as parallel jobs."""

from __future__ import annotations

import copy
import hashlib
import json
import multiprocessing
import sys
from pathlib import Path

import pytest
from helpers import make_tiny_work_dir

from autoseg.errors import AutosegInputError
from autoseg.plans.schema import Plans
from autoseg.workdir import WorkDir

SPEED = {"seconds_per_iteration": 0.5, "device": "cpu", "device_name": "test cpu", "threads": 2,
         "augmentation_workers": 0, "iterations_timed": 5}


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def record_many(root: str, configuration: str, fold: int, count: int) -> None:
    """What one fold's process records while deciding its budget: a speed and a variant, many times."""
    sys.path.insert(0, str(Path(__file__).parent))
    work = WorkDir(root)
    plans = work.load_plans()
    for index in range(count):
        work.record_measured_speed(configuration, {**SPEED, "seconds_per_iteration": 0.1 + index})
        variant = copy.deepcopy(plans.configurations[configuration])
        variant.name, variant.variant_of = f"{configuration}_fold{fold}", configuration
        work.record_budget_variant(variant)


@pytest.fixture(scope="module")
def planned(tmp_path_factory) -> Path:
    return make_tiny_work_dir(tmp_path_factory.mktemp("records"), num_training=5)[1]


def test_records_are_applied_when_the_plans_are_read_and_plans_json_stays(planned, tmp_path):
    work = WorkDir(planned)
    before = digest(work.plans_path)
    variant = copy.deepcopy(work.load_plans().configurations["2d"])
    variant.name, variant.variant_of = "2d_f4_b2", "2d"
    work.record_budget_variant(variant)
    work.record_measured_speed("2d", SPEED)
    work.write_budget_plan({"time_budget_seconds": 60.0, "chosen": "2d"})
    plans = work.load_plans()
    assert plans.variants_of("2d") == ["2d_f4_b2"] and plans.configurations["2d"].measured_speed == SPEED
    assert plans.budget_plan["chosen"] == "2d" and digest(work.plans_path) == before
    work.save_plans(Plans.from_dict(json.loads(work.plans_path.read_text())))  # planning again: earlier records go
    assert not work.variant_path("2d_f4_b2").exists() and not work.budget_plan_path.exists()


def test_a_damaged_record_is_one_line_naming_it(planned):
    work = WorkDir(planned)
    work.variant_path("2d_bad").parent.mkdir(parents=True, exist_ok=True)
    work.variant_path("2d_bad").write_text('{"name": "2d_bad"}')
    try:
        with pytest.raises(AutosegInputError, match=r"2d_bad\.json: "):
            work.load_plans()
    finally:
        work.variant_path("2d_bad").unlink()


def test_two_processes_recording_at_once_lose_nothing(planned):
    work = WorkDir(planned)
    before = digest(work.plans_path)
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=record_many, args=(str(planned), configuration, fold, 40))
                 for fold, configuration in ((0, "2d"), (1, "3d_fullres"))]
    for process in processes:
        process.start()
    for process in processes:
        process.join(120)
        assert process.exitcode == 0
    plans = work.load_plans()
    assert plans.variants_of("2d") == ["2d_fold0"] and plans.variants_of("3d_fullres") == ["3d_fullres_fold1"]
    for configuration in ("2d", "3d_fullres"):
        assert plans.configurations[configuration].measured_speed["seconds_per_iteration"] == pytest.approx(39.1)
    assert digest(work.plans_path) == before  # the contract stayed as `autoseg plan` wrote it


@pytest.mark.slow
def test_a_time_budgeted_fold_leaves_plans_json_as_planned(tmp_path):
    from autoseg.cli import main

    _, work = make_tiny_work_dir(tmp_path, num_training=5)
    before = digest(WorkDir(work).plans_path)
    assert main(["train", str(work), "-c", "auto", "-f", "0", "--time-budget", "15s", "--num-workers", "0",
                 "--no-validation"]) == 0
    folder = WorkDir(work)
    assert digest(folder.plans_path) == before
    assert folder.budget_plan_path.is_file() and list((folder.budget_folder / "speed").glob("*.json"))
