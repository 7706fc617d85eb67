"""Rules of autoseg.training.class_exposure: how often training shows each class, and which classes a
time budget leaves unlearned."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from autoseg.plans.training import TrainingConfig
from autoseg.training.class_exposure import (
    ClassOutlook,
    budget_for_iterations,
    class_iterations_needed,
    class_outlooks,
    measure_class_exposure,
)
from tests.training.test_sampling import lesion_in_one_case  # noqa: F401  (fixture)


def test_a_class_in_every_patch_needs_the_case_rule_and_a_rare_one_more():
    assert class_iterations_needed(1000, 1.0) == 1000
    assert class_iterations_needed(1000, 0.25) == 2000  # exposure ** -0.5
    assert class_iterations_needed(1000, 0.3) == 1850  # 1826 rounded up to a multiple of 50
    assert class_iterations_needed(1000, 0.0) == 7100  # never drawn: bounded by MIN_EXPOSURE (0.02)


def test_budget_for_iterations_adds_validation_batches_and_fixed_time():
    # 2,000 iterations of 0.3 s with epochs 7% dearer for their validation batches, plus 60 s
    assert budget_for_iterations(2000, 0.3, 1.07, 60.0) == pytest.approx(60.0 + 642.0)


def test_outlooks_name_the_unlearned_class_and_the_budget_that_suffices():
    outlooks = class_outlooks({1: 0.9, 2: 0.04}, {1: "liver", 2: "lesion"}, 1000, 3000, 0.15, 1.0, 100.0)
    assert [outlook.name for outlook in outlooks] == ["lesion", "liver"]  # rarest first
    lesion, liver = outlooks
    assert liver.learned and liver.iterations_needed == 1100 and liver.sufficient_budget_seconds is None
    assert not lesion.learned and lesion.iterations_needed == 5000
    assert lesion.sufficient_budget_seconds == pytest.approx(100.0 + 5000 * 0.15)
    line = lesion.describe()
    assert "lesion is predicted to stay unlearned" in line and "--time-budget 15m" in line
    assert ClassOutlook.from_dict(lesion.to_dict()) == lesion and lesion.to_dict()["learned"] is False


def test_exposure_is_measured_as_training_draws(lesion_in_one_case, tmp_path):  # noqa: F811
    folder, ids = lesion_in_one_case
    configuration = SimpleNamespace(patch_size=[8, 8], batch_size=2, dimension=2)  # what the sampler reads
    classes = {1: (1,), 2: (2,)}
    balanced = measure_class_exposure(folder, ids, configuration, TrainingConfig(), classes, samples=400)
    per_case = measure_class_exposure(folder, ids, configuration, TrainingConfig(foreground_class_sampling="per_case"),
                                      classes, samples=400)
    # one of the two samples is forced: the lesion is in about a quarter of the patches, balanced
    assert 0.15 < balanced[2] < 0.35 and per_case[2] < 0.1
    assert balanced[1] > 0.4  # the organ fills a third of each slice: random samples find it too


def ct_like_model():
    """Liver (1), kidney (2) and a lesion (4) inside the liver: what patches centred on each show."""
    from autoseg.training.class_exposure import ExposureModel

    centred = {1: {1: 1.0, 2: 0.3, 4: 0.15}, 2: {1: 0.5, 2: 1.0, 4: 0.05}, 4: {1: 1.0, 2: 0.3, 4: 1.0}}
    return ExposureModel(centred, {1: 0.35, 2: 0.25, 4: 0.04})


def test_max_min_weights_show_the_least_shown_class_most():
    from autoseg.training.class_exposure import max_min_class_weights

    model = ct_like_model()
    uniform = model.exposure(0.5, {1: 1 / 3, 2: 1 / 3, 4: 1 / 3})
    weights = max_min_class_weights(model, 0.5)
    exposure = model.exposure(0.5, weights)
    assert sum(weights.values()) == pytest.approx(1.0, abs=1e-3) and min(weights.values()) > 0
    assert min(exposure.values()) > 1.3 * min(uniform.values())  # the lesion: 0.22 uniform
    assert weights[4] == max(weights.values())
    # classes that every patch shows anyway: the most even weights
    from autoseg.training.class_exposure import ExposureModel
    nested = ExposureModel({1: {1: 1.0, 2: 1.0}, 2: {1: 1.0, 2: 1.0}}, {1: 1.0, 2: 1.0})
    assert max_min_class_weights(nested, 0.5) == {1: 0.5, 2: 0.5}


def test_sampling_changes_only_while_a_class_would_stay_unlearned():
    from autoseg.training.class_exposure import choose_foreground_sampling

    model, names = ct_like_model(), {1: "liver", 2: "kidney", 4: "lesion"}
    plans, exposure = choose_foreground_sampling(model, 2, 0.33, 1000, 2200, names)
    assert plans.oversample_foreground == 0.5 and len(set(plans.class_weights.values())) == 1  # as planned
    weighted, exposure = choose_foreground_sampling(model, 2, 0.33, 1000, 1800, names)
    assert weighted.oversample_foreground == 0.5 and weighted.class_weights[4] == max(weighted.class_weights.values())
    assert "with even weights a class would stay unlearned" in weighted.reason
    short, exposure = choose_foreground_sampling(model, 2, 0.33, 1000, 1400, names)
    # the forced share is never raised (random patches teach the background): the lesion is said short
    assert short.oversample_foreground == 0.5 and "lesion would need more than 1400" in short.reason
    assert short.class_weights == weighted.class_weights


def test_foreground_sampling_round_trips_through_json():
    from autoseg.plans.training import ForegroundSampling

    sampling = ForegroundSampling(1.0, {1: 0.25, 4: 0.75}, "why")
    assert ForegroundSampling.from_dict(json.loads(json.dumps(sampling.to_dict()))) == sampling


def test_the_measured_model_predicts_the_measured_exposure(lesion_in_one_case):  # noqa: F811
    from autoseg.training.class_exposure import measure_exposure_model

    folder, ids = lesion_in_one_case
    configuration = SimpleNamespace(patch_size=[8, 8], batch_size=2, dimension=2)
    classes = {1: (1,), 2: (2,)}
    model = measure_exposure_model(folder, ids, configuration, classes, samples=300)
    assert model.centred[2][2] == 1.0 and model.centred[1][2] == 0.0  # lesion and organ lie apart
    predicted = model.exposure(0.5, {1: 0.2, 2: 0.8})
    measured = measure_class_exposure(folder, ids, configuration, TrainingConfig(), classes, samples=600,
                                      class_weights={1: 0.2, 2: 0.8})
    assert abs(predicted[2] - measured[2]) < 0.08 and predicted[2] > 0.35
