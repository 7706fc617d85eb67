"""``autoseg plan``: verify the raw dataset, fingerprint it, plan, preprocess.

Work folder layout after this step::

    {work_dir}/dataset_fingerprint.json
    {work_dir}/plans.json
    {work_dir}/preprocessed/{data_identifier}/...
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
from autoseg.planning.plans import Plans, load_plans, save_plans
from autoseg.preprocessing.cache import preprocess_dataset
from autoseg.utils.files import read_json, write_json

FINGERPRINT_FILE = "dataset_fingerprint.json"
PLANS_FILE = "plans.json"


@dataclass
class PlanningResult:
    plans: Plans
    fingerprint_reused: bool
    plans_reused: bool
    preprocessing: dict = field(default_factory=dict)
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


def run_planning(dataset_dir: str | os.PathLike, work_dir: str | os.PathLike, *,
                 gpu_memory_gb: float | None = None, num_workers: int | None = None,
                 configurations: list[str] | None = None, preprocess: bool = True, replan: bool = False,
                 ct_window: tuple[float, float] | None = None, architecture: str = "unet",
                 benchmark: bool = False, device: str | None = None, progress: bool = True) -> PlanningResult:
    """Verify + fingerprint (reused when the raw files are unchanged), plan (an existing
    plans.json, possibly edited by the user, is kept unless ``replan``), preprocess."""
    description = load_dataset_description(dataset_dir)
    work_dir = Path(work_dir)
    signature = raw_dataset_signature(dataset_dir)
    messages = []
    fingerprint_path = work_dir / FINGERPRINT_FILE
    fingerprint = None
    if fingerprint_path.is_file():
        stored = read_json(fingerprint_path)
        if stored.get("source_signature") == signature:
            fingerprint = stored
    fingerprint_reused = fingerprint is not None
    if fingerprint is None:
        fingerprint = extract_fingerprint(description, num_workers, progress=progress)
        fingerprint["source_signature"] = signature
        fingerprint["raw_dataset"] = str(Path(dataset_dir).resolve())
        work_dir.mkdir(parents=True, exist_ok=True)
        write_json(fingerprint_path, fingerprint)
    plans_path = work_dir / PLANS_FILE
    plans = None
    if plans_path.is_file() and not replan and ct_window is None:
        existing = load_plans(plans_path)
        if existing.source_signature == signature:
            plans = existing
            messages.append(f"kept the existing {plans_path} (your edits stay; --replan recomputes it)")
        else:
            messages.append(f"the raw dataset changed since {plans_path} was made: planning again")
    plans_reused = plans is not None
    if plans is None:
        budget = detect_memory_budget(gpu_memory_gb)
        plans = plan_experiment(fingerprint, str(Path(dataset_dir).resolve()), budget, architecture)
        plans.source_signature = signature
        if ct_window is not None:
            apply_ct_window(plans, ct_window)
        save_plans(plans, plans_path)
    names = configurations or list(plans.configurations)
    for name in names:
        plans.configuration(name)  # unknown names fail before any work
    report = {}
    if preprocess:
        report = preprocess_dataset(plans, work_dir, names, num_workers, progress=progress)
    if benchmark:
        if not preprocess:
            raise AutosegInputError("--benchmark needs the preprocessed data (drop --no-preprocess)")
        benchmark_speed(plans, work_dir, names, device, messages)
    return PlanningResult(plans, fingerprint_reused, plans_reused, report, messages)


def benchmark_speed(plans: Plans, work_dir: Path, names: list[str], device: str | None,
                    messages: list[str]) -> None:
    """Time a few training iterations of each configuration on ``device``; store them in plans.json."""
    from autoseg.training.budget import measure_speed
    from autoseg.training.trainer import Trainer, TrainingOptions
    from autoseg.utils.device import use_all_cores

    use_all_cores()
    for name in names:
        if plans.configurations[name].previous_stage:
            messages.append(f"{name}: not benchmarked (a cascade needs its previous stage trained first)")
            continue
        trainer = Trainer(work_dir, name, 0, TrainingOptions(device=device, progress=False, validate=False))
        speed = measure_speed(trainer)
        plans.configurations[name].measured_speed = speed.to_dict()
        messages.append(f"{name}: {speed.seconds_per_iteration:.2f} s per training iteration on "
                        f"{speed.device_name} ({speed.threads} threads) = "
                        f"{3600 / speed.seconds_per_iteration:.0f} iterations per hour")
    save_plans(plans, work_dir / PLANS_FILE)
