"""Time budgets: duration parsing, iterations from a measured speed, budget variants, stopping on time."""

from __future__ import annotations

import json
import time

import pytest
from helpers import make_tiny_work_dir

from autoseg.errors import AutosegInputError
from autoseg.model.builders import build_network
from autoseg.model.checkpoints import load_checkpoint
from autoseg.model.device import device_name
from autoseg.planning.hardware import cpu_budget
from autoseg.planning.planner import fit_patch_and_batch
from autoseg.planning.training_cost import TrainingLength, iterations_for_budget
from autoseg.planning.variants import budget_variants, scaled_configuration
from autoseg.plans import ConfigurationPlan
from autoseg.training.fold_training import train_fold
from autoseg.training.trainer import TrainingOptions
from autoseg.utils.durations import parse_duration
from autoseg.workdir import WorkDir


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
    assert planned.batch_size > 2 and [v.name for v in variants] == [
        "3d_fullres_f32_b2", "3d_fullres_f16_b2", "3d_fullres_f8_b2"]
    costs = [c.batch_size * sum(c.network.features_per_stage) for c in [planned] + variants]
    assert costs == sorted(costs, reverse=True) and len(set(costs)) == len(costs)
    for configuration in variants:
        assert configuration.variant_of == "3d_fullres" and configuration.measured_speed is None
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


def options() -> TrainingOptions:
    return TrainingOptions(num_workers=0, progress=False)


@pytest.mark.slow
def test_tiny_budget_stops_on_time_and_leaves_a_final_checkpoint(tmp_path):
    _, work = make_tiny_work_dir(tmp_path)
    time_budget_seconds = 12.0
    start = time.time()
    length = TrainingLength(time_budget_seconds=time_budget_seconds)
    trainer = train_fold(work, "3d_fullres", 0, options(), length).trainer
    elapsed = time.time() - start
    assert elapsed < time_budget_seconds + 5  # one epoch of slack at most (plus start-up)
    content = load_checkpoint(trainer.output_dir / "checkpoint_final.pt")
    assert content["epoch"] == trainer.epochs >= 1
    assert content["iteration_plan"]["epochs"] == trainer.epochs
    assert content["curves"]["learning_rate"][-1] < 0.01
    run = WorkDir(work).read_run_record(trainer.configuration_name, 0)
    assert run["measured_speed"]["seconds_per_iteration"] > 0
    assert run["time_budget_seconds"] == time_budget_seconds
    assert any("iterations fit" in line for line in run["decisions"])


def make_slow_plan(work) -> None:
    """Give 3d_fullres a network far too wide for a few seconds of training."""
    plans_path = WorkDir(work).plans_path
    data = json.loads(plans_path.read_text())
    network = data["configurations"]["3d_fullres"]["network"]
    network["features_per_stage"] = [32 * 2**i for i in range(len(network["features_per_stage"]))]
    data["configurations"]["3d_fullres"]["batch_size"] = 4
    plans_path.write_text(json.dumps(data))


@pytest.mark.slow
def test_short_budget_records_a_variant_and_leaves_the_planned_configuration(tmp_path):
    _, work = make_tiny_work_dir(tmp_path)
    make_slow_plan(work)
    planned_before = WorkDir(work).load_plans().configurations["3d_fullres"].to_dict()
    trainer = train_fold(work, "3d_fullres", 0, options(), TrainingLength(time_budget_seconds=8.0)).trainer
    plans = WorkDir(work).load_plans()
    planned_after = plans.configurations["3d_fullres"].to_dict()
    assert planned_after.pop("measured_speed")["seconds_per_iteration"] > 0  # the measurement is kept
    planned_before.pop("measured_speed")
    assert planned_after == planned_before  # but the planned network is never overwritten
    name = trainer.configuration_name
    assert plans.variants_of("3d_fullres") == [name] and name.startswith("3d_fullres_f")
    variant = plans.configurations[name]
    assert variant.batch_size == 2 and variant.network.features_per_stage[0] < 32
    assert "time budget" in variant.reasons["time_budget"]
    assert trainer.output_dir == WorkDir(work).fold_dir(name, 0)
    assert (trainer.output_dir / "checkpoint_final.pt").is_file()
    assert not WorkDir(work).has_checkpoints("3d_fullres")
    # the next fold of 3d_fullres trains as the same variant, without measuring the planned network again
    second = train_fold(work, "3d_fullres", 1, options(), TrainingLength(time_budget_seconds=4.0)).trainer
    assert second.configuration_name == name
    assert WorkDir(work).load_plans().variants_of("3d_fullres") == [name]


