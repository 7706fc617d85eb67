"""``autoseg predict``: segment every case of a folder with trained models.

Input: ``{case}_{XXXX}{ending}`` files (one per channel, as in ``imagesTr``), in
any supported format; each output ``{case}{ending}`` has the input's format and
geometry. Cases are independent: a bad case is reported and skipped, the others
are predicted, and the caller gets the list of failures.

Memory: one case at a time. Its probabilities stay on each configuration's network grid
(``K x voxels x 4`` bytes at the target spacing); the label map is restored to the original
grid slab by slab (:func:`autoseg.inference.export.restore_segmentation`), so the
full-size probabilities (0.9 GB for 3 classes on a 512x512x300 CT) are only made with
``--save-probabilities``. The sliding-window accumulators live on the CPU whenever they
would not comfortably fit the GPU.
Writing a case's files runs in a background thread while the next case is predicted.
A case whose files cannot be written (e.g. highdicom refuses its source series) fails alone:
what it had written is removed, its one-line reason goes to ``report.failed`` and
``report.json`` (``{"flag": "failed", "error": ...}``), and the other cases go on. A full disk
or an unwritable output folder (:data:`RUN_ENDING_ERRNOS`) would fail every later case alike:
it ends the run with one line.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import sys
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from autoseg.errors import AutosegInputError
from autoseg.inference.case_report import case_entry, write_case_report
from autoseg.inference.export import restore_segmentation
from autoseg.inference.predictor import Predictor
from autoseg.inference.preview import PREVIEW_SUFFIX, write_preview
from autoseg.io.dicom import dicom_cases, error_reason, is_series_path
from autoseg.io.dicom_seg import DICOM_SEG_ENDING, dicom_seg_problem, write_dicom_seg
from autoseg.io.formats import ending_of, known_file_endings
from autoseg.io.geometry import ImageGeometry
from autoseg.io.images import image_file_problem, read_case_images, write_segmentation
from autoseg.io.probabilities import save_probabilities
from autoseg.plans.schema import Plans
from autoseg.postprocessing.components import apply_postprocessing
from autoseg.utils.files import DISK_FULL_ERRNOS, os_error_message, remove_stale_temporaries
from autoseg.utils.progress_bars import progress_bar
from autoseg.workdir import WorkDir

#: Segmentations of DICOM series input are written in this format (DICOM-SEG on request).
SERIES_OUTPUT_ENDING = ".nii.gz"
#: What ``predict`` writes: the input's format (NIfTI for DICOM series), or a DICOM Segmentation.
OUTPUT_FORMATS = ("nifti", "dicom-seg")
#: Write failures that are the output folder's, not one case's (every later case would meet them): they end
#: the run instead of failing one case.
RUN_ENDING_ERRNOS = (*DISK_FULL_ERRNOS, errno.EROFS, errno.EACCES, errno.EPERM)


@dataclass
class InferenceChoice:
    """Which trained models predict, and how their output is post-processed."""

    configurations: list[str]
    folds: list[int] | None = None
    checkpoint: str = "final"
    postprocessing: list[dict] = field(default_factory=list)
    source: str = ""


@dataclass
class PredictionReport:
    """What ``predict_folder`` did: cases predicted, skipped (complete output exists), predicted again
    because their output was damaged (with the problem), failed (with the reason), temporary files of
    an interrupted run removed,
    the seconds each predicted case took (reading to segmentation, writing overlaps the next case) and
    the peak resident memory of the process (bytes)."""

    predicted: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    redone: dict[str, str] = field(default_factory=dict)
    removed_temporaries: list[Path] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    seconds_per_case: dict[str, float] = field(default_factory=dict)
    peak_rss_bytes: int = 0
    case_reports: dict[str, dict] = field(default_factory=dict)
    backends: list[str] = field(default_factory=list)
    outputs: dict[str, Path] = field(default_factory=dict)  # segmentation file of each predicted case

    def summary(self) -> str:
        """One line: time per case (median, slowest) and peak RAM."""
        if not self.seconds_per_case:
            return f"peak RAM {self.peak_rss_bytes / 2**30:.2f} GiB"
        times = sorted(self.seconds_per_case.values())
        return (f"{times[len(times) // 2]:.1f} s per case (median; slowest {times[-1]:.1f} s), "
                f"peak RAM {self.peak_rss_bytes / 2**30:.2f} GiB")


def peak_rss_bytes() -> int:
    """Peak resident memory of this process so far (bytes; 0 where the platform does not say)."""
    try:
        import resource
    except ImportError:  # not on POSIX
        return 0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # macOS reports bytes, Linux KiB


def choose_models(work_dir: str | os.PathLike | WorkDir, configurations: list[str] | None, folds: list[int] | None,
                  checkpoint: str | None, use_postprocessing: bool = True) -> InferenceChoice:
    """Models given on the command line, else those chosen by ``autoseg ensemble`` (inference_plan.json)."""
    work = WorkDir.of(work_dir)
    if configurations:
        return InferenceChoice(configurations, folds, checkpoint or "final", [], "command line")
    plan = work.read_inference_plan()
    if plan is not None:
        return InferenceChoice(list(plan["configurations"]), folds or plan.get("folds"),
                               checkpoint or plan.get("checkpoint", "final"),
                               list(plan.get("postprocessing", [])) if use_postprocessing else [],
                               str(work.inference_plan_path))
    raise AutosegInputError(f"{work.inference_plan_path}: not found; choose a configuration with -c "
                            "(e.g. -c 3d_fullres) or run `autoseg ensemble` after cross-validation to pick one")


def find_input_cases(input_dir: str | os.PathLike, num_channels: int = 1
                     ) -> tuple[dict[str, dict[int, Path]], dict[str, str]]:
    """``({case: {channel: path}}, {case: problem})`` for the images of ``input_dir``.

    Image files ``{case}_{XXXX}{ending}`` in any supported format, DICOM series folders named
    ``{case}_{XXXX}``, and any other DICOM series found under ``input_dir`` (cases as
    :func:`autoseg.io.dicom.dicom_cases` makes them for a model of ``num_channels``). A file
    without a ``_XXXX`` channel suffix is listed under channel -1 (reported later).
    """
    input_dir = Path(input_dir)
    if not input_dir.is_dir():
        raise AutosegInputError(f"{input_dir}: input folder not found")
    cases: dict[str, dict[int, Path]] = {}
    endings = {ending.lower() for ending in known_file_endings()}
    named_series = [path for path in sorted(input_dir.iterdir()) if path.is_dir()
                    and re.fullmatch(r".+_\d{4}", path.name) and is_series_path(path)]
    dicom, problems = dicom_cases(input_dir, num_channels, skip=named_series)
    cases.update(dicom)
    for path in sorted(input_dir.iterdir()):
        ending = ending_of(path)
        if path in named_series:
            match = re.fullmatch(r"(?P<case>.+)_(?P<channel>\d{4})", path.name)
            cases.setdefault(match["case"], {})[int(match["channel"])] = path
            continue
        if path.name.startswith(".") or ending.lower() not in endings or path.is_dir():
            continue
        stem = path.name[: -len(ending)]
        match = re.fullmatch(r"(?P<case>.+)_(?P<channel>\d{4})", stem)
        if match is None:
            cases.setdefault(stem, {})[-1] = path
        else:
            cases.setdefault(match["case"], {})[int(match["channel"])] = path
    if not cases and not problems:
        raise AutosegInputError(f"{input_dir}: no images named {{case}}_0000{{ending}} and no DICOM series found")
    return cases, problems


def cases_of_part(case_ids: list[str], num_parts: int, part_id: int) -> list[str]:
    """The cases part ``part_id`` of ``num_parts`` predicts: every ``num_parts``-th of the sorted ids, starting
    at ``part_id`` (deterministic for the same input folder, whichever machine asks)."""
    if num_parts < 1 or not 0 <= part_id < num_parts:
        raise AutosegInputError(f"--part-id must be in 0..{num_parts - 1} and --num-parts at least 1, got part "
                                f"{part_id} of {num_parts}")
    return sorted(case_ids)[part_id::num_parts]


def check_channels(case_id: str, channels: dict[int, Path], num_channels: int) -> str | None:
    """A one-line problem with a case's channel files, or None."""
    if -1 in channels:
        return f"{channels[-1]}: file name lacks the _XXXX channel suffix (expected {case_id}_0000...)"
    missing = [c for c in range(num_channels) if c not in channels]
    extra = sorted(c for c in channels if c >= num_channels)
    if missing:
        return f"{case_id}: missing channel file(s) {', '.join(f'_{c:04d}' for c in missing)} " \
               f"(the model needs {num_channels})"
    if extra:
        return f"{channels[extra[0]]}: channel {extra[0]} is not used by the model (it has {num_channels})"
    endings = {"DICOM series" if is_series_path(path) else ending_of(path) for path in channels.values()}
    if len(endings) > 1:
        return f"{case_id}: channel files have different formats {sorted(endings)}"
    return None


