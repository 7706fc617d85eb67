"""``autoseg demo``: the whole pipeline on built-in synthetic CT data (or a dataset of yours).

generate data -> plan -> train (one fold, a short time budget) -> predict the
held-out cases -> evaluate, printing the time of each step and where outputs are.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from autoseg.errors import AutosegInputError

#: The demo's synthetic dataset: small enough to train on a CPU in minutes.
DEMO_TRAINING_CASES = 24
DEMO_TEST_CASES = 8


@dataclass
class DemoReport:
    step_seconds: dict[str, float] = field(default_factory=dict)
    summary: dict | None = None
    summary_source: str = ""
    paths: dict[str, Path] = field(default_factory=dict)


#: Training time of the demo (s). Measured on 2 CPU cores: 4 min (about 500 iterations) learn the
#: organ (held-out Dice 0.88) but not the lesion (0.25, only cases without one); 8 min (about 1,250
#: iterations) learn both (organ 0.91, lesion 0.82). See BENCHMARKS.md.
DEMO_TIME_BUDGET_SECONDS = 8 * 60.0


def run_demo(output: str | os.PathLike, data: str | os.PathLike | None = None, configuration: str = "3d_fullres",
             time_budget_seconds: float = DEMO_TIME_BUDGET_SECONDS, device: str | None = None,
             num_workers: int | None = None, seed: int = 0, overwrite: bool = False) -> DemoReport:
    """Run plan, train, predict and evaluate; see the module docstring."""
    from autoseg.evaluation.evaluate import evaluate_folders
    from autoseg.inference.predict_folder import InferenceChoice, predict_folder
    from autoseg.io.dataset import load_dataset_description
    from autoseg.planning.pipeline import run_planning
    from autoseg.synthetic import SyntheticDatasetSpec, generate_synthetic_dataset
    from autoseg.training.budget import train_fold
    from autoseg.training.trainer import TrainingOptions
    from autoseg.utils.device import resolve_device

    output = Path(output)
    report = DemoReport()
    clock = time.perf_counter()

    def step(name: str) -> None:
        nonlocal clock
        now = time.perf_counter()
        report.step_seconds[name] = now - clock
        clock = now
        print(f"[demo] {name}: {report.step_seconds[name]:.1f} s", flush=True)

    if data is None:
        spec = SyntheticDatasetSpec(num_training=DEMO_TRAINING_CASES, num_test=DEMO_TEST_CASES, seed=seed)
        dataset = output / "data" / spec.dataset_name
        if not (dataset / "dataset.json").is_file():
            print(f"[demo] generating {DEMO_TRAINING_CASES} + {DEMO_TEST_CASES} synthetic CT cases "
                  "(body, organ with lesion, varying slice thickness)", flush=True)
            dataset = generate_synthetic_dataset(output / "data", spec)
        step("generate data")
    else:
        dataset = Path(data)
        load_dataset_description(dataset)  # clear error before any work
    work = output / "work"
    planning = run_planning(dataset, work, num_workers=num_workers, configurations=None)
    if configuration not in planning.plans.configurations:
        raise AutosegInputError(f"--configuration {configuration}: not planned for this dataset "
                                f"(planned: {', '.join(planning.plans.configurations)})")
    step("plan + preprocess")
    resolved = resolve_device(device)
    options = TrainingOptions(device=str(resolved), num_workers=num_workers, seed=seed,
                              time_budget_seconds=time_budget_seconds)
    fold_done = (work / "results" / configuration / "fold_0" / "checkpoint_final.pt").is_file()
    trainer, validation = train_fold(work, configuration, 0, options, resume=fold_done and not overwrite,
                                     overwrite=overwrite)
    step(f"train {configuration} fold 0 (budget {time_budget_seconds / 60:.1f} min)")
    report.paths.update(work=work, model=trainer.output_dir, progress_plot=trainer.output_dir / "progress.png")
    test_images, test_labels = dataset / "imagesTs", dataset / "labelsTs"
    if test_images.is_dir() and any(test_images.iterdir()):
        predictions = output / "predictions"
        predict_folder(work, test_images, predictions, InferenceChoice([configuration], folds=[0]), resolved,
                       overwrite=True)
        report.paths["predictions"] = predictions
        step(f"predict {len(list(test_images.glob('*_0000*')))} held-out cases")
        if test_labels.is_dir():
            plans = trainer.plans
            results = evaluate_folders(test_labels, predictions, plans.labels, plans.file_ending,
                                       output_dir=predictions)
            report.summary, report.summary_source = results["summary"], f"held-out cases ({test_labels})"
            step("evaluate")
    if report.summary is None and validation is not None:
        report.summary, report.summary_source = validation, "fold 0 validation cases (held out from training)"
    return report