SLOW_PLAN_SECONDS = {"3d_fullres": 4.0, "3d_fullres_f32_b2": 1.0, "3d_fullres_f16_b2": 0.5, "3d_fullres_f8_b2": 0.25}


@pytest.mark.slow
@pytest.mark.parametrize("time_budget_seconds, trained_as, measured_variants, seconds", [
    # an iteration costs 1.07x its time with the validation batches: 2,240 iterations at 1 s (>= 2 x 1,000)
    (2400.0, "3d_fullres_f32_b2", ["3d_fullres_f8_b2", "3d_fullres_f32_b2"], SLOW_PLAN_SECONDS),
    # 1,490 at 0.5 s reach the floor, not 2x; 2,990 at 0.25 s do: more iterations of the narrower network
    (800.0, "3d_fullres_f8_b2", ["3d_fullres_f8_b2", "3d_fullres_f32_b2", "3d_fullres_f16_b2"], SLOW_PLAN_SECONDS),
    # 1,490 at 0.25 s: not even the smallest reaches 2x, so it is trained without measuring the others
    (400.0, "3d_fullres_f8_b2", ["3d_fullres_f8_b2"], SLOW_PLAN_SECONDS),
    # 740 at 0.25 s: even the smallest falls short of the floor
    (200.0, "3d_fullres_f8_b2", ["3d_fullres_f8_b2"], SLOW_PLAN_SECONDS),
    # the planned network reaches the floor (1,120), no variant reaches 2x (f8: 1,600): the smallest
    # (iterations beat width below 2x: on the large CT 900 iterations of 16 features 0.32, 1,250 of 8 0.67)
    (1200.0, "3d_fullres_f8_b2", ["3d_fullres_f8_b2"],
     {"3d_fullres": 1.0, "3d_fullres_f32_b2": 0.9, "3d_fullres_f16_b2": 0.8, "3d_fullres_f8_b2": 0.7}),
])
def test_the_variant_walk_measures_the_smallest_first(tmp_path, monkeypatch, time_budget_seconds, trained_as,
                                                      measured_variants, seconds):
    import autoseg.training.network_choice as budget_module
    from autoseg.planning.training_cost import SpeedMeasurement

    _, work = make_tiny_work_dir(tmp_path)
    make_slow_plan(work)  # 32 base features, batch 4: variants f32_b2, f16_b2, f8_b2
    measured = []

    def fake_measurement(trainer, **kwargs):
        measured.append(trainer.configuration.name)
        return SpeedMeasurement(seconds[trainer.configuration.name], "cpu", "test cpu", 2, 0, 5)

    monkeypatch.setattr(budget_module, "measure_speed", fake_measurement)
    decision = budget_module.decide_network(WorkDir(work), "3d_fullres", 0, options(),
                                            TrainingLength(time_budget_seconds=time_budget_seconds),
                                            time_budget_seconds, time.time())
    assert decision.iterations_needed == 1000  # the tiny cases fit in one patch
    assert decision.trained_as == trained_as and measured == ["3d_fullres"] + measured_variants
    if time_budget_seconds in (200.0, 400.0, 1200.0):
        assert "not even the smallest variant reaches 2x them" in decision.variant_reason
    if time_budget_seconds == 800.0:
        assert "the largest variant that reaches 2x them" in decision.variant_reason


@pytest.mark.slow
def test_a_recorded_variant_keeps_its_measured_speed(tmp_path, monkeypatch):
    import shutil

    import autoseg.training.network_choice as network_choice

    _, work = make_tiny_work_dir(tmp_path)
    make_slow_plan(work)
    first = train_fold(work, "3d_fullres", 0, options(), TrainingLength(time_budget_seconds=8.0),
                       ).trainer.configuration_name
    shutil.rmtree(WorkDir(work).results_dir(first))  # as if another budget were being decided
    measured, measure = [], network_choice.measure_speed
    monkeypatch.setattr(network_choice, "measure_speed",
                        lambda trainer, **kwargs: measured.append(trainer.configuration.name) or measure(trainer,
                                                                                                         **kwargs))
    decision = network_choice.decide_network(WorkDir(work), "3d_fullres", 0, options(),
                                             TrainingLength(time_budget_seconds=6.0), 6.0, time.time())
    assert first not in measured and "3d_fullres" not in measured
    assert any(f"variant {first}" in line and "measured before" in line for line in decision.decisions)