def _expects_3d(plans: Plans) -> bool:
    return any(configuration.dimension == 3 for configuration in plans.configurations.values())


#: Test-time mirroring: True (every axis mirrored in training), False, array-axis letters (``"z"``), or
#: one of these per configuration name (as :func:`autoseg.inference.mirroring.choose_mirroring` decides).
MirroringSetting = bool | str | Mapping[str, bool | str]


def setting_of(use_mirroring: MirroringSetting, configuration: str) -> bool | str:
    """A configuration's own mirroring setting (all axes for one a mapping does not name)."""
    if isinstance(use_mirroring, Mapping):
        return use_mirroring.get(configuration, True)
    return use_mirroring


class FolderPredictor:
    """Predicts cases with one or several configurations (their probabilities averaged)."""

    def __init__(self, work_dir: str | os.PathLike | WorkDir, choice: InferenceChoice,
                 device: torch.device | str = "cpu", use_mirroring: MirroringSetting = True, step_size: float = 0.5,
                 show_progress: bool = False, backend: str = "torch"):
        self.plans = WorkDir.of(work_dir).load_plans()
        self.choice = choice
        self.predictors = [Predictor.from_work_dir(work_dir, name, choice.folds, choice.checkpoint, device,
                                                   setting_of(use_mirroring, name), step_size, show_progress, backend)
                           for name in choice.configurations]

    def predict_arrays(self, image: np.ndarray, geometry, keep_probabilities: bool = False
                       ) -> tuple[np.ndarray, torch.Tensor | None, dict, float | None]:
        """Segmentation (and, with ``keep_probabilities``, the averaged probabilities) of one raw
        ``(C, z, y, x)`` image, in its own geometry, its properties and the agreement of the member
        networks (mean over configurations of their folds' mean pairwise Dice; None with one network
        per configuration, see :mod:`autoseg.inference.case_report`).

        The segmentation is restored slab by slab (``restore_segmentation``); full-size
        probabilities, ``K x voxels x 4`` bytes, are only made when they are to be saved.
        """
        predictions = [predictor.predict_case(image, geometry, measure_agreement=True)
                       for predictor in self.predictors]
        measured = [p.member_agreement for p in predictions if p.member_agreement is not None]
        agreement = float(np.mean(measured)) if measured else None
        properties = predictions[0].properties
        segmentation = restore_segmentation([(p.probabilities, p.properties) for p in predictions],
                                            regions_class_order=self.plans.regions_class_order)
        if self.choice.postprocessing:
            segmentation = apply_postprocessing(segmentation, self.choice.postprocessing)
        probabilities = None
        if keep_probabilities:
            probabilities = predictions[0].restored_probabilities()
            for prediction in predictions[1:]:
                probabilities.add_(prediction.restored_probabilities())
            probabilities.div_(len(predictions))
        return segmentation, probabilities, properties, agreement


