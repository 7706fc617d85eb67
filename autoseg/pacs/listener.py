"""``autoseg listen``: a C-STORE receiver that segments each complete series and sends its DICOM-SEG on.

A PACS (or a modality) sends a series by C-STORE, one instance per request. Instances are written
to disk as they arrive, under ``OUT/received/{series}/``; a series is complete when no instance of
it arrived for ``idle`` seconds. It is then segmented with the same code as ``autoseg predict
--output-format dicom-seg`` and the DICOM-SEG is C-STOREd to the destination node.

Folders under ``OUT`` (each series under a folder named by its Series Instance UID, or, when it
has none, by a hash of the calling AE, Study UID and Series Number, with a warning):

- ``received/``: series still arriving or waiting; kept across restarts (segmented after
  ``idle`` seconds once the node runs again);
- ``segmented/{series}/``: the DICOM-SEG, ``report.json``; the received images are deleted once
  the SEG was written and (with ``send_to``) sent (``keep_images`` keeps them in ``segmented/{series}/images``);
- ``failed/{series}/``: the images of a series that could not be segmented or whose SEG could not
  be sent, with ``reason.txt`` (one line); nothing is lost.

A dataset that cannot be decoded gets status 0xC210 (cannot understand) and a log line; the
association and the node go on. C-ECHO is answered. Calling AE titles may be restricted
(``allowed_ae_titles``): others are rejected at association. The node binds 127.0.0.1 unless told
otherwise. Built on pynetdicom (the ``dicom`` extra).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import sys
import threading
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from autoseg.errors import AutosegInputError
from autoseg.inference.predict_folder import FolderPredictor, predict_folder
from autoseg.pacs.dimse import NETWORK_TIMEOUT_SECONDS, Peer, checked_ae_title, require_pynetdicom, send_files

#: Default seconds without a new instance after which a series is taken as complete.
DEFAULT_IDLE_SECONDS = 10.0
#: DIMSE status: success, and "cannot understand" (the dataset could not be decoded).
SUCCESS, CANNOT_UNDERSTAND, OUT_OF_RESOURCES = 0x0000, 0xC210, 0xA700
_UID = re.compile(r"^[0-9.]{1,64}$")


def log(message: str) -> None:
    """One line on stderr with the time."""
    sys.stderr.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}\n")
    sys.stderr.flush()


def series_key(series_uid: str, study_uid: str, series_number: Any, calling_ae_title: str) -> str:
    """The folder name of a received series: its Series Instance UID when it has a valid one, else
    ``unidentified-`` and a hash of what identifies it (calling AE, Study UID, Series Number). Pure."""
    if _UID.fullmatch(series_uid or ""):
        return series_uid
    identity = f"{calling_ae_title}|{study_uid}|{series_number}"
    return "unidentified-" + hashlib.sha256(identity.encode()).hexdigest()[:16]


@dataclass
class ReceivedSeries:
    """Arrival bookkeeping of one series: when its last instance came (monotonic seconds), how many."""

    last_arrival: float
    instances: int = 0
    warned: bool = False


@dataclass
class SeriesStore:
    """The listener's folders (see the module docstring) under ``root``."""

    root: Path
    received: Path = field(init=False)
    segmented: Path = field(init=False)
    failed: Path = field(init=False)
    segmenting: Path = field(init=False)

    def __post_init__(self) -> None:
        self.root = Path(self.root)
        self.received, self.segmented = self.root / "received", self.root / "segmented"
        self.failed, self.segmenting = self.root / "failed", self.root / "segmenting"
        for folder in (self.received, self.segmented, self.failed, self.segmenting):
            try:
                folder.mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise AutosegInputError(f"{folder}: cannot create the listener's folder ({error.strerror})") from None

    def write_instance(self, key: str, sop_uid: str, content: bytes) -> Path:
        """Write one received instance atomically as ``received/{key}/{sop_uid}.dcm``."""
        folder = self.received / key
        folder.mkdir(parents=True, exist_ok=True)
        name = sop_uid if _UID.fullmatch(sop_uid or "") else f"instance-{uuid.uuid4().hex}"
        target = folder / f"{name}.dcm"
        temporary = folder / f".{name}.{uuid.uuid4().hex[:8]}.part"
        temporary.write_bytes(content)
        os.replace(temporary, target)
        return target

    def take_for_segmenting(self, key: str) -> Path:
        """Move ``received/{key}`` to ``segmenting/{key}/{key}`` (the input folder of one case)."""
        case_dir = self.segmenting / key
        case_dir.mkdir(parents=True, exist_ok=True)
        target = case_dir / key
        os.replace(self.received / key, target)
        for part in target.glob(".*.part"):  # an instance cut off mid-write
            part.unlink()
        return case_dir

    def fail(self, key: str, reason: str) -> Path:
        """Keep the images of ``key`` (and what was made of them) under ``failed/{key}`` with ``reason.txt``."""
        target = self.failed / key
        if target.exists():
            target = self.failed / f"{key}-{time.strftime('%Y%m%d-%H%M%S')}"
        os.replace(self.segmenting / key, target)
        (target / "reason.txt").write_text(" ".join(reason.split()) + "\n")
        return target

    def recover(self) -> list[str]:
        """After a restart: series left mid-segmentation go back to ``received`` (segmented again);
        returns every series key waiting in ``received``."""
        for case_dir in sorted(self.segmenting.iterdir()):
            images = case_dir / case_dir.name
            if images.is_dir() and not (self.received / case_dir.name).exists():
                os.replace(images, self.received / case_dir.name)
            shutil.rmtree(case_dir, ignore_errors=True)
        return sorted(path.name for path in self.received.iterdir() if path.is_dir())