@pytest.mark.slow
def test_the_speed_stored_by_plan_benchmark_is_used(tmp_path):
    import torch

    _, work = make_tiny_work_dir(tmp_path)
    plans = WorkDir(work).load_plans()
    stored = {"seconds_per_iteration": 0.001234, "device": "cpu", "device_name": device_name(torch.device("cpu")),
              "threads": torch.get_num_threads(), "augmentation_workers": 0, "iterations_timed": 5}
    plans.configurations["3d_fullres"].measured_speed = stored
    WorkDir(work).save_plans(plans)
    trainer = train_fold(work, "3d_fullres", 0, options(), TrainingLength(time_budget_seconds=3.0)).trainer
    run = WorkDir(work).read_run_record(trainer.configuration_name, 0)
    assert run["measured_speed"] == {**stored, "seconds_per_patch_forward": None}  # as stored by older versions
    assert any("autoseg plan --benchmark" in line for line in run["decisions"])
    # 3 s at 0.001 s per iteration: dozens of epochs planned, then fitted to the deadline as training goes
    assert run["planned_epochs"] > 10 and trainer.epochs < run["planned_epochs"]


def test_validation_keeps_mirroring_only_when_it_fits_the_budget():
    from autoseg.planning.training_cost import (
        EXPORT_SECONDS_PER_MEGAVOXEL,
        MAX_VALIDATION_BUDGET_FRACTION,
        SpeedMeasurement,
        estimate_prediction_seconds,
        plan_validation,
    )

    configuration = planned_configuration()
    shapes, original = [[36, 50, 35]] * 52, [[40, 50, 40]] * 52
    speed = SpeedMeasurement(9.0, "cpu", "test", 2, 0, 5)  # the forward pass not measured: 0.35 of an iteration
    with_mirroring = estimate_prediction_seconds(shapes, configuration, speed, True)
    without = estimate_prediction_seconds(shapes, configuration, speed, False)
    assert with_mirroring == pytest.approx(8 * without)
    assert without == pytest.approx(52 * 9.0 * 0.35 / configuration.batch_size)
    measured = SpeedMeasurement(9.0, "cpu", "test", 2, 0, 5, seconds_per_patch_forward=0.5)
    assert estimate_prediction_seconds(shapes, configuration, measured, False) == pytest.approx(52 * 0.5)
    export = EXPORT_SECONDS_PER_MEGAVOXEL * 52 * 40 * 50 * 40 / 1e6  # restoring, writing, scoring
    # validation with mirroring also scores every case without it and with each of the 3 axes alone, from
    # the same passes: 4 more label maps restored and scored, half an export each
    both = with_mirroring + export + 4 * export / 2
    roomy = plan_validation(shapes, original, configuration, speed, 1.001 * both / MAX_VALIDATION_BUDGET_FRACTION)
    assert roomy.use_mirroring and roomy.estimated_seconds == pytest.approx(both)
    tight = plan_validation(shapes, original, configuration, speed, both)
    assert not tight.use_mirroring and "without mirroring" in tight.reason
    assert tight.estimated_seconds == pytest.approx(without + export)


def test_validation_estimate_is_calibrated_by_earlier_validations(tmp_path):
    from autoseg.planning.training_cost import SpeedMeasurement, plan_validation, validation_calibration
    from autoseg.workdir import WorkDir

    assert validation_calibration([]) == (1.0, 0)
    records = [{"validation_seconds": 190.0, "validation": {"estimated_seconds": 137.0}},
               {"validation_seconds": 156.0, "validation": {"estimated_seconds": 137.0}},
               {"validation_seconds": 150.0, "validation": {"estimated_seconds": 100.0}},
               {"validation": {"estimated_seconds": 100.0}},  # interrupted before validation: no evidence
               {"validation_seconds": 9.0, "validation": {"estimated_seconds": 0.0}}]
    factor, count = validation_calibration(records)
    assert count == 3 and factor == pytest.approx(190 / 137)  # the median ratio
    assert validation_calibration([{"validation_seconds": 1000.0, "validation": {"estimated_seconds": 10.0}}]) \
        == (3.0, 1)  # clipped: one odd run cannot distort it much
    configuration = planned_configuration()
    shapes, original = [[36, 50, 35]] * 52, [[40, 50, 40]] * 52
    speed = SpeedMeasurement(9.0, "cpu", "test", 2, 0, 5)
    plain = plan_validation(shapes, original, configuration, speed, 1e9)
    scaled = plan_validation(shapes, original, configuration, speed, 1e9, (factor, count))
    assert scaled.estimated_seconds == pytest.approx(factor * plain.estimated_seconds)
    assert "scaled by 1.39, the median measured/estimated time of 3 earlier validation(s)" in scaled.reason

    work = WorkDir(tmp_path)  # the records of every configuration and fold of a work folder; damaged ones skipped
    for index, (configuration_name, record) in enumerate([("2d", records[0]), ("3d_fullres", records[1])]):
        work.run_record_path(configuration_name, index).parent.mkdir(parents=True)
        work.write_run_record(configuration_name, index, record)
    work.run_record_path("2d", 4).parent.mkdir(parents=True)
    work.run_record_path("2d", 4).write_text("{damaged")
    assert sorted(r["validation_seconds"] for r in work.all_run_records()) == [156.0, 190.0]