def cases_to_predict(cases: dict[str, dict[int, Path]], num_channels: int, output_dir: Path, output_format: str,
                     overwrite: bool, report: PredictionReport) -> list[tuple[str, list[Path], Path]]:
    """``(case, channel files, output file)`` of each case to predict; cases that cannot be predicted go to
    ``report.failed``, outputs already written and intact (unless ``overwrite``) to ``report.skipped``, damaged
    ones to ``report.redone``."""
    todo = []
    for case_id, channels in sorted(cases.items()):
        problem = check_channels(case_id, channels, num_channels)
        if problem:
            report.failed[case_id] = problem
            continue
        from_series = is_series_path(channels[0])
        if output_format == "dicom-seg" and not from_series:
            report.failed[case_id] = (f"{channels[0]}: not a DICOM series; a DICOM-SEG references the series it "
                                      "segments (use the default output format for image files)")
            continue
        if output_format == "dicom-seg":
            ending = DICOM_SEG_ENDING
        else:
            ending = SERIES_OUTPUT_ENDING if from_series else ending_of(channels[0])
        target = output_dir / f"{case_id}{ending}"
        if target.is_file() and not overwrite:
            damage = dicom_seg_problem(target) if output_format == "dicom-seg" else image_file_problem(target)
            if damage is None:
                report.skipped.append(case_id)
                continue
            report.redone[case_id] = damage
        todo.append((case_id, [channels[c] for c in range(num_channels)], target))
    return todo


