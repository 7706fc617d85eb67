"""The configuration chosen for a time budget: the rule, and plan --time-budget / train -c auto end to end."""

from __future__ import annotations

import json

import pytest
from helpers import make_tiny_work_dir

from autoseg.cli import main
from autoseg.planning.training_cost import (
    MIN_USEFUL_ITERATIONS,
    SpeedMeasurement,
    ValidationPlan,
    estimate_prediction_seconds,
)
from autoseg.plans.training import IterationPlan
from autoseg.training.choice import choose_configuration
from autoseg.training.network_choice import NetworkDecision
from autoseg.workdir import WorkDir


def decision(name: str, iterations: int, needed: int = MIN_USEFUL_ITERATIONS) -> NetworkDecision:
    speed = SpeedMeasurement(0.5, "cpu", "test cpu", 2, 0, 5)
    return NetworkDecision(name, name, speed, IterationPlan(iterations // 50, 50, 10),
                           ValidationPlan(True, 10.0, ""), "", [], needed)


def test_full_resolution_first_then_the_coarser_resolution_then_2d():
    enough, few = MIN_USEFUL_ITERATIONS + 100, MIN_USEFUL_ITERATIONS // 2
    assert choose_configuration({"2d": decision("2d", enough), "3d_fullres": decision("3d_fullres", enough),
                                 "3d_lowres": decision("3d_lowres", enough)}, thick_slices=False)[0] == "3d_fullres"
    name, reason = choose_configuration({"2d": decision("2d", enough), "3d_fullres": decision("3d_fullres", few),
                                         "3d_lowres": decision("3d_lowres", enough)}, thick_slices=False)
    assert name == "3d_lowres" and "3d_fullres (500 of 1000) reach fewer iterations than they need" in reason
    assert choose_configuration({"2d": decision("2d", enough), "3d_fullres": decision("3d_fullres", few)},
                                thick_slices=False)[0] == "2d"


def test_thick_slices_prefer_2d_and_nothing_feasible_warns():
    enough = MIN_USEFUL_ITERATIONS
    assert choose_configuration({"2d": decision("2d", enough), "3d_fullres": decision("3d_fullres", enough)},
                                thick_slices=True)[0] == "2d"
    name, reason = choose_configuration({"2d": decision("2d", 300), "3d_fullres": decision("3d_fullres", 600)},
                                        thick_slices=False)
    assert name == "3d_fullres" and reason.startswith("WARNING")


def test_each_configuration_is_held_to_its_own_floor():
    # a CT: 3d_fullres would need 7,750 iterations, 2d 1,000; 3,000 of 3d_fullres are not enough
    decisions = {"3d_fullres": decision("3d_fullres", 3000, needed=7750), "2d": decision("2d", 6000)}
    name, reason = choose_configuration(decisions, thick_slices=False)
    assert name == "2d" and "3d_fullres (3000 of 7750)" in reason
    # none reaches its floor: the most iterations, with a warning naming each shortfall
    decisions = {"3d_fullres": decision("3d_fullres", 1200, needed=7750), "2d": decision("2d", 5000, needed=13400)}
    name, reason = choose_configuration(decisions, thick_slices=False)
    assert name == "2d" and reason.startswith("WARNING") and "3d_fullres 1200 of 7750" in reason


def test_iterations_needed_grow_with_the_patches_per_case():
    from autoseg.planning.training_cost import iterations_needed, median_case_shape, patches_per_case
    from autoseg.plans import ConfigurationPlan, NetworkConfig

    network3d = NetworkConfig("unet", 3, [8, 16], [[3, 3, 3]] * 2, [[1, 1, 1], [2, 2, 2]], [2, 2], [2])
    task04 = ConfigurationPlan("3d_fullres", 3, "3d_fullres", [1.0] * 3, [40, 56, 40], 2, [36, 50, 35], network3d)
    assert iterations_needed(task04, [36, 50, 35]) == MIN_USEFUL_ITERATIONS  # the patch covers the case
    ct = ConfigurationPlan("3d_fullres", 3, "3d_fullres", [2.25, 0.76, 0.76], [48, 128, 128], 2, [179, 512, 512],
                           network3d)
    assert patches_per_case(ct, [179, 512, 512]) == pytest.approx(59.7, abs=0.1)
    assert iterations_needed(ct, [179, 512, 512]) == 7750  # 1000 x sqrt(59.7), up to a multiple of 50
    network2d = NetworkConfig("unet", 2, [8, 16], [[3, 3]] * 2, [[1, 1], [2, 2]], [2, 2], [2])
    ct2d = ConfigurationPlan("2d", 2, "2d", [0.76, 0.76], [512, 512], 2, [512, 512], network2d)
    shape = median_case_shape(ct2d, {"median_shape_after_crop": [179, 563, 563]})
    assert shape == [179, 512, 512]
    # a 2D network's case is one slice: its neighbours look alike, so the slices do not count
    assert patches_per_case(ct2d, shape) == 1.0 and iterations_needed(ct2d, shape) == MIN_USEFUL_ITERATIONS
    small_patch = ConfigurationPlan("2d", 2, "2d", [0.76, 0.76], [256, 256], 2, [512, 512], network2d)
    assert iterations_needed(small_patch, shape) == 2000  # 4 patches per slice


def test_coarser_resolutions_come_after_their_full_resolution():
    enough, few = MIN_USEFUL_ITERATIONS + 100, MIN_USEFUL_ITERATIONS // 2
    # a CT at 10 CPU minutes: 3D and 2d fall short, the coarser 2d_lowres reaches its floor
    decisions = {"2d": decision("2d", 700), "2d_lowres": decision("2d_lowres", 3000),
                 "3d_fullres": decision("3d_fullres", 300, needed=7750), "3d_lowres": decision("3d_lowres", 300,
                                                                                               needed=2000)}
    name, reason = choose_configuration(decisions, thick_slices=False)
    assert name == "2d_lowres" and "2d (700 of 1000)" in reason
    # with 2d reaching its floor, full resolution wins
    decisions["2d"] = decision("2d", enough)
    assert choose_configuration(decisions, thick_slices=False)[0] == "2d"
    # thick slices: 2d_lowres comes before any 3D configuration
    assert choose_configuration({"2d": decision("2d", few), "2d_lowres": decision("2d_lowres", enough),
                                 "3d_fullres": decision("3d_fullres", enough)}, thick_slices=True)[0] == "2d_lowres"


def test_predict_time_counts_windows_and_mirrorings():
    from autoseg.planning.training_cost import SpeedMeasurement
    from autoseg.plans import ConfigurationPlan, NetworkConfig

    network = NetworkConfig("unet", 3, [8, 16, 32], [[3, 3, 3]] * 3, [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
                            [2, 2, 2], [2, 2])
    configuration = ConfigurationPlan("3d_fullres", 3, "3d_fullres", [1.0] * 3, [32, 32, 32], 2, [64, 64, 32], network)
    speed = SpeedMeasurement(1.0, "cpu", "test", 2, 0, 5)
    # one patch-sized pass = 0.35 x 1.0 s / batch 2; 3 x 3 x 1 windows (3D predicts with the patch), 8 mirrorings
    assert estimate_prediction_seconds([[64, 64, 32]], configuration, speed, True) == pytest.approx(9 * 8 * 0.175)
    assert estimate_prediction_seconds([[64, 64, 32]], configuration, speed, False) == pytest.approx(9 * 0.175)


@pytest.mark.slow
def test_plan_states_the_choice_and_train_auto_follows_it(tmp_path, capsys):
    dataset, work = make_tiny_work_dir(tmp_path)
    assert main(["plan", str(dataset), "-o", str(work), "--time-budget", "20s"]) == 0
    printed = capsys.readouterr().out
    assert "time budget 0.3 min per fold" in printed and "chosen:" in printed and "largest none" in printed
    record = WorkDir(work).load_plans().budget_plan
    assert set(record["configurations"]) == {"2d", "2.5d", "3d_fullres"}
    assert record["chosen"] in record["configurations"]
    entry = record["configurations"][record["chosen"]]
    assert entry["iterations"] > 0
    assert entry["predict_seconds_per_case"] > entry["predict_seconds_per_case_without_mirroring"]
    largest, median = (entry["predict_seconds_largest_case_without_mirroring"],
                       entry["predict_seconds_per_case_without_mirroring"])
    assert largest >= median
    assert main(["train", str(work), "--time-budget", "20s", "--num-workers", "0", "--no-validation"]) == 0
    assert "chosen:" in capsys.readouterr().out  # the recorded plan, printed again before training
    run = WorkDir(work).read_run_record(entry["trained_as"], 0)
    assert any("measured before" in line for line in run["decisions"])  # no second measurement
    assert json.loads(WorkDir(work).budget_plan_path.read_text())["chosen"] == record["chosen"]
    assert "budget_plan" not in json.loads(WorkDir(work).plans_path.read_text())  # plans.json as planned


def test_the_largest_case_is_found_at_the_configuration_spacing():
    from autoseg.plans import ConfigurationPlan, NetworkConfig
    from autoseg.training.choice import largest_case_shape

    network = NetworkConfig("unet", 2, [8, 16], [[3, 3], [3, 3]], [[1, 1], [2, 2]], [2, 2], [2])
    configuration = ConfigurationPlan("2d", 2, "2d", [1.0, 1.0], [64, 64], 2, [64, 64], network)
    fingerprint = {"cases": {"a": {"shape_after_crop": [10, 100, 100], "spacing": [5.0, 0.5, 0.5]},
                             "b": {"shape_after_crop": [40, 64, 64], "spacing": [1.0, 1.0, 1.0]}}}
    # a: 10 slices of 50x50 at 1 mm = 25,000 voxels; b: 40 x 64 x 64 = 163,840 voxels
    assert largest_case_shape(configuration, fingerprint) == [40, 64, 64]


def test_the_cascade_is_allowed_only_when_both_stages_fit_half_the_budget():
    from autoseg.plans import ConfigurationPlan, NetworkConfig, Plans
    from autoseg.training.choice import assess_cascade, format_budget_plan

    network = NetworkConfig("unet", 3, [8, 16], [[3, 3, 3]] * 2, [[1, 1, 1], [2, 2, 2]], [2, 2], [2])
    configurations = {name: ConfigurationPlan(name, 3, name, [1.0] * 3, [32, 32, 32], 2, [64, 64, 64], network)
                      for name in ("3d_fullres", "3d_lowres", "3d_cascade_fullres")}
    configurations["3d_cascade_fullres"].previous_stage = "3d_lowres"
    plans = Plans.__new__(Plans)
    plans.configurations = configurations
    # 0.5 s per iteration: an epoch (50 iterations + 10 validation batches at 0.35) takes 26.75 s, so
    # half of 1,800 s holds 33 epochs = 1,650 iterations per stage
    decisions = {"3d_fullres": decision("3d_fullres", 3350, needed=1500),
                 "3d_lowres": decision("3d_lowres", 3350, needed=1500)}
    record = assess_cascade(plans, decisions, 1800.0)
    assert record["configuration"] == "3d_cascade_fullres" and record["allowed"] is True
    assert [stage["iterations"] for stage in record["stages"]] == [1650, 1650]
    assert "-c 3d_lowres -f all --time-budget 15m" in record["reason"]

    decisions["3d_fullres"] = decision("3d_fullres", 3350, needed=2000)  # enough for 3d_fullres alone
    record = assess_cascade(plans, decisions, 1800.0)
    assert record["allowed"] is False
    assert "3d_cascade_fullres falls short" in record["reason"]
    assert "3d_cascade_fullres 1650 of 2000" in record["reason"]

    del configurations["3d_cascade_fullres"]
    assert assess_cascade(plans, decisions, 1800.0)["configuration"] is None
    # plans.json of earlier versions recorded the cascade as a sentence
    old = {"time_budget_seconds": 60.0, "device_name": "cpu", "threads": 2, "configurations": {},
           "chosen": "2d", "reason": "r", "cascade": "not chosen automatically"}
    assert "cascade: not chosen automatically" in format_budget_plan(old)


def test_the_budget_plan_names_a_class_predicted_to_stay_unlearned():
    from autoseg.training.choice import format_budget_plan
    from autoseg.training.class_exposure import class_outlooks

    outlooks = class_outlooks({1: 0.9, 4: 0.08}, {1: "liver", 4: "liver_lesion"}, 1000, 3000, 0.15, 1.0, 100.0)
    entry = {"trained_as": "2d_lowres_f8_b2", "target_spacing": [1.5, 1.5], "patch_size": [256, 256],
             "batch_size": 2, "seconds_per_iteration": 0.15, "iterations": 3000, "iterations_needed": 1000,
             "predict_seconds_per_case": 9.0, "predict_seconds_per_case_without_mirroring": 2.3,
             "predict_seconds_largest_case_without_mirroring": 6.0,
             "class_outlooks": [outlook.to_dict() for outlook in outlooks]}
    record = {"time_budget_seconds": 600.0, "device_name": "cpu", "threads": 2,
              "configurations": {"2d_lowres": entry}, "chosen": "2d_lowres", "reason": "r",
              "cascade": {"reason": "none planned"}}
    text = format_budget_plan(record)
    assert "2d_lowres: WARNING: liver_lesion is predicted to stay unlearned" in text
    assert "--time-budget 11m would suffice" in text  # 100 s + 3,550 iterations x 0.15 s
    assert "liver is predicted" not in text