@pytest.mark.slow
def test_a_short_budget_ends_on_time_with_validation_included(tmp_path):
    from autoseg.commands.train import train_and_validate

    _, work = make_tiny_work_dir(tmp_path)
    time_budget_seconds = 15.0
    start = time.time()
    length = TrainingLength(time_budget_seconds=time_budget_seconds)
    trainer, summary = train_and_validate(work, "3d_fullres", 0, options(), length)
    elapsed = time.time() - start
    assert summary["num_cases"] == len(trainer.val_cases)
    assert elapsed < time_budget_seconds + 5  # training, measuring and validation together (one epoch of slack)
    run = WorkDir(work).read_run_record(trainer.configuration_name, 0)
    assert run["validation"]["estimated_seconds"] > 0 and run["validation_seconds"] > 0


@pytest.mark.slow
def test_time_spent_before_the_fold_counts_within_its_budget(tmp_path):
    # `train -c auto` measures the configurations to choose one: that time is the first fold's
    _, work = make_tiny_work_dir(tmp_path)
    already, time_budget_seconds = 8.0, 14.0
    start = time.time()
    fold = train_fold(work, "3d_fullres", 0, options(), TrainingLength(time_budget_seconds=time_budget_seconds,
                                                                       budget_started_at=start - already))
    run = WorkDir(work).read_run_record(fold.trainer.configuration_name, 0)
    assert run["seconds_from_start_to_final_checkpoint"] >= already
    assert time.time() - start < time_budget_seconds - already + 5  # training had what was left of the budget


def fitted_epochs(time_budget, epoch, planned_epochs, epoch_seconds, now):
    """Epochs a trainer keeps after ``epoch`` epochs of ``epoch_seconds`` under ``time_budget`` at ``now``."""
    from autoseg.training.progress import TrainingCurves
    from autoseg.training.trainer import Trainer

    trainer = Trainer.__new__(Trainer)
    trainer.time_budget, trainer.epoch, trainer.epochs = time_budget, epoch, planned_epochs
    trainer.deadline, trainer.limit = time_budget.deadline(), time_budget.limit()
    trainer.curves = TrainingCurves(epoch_seconds=[epoch_seconds] * epoch)
    trainer._schedule_end = None
    trainer.log = lambda message: None
    real_time = time.time
    try:
        time.time = lambda: now
        trainer._fit_epochs_to_deadline()
    finally:
        time.time = real_time
    return trainer.epochs


def test_slower_training_keeps_the_minimum_epochs_while_they_fit_the_limit():
    from autoseg.planning.training_cost import ValidationPlan
    from autoseg.training.fold_training import training_time_budget
    from autoseg.training.trainer import TimeBudget

    # planned: 20 epochs of 24 s in 8 minutes; they take 30 s (a busy machine): 2 epochs after 60 s
    plain = TimeBudget(480.0, 0.0)
    assert fitted_epochs(plain, 2, 20, 30.0, 60.0) == 2 + 420 // 30  # 16: the budget cuts them
    floor = training_time_budget(500.0, ValidationPlan(True, 20.0, ""), 0.0,
                                 TrainingLength(min_iterations=1000, max_time_budget_seconds=1000.0), 50)
    assert (floor.seconds, floor.min_epochs, floor.limit_seconds) == (480.0, 20, 980.0)
    assert fitted_epochs(floor, 2, 20, 30.0, 60.0) == 20  # 1,000 iterations end within the 16-minute limit
    assert fitted_epochs(floor, 2, 20, 60.0, 60.0) == 2 + 920 // 60  # 17: the limit holds
    assert fitted_epochs(floor, 2, 20, 20.0, 60.0) == 2 + 420 // 20  # faster: the budget's 23 epochs
    assert training_time_budget(500.0, ValidationPlan(True, 20.0, ""), 0.0, TrainingLength(), 50) == plain


