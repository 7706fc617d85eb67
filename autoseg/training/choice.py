"""Which configuration to train for a time budget (``autoseg train -c auto``, ``autoseg plan --time-budget``).

For every planned configuration that can be trained on its own (not a cascade stage),
:func:`autoseg.training.network_choice.decide_network` measures its speed on this device and
decides the network it would train as (the planned one or a smaller variant) and for how
many iterations. Then one rule picks (:func:`choose_configuration`):

1. only configurations that reach the iterations they need are eligible
   (:func:`~autoseg.planning.training_cost.iterations_needed`: 1,000 when a patch covers the median
   case, more when it takes many patches to cover it; fewer leave the network near chance,
   BENCHMARKS.md, "Dice against time budget: Task04");
2. preference order, each kind at full resolution before its coarser resolution (which trades
   detail for iterations when full resolution cannot learn in the budget): on strongly
   anisotropic data (the 3D target spacing's largest/smallest ratio above the planner's 3x
   thick-slice rule) ``2d``, ``2d_lowres`` first — 2D wins on such data (the domain digest);
   otherwise ``3d_fullres``, ``3d_lowres``, then ``2d``, ``2d_lowres``;
3. when none is eligible, the one with the most iterations (with a warning): on a 512x512 CT
   with a budget under about 4.5 minutes on 2 CPU cores (where even 2d_lowres falls short of
   its 1,000 iterations) that is 2d_lowres, whose iterations are about 4x cheaper than 2d's and
   15x cheaper than 3d_fullres's (measured: 0.147, 0.575 and 2.263 s; 1,250 iterations of 2d
   reached a mean foreground Dice of 0.67, 1,200 of 3d_fullres 0.30).

The cascade (``3d_cascade_fullres``) is assessed, not chosen (:func:`assess_cascade`): it
needs every fold of ``3d_lowres`` trained before its first fold, so a budget per fold
allows it only when both stages reach the iterations they need in half the budget each;
its second stage runs the full-resolution network (one input channel per class more), so
that is also when ``3d_fullres`` alone is trainable, and whether the cascade adds anything
is then a question for cross-validation (``autoseg ensemble`` over both), which the plan
states with the commands. Everything is recorded in ``WORK/budget/budget_plan.json`` with the
reasons, and printed before training; the expected network time to predict one case (the
median case with and without test-time mirroring, the largest training case without) is
estimated from the measured speed (reading, preprocessing and writing come on top).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict
from typing import Any

from autoseg.planning.spacing import ANISOTROPY_SPACING_RATIO, shape_after_resampling
from autoseg.planning.training_cost import (
    TrainingLength,
    estimate_prediction_seconds,
    iterations_for_budget,
    median_case_shape,
)
from autoseg.plans.schema import ConfigurationPlan, Plans
from autoseg.preprocessing.preprocess import target_spacing_for_case
from autoseg.training.class_exposure import ClassOutlook
from autoseg.training.network_choice import NetworkDecision, decide_network, trainer_class, with_class_outlook
from autoseg.training.trainer import TrainingOptions
from autoseg.workdir import WorkDir

#: Preference order of configurations, by kind of data (rule 2 of the module docstring).
#: 2.5d comes after 2d: at equal budgets it beat 2d by 0.006-0.013 on Task04 (30 min) and on 4 mm Task04 (5 min),
#: lost 0.006-0.013 on the synthetic brain (10 min), and 2.5d_lowres left the CT's lesion at 0.17 where 2d_lowres
#: reached 0.93 (BENCHMARKS.md, "2.5D against 2D and 3D at equal budgets"): no measured case for choosing it
#: over 2d by default.
PREFERENCE_ISOTROPIC = ("3d_fullres", "3d_lowres", "2d", "2.5d", "2d_lowres", "2.5d_lowres")
PREFERENCE_THICK_SLICES = ("2d", "2.5d", "2d_lowres", "2.5d_lowres", "3d_fullres", "3d_lowres")


def has_thick_slices(plans: Plans) -> bool:
    """Whether the 3D target spacing is strongly anisotropic (largest/smallest > the planner's ratio)."""
    fullres = plans.configurations.get("3d_fullres")
    if fullres is None:
        return False
    spacing = fullres.target_spacing
    return max(spacing) / min(spacing) > ANISOTROPY_SPACING_RATIO


def largest_case_shape(configuration: ConfigurationPlan, fingerprint: dict) -> list[int]:
    """The training case with the most voxels at the configuration's spacing, ``(z, y, x)`` voxels
    (2D: its own slices), by the rules preprocessing resamples with."""
    shapes = [shape_after_resampling(case["shape_after_crop"], case["spacing"],
                                     target_spacing_for_case(configuration, case["spacing"])).tolist()
              for case in fingerprint["cases"].values()]
    return max(shapes, key=math.prod)


def candidate_configurations(plans: Plans) -> list[str]:
    """Planned configurations that train on their own (no cascade stage, no budget variant)."""
    return [name for name, plan in plans.configurations.items() if not plan.previous_stage and not plan.variant_of]


def choose_configuration(decisions: dict[str, NetworkDecision], thick_slices: bool) -> tuple[str, str]:
    """The configuration to train and why (the rule of the module docstring)."""
    order = PREFERENCE_THICK_SLICES if thick_slices else PREFERENCE_ISOTROPIC
    ranked = [name for name in order if name in decisions] + [name for name in decisions if name not in order]
    kind = ("strongly anisotropic data: 2d first, then the coarser 2d_lowres" if thick_slices
            else "near-isotropic data: 3d_fullres, then the coarser 3d_lowres, then 2d, then the coarser 2d_lowres")
    for name in ranked:
        if decisions[name].feasible:
            skipped = [f"{other} ({decisions[other].iterations.total_iterations} of "
                       f"{decisions[other].iterations_needed})" for other in ranked[: ranked.index(name)]]
            because = f"; {', '.join(skipped)} reach fewer iterations than they need" if skipped else ""
            return name, (f"{name}: the first of {ranked} ({kind}) that reaches the iterations it needs in the "
                          f"budget ({decisions[name].iterations.total_iterations} of "
                          f"{decisions[name].iterations_needed}){because}")
    best = max(ranked, key=lambda name: decisions[name].iterations.total_iterations)
    shortfall = ", ".join(f"{name} {decisions[name].iterations.total_iterations} of {decisions[name].iterations_needed}"
                          for name in ranked)
    return best, (f"WARNING: no configuration reaches the iterations it needs in the budget ({shortfall}); {best} "
                  "reaches the most, and more iterations beat the rest here: a longer --time-budget will do better")


def assess_cascade(plans: Plans, decisions: dict[str, NetworkDecision], time_budget_seconds: float) -> dict[str, Any]:
    """Whether a budget of ``time_budget_seconds`` per fold allows the cascade's two stages (module docstring).

    Each stage gets half the budget: the previous stage (``3d_lowres``) at its measured speed, the
    cascade stage at the measured speed of what ``3d_fullres`` trains as (the same network and patch
    but for the previous stage's one-hot input channels, a negligible cost), each against the
    iterations it needs. Returns ``{"configuration", "allowed", "stages": [...], "reason"}``
    (``configuration`` None when no cascade is planned).
    """
    cascades = [name for name, plan in plans.configurations.items() if plan.previous_stage and not plan.variant_of]
    if not cascades:
        return {"configuration": None, "allowed": False, "stages": [],
                "reason": "none planned (the full-resolution patch covers enough of the median case)"}
    name = cascades[0]
    previous = plans.configurations[name].previous_stage
    fullres = "3d_fullres"  # what the cascade stage refines: the same grid, network and patch
    if previous not in decisions or fullres not in decisions:
        return {"configuration": name, "allowed": False, "stages": [],
                "reason": f"not assessed: {previous} or {fullres} was not measured"}
    stage_time_budget_seconds = time_budget_seconds / 2
    stages = []
    for stage, source in ((previous, decisions[previous]), (name, decisions[fullres])):
        iterations = iterations_for_budget(stage_time_budget_seconds,
                                           source.speed.seconds_per_iteration).total_iterations
        stages.append({"configuration": stage, "speed_of": source.trained_as, "iterations": iterations,
                       "iterations_needed": source.iterations_needed,
                       "reaches_minimum": iterations >= source.iterations_needed})
    allowed = all(stage["reaches_minimum"] for stage in stages)
    counts = ", ".join(f"{stage['configuration']} {stage['iterations']} of {stage['iterations_needed']} "
                       f"(speed of {stage['speed_of']})" for stage in stages)
    minutes = f"{stage_time_budget_seconds / 60:g}m"
    if allowed:
        reason = (f"both stages reach the iterations they need in half the budget each ({counts}); it needs every "
                  f"fold of {previous} first, so it is not trained by -c auto: train `-c {previous} -f all "
                  f"--time-budget {minutes}`, then `-c {name} -f all --time-budget {minutes}`, and let `autoseg "
                  f"ensemble` compare it with {fullres}")
    else:
        short = [stage["configuration"] for stage in stages if not stage["reaches_minimum"]]
        verb = "falls short of the iterations it needs" if len(short) == 1 else "fall short of the iterations they need"
        reason = f"not allowed by this budget: with half the budget per stage {' and '.join(short)} {verb} ({counts})"
    return {"configuration": name, "allowed": allowed, "stages": stages, "reason": reason}


def plan_time_budget(work_dir: str | WorkDir, time_budget_seconds: float, options: TrainingOptions | None = None,
                     length: TrainingLength | None = None) -> dict[str, Any]:
    """Decide, for each candidate configuration, what a training of ``time_budget_seconds`` per fold would
    be, choose one, and record it all as the work folder's budget plan; returns that record."""
    work = WorkDir.of(work_dir)
    options = options or TrainingOptions(progress=False)
    length = length or TrainingLength(time_budget_seconds=time_budget_seconds)
    plans = work.load_plans()
    fingerprint = work.read_fingerprint()
    decisions: dict[str, NetworkDecision] = {}
    entries: dict[str, dict[str, Any]] = {}
    for name in candidate_configurations(plans):
        decision = decide_network(work, name, 0, options, length, time_budget_seconds, time.time(),
                                  trainer_class(plans, name, options), class_outlook=False)
        decisions[name] = decision
        trained = work.load_plans().configuration(decision.trained_as)
        shape = median_case_shape(trained, fingerprint)
        largest = largest_case_shape(trained, fingerprint)
        speed = decision.speed
        entries[name] = {
            "trained_as": decision.trained_as, "target_spacing": trained.target_spacing,
            "patch_size": trained.patch_size, "batch_size": trained.batch_size,
            "features_per_stage": trained.network.features_per_stage,
            "seconds_per_iteration": speed.seconds_per_iteration, "iterations": decision.iterations.total_iterations,
            "iterations_needed": decision.iterations_needed, "reaches_minimum": decision.feasible,
            "validation": asdict(decision.validation),
            "median_case_shape": shape,
            "predict_seconds_per_case": estimate_prediction_seconds([shape], trained, speed, True),
            "predict_seconds_per_case_without_mirroring": estimate_prediction_seconds([shape], trained, speed, False),
            "largest_case_shape": largest,
            "predict_seconds_largest_case_without_mirroring": estimate_prediction_seconds([largest], trained, speed,
                                                                                           False),
            "decisions": decision.decisions}
    chosen, reason = choose_configuration(decisions, has_thick_slices(plans))
    # the classes' outlook of the chosen configuration only (drawing patches for every candidate would cost
    # the first fold's budget for nothing)
    trainer = trainer_class(plans, chosen, options)(work, decisions[chosen].trained_as, 0, options)
    decisions[chosen] = with_class_outlook(decisions[chosen], trainer, 0.0)
    entries[chosen]["class_outlooks"] = [outlook.to_dict() for outlook in decisions[chosen].class_outlooks]
    entries[chosen]["foreground_sampling"] = decisions[chosen].foreground_sampling.to_dict()
    entries[chosen]["decisions"] = decisions[chosen].decisions
    first = next(iter(decisions.values()))
    record = {"time_budget_seconds": time_budget_seconds, "device_name": first.speed.device_name,
              "threads": first.speed.threads, "configurations": entries,
              "chosen": chosen, "reason": reason,
              "cascade": assess_cascade(work.load_plans(), decisions, time_budget_seconds)}
    work.write_budget_plan(record)
    return record


def recorded_budget_plan(plans: Plans, time_budget_seconds: float, device_description: str) -> dict[str, Any] | None:
    """The ``budget_plan`` of plans.json when it was made for this budget on this device, else None."""
    record = plans.budget_plan
    same = (record and record.get("time_budget_seconds") == time_budget_seconds
            and record.get("device_name") == device_description)
    return record if same else None


def choose_for_budget(work_dir: str | WorkDir, time_budget_seconds: float | None, options: TrainingOptions,
                      device_description: str) -> tuple[str, dict[str, Any] | None]:
    """``-c auto``: the configuration to train and the budget plan behind the choice (None without a budget).

    Without a budget (a GPU with the plans' full schedule) the choice is 3d_fullres (2d for 2D data).
    With one, the plan recorded by ``autoseg plan --time-budget`` for this budget and device is used,
    else it is made now (measuring each candidate).
    """
    work = WorkDir.of(work_dir)
    plans = work.load_plans()
    if time_budget_seconds is None:
        return ("3d_fullres" if "3d_fullres" in plans.configurations else "2d"), None
    record = recorded_budget_plan(plans, time_budget_seconds, device_description)
    if record is None:
        record = plan_time_budget(work, time_budget_seconds, options)
    return record["chosen"], record


def format_budget_plan(record: dict[str, Any]) -> str:
    """A table of what each configuration would train as within the budget, and the choice."""
    lines = [f"time budget {record['time_budget_seconds'] / 60:.1f} min per fold on {record['device_name']} "
             f"({record['threads']} threads):",
             f"  {'configuration':<20} {'trains as':<22} {'spacing (mm)':<20} {'patch':<16} {'batch':>5} "
             f"{'s/it':>7} {'iterations (needed)':>20} {'predict s/case: median TTA / none, largest none':>48}"]
    for name, entry in record["configurations"].items():
        spacing = "x".join(f"{v:.2g}" for v in entry["target_spacing"])
        patch = "x".join(str(v) for v in entry["patch_size"])
        mark = "*" if name == record["chosen"] else " "
        iterations = f"{entry['iterations']} ({entry.get('iterations_needed', '?')})"
        predict = (f"{entry['predict_seconds_per_case']:.1f} / "
                   f"{entry['predict_seconds_per_case_without_mirroring']:.1f}, "
                   f"{entry['predict_seconds_largest_case_without_mirroring']:.1f}")
        lines.append(f"{mark} {name:<20} {entry['trained_as']:<22} {spacing:<20} {patch:<16} "
                     f"{entry['batch_size']:>5} {entry['seconds_per_iteration']:>7.3f} {iterations:>20} "
                     f"{predict:>48}")
    lines.append(f"chosen: {record['reason']}")
    chosen = record["configurations"].get(record["chosen"], {})
    for entry in chosen.get("class_outlooks", []):  # absent from plans.json files of earlier versions
        outlook = ClassOutlook.from_dict(entry)
        if not outlook.learned:
            lines.append(f"{record['chosen']}: {outlook.describe()}")
    cascade = record.get("cascade")
    if cascade is not None:  # a string in plans.json files of earlier versions
        lines.append(f"cascade: {cascade['reason'] if isinstance(cascade, dict) else cascade}")
    return "\n".join(lines)
