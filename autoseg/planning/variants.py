"""Smaller variants of a planned configuration, for training within a time budget.

A GPU-sized plan is unusable on a CPU (on 2 cores the nnU-Net-sized 3d_fullres
network of Task04 takes ~9 s per iteration). The planner's rules here say which
smaller networks exist; the decision which one to train is made from measured speed
by :mod:`autoseg.training.network_choice`. A chosen variant is recorded in the work folder
(``WORK/budget/variants/``, applied to the plans when they are read) as a configuration of its own
(``variant_of`` names the planned one, which stays as it was), so its folds, checkpoints and
predictions are never confused with the planned one's.
"""

from __future__ import annotations

import copy

from autoseg.planning.topology import features_per_stage
from autoseg.plans.schema import ConfigurationPlan

#: Batch size of every budget variant: on a CPU, more iterations beat bigger batches.
VARIANT_BATCH_SIZE = 2


def scaled_configuration(configuration: ConfigurationPlan, base_features: int, batch_size: int) -> ConfigurationPlan:
    """``configuration`` with ``base_features`` doubling per stage (same cap ratio) and ``batch_size``."""
    scaled = copy.deepcopy(configuration)
    network = scaled.network
    cap = max(network.features_per_stage) * base_features // network.features_per_stage[0]
    network.features_per_stage = features_per_stage(network.n_stages, network.dimension, base_features, cap)
    scaled.batch_size = batch_size
    return scaled


def variant_name(configuration: ConfigurationPlan) -> str:
    """Name of a budget variant: the planned name, base features and batch, e.g. ``3d_fullres_f16_b2``."""
    base = configuration.variant_of or configuration.name
    return f"{base}_f{configuration.network.features_per_stage[0]}_b{configuration.batch_size}"


def budget_variants(configuration: ConfigurationPlan) -> list[ConfigurationPlan]:
    """Smaller versions of a configuration, largest first (the planned one is not included).

    Order (BENCHMARKS.md, "Dice against time budget: Task04", has the measurements behind it): the batch size goes to 2
    first, then the features per stage halve (32 -> 16 -> 8 at the first stage). The
    patch is never shrunk: it is the context the network sees, and the planner sized
    it to the images. Each variant is named by :func:`variant_name` and has
    ``variant_of`` set; its memory estimate is cleared (it is smaller than planned).
    """
    base = configuration.network.features_per_stage[0]
    shapes = []
    if configuration.batch_size > VARIANT_BATCH_SIZE:
        shapes.append(base)
    shapes += [features for features in (base // 2, base // 4) if features >= 4]
    variants = []
    for features in shapes:
        variant = scaled_configuration(configuration, features, VARIANT_BATCH_SIZE)
        variant.variant_of = configuration.name
        variant.name = variant_name(variant)
        variant.estimated_memory_bytes = 0
        variant.measured_speed = None
        variants.append(variant)
    return variants


def budget_variant_record(variant: ConfigurationPlan, reason: str) -> ConfigurationPlan:
    """``variant`` (from :func:`budget_variants`) with why it was chosen (``reasons["time_budget"]``), as
    the work folder records it (:meth:`autoseg.workdir.WorkDir.record_budget_variant`)."""
    variant.reasons = {**variant.reasons, "time_budget": reason}
    return variant
