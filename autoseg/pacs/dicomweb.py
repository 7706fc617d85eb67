"""Pull a study from a DICOMweb server and push DICOM-SEGs back, with the library dicomweb-client.

QIDO-RS lists the study's series (:func:`list_series`); series whose Modality is not an image
(:data:`autoseg.io.dicom.NON_IMAGE_MODALITIES`: SEG, SR, PR, RTSTRUCT, KO, ...) are skipped with a line
saying so. WADO-RS streams each image series (``iter_series``, instances in Explicit VR Little Endian)
into ``{work}/{study}/.{series}.partial/`` which is renamed to ``{work}/{study}/{series}/`` once every
instance has arrived (:func:`download_series`): an interrupted run downloads only the series it had
not finished (a partial folder is started again). A complete series folder is trusted as it is: to
fetch a series again, delete its folder. STOW-RS stores the DICOM-SEGs (:func:`store_segmentations`);
the SOP Instance UIDs stored are recorded in ``{work}/{study}/.stored`` so that a rerun does not send
them twice.

Every failure of a request is one line naming the server's URL (:func:`request_problem`); refused
credentials (HTTP 401/403) and an unreachable server end the run (:class:`autoseg.errors.AutosegInputError`),
a series that cannot be fetched or stored fails alone.
"""

from __future__ import annotations

import os
import re
import shutil
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import requests

from autoseg.errors import AutosegInputError
from autoseg.io.dicom import NON_IMAGE_MODALITIES, UID_PATTERN, error_reason
from autoseg.pacs.credentials import Credentials, session_for

#: Seconds to wait for a connection, and for each answer (or chunk of one) of the server.
TIMEOUT = (15, 300)
#: Attempts per request (dicomweb-client retries HTTP 408/429/503/504 and failed connections), and the
#: back-off multiplier in ms (waits 0.5 s, then 1 s): a closed port is reported within two seconds.
RETRY_ATTEMPTS, RETRY_MULTIPLIER_MS = 3, 250
#: QIDO-RS attributes asked for beyond the defaults.
SERIES_FIELDS = ("Modality", "SeriesNumber", "SeriesDescription", "NumberOfSeriesRelatedInstances")
#: Where the SOP Instance UIDs already stored are listed (in the study's work folder; dot: never an input).
STORED_RECORD = ".stored"
#: Suffix of a series folder being downloaded.
PARTIAL_SUFFIX = ".partial"

Log = Callable[[str], None]


class ServerProblem(AutosegInputError):
    """A failure of the server as a whole (refused credentials, unreachable): it ends the run."""


@dataclass
class RemoteSeries:
    """One series of a study as QIDO-RS describes it."""

    uid: str
    modality: str = ""
    number: int | None = None
    description: str = ""
    instances: int | None = None

    def label(self) -> str:
        """How the log names the series."""
        what = ", ".join(part for part in (self.modality, self.description and repr(self.description),
                                           self.number is not None and f"#{self.number}" or "") if part)
        return f"series {self.uid}" + (f" ({what})" if what else "")


