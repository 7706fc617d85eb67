"""The segmentation service behind ``autoseg serve``: models loaded once, uploads predicted one at a time.

Each accepted request holds one slot of a bounded queue (:attr:`SegmentationService.capacity`
requests running or waiting; a full queue refuses at once instead of piling up). Its upload
is streamed to a scratch folder on disk, so RAM does not grow with the queue; a single worker
thread predicts the queued uploads in order, with the same code as ``autoseg predict``
(:func:`autoseg.inference.predict_folder.predict_folder`), so a response is the file the CLI
writes for the same input. Peak RAM is that of predicting one case plus the HTTP threads.
"""

from __future__ import annotations

import errno
import queue
import re
import shutil
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path

from autoseg.errors import AutosegInputError
from autoseg.inference.predict_folder import FolderPredictor, InferenceChoice, peak_rss_bytes, predict_folder
from autoseg.serving.uploads import MAX_ZIP_EXPANSION, UploadTooLarge, check_decoded_size, place_upload

#: Default bound on the voxels one upload may decode to: 550 million, above a 512x512x2048 CT
#: (537 million; about 2.1 GB as float32 before the networks' own memory).
DEFAULT_MAX_VOXELS = 550_000_000

#: Content types of the segmentation a response carries, by file ending (others: octet-stream).
CONTENT_TYPES = {".nii.gz": "application/gzip", ".nii": "application/octet-stream", ".dcm": "application/dicom",
                 ".nrrd": "application/octet-stream", ".mha": "application/octet-stream"}


class ServiceBusy(Exception):
    """Every slot of the queue is taken; the client should retry later."""


@dataclass
class SegmentationResult:
    """What one request gets back: the segmentation file's bytes and name, the per-case report
    (:func:`autoseg.inference.case_report.case_entry`) and the seconds its prediction took."""

    content: bytes
    filename: str
    content_type: str
    report: dict
    seconds: float


@dataclass
class _Job:
    folder: Path
    filename: str | None
    output_format: str
    done: threading.Event = field(default_factory=threading.Event)
    result: SegmentationResult | None = None
    error: BaseException | None = None