def predict_folder(work_dir: str | os.PathLike, input_dir: str | os.PathLike, output_dir: str | os.PathLike,
                   choice: InferenceChoice, device: torch.device | str = "cpu", use_mirroring: MirroringSetting = True,
                   step_size: float = 0.5, save_probabilities_too: bool = False, overwrite: bool = False,
                   progress: bool = True, output_format: str = "nifti",
                   seg_concepts: dict | None = None, previews: bool = False,
                   backend: str = "torch", num_parts: int = 1, part_id: int = 0,
                   predictor: FolderPredictor | None = None) -> PredictionReport:
    """Predict every case of ``input_dir`` into ``output_dir``; see the module docstring.

    ``output_format``: ``"nifti"`` (each segmentation in its input's format; NIfTI for a DICOM
    series) or ``"dicom-seg"`` (a DICOM Segmentation per case referencing its source series, with
    the coded concepts of ``seg_concepts``, :func:`autoseg.io.dicom_seg.read_concept_mapping`).
    Every run writes ``report.json``/``report.csv`` (:mod:`autoseg.inference.case_report`); with
    ``previews``, ``{case}_preview.png`` too (:mod:`autoseg.inference.preview`). With ``num_parts`` > 1
    only the cases of part ``part_id`` are predicted (:func:`cases_of_part`): parts may run on other
    machines into the same output folder. ``predictor``: networks already loaded (a service predicting
    many uploads loads them once); ``choice``, mirroring, step size and backend are then its own.
    """
    if output_format not in OUTPUT_FORMATS:
        raise AutosegInputError(f"output format {output_format!r} is not one of {', '.join(OUTPUT_FORMATS)}")
    plans = predictor.plans if predictor is not None else WorkDir.of(work_dir).load_plans()
    cases, problems = find_input_cases(input_dir, plans.num_channels)
    mine = set(cases_of_part([*cases, *problems], num_parts, part_id))
    cases = {case: channels for case, channels in cases.items() if case in mine}
    problems = {case: problem for case, problem in problems.items() if case in mine}
    output_dir = Path(output_dir)
    report = PredictionReport()
    report.failed.update(problems)
    if predictor is None:
        predictor = FolderPredictor(work_dir, choice, device, use_mirroring, step_size, backend=backend)
    report.backends = [f"{p.configuration.name}: {p.backend_reason}" for p in predictor.predictors]
    todo = cases_to_predict(cases, plans.num_channels, output_dir, output_format, overwrite, report)
    prepare_output_folder(output_dir)
    report.removed_temporaries = remove_stale_temporaries(output_dir)
    pending: tuple[str, Path, Future] | None = None
    with ThreadPoolExecutor(max_workers=1) as writer:
        for case_id, files, target in progress_bar(todo, desc="predict", unit="case", disable=not progress):
            began = time.perf_counter()
            try:
                image, geometry = read_case_images(files)
                if geometry.file_dimension == 2 and _expects_3d(plans):
                    raise AutosegInputError(f"{files[0]}: 2D image, but the model was trained on 3D images")
                segmentation, probabilities, properties, agreement = predictor.predict_arrays(
                    image, geometry, save_probabilities_too)
            except AutosegInputError as error:
                report.failed[case_id] = str(error)
                continue
            report.seconds_per_case[case_id] = time.perf_counter() - began
            report.outputs[case_id] = target
            if pending is not None:
                _finish(pending, report)
            seg_request = None if output_format != "dicom-seg" else (files[0], seg_concepts)
            preview = (image[0], output_dir / f"{case_id}{PREVIEW_SUFFIX}") if previews else None
            pending = (case_id, target, writer.submit(_write_case, case_id, segmentation, probabilities, properties,
                                                      target, output_dir, plans, seg_request, agreement, preview))
        if pending is not None:
            _finish(pending, report)
    if report.case_reports:
        failures = {case: {"flag": "failed", "error": reason} for case, reason in report.failed.items()}
        write_case_report(output_dir, {**failures, **report.case_reports})
    report.peak_rss_bytes = peak_rss_bytes()
    return report