@dataclass
class StudyDownload:
    """What :func:`fetch_study` did: the study's work folder, the image series now there (downloaded this
    run, or complete from an earlier one), the series skipped as not images, and those that failed
    (series UID -> one line)."""

    folder: Path
    downloaded: list[str] = field(default_factory=list)
    reused: list[str] = field(default_factory=list)
    not_images: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def check_url(url: str) -> str:
    """``url`` if it is an http(s) URL without credentials in it, else a one-line refusal."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise AutosegInputError(f"--dicomweb {url}: not an http:// or https:// URL of a DICOMweb service")
    if parts.username is not None or parts.password is not None:
        raise AutosegInputError("--dicomweb: the URL holds credentials; give them in $AUTOSEG_DICOMWEB_TOKEN, "
                                "$AUTOSEG_DICOMWEB_USER/$AUTOSEG_DICOMWEB_PASSWORD or --dicomweb-auth FILE")
    return url.rstrip("/")


def check_uid(uid: str, what: str) -> str:
    """``uid`` if it is a DICOM UID (digits and dots, at most 64 characters), else a one-line refusal."""
    if not UID_PATTERN.fullmatch(uid) or len(uid) > 64:
        raise AutosegInputError(f"{what} {uid!r}: not a DICOM UID (digits and dots)")
    return uid


def plain_http_warning(url: str, credentials: Credentials | None) -> str | None:
    """A warning when credentials would cross the network unencrypted (http:// to another machine)."""
    parts = urlsplit(url)
    if credentials is None or parts.scheme != "http" or parts.hostname in ("localhost", "127.0.0.1", "::1"):
        return None
    return f"warning: {url}: credentials go unencrypted over http://; use https:// where the server offers it"


def connect(url: str, credentials: Credentials | None):
    """A :class:`dicomweb_client.DICOMwebClient` for ``url`` sending ``credentials``."""
    from dicomweb_client import DICOMwebClient

    try:
        client = DICOMwebClient(check_url(url), session=session_for(credentials), timeout=TIMEOUT)
    except ValueError as error:
        raise AutosegInputError(f"--dicomweb {url}: {error_reason(error)}") from None
    client.set_http_retry_params(retry=True, max_attempts=RETRY_ATTEMPTS,
                                 wait_exponential_multiplier=RETRY_MULTIPLIER_MS)
    return client


def _connection_reason(error: BaseException) -> str:
    """The operating system's words in a requests connection error ("Connection refused", "Name or service
    not known"), else the error's type."""
    match = re.search(r"\[Errno -?\d+\] ([^'\"()\]]+)", str(error))
    if match:
        return match.group(1).strip()
    for words in ("Name or service not known", "nodename nor servname", "Temporary failure in name resolution"):
        if words in str(error):
            return words
    return type(error).__name__


def request_problem(error: requests.RequestException, url: str, what: str) -> AutosegInputError:
    """``error`` of a request for ``what`` as a one-line error naming ``url``; a :class:`ServerProblem` when
    it is the server's as a whole (refused credentials, no connection)."""
    if isinstance(error, requests.HTTPError) and error.response is not None:
        code = error.response.status_code
        if code in (401, 403):
            return ServerProblem(f"{url}: the server refused the credentials (HTTP {code})")
        reason = error.response.reason or ""
        return AutosegInputError(f"{url}: {what}: HTTP {code}{' ' + reason if reason else ''}")
    if isinstance(error, requests.exceptions.SSLError):
        return ServerProblem(f"{url}: the TLS connection failed ({error_reason(error, 120)})")
    if isinstance(error, requests.ConnectionError) and not isinstance(error, requests.exceptions.ChunkedEncodingError):
        if isinstance(error, requests.exceptions.ConnectTimeout):
            return ServerProblem(f"{url}: cannot connect (no answer within {TIMEOUT[0]} s)")
        return ServerProblem(f"{url}: cannot connect ({_connection_reason(error)})")
    if isinstance(error, requests.Timeout):
        return AutosegInputError(f"{url}: {what}: no answer within {TIMEOUT[1]} s")
    return AutosegInputError(f"{url}: {what}: {type(error).__name__}: {error_reason(error, 120)}")


def _value(dataset: dict, tag: str) -> object | None:
    """The first value of ``tag`` in a DICOM JSON dataset, or None."""
    values = (dataset.get(tag) or {}).get("Value") or []
    return values[0] if values else None


def _integer(value: object) -> int | None:
    try:
        return int(str(value)) if value not in (None, "") else None
    except ValueError:
        return None


def list_series(client, url: str, study_uid: str) -> list[RemoteSeries]:
    """The series of ``study_uid`` (QIDO-RS), ordered by Series Number; a one-line error when the study has
    none (not found)."""
    try:
        found = client.search_for_series(study_instance_uid=study_uid, fields=list(SERIES_FIELDS),
                                         get_remaining=True)
    except requests.RequestException as error:
        raise request_problem(error, url, f"listing the series of study {study_uid}") from None
    except Exception as error:  # an answer that is not DICOM JSON
        raise AutosegInputError(f"{url}: listing the series of study {study_uid}: the answer cannot be read "
                                f"({error_reason(error, 120)})") from None
    series = []
    for dataset in found:
        uid = str(_value(dataset, "0020000E") or "")
        if not UID_PATTERN.fullmatch(uid):
            continue  # a result without a usable Series Instance UID cannot be fetched
        series.append(RemoteSeries(uid, str(_value(dataset, "00080060") or ""), _integer(_value(dataset, "00200011")),
                                   str(_value(dataset, "0008103E") or "").strip(),
                                   _integer(_value(dataset, "00201209"))))
    if not series:
        raise AutosegInputError(f"{url}: study {study_uid} not found (QIDO-RS lists no series of it)")
    return sorted(series, key=lambda s: (s.number if s.number is not None else 0, s.uid))


def is_image_series(series: RemoteSeries) -> bool:
    """Whether a series may hold images to segment (its Modality is not a non-image one)."""
    return series.modality.upper() not in NON_IMAGE_MODALITIES


def download_series(client, url: str, study_uid: str, series: RemoteSeries, study_folder: Path) -> tuple[Path, bool]:
    """``(folder, downloaded)``: the series' instances in ``study_folder/{uid}/`` (WADO-RS), written into a
    partial folder renamed when complete; ``downloaded`` False when a complete folder was already there.
    A failure is one line (:func:`request_problem`); the partial folder is left for the next run to replace."""
    target = study_folder / series.uid
    if target.is_dir():
        return target, False
    partial = study_folder / f".{series.uid}{PARTIAL_SUFFIX}"
    if partial.exists():
        shutil.rmtree(partial)
    partial.mkdir(parents=True)
    count = 0
    what = f"retrieving series {series.uid}"
    try:
        with warnings.catch_warnings():  # pydicom warns about sloppy headers real scanners write
            warnings.simplefilter("ignore")
            for dataset in client.iter_series(study_instance_uid=study_uid, series_instance_uid=series.uid):
                path = partial / f"{count:05d}.dcm"
                temporary = path.with_suffix(".tmp")
                dataset.save_as(temporary, enforce_file_format=True)
                os.replace(temporary, path)
                count += 1
    except requests.RequestException as error:
        raise request_problem(error, url, what) from None
    except OSError:
        raise  # the work folder's (full disk, permissions): the command line reports it
    except Exception as error:  # an instance that is not valid DICOM, a broken multipart answer
        raise AutosegInputError(f"{url}: {what}: instance {count + 1} cannot be read "
                                f"({type(error).__name__}: {error_reason(error, 120)})") from None
    if count == 0:
        raise AutosegInputError(f"{url}: {what}: the server sent no instances")
    if series.instances is not None and count < series.instances:
        raise AutosegInputError(f"{url}: {what}: {count} of the {series.instances} instances arrived")
    os.replace(partial, target)
    return target, True


def fetch_study(client, url: str, study_uid: str, work_folder: Path, log: Log = print) -> StudyDownload:
    """Every image series of ``study_uid`` in ``work_folder/{study}/{series}/`` (the module docstring says
    how); a series that fails is reported in the result, a :class:`ServerProblem` ends the run."""
    series_list = list_series(client, url, study_uid)
    result = StudyDownload(work_folder / study_uid)
    images = []
    for series in series_list:
        if is_image_series(series):
            images.append(series)
        else:
            result.not_images.append(series.uid)
            log(f"skipping {series.label()}: {series.modality or 'no Modality'} is not an image series")
    if not images:
        raise AutosegInputError(f"{url}: study {study_uid} has no image series (only "
                                f"{', '.join(sorted({s.modality or '?' for s in series_list}))})")
    result.folder.mkdir(parents=True, exist_ok=True)
    for series in images:
        try:
            folder, downloaded = download_series(client, url, study_uid, series, result.folder)
        except ServerProblem:
            raise
        except AutosegInputError as error:
            result.failed[series.uid] = str(error)
            continue
        if downloaded:
            result.downloaded.append(series.uid)
            log(f"downloaded {series.label()}: {sum(1 for _ in folder.iterdir())} instance(s)")
        else:
            result.reused.append(series.uid)
            log(f"{series.label()}: already downloaded ({folder})")
    return result


def stored_uids(study_folder: Path) -> set[str]:
    """SOP Instance UIDs already stored from this study's work folder."""
    record = study_folder / STORED_RECORD
    return set(record.read_text().split()) if record.is_file() else set()


def store_segmentations(client, url: str, study_uid: str, files: Iterable[Path], study_folder: Path,
                        log: Log = print) -> dict[Path, str]:
    """Send each DICOM-SEG of ``files`` (STOW-RS) unless ``.stored`` lists it; the failures (file -> one
    line). Each one stored is added to ``.stored`` at once."""
    import pydicom

    done = stored_uids(study_folder)
    failed: dict[Path, str] = {}
    for path in files:
        try:
            dataset = pydicom.dcmread(path)
        except Exception as error:  # pydicom raises many kinds on damaged files
            failed[path] = f"{path}: cannot be read to be stored ({error_reason(error, 120)})"
            continue
        uid = str(dataset.get("SOPInstanceUID", ""))
        if uid and uid in done:
            log(f"{path.name}: already stored")
            continue
        try:
            answer = client.store_instances(datasets=[dataset], study_instance_uid=study_uid)
        except requests.RequestException as error:
            problem = request_problem(error, url, f"storing {path.name}")
            if isinstance(problem, ServerProblem):
                raise problem from None
            failed[path] = str(problem)
            continue
        refused = answer.get("FailedSOPSequence") if answer is not None else None
        if refused:
            reason = refused[0].get("FailureReason", "?")
            failed[path] = f"{url}: storing {path.name}: the server refused it (failure reason {reason})"
            continue
        with (study_folder / STORED_RECORD).open("a") as record:
            record.write(uid + "\n")
        done.add(uid)
        log(f"stored {path.name} (SOP Instance {uid}) -> {url}")
    return failed

