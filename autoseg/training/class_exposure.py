"""How often training shows each class, and whether a time budget leaves a class unlearned.

A class the network rarely sees learns slowly: on Task04 both hippocampus classes are in every
patch and 1,000 iterations suffice, while a lesion in a few slices of a 512x512 CT, or the
necrosis of a brain tumour, is in a small fraction of the training patches. The rule here
(:func:`class_iterations_needed`): a class shown in a fraction ``e`` of the training patches
needs the configuration's iterations (:func:`autoseg.planning.training_cost.iterations_needed`, the rule
for a class in every patch) times ``e ** -0.5`` (measured, :data:`CLASS_EXPOSURE_EXPONENT`).
``e`` is measured (:func:`measure_class_exposure`) by drawing training patches exactly as
training draws them (same sampler, patch, batch and foreground oversampling, no
augmentation), so it follows whatever the plans decide: configuration, resolution, patch, batch
and sampling rule.

Under a time budget the exposures are also a lever (:func:`choose_foreground_sampling`): when the
plans' sampling (a third of the batch forced to foreground, every class equally often) would leave
a class unlearned, the forced-foreground patches are centred on the label values in the proportions
that show the least shown class most often (:func:`max_min_class_weights`, from the measured
:class:`ExposureModel`); their share of the batch stays the plans'.

A class whose iterations needed exceed the iterations that fit the budget is reported before
training (``autoseg plan --time-budget``, ``autoseg train``) with the budget that would suffice
(:func:`budget_for_iterations`), and recorded in the budget plan (``WORK/budget/budget_plan.json``) and run.json.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from autoseg.io.labels import class_mask
from autoseg.plans.schema import ConfigurationPlan
from autoseg.plans.training import ForegroundSampling, TrainingConfig
from autoseg.training.sampling import PatchSampler, num_foreground_samples

__all__ = [
    "EXPOSURE_SAMPLES",
    "ClassOutlook",
    "ExposureModel",
    "budget_for_iterations",
    "choose_foreground_sampling",
    "class_iterations_needed",
    "class_outlooks",
    "max_min_class_weights",
    "measure_class_exposure",
    "measure_exposure_model",
]

#: Training patches drawn to measure how often each class is shown (a few seconds for 3D patches).
EXPOSURE_SAMPLES = 200
#: Exposures below this are counted as this (a class drawn in none of the samples is still shown
#: now and then by foreground oversampling): it bounds the iterations needed at about 7x the case rule.
MIN_EXPOSURE = 0.02
#: How the iterations a class needs grow as fewer patches show it: ``exposure ** -0.5``. Measured on
#: the large synthetic CT, 2d_lowres_f8_b2 with frequency-weighted cross-entropy: the liver lesion
#: reached a pseudo-Dice of 0.4 after about 600 iterations with every patch centred on it and about
#: 1,000 iterations with 35 % of the patches showing it
#: (BENCHMARKS.md, "Small and rare structures within a time budget"): far less than in proportion
#: (``exposure ** -1``), so the milder square root, still above both points, is used.
CLASS_EXPOSURE_EXPONENT = -0.5


def _shown_fractions(sampler: PatchSampler, classes: Mapping[int, Sequence[int]], samples: int) -> dict[int, float]:
    """Fraction of ``samples`` patches drawn by ``sampler`` that hold at least one voxel of each class."""
    shown = dict.fromkeys(classes, 0)
    drawn = 0
    while drawn < samples:
        labels = sampler.sample_batch()["seg"][:, 0]
        for sample in labels:
            for key, values in classes.items():
                shown[key] += bool(class_mask(sample, values).any())
        drawn += len(labels)
    return {key: count / drawn for key, count in shown.items()}


def measure_class_exposure(folder: Path, case_ids: Sequence[str], configuration: ConfigurationPlan,
                           training: TrainingConfig, classes: Mapping[int, Sequence[int]],
                           annotated_only: bool = False, samples: int = EXPOSURE_SAMPLES, seed: int = 0,
                           class_weights: Mapping[int, float] | None = None) -> dict[int, float]:
    """Fraction of training patches (``configuration.patch_size`` voxels, drawn as training draws them,
    without augmentation) holding at least one voxel of each class; ``classes`` maps a class key to its
    label values (:attr:`autoseg.plans.schema.Plans.evaluated_classes`). Returns ``{key: fraction}``."""
    sampler = PatchSampler(folder, case_ids, configuration.patch_size, configuration.batch_size,
                           configuration.dimension, oversample_foreground=training.oversample_foreground,
                           seed=seed, annotated_only=annotated_only,
                           class_sampling=training.foreground_class_sampling, class_weights=class_weights)
    return _shown_fractions(sampler, classes, samples)


@dataclass(frozen=True)
class ExposureModel:
    """How often patches show each class, by how they are drawn (measured by :func:`measure_exposure_model`).

    Attributes:
        centred: label value ``j`` -> {class key: fraction of patches centred on a voxel of ``j`` showing it}.
        random: class key -> fraction of patches placed as non-forced samples are (anywhere, or on an
            annotated voxel with sparse labels) showing it.
    """

    centred: dict[int, dict[int, float]]
    random: dict[int, float]

    def exposure(self, forced_share: float, weights: Mapping[int, float]) -> dict[int, float]:
        """Fraction of training patches showing each class when ``forced_share`` of them are centred on
        label values drawn with ``weights`` and the rest are placed at random."""
        return {key: forced_share * sum(weight * self.centred[value][key] for value, weight in weights.items())
                + (1.0 - forced_share) * shown for key, shown in self.random.items()}


def measure_exposure_model(folder: Path, case_ids: Sequence[str], configuration: ConfigurationPlan,
                           classes: Mapping[int, Sequence[int]], annotated_only: bool = False,
                           samples: int = EXPOSURE_SAMPLES, seed: int = 0) -> ExposureModel:
    """Draw ``samples`` patches of ``configuration.patch_size`` centred on each foreground label value
    the cases hold, and ``samples`` placed at random, and count the classes they show."""
    def sampler(oversample: float, weights: Mapping[int, float] | None) -> PatchSampler:
        return PatchSampler(folder, case_ids, configuration.patch_size, configuration.batch_size,
                            configuration.dimension, oversample_foreground=oversample, seed=seed,
                            annotated_only=annotated_only, class_weights=weights)

    random = _shown_fractions(sampler(0.0, None), classes, samples)
    values = sampler(1.0, None).class_values  # the label values some case holds
    centred = {value: _shown_fractions(sampler(1.0, {value: 1.0}), classes, samples) for value in values}
    return ExposureModel(centred, random)


#: The weights kept are the most even that still give every class this share of the best smallest exposure.
EVEN_WEIGHTS_TOLERANCE = 0.95


def max_min_class_weights(model: ExposureModel, forced_share: float) -> dict[int, float]:
    """Weights of the label values for forced-foreground patches that maximise the exposure of the least
    shown class (two linear programmes: the best smallest exposure ``t*``, then the most even weights
    keeping every class at :data:`EVEN_WEIGHTS_TOLERANCE` ``t*`` or more). Classes no patch can show are
    left out; without label values, ``{}``."""
    from scipy.optimize import linprog

    values = sorted(model.centred)
    if not values:
        return {}
    keys = [key for key in model.random if model.random[key] > 0 or any(model.centred[v][key] > 0 for v in values)]
    if not keys or forced_share <= 0:
        return {value: 1.0 / len(values) for value in values}
    # exposure_k = forced_share * sum_j w_j C[j, k] + (1 - forced_share) * r_k
    gain = np.array([[forced_share * model.centred[value][key] for value in values] for key in keys])
    base = np.array([(1.0 - forced_share) * model.random[key] for key in keys])
    n = len(values)
    # variables [w_1..w_n, t]: maximise t subject to t <= gain @ w + base, sum w = 1, w >= 0
    first = linprog(c=[0.0] * n + [-1.0], A_ub=np.hstack([-gain, np.ones((len(keys), 1))]), b_ub=base,
                    A_eq=[[1.0] * n + [0.0]], b_eq=[1.0], bounds=[(0.0, 1.0)] * n + [(None, None)], method="highs")
    if not first.success:
        return {value: 1.0 / n for value in values}
    best = -first.fun
    # variables [w_1..w_n, m]: maximise the smallest weight m subject to gain @ w + base >= tolerance * best
    second = linprog(c=[0.0] * n + [-1.0], A_ub=np.vstack([np.hstack([-gain, np.zeros((len(keys), 1))]),
                                                           np.hstack([-np.eye(n), np.ones((n, 1))])]),
                     b_ub=np.concatenate([base - EVEN_WEIGHTS_TOLERANCE * best, np.zeros(n)]),
                     A_eq=[[1.0] * n + [0.0]], b_eq=[1.0], bounds=[(0.0, 1.0)] * n + [(None, None)], method="highs")
    weights = second.x[:n] if second.success else first.x[:n]
    weights = np.clip(weights, 0.0, None)
    weights /= weights.sum()
    return {value: round(float(weight), 4) for value, weight in zip(values, weights, strict=True)}


def choose_foreground_sampling(model: ExposureModel, batch_size: int, planned_oversample: float,
                               case_iterations_needed: int, iterations: int,
                               names: Mapping[int, str]) -> tuple[ForegroundSampling, dict[int, float]]:
    """The foreground sampling a budget of ``iterations`` trains with, and the exposure it gives each class.

    The plans' sampling comes first: the plans' share of forced-foreground patches
    (``planned_oversample``, as :func:`num_foreground_samples` rounds it for ``batch_size``), every
    label value equally often. Only when some class is then predicted to stay unlearned
    (:func:`class_iterations_needed` above ``iterations``) are the forced patches centred on label
    values with :func:`max_min_class_weights` instead. Their share of the batch is never raised:
    random patches teach the background, and forcing every patch of the large CT (5 minutes) cost
    the liver 0.22 Dice in false positives on slices training never saw
    (BENCHMARKS.md, "Small and rare structures within a time budget").
    """
    forced = num_foreground_samples(batch_size, planned_oversample)
    share = forced / batch_size
    values = sorted(model.centred)
    even = {value: round(1.0 / len(values), 4) for value in values} if values else {}
    for weights in (even, None):
        weights = weights if weights is not None else max_min_class_weights(model, share)
        exposure = model.exposure(share, weights)
        short = [key for key, shown in exposure.items()
                 if class_iterations_needed(case_iterations_needed, shown) > iterations]
        if not short:
            break
    rarest = min(exposure, key=exposure.get) if exposure else None
    how = "every label value equally often" if weights is even else (
        f"label values weighted {weights} (the most even that keep the least shown class near its best exposure)")
    reason = f"{forced} of {batch_size} patches per batch forced to contain foreground, {how}"
    if rarest is not None:
        reason += f"; the least shown class, {names.get(rarest, rarest)}, is in {exposure[rarest]:.0%} of patches"
    if short:
        reason += (" and, even so, " + ", ".join(str(names.get(key, key)) for key in short)
                   + f" would need more than {iterations} iterations")
    elif weights is not even:
        reason += (f" (with even weights a class would stay unlearned in {iterations} iterations)")
    return ForegroundSampling(share, weights, reason), exposure


def class_iterations_needed(case_iterations_needed: int, exposure: float) -> int:
    """Iterations a class shown in a fraction ``exposure`` of the training patches needs: the
    configuration's ``case_iterations_needed`` times ``exposure ** CLASS_EXPOSURE_EXPONENT`` (the
    exposure at least :data:`MIN_EXPOSURE`), rounded up to a multiple of 50."""
    factor = max(exposure, MIN_EXPOSURE) ** CLASS_EXPOSURE_EXPONENT
    return int(math.ceil(case_iterations_needed * factor / 50.0)) * 50


def budget_for_iterations(iterations: int, seconds_per_iteration: float, epoch_cost_factor: float,
                          fixed_seconds: float) -> float:
    """Seconds of budget that fit ``iterations`` training iterations at ``seconds_per_iteration``,
    each epoch's validation batches included (``epoch_cost_factor``: an epoch's cost over its training
    iterations' cost), plus ``fixed_seconds`` (measuring, validating the fold's cases)."""
    return fixed_seconds + iterations * seconds_per_iteration * epoch_cost_factor


@dataclass(frozen=True)
class ClassOutlook:
    """What a time budget leaves of one class.

    Attributes:
        name: the label name (dataset.json).
        exposure: fraction of training patches holding the class (measured).
        iterations_needed: :func:`class_iterations_needed`.
        iterations: the iterations that fit the budget.
        sufficient_budget_seconds: a budget that would fit ``iterations_needed`` (None when it fits).
    """

    name: str
    exposure: float
    iterations_needed: int
    iterations: int
    sufficient_budget_seconds: float | None

    @property
    def learned(self) -> bool:
        """Whether the budget is predicted to let the network learn the class."""
        return self.iterations >= self.iterations_needed

    def to_dict(self) -> dict:
        return {**asdict(self), "learned": self.learned}

    @classmethod
    def from_dict(cls, data: Mapping) -> ClassOutlook:
        """The outlook :meth:`to_dict` wrote (plans.json, run.json)."""
        return cls(str(data["name"]), float(data["exposure"]), int(data["iterations_needed"]),
                   int(data["iterations"]), data.get("sufficient_budget_seconds"))

    def describe(self, from_trained_model: bool = False) -> str:
        """One line for the log: the class, its exposure and whether the budget suffices (``from_trained_model``:
        fine-tuning, where the iterations rule, measured from random weights, says nothing: no warning)."""
        shown = f"{self.name}: in {self.exposure:.0%} of training patches, needs about {self.iterations_needed}"
        if from_trained_model:
            return (f"{self.name}: in {self.exposure:.0%} of training patches, {self.iterations} iterations "
                    f"(fine-tuned from a trained model: the {self.iterations_needed} iterations a class needs from "
                    "random weights do not apply)")
        if self.learned:
            return f"{shown} iterations ({self.iterations} fit)"
        minutes = math.ceil((self.sufficient_budget_seconds or 0.0) / 60.0)
        return (f"WARNING: {self.name} is predicted to stay unlearned: in {self.exposure:.0%} of training patches "
                f"it needs about {self.iterations_needed} iterations, {self.iterations} fit; "
                f"--time-budget {minutes}m would suffice")


def class_outlooks(exposure: Mapping[int, float], names: Mapping[int, str], case_iterations_needed: int,
                   iterations: int, seconds_per_iteration: float, epoch_cost_factor: float,
                   fixed_seconds: float) -> list[ClassOutlook]:
    """One :class:`ClassOutlook` per class of ``exposure`` (keys as in ``names``), rarest first."""
    outlooks = []
    for key, fraction in exposure.items():
        needed = class_iterations_needed(case_iterations_needed, fraction)
        sufficient = None
        if needed > iterations:
            sufficient = budget_for_iterations(needed, seconds_per_iteration, epoch_cost_factor, fixed_seconds)
        outlooks.append(ClassOutlook(names.get(key, str(key)), float(np.round(fraction, 4)), needed, iterations,
                                     sufficient))
    return sorted(outlooks, key=lambda outlook: outlook.exposure)