class SegmentationService:
    """Predicts uploaded scans with a loaded :class:`FolderPredictor`.

    Args:
        model: the work folder the predictor was loaded from (plans, labels).
        predictor: the loaded networks (their mirroring, step size and backend are used as they are).
        max_upload_bytes: largest upload accepted; a zip may unpack to :data:`MAX_ZIP_EXPANSION` times it.
        capacity: requests accepted at once (one running, the others waiting on disk).
        scratch_dir: where uploads wait (a fresh temporary folder when None; removed by :meth:`close`).
        max_voxels: most voxels an upload may decode to (its images' headers, before decoding).
        model_name: how ``/health`` names the model (default: the work folder's name; never its path).
    """

    def __init__(self, model: Path, predictor: FolderPredictor, max_upload_bytes: int = 1 << 30, capacity: int = 16,
                 scratch_dir: Path | None = None, max_voxels: int = DEFAULT_MAX_VOXELS, model_name: str | None = None):
        if capacity < 1:
            raise AutosegInputError(f"--queue must be at least 1, got {capacity}")
        self.model = Path(model)
        self.predictor = predictor
        self.choice: InferenceChoice = predictor.choice
        self.max_upload_bytes = max_upload_bytes
        self.max_unpacked_bytes = MAX_ZIP_EXPANSION * max_upload_bytes
        self.max_voxels = max_voxels
        self.model_name = model_name or self.model.name
        self.capacity = capacity
        self._owns_scratch = scratch_dir is None
        self.scratch_dir = Path(tempfile.mkdtemp(prefix="autoseg-serve-")) if scratch_dir is None else Path(scratch_dir)
        self._slots = threading.BoundedSemaphore(capacity)
        self._queue: queue.Queue[_Job | None] = queue.Queue()
        self._lock = threading.Lock()
        self._held = 0
        self.served = 0
        self.failed = 0
        self.started = time.time()
        self._worker = threading.Thread(target=self._work, name="autoseg-predict", daemon=True)
        self._worker.start()

    # -- slots -----------------------------------------------------------------------------------------

    def reserve(self) -> Path:
        """Take a queue slot and return a fresh folder for the upload; :class:`ServiceBusy` when full."""
        if not self._slots.acquire(blocking=False):
            raise ServiceBusy(f"{self.capacity} requests are already queued or running; retry later")
        with self._lock:
            self._held += 1
        return Path(tempfile.mkdtemp(dir=self.scratch_dir, prefix="request-"))

    def release(self, folder: Path) -> None:
        """Give a slot back and delete its folder."""
        shutil.rmtree(folder, ignore_errors=True)
        with self._lock:
            self._held -= 1
        self._slots.release()

    @property
    def queued(self) -> int:
        """Requests holding a slot now (running, waiting, or still uploading)."""
        with self._lock:
            return self._held

    # -- prediction ------------------------------------------------------------------------------------

    def segment(self, folder: Path, filename: str | None, output_format: str = "nifti") -> SegmentationResult:
        """Predict the upload saved as ``folder/upload`` (a reserved folder) and wait for the result.

        Raises :class:`AutosegInputError` with a one-line message for a bad upload.
        """
        job = _Job(folder, filename, output_format)
        self._queue.put(job)
        job.done.wait()
        if job.error is not None:
            raise job.error
        assert job.result is not None
        return job.result

    def _work(self) -> None:
        while True:
            job = self._queue.get()
            if job is None:
                return
            try:
                job.result = self._predict(job)
                self.served += 1
            except BaseException as error:  # handed to the waiting request thread
                self.failed += 1
                if not isinstance(error, AutosegInputError):
                    traceback.print_exc(file=sys.stderr)
                job.error = error
            finally:
                job.done.set()

    def _predict(self, job: _Job) -> SegmentationResult:
        began = time.perf_counter()
        input_dir, output_dir = job.folder / "input", job.folder / "output"
        label = job.filename or "upload"
        try:
            place_upload(job.folder / "upload", job.filename, input_dir, self.max_unpacked_bytes)
            check_decoded_size(input_dir, self.max_voxels, label)
            report = predict_folder(self.model, input_dir, output_dir, self.choice, progress=False,
                                    output_format=job.output_format, predictor=self.predictor)
        except AutosegInputError as error:
            kind = UploadTooLarge if isinstance(error, UploadTooLarge) else AutosegInputError
            raise kind(self._without_scratch(str(error), job)) from None
        except OSError as error:  # storing the client's files: their names or the server's disk
            if error.errno in (errno.ENOSPC, errno.EDQUOT):
                raise ServiceBusy("the server's scratch disk is full; retry later") from None
            raise AutosegInputError(f"{label}: cannot be stored on the server "
                                    f"({error.strerror or type(error).__name__})") from None
        if report.failed:
            raise AutosegInputError(self._without_scratch(next(iter(report.failed.values())), job))
        if len(report.predicted) != 1:
            raise AutosegInputError(f"{job.filename or 'upload'}: holds {len(report.predicted)} cases; send one "
                                    "case per request")
        case = report.predicted[0]
        path = report.outputs[case]
        ending = next((e for e in CONTENT_TYPES if path.name.endswith(e)), path.suffix)
        return SegmentationResult(path.read_bytes(), path.name, CONTENT_TYPES.get(ending, "application/octet-stream"),
                                  report.case_reports[case], time.perf_counter() - began)

    def _without_scratch(self, message: str, job: _Job) -> str:
        """An error message with paths inside the request's scratch folder replaced by the upload's name,
        and any other path of the server's (the scratch folder, the model) by a placeholder: the
        client knows its file, not the server's folders."""
        message = re.sub(re.escape(str(job.folder)) + r"[^\s:]*", job.filename or "upload", message)
        return without_server_paths(message, (self.scratch_dir, self.model))

    # -- status ----------------------------------------------------------------------------------------

    def health(self, detailed: bool) -> dict:
        """``GET /health``: status and queue; with ``detailed``, the model too."""
        status = {"status": "ok", "queued": self.queued, "capacity": self.capacity, "served": self.served,
                  "failed": self.failed, "uptime_s": round(time.time() - self.started, 1)}
        if detailed:
            status.update({
                "model": self.model_name, "configurations": self.choice.configurations,
                "folds": self.choice.folds, "postprocessing": self.choice.postprocessing,
                "backends": [f"{p.configuration.name}: {p.backend}" for p in self.predictor.predictors],
                "mirroring": self.predictor.predictors[0].use_mirroring, "peak_rss_bytes": peak_rss_bytes()})
        return status

    def close(self) -> None:
        """Stop the worker after the running prediction and remove the scratch folder (if it made it)."""
        self._queue.put(None)
        self._worker.join(timeout=600)
        if self._owns_scratch:
            shutil.rmtree(self.scratch_dir, ignore_errors=True)


def without_server_paths(message: str, folders) -> str:
    """``message`` with every path under one of ``folders`` (and the system's temporary folder)
    shown as ``<server>``."""
    for folder in (*folders, tempfile.gettempdir()):
        message = re.sub(re.escape(str(folder)) + r"[^\s:'\"]*", "<server>", message)
    return message


def report_summary(report: dict) -> dict:
    """The per-case report as sent in a response header: volumes rounded to 0.001 mL."""
    classes = {name: {"volume_ml": round(finding["volume_ml"], 3), "components": finding["components"]}
               for name, finding in report.get("classes", {}).items()}
    return {"classes": classes, "agreement": report.get("agreement"), "flag": report.get("flag")}