@pytest.mark.slow
def test_a_short_budget_on_a_case_of_many_patches_ends_on_time_with_validation(tmp_path):
    """A case 70 patches large (22x160x160 voxels, patch 8x32x32): hundreds of sliding windows to validate."""
    from autoseg.commands.train import train_and_validate

    _, work = make_tiny_work_dir(tmp_path, num_training=5, in_plane_shape=(160, 160))
    plans = WorkDir(work).load_plans()
    plans.configurations["3d_fullres"].patch_size = [8, 32, 32]
    WorkDir(work).save_plans(plans)
    time_budget_seconds = 20.0
    start = time.time()
    length = TrainingLength(time_budget_seconds=time_budget_seconds)
    trainer, summary = train_and_validate(work, "3d_fullres", 0, options(), length)
    elapsed = time.time() - start
    assert summary["num_cases"] == len(trainer.val_cases) == 1
    assert elapsed < time_budget_seconds + 5  # training, measuring and validation together (one epoch of slack)
    run = WorkDir(work).read_run_record(trainer.configuration_name, 0)
    assert any("needs at least 8300 iterations" in line for line in run["decisions"])  # 1000 x sqrt(68.75)
    assert run["validation"]["estimated_seconds"] > 0 and run["validation_seconds"] > 0


def test_time_fraction_is_clipped_and_safe():
    from autoseg.training.trainer import time_fraction

    assert time_fraction(5.0, 0.0, 10.0) == 0.5
    assert time_fraction(-1.0, 0.0, 10.0) == 0.0 and time_fraction(12.0, 0.0, 10.0) == 1.0
    assert time_fraction(3.0, 4.0, 4.0) == 1.0


def test_under_a_budget_the_learning_rate_follows_the_time_used_and_one_slow_epoch_moves_nothing():
    from autoseg.plans.training import TrainingConfig
    from autoseg.training.progress import TrainingCurves
    from autoseg.training.trainer import TimeBudget, Trainer

    time_budget_seconds = TimeBudget(600.0, 0.0)
    trainer = Trainer.__new__(Trainer)
    trainer.config, trainer.time_budget = TrainingConfig(), time_budget_seconds
    trainer.deadline, trainer.limit = time_budget_seconds.deadline(), time_budget_seconds.limit()
    trainer.epoch, trainer.epochs, trainer.iterations_per_epoch = 6, 30, 50
    trainer._schedule_origin, trainer._schedule_end = 0.0, time_budget_seconds.deadline()
    # five epochs of 20 s, then one of 80 s (a busy machine): 180 s used
    trainer.curves = TrainingCurves(epoch_seconds=[20.0] * 5 + [80.0])
    trainer.log = lambda message: None
    real_time = time.time
    try:
        time.time = lambda: 180.0
        before = trainer.learning_rate(6 * 50)
        trainer._fit_epochs_to_deadline()
        after = trainer.learning_rate(6 * 50)
        time.time = lambda: 300.0
        halfway = trainer.learning_rate(0)  # the step does not matter under a budget
        time.time = lambda: 600.0
        end = trainer.learning_rate(0)
    finally:
        time.time = real_time
    assert trainer.epochs == 6 + 420 // 20  # the median epoch (20 s), not the mean of the last three (40 s)
    assert before == after == pytest.approx(0.01 * (1 - 180 / 600) ** 0.9)  # no jump when epochs are re-fitted
    assert halfway == pytest.approx(0.01 * 0.5 ** 0.9) and end == 0.0


def test_without_a_budget_the_learning_rate_follows_the_steps():
    from autoseg.plans.training import TrainingConfig
    from autoseg.training.trainer import Trainer

    trainer = Trainer.__new__(Trainer)
    trainer.config, trainer.epochs, trainer.iterations_per_epoch = TrainingConfig(), 4, 25
    trainer._schedule_end = None
    assert trainer.learning_rate(0) == 0.01 and trainer.learning_rate(100) == 0.0
    assert trainer.learning_rate(50) == pytest.approx(0.01 * 0.5 ** 0.9)
