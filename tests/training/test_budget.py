"""Time budgets: duration parsing, iterations from a measured speed, scaled plans, stopping on time."""

from __future__ import annotations

import json
import time

import pytest
from helpers import make_tiny_work_dir

from autoseg.errors import AutosegInputError
from autoseg.planning.hardware import cpu_budget
from autoseg.planning.planner import fit_patch_and_batch
from autoseg.planning.plans import ConfigurationPlan, load_plans
from autoseg.training.budget import (
    budget_variants,
    iterations_for_budget,
    parse_duration,
    scaled_configuration,
    train_fold,
)
from autoseg.training.checkpoints import load_checkpoint
from autoseg.training.network import build_network
from autoseg.training.trainer import TrainingOptions


@pytest.mark.parametrize("text, seconds", [("45m", 2700), ("2h", 7200), ("1h30m", 5400), ("90s", 90),
                                           ("600", 600), ("0.5h", 1800)])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["soon", "10x", "-5m", "0"])
def test_bad_durations(text):
    with pytest.raises(AutosegInputError, match="time-budget"):
        parse_duration(text)


def test_iterations_fit_the_budget_with_validation():
    plan = iterations_for_budget(1800, 0.5, iterations_per_epoch=50)
    epoch_seconds = 0.5 * (50 + 0.35 * 10)
    assert plan.epochs == int(1800 // epoch_seconds)
    assert plan.total_iterations == plan.epochs * 50
    assert plan.epochs * epoch_seconds <= 1800 < (plan.epochs + 1) * epoch_seconds


def test_at_least_one_epoch():
    assert iterations_for_budget(10, 100.0).epochs == 1


def planned_configuration() -> ConfigurationPlan:
    patch_plan = fit_patch_and_batch((1.0, 1.0, 1.0), (36, 50, 35), 3, 1, 3, 260, 36 * 50 * 35 * 260.0,
                                     cpu_budget(24 * 2**30))
    return ConfigurationPlan(name="3d_fullres", dimension=3, data_identifier="3d_fullres",
                             target_spacing=[1.0, 1.0, 1.0], patch_size=list(patch_plan.patch_size),
                             batch_size=patch_plan.batch_size, median_image_shape=[36, 50, 35],
                             network=patch_plan.network)


def test_variants_get_smaller_and_keep_the_topology_rules():
    planned = planned_configuration()
    variants = budget_variants(planned)
    assert variants[0][1] is planned
    costs = [c.batch_size * sum(c.network.features_per_stage) for _, c in variants]
    assert costs == sorted(costs, reverse=True) and len(set(costs)) == len(costs)
    for _, configuration in variants:
        network = configuration.network
        network.validate()
        assert network.strides == planned.network.strides and network.kernel_sizes == planned.network.kernel_sizes
        assert configuration.patch_size == planned.patch_size
        factors = network.total_downsampling()
        assert all(size % factor == 0 for size, factor in zip(configuration.patch_size, factors))
        features = network.features_per_stage
        assert all(b == min(2 * a, features[-1]) for a, b in zip(features, features[1:]))
        build_network(network, 1, 3)  # builds


def test_scaled_configuration_halves_features_and_sets_batch():
    scaled = scaled_configuration(planned_configuration(), 16, 2)
    assert scaled.network.features_per_stage == [16, 32, 64, 128]
    assert scaled.batch_size == 2


@pytest.mark.slow
def test_tiny_budget_stops_on_time_and_leaves_a_final_checkpoint(tmp_path):
    _, work = make_tiny_work_dir(tmp_path)
    budget = 12.0
    start = time.time()
    options = TrainingOptions(num_workers=0, progress=False, validate=False, time_budget_seconds=budget)
    trainer, _ = train_fold(work, "3d_fullres", 0, options)
    elapsed = time.time() - start
    assert elapsed < budget + 5  # one epoch of slack at most (plus start-up)
    content = load_checkpoint(trainer.output_dir / "checkpoint_final.pt")
    assert content["epoch"] == trainer.config.epochs >= 1
    assert content["curves"]["learning_rate"][-1] < 0.01
    run = json.loads((trainer.output_dir / "run.json").read_text())
    assert run["measured_speed"]["seconds_per_iteration"] > 0
    assert run["time_budget_seconds"] == budget


@pytest.mark.slow
def test_short_budget_scales_the_network_and_records_why(tmp_path):
    _, work = make_tiny_work_dir(tmp_path)
    plans_path = work / "plans.json"
    data = json.loads(plans_path.read_text())
    network = data["configurations"]["3d_fullres"]["network"]
    network["features_per_stage"] = [32 * 2**i for i in range(len(network["features_per_stage"]))]
    data["configurations"]["3d_fullres"]["batch_size"] = 4
    plans_path.write_text(json.dumps(data))
    options = TrainingOptions(num_workers=0, progress=False, validate=False, time_budget_seconds=8.0)
    train_fold(work, "3d_fullres", 0, options)
    configuration = load_plans(plans_path).configurations["3d_fullres"]
    assert configuration.batch_size == 2
    assert configuration.network.features_per_stage[0] < 32
    assert "time budget" in configuration.reasons["time_budget"]
