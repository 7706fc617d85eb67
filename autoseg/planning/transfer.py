"""Plans for a new dataset whose configurations come from a trained model (``autoseg plan --plans-from``).

Fine-tuning needs the model's networks to fit: the same spacing, patch, network topology,
resampling and normalization as the model was trained with. The new dataset keeps what is its own:
its name, files, labels (and regions), channel names, case count, the memory budget of this machine
and the loss weighting its class sizes call for (:func:`autoseg.planning.planner.choose_cross_entropy_weighting`).
Every configuration's median image shape is recomputed from the new fingerprint at the model's spacing
(validation and the time budget use it).

:func:`plans_from_model` returns the plans and one line per difference from what the new dataset
alone would have planned, each also recorded in plans.json (``reasons.plans_from`` and each
configuration's ``reasons.transferred``).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from autoseg.plans.schema import ConfigurationPlan, Plans


@dataclass
class TransferredPlans:
    """The plans of the new dataset with the model's configurations, and how they differ from its own."""

    plans: Plans
    differences: list[str] = field(default_factory=list)


def median_shape_at(fingerprint: dict, target_spacing: Sequence[float]) -> list[int]:
    """Median case shape (voxels, array axis order) of a fingerprint's cases resampled to ``target_spacing``
    (mm; 3 values for 3D, 2 in-plane values ``(y, x)`` for 2D configurations)."""
    cases = list(fingerprint["cases"].values())
    spacings = np.array([case["spacing"] for case in cases], dtype=np.float64)
    shapes = np.array([case["shape_after_crop"] for case in cases], dtype=np.float64)
    axes = len(target_spacing)
    resampled = shapes[:, -axes:] * spacings[:, -axes:] / np.asarray(target_spacing, dtype=np.float64)
    return [max(1, int(round(value))) for value in np.median(resampled, axis=0)]


def _values(values: Sequence[float]) -> str:
    return "(" + ", ".join(f"{value:.3g}" for value in values) + ")"


def configuration_differences(name: str, model: ConfigurationPlan, own: ConfigurationPlan | None) -> list[str]:
    """What the model's configuration ``name`` sets otherwise than the new dataset would plan it (``own``)."""
    if own is None:
        return [f"{name}: not planned for this dataset on its own; taken as the model trained it"]
    facts = [("spacing", _values(model.target_spacing), _values(own.target_spacing), " mm"),
             ("patch", str(model.patch_size), str(own.patch_size), ""),
             ("batch", str(model.batch_size), str(own.batch_size), ""),
             ("features per stage", str(model.network.features_per_stage), str(own.network.features_per_stage), ""),
             ("2.5D neighbours", str(model.neighbour_slices), str(own.neighbour_slices), "")]
    return [f"{name}: {what} {theirs}{unit} instead of {mine}{unit}" for what, theirs, mine, unit in facts
            if theirs != mine]


def plans_from_model(own: Plans, model: Plans, source: str, fingerprint: dict) -> TransferredPlans:
    """The new dataset's plans (``own``, as planned from its ``fingerprint``) with the configurations of
    ``model`` (a trained model's plans). ``source`` names the model in the reasons, e.g.
    ``"model.zip (sha256 1a2b...)"``."""
    taken = f"taken from {source} so that its weights fit"
    differences = []
    configurations = {}
    own_loss = next(iter(own.configurations.values()))
    for name, configuration in model.configurations.items():
        planned = own.configurations.get(name)
        transferred = copy.deepcopy(configuration)
        transferred.measured_speed = None  # measured on the model's machine, for its data
        transferred.median_image_shape = median_shape_at(fingerprint, transferred.target_spacing)
        transferred.training.cross_entropy_weighting = own_loss.training.cross_entropy_weighting
        transferred.reasons["loss"] = own_loss.reasons.get("loss", "")
        transferred.reasons["transferred"] = (f"spacing, patch, batch, network, resampling and 2.5D neighbours "
                                              f"{taken}; median shape from this dataset")
        configurations[name] = transferred
        differences += configuration_differences(name, configuration, planned)
    differences += [f"{name}: planned for this dataset, not in the model: left out" for name in own.configurations
                    if name not in model.configurations]
    same_channels = len(model.channel_names) == len(own.channel_names)
    normalization = copy.deepcopy(model.normalization if same_channels else own.normalization)
    if not same_channels:
        differences.append(f"channels: the model has {len(model.channel_names)}, this dataset "
                           f"{len(own.channel_names)}: this dataset's normalization kept; fine-tuning re-initialises "
                           "the first convolution")
    else:
        for mine, theirs in zip(own.normalization, normalization):
            theirs.channel_name = mine.channel_name
            theirs.reason = f"{theirs.reason} ({taken})"
            if (mine.scheme, mine.clip_low, mine.clip_high) != (theirs.scheme, theirs.clip_low, theirs.clip_high):
                differences.append(f"channel {mine.channel}: normalization {theirs.scheme} instead of {mine.scheme}")
        if [name.lower() for name in model.channel_names.values()] != [
                name.lower() for name in own.channel_names.values()]:
            differences.append(f"channel names: the model's {list(model.channel_names.values())}, this dataset's "
                               f"{list(own.channel_names.values())} (weights loaded in this order)")
    if model.labels != own.labels:
        differences.append(f"labels: the model's {model.labels}, this dataset's {own.labels}: fine-tuning "
                           "re-initialises the output layers")
    plans = copy.deepcopy(own)
    plans.configurations = configurations
    plans.normalization = normalization
    plans.budget_plan = None
    plans.reasons = {**own.reasons, "plans_from": f"configurations and normalization {taken}"}
    plans.validate()
    return TransferredPlans(plans, differences)