def prepare_output_folder(output_dir: Path) -> None:
    """Create ``output_dir`` and check that files can be written there (one-line error otherwise)."""
    if output_dir.exists() and not output_dir.is_dir():
        raise AutosegInputError(f"{output_dir}: exists and is a file, not a folder; give -o a folder")
    try:
        output_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise AutosegInputError(f"{output_dir}: cannot create the output folder ({error.strerror})") from None
    if not os.access(output_dir, os.W_OK | os.X_OK):
        raise AutosegInputError(f"{output_dir}: the output folder is not writable; give -o a folder you can write")


def _write_case(case_id: str, segmentation: np.ndarray, probabilities: torch.Tensor | None, properties: dict,
                target: Path, output_dir: Path, plans: Plans, seg_request: tuple[Path, dict | None] | None,
                agreement: float | None, preview: tuple[np.ndarray, Path] | None) -> tuple[str, dict]:
    """Write a case's files (``seg_request`` = (source series, coded concepts) for a DICOM-SEG;
    ``preview`` = (image, PNG path)) and return its report entry (:mod:`autoseg.inference.case_report`).
    On a failure, the files it wrote for the case are removed before the error goes on."""
    geometry = ImageGeometry.from_dict(properties["geometry"])
    entry = case_entry(segmentation, geometry.spacing, plans.evaluated_classes, plans.class_names, agreement)
    written: list[Path] = []
    try:
        if preview is not None:
            write_preview(preview[0], segmentation, geometry, preview[1], plans.evaluated_classes, plans.class_names)
            written.append(preview[1])
        if probabilities is not None:
            written.extend(save_probabilities(probabilities.cpu().numpy(), properties["geometry"],
                                              output_dir / case_id, plans.regions_class_order))
        if seg_request is None:
            write_segmentation(segmentation, geometry, target)
        else:
            write_dicom_seg(segmentation, seg_request[0], plans.evaluated_classes, plans.class_names, target,
                            seg_request[1])
    except BaseException:
        for path in written:
            with contextlib.suppress(OSError):
                path.unlink()
        raise
    return case_id, entry


def ends_the_run(error: BaseException) -> bool:
    """Whether a failure writing one case's files is the output folder's (full disk, read-only, not
    writable: :data:`RUN_ENDING_ERRNOS`), directly or as the OSError behind a one-line error."""
    return any(isinstance(candidate, OSError) and candidate.errno in RUN_ENDING_ERRNOS
               for candidate in (error, error.__context__, error.__cause__))


def write_failure(target: Path, error: Exception) -> str:
    """The one-line reason a case's files could not be written (naming the file)."""
    if isinstance(error, AutosegInputError):
        return " ".join(str(error).split()) or f"{target}: cannot be written ({type(error).__name__})"
    if isinstance(error, OSError):
        return os_error_message(error, target)
    return f"{target}: cannot be written ({type(error).__name__}: {error_reason(error)})"


def _finish(pending: tuple[str, Path, Future], report: PredictionReport) -> None:
    """Take a case's written files into ``report``; a failure fails that case only (unless it ends the run)."""
    case_id, target, future = pending
    try:
        _, entry = future.result()
    except Exception as error:  # any failure of this case's writing: highdicom, SimpleITK, a bug
        if ends_the_run(error):
            raise
        report.failed[case_id] = write_failure(target, error)
        report.outputs.pop(case_id, None)
        report.seconds_per_case.pop(case_id, None)
        return
    report.predicted.append(case_id)
    report.case_reports[case_id] = entry
