"""Planning a dataset: verify + fingerprint it, then plan every configuration.

Writes ``dataset_fingerprint.json`` and ``plans.json`` to the work folder
(:mod:`autoseg.workdir`). The fingerprint is reused while the raw files are
unchanged; an existing plans.json (possibly edited by hand) is kept unless asked to
plan again. Preprocessing the planned configurations is the next stage
(:mod:`autoseg.preprocessing.cache`); ``autoseg plan`` runs both.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

from autoseg.errors import AutosegInputError
from autoseg.io.dataset import load_dataset_description
from autoseg.planning.fingerprint import extract_fingerprint
from autoseg.planning.hardware import detect_memory_budget
from autoseg.planning.planner import plan_experiment
from autoseg.planning.transfer import plans_from_model
from autoseg.plans.schema import Plans
from autoseg.workdir import WorkDir


@dataclass
class PlanningResult:
    plans: Plans
    fingerprint_reused: bool
    plans_reused: bool
    messages: list[str] = field(default_factory=list)


def raw_dataset_signature(dataset_dir: str | os.PathLike) -> str:
    """Hash of dataset.json and the names, sizes and modification times of all raw files."""
    root = Path(dataset_dir)
    digest = hashlib.sha256((root / "dataset.json").read_bytes())
    for folder in ("imagesTr", "labelsTr"):
        path = root / folder
        if not path.is_dir():
            continue
        for entry in sorted(os.scandir(path), key=lambda e: e.name):
            stat = entry.stat()
            digest.update(f"{folder}/{entry.name}:{stat.st_size}:{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:16]


def apply_ct_window(plans: Plans, window: tuple[float, float]) -> None:
    """Switch every CT channel to a fixed HU window (``ct_window`` scheme)."""
    low, high = float(window[0]), float(window[1])
    if low >= high:
        raise AutosegInputError(f"--ct-window: lower bound {low:g} must be below upper bound {high:g}")
    changed = False
    for entry in plans.normalization:
        if entry.scheme in ("ct", "ct_window"):
            entry.scheme, entry.clip_low, entry.clip_high = "ct_window", low, high
            entry.reason = (f"fixed window [{low:g}, {high:g}] HU given with --ct-window, "
                            "mapped linearly to [-1, 1]")
            changed = True
    if not changed:
        raise AutosegInputError("--ct-window: the dataset has no channel named CT")


def plan_dataset(dataset_dir: str | os.PathLike, work_dir: str | os.PathLike | WorkDir, *,
                 gpu_memory_gb: float | None = None, num_workers: int | None = None, replan: bool = False,
                 ct_window: tuple[float, float] | None = None, architecture: str = "unet",
                 progress: bool = True, model_plans: Plans | None = None, model_source: str = "") -> PlanningResult:
    """Verify + fingerprint (reused when the raw files are unchanged), then plan (an existing
    plans.json, possibly edited by the user, is kept unless ``replan`` or ``ct_window``).

    With ``model_plans`` (a trained model's plans, named by ``model_source``), the configurations and
    normalization come from the model (:func:`autoseg.planning.transfer.plans_from_model`); each difference
    from what this dataset alone would plan is one of the returned messages. An existing plans.json is kept
    only when it was taken from the same model."""
    description = load_dataset_description(dataset_dir)
    work = WorkDir.of(work_dir)
    signature = raw_dataset_signature(dataset_dir)
    messages = []
    fingerprint = None
    if work.fingerprint_path.is_file():
        stored = work.read_fingerprint()
        if stored.get("source_signature") == signature:
            fingerprint = stored
    fingerprint_reused = fingerprint is not None
    if fingerprint is None:
        fingerprint = extract_fingerprint(description, num_workers, progress=progress)
        fingerprint["source_signature"] = signature
        fingerprint["raw_dataset"] = str(Path(dataset_dir).resolve())
        work.root.mkdir(parents=True, exist_ok=True)
        work.write_fingerprint(fingerprint)
    plans = None
    if work.plans_path.is_file() and not replan and ct_window is None:
        existing = work.load_plans()
        same_model = model_plans is None or model_source in existing.reasons.get("plans_from", "")
        if existing.source_signature == signature and not same_model:
            messages.append(f"{work.plans_path} was not taken from {model_source}: planning again")
        elif existing.source_signature == signature:
            plans = existing
            messages.append(f"kept the existing {work.plans_path} (your edits stay; --replan recomputes it)")
        else:
            messages.append(f"the raw dataset changed since {work.plans_path} was made: planning again")
    plans_reused = plans is not None
    if plans is None:
        budget = detect_memory_budget(gpu_memory_gb)
        plans = plan_experiment(fingerprint, str(Path(dataset_dir).resolve()), budget, architecture)
        plans.source_signature = signature
        if model_plans is not None:
            transferred = plans_from_model(plans, model_plans, model_source, fingerprint)
            plans = transferred.plans
            messages += [f"from the model: {line}" for line in transferred.differences] or [
                f"from the model: nothing differs from what this dataset alone would plan ({model_source})"]
        if ct_window is not None:
            apply_ct_window(plans, ct_window)
        work.save_plans(plans)
    return PlanningResult(plans, fingerprint_reused, plans_reused, messages)