class SeriesListener:
    """A C-STORE SCP that segments complete series with ``predictor`` and sends their SEGs to ``send_to``.

    Args:
        model: the work folder the predictor was loaded from.
        predictor: the loaded networks (used one series at a time).
        root: the listener's folder (``received/``, ``segmented/``, ``failed/``).
        ae_title: this node's AE title.
        host, port: where to listen (port 0: a free one; see :attr:`port` after :meth:`start`).
        send_to: the node that receives the SEGs (None: they stay in ``segmented/``).
        allowed_ae_titles: calling AE titles accepted (None: any).
        idle_seconds: quiet time after which a series is complete.
        keep_images: keep the received images of segmented series.
        seg_concepts: coded concepts per class for the SEG (:func:`autoseg.io.dicom_seg.read_concept_mapping`).
    """

    def __init__(self, model: Path, predictor: FolderPredictor, root: Path, ae_title: str = "AUTOSEG",
                 host: str = "127.0.0.1", port: int = 11112, send_to: Peer | None = None,
                 allowed_ae_titles: Sequence[str] | None = None, idle_seconds: float = DEFAULT_IDLE_SECONDS,
                 keep_images: bool = False, seg_concepts: dict | None = None):
        if idle_seconds <= 0:
            raise AutosegInputError(f"--idle must be positive, got {idle_seconds:g}")
        self.model, self.predictor = Path(model), predictor
        self.store = SeriesStore(root)
        self.ae_title = checked_ae_title(ae_title)
        self.host, self.port = host, port
        self.send_to = send_to
        self.allowed = [checked_ae_title(title, "--allow") for title in allowed_ae_titles or []] or None
        self.idle_seconds = idle_seconds
        self.keep_images = keep_images
        self.seg_concepts = seg_concepts
        self._series: dict[str, ReceivedSeries] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server = None
        self._worker: threading.Thread | None = None
        self.segmented: list[str] = []
        self.failed: list[str] = []

    # -- receiving ------------------------------------------------------------------------------------

    def start(self) -> None:
        """Bind, answer C-ECHO and C-STORE, and start segmenting complete series in the background."""
        pynetdicom = require_pynetdicom()
        now = time.monotonic()
        for key in self.store.recover():
            self._series[key] = ReceivedSeries(now)
            log(f"{key}: received before a restart; segmented after {self.idle_seconds:g} s")
        ae = pynetdicom.AE(ae_title=self.ae_title)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = NETWORK_TIMEOUT_SECONDS
        ae.maximum_associations = 16
        for context in pynetdicom.AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, pynetdicom.ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context("1.2.840.10008.1.1")  # Verification: C-ECHO
        if self.allowed:
            ae.require_calling_aet = self.allowed
        handlers = [(pynetdicom.evt.EVT_C_STORE, self._on_store)]
        try:
            self._server = ae.start_server((self.host, self.port), block=False, evt_handlers=handlers)
        except OSError as error:
            raise AutosegInputError(f"{self.host}:{self.port}: cannot listen there ({error.strerror})") from None
        self.port = self._server.server_address[1]
        self._worker = threading.Thread(target=self._work, name="autoseg-listen", daemon=True)
        self._worker.start()

    def _on_store(self, event: Any) -> int:
        calling = str(event.assoc.requestor.ae_title).strip()
        try:
            dataset = event.dataset
            dataset.file_meta = event.file_meta
            series_uid = str(dataset.get("SeriesInstanceUID", "") or "")
            study_uid = str(dataset.get("StudyInstanceUID", "") or "")
            sop_uid = str(dataset.get("SOPInstanceUID", "") or "")
            series_number = dataset.get("SeriesNumber", "")
            content = event.encoded_dataset()
        except Exception as error:  # noqa: BLE001 (any decoding failure of a peer's bytes)
            log(f"C-STORE from {calling}: dataset cannot be decoded ({type(error).__name__}: "
                f"{' '.join(str(error).split())[:160]}); answered 0x{CANNOT_UNDERSTAND:04X}")
            return CANNOT_UNDERSTAND
        key = series_key(series_uid, study_uid, series_number, calling)
        try:
            self.store.write_instance(key, sop_uid, content)
        except OSError as error:
            log(f"C-STORE from {calling}: cannot store an instance of {key} ({error.strerror}); answered "
                f"0x{OUT_OF_RESOURCES:04X}")
            return OUT_OF_RESOURCES
        with self._lock:
            entry = self._series.setdefault(key, ReceivedSeries(time.monotonic()))
            entry.last_arrival = time.monotonic()
            entry.instances += 1
            if key.startswith("unidentified-") and not entry.warned:
                entry.warned = True
                log(f"warning: a series from {calling} has no Series Instance UID; grouped as {key} by calling AE, "
                    "Study UID and Series Number")
        return SUCCESS

    # -- segmenting -----------------------------------------------------------------------------------

    def complete_series(self, now: float | None = None) -> list[str]:
        """Series whose last instance came at least ``idle_seconds`` ago (taken off the arrival list)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            done = [key for key, entry in self._series.items() if now - entry.last_arrival >= self.idle_seconds]
            for key in done:
                del self._series[key]
        return sorted(done)

    def _work(self) -> None:
        while not self._stop.wait(min(0.5, self.idle_seconds / 4)):
            for key in self.complete_series():
                self.segment(key)

    def segment(self, key: str) -> bool:
        """Segment the received series ``key``, send its SEG, file it under ``segmented`` or ``failed``."""
        try:
            case_dir = self.store.take_for_segmenting(key)
        except OSError as error:
            log(f"{key}: cannot be taken for segmenting ({error.strerror})")
            return False
        output = self.store.segmented / key
        try:
            report = predict_folder(self.model, case_dir, output, self.predictor.choice, progress=False,
                                    output_format="dicom-seg", seg_concepts=self.seg_concepts,
                                    predictor=self.predictor, overwrite=True)
            if report.failed or key not in report.outputs:
                raise AutosegInputError(next(iter(report.failed.values()), f"{key}: no DICOM series found"))
            seg = report.outputs[key]
            if self.send_to is not None:
                send_files([seg], self.send_to, self.ae_title)
        except AutosegInputError as error:
            return self._failed(key, str(error))
        except Exception as error:  # noqa: BLE001 (a bug must not stop the node; the series is kept)
            return self._failed(key, f"internal error ({type(error).__name__}: {error})")
        if self.keep_images:
            os.replace(case_dir / key, output / "images")
        shutil.rmtree(case_dir, ignore_errors=True)
        self.segmented.append(key)
        sent = f", sent to {self.send_to}" if self.send_to else ""
        log(f"{key}: segmented in {report.seconds_per_case.get(key, 0):.1f} s -> {seg}{sent}")
        return True

    def _failed(self, key: str, reason: str) -> bool:
        kept = self.store.fail(key, reason)
        self.failed.append(key)
        log(f"{key}: failed: {' '.join(reason.split())}; images kept in {kept}")
        return False

    def stop(self) -> None:
        """Stop listening; the series being segmented is finished first."""
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
        if self._worker is not None:
            self._worker.join(timeout=600)
