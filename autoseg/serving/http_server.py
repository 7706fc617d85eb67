"""The HTTP face of the segmentation service (``autoseg serve``), on Python's standard library.

Endpoints:

- ``POST /segment``: the request body is the scan (an image file, or a zip of a DICOM series or
  of a multi-channel case's files), named by the ``X-Filename`` header or ``?filename=`` (else
  told by its first bytes). ``?output_format=dicom-seg`` asks for a DICOM Segmentation of a
  DICOM series. The response body is the segmentation in the input's format (NIfTI for DICOM),
  with the per-case report (volume and components per class, model agreement, flag) as compact
  JSON in the ``X-Autoseg-Report`` header and the prediction time in ``X-Autoseg-Seconds``.
- ``GET /health``: ``{"status": "ok", "queued", "capacity", "served", "failed", "uptime_s"}``,
  plus the model when the request is authorised (or no token is configured).

Every error is JSON ``{"error": "one line"}`` with a 4xx status: 400 bad upload (the CLI's own
message), 401 missing/wrong token (``Authorization: Bearer TOKEN``), 404 unknown path, 411 no
Content-Length, 413 upload over the limit (refused before reading it), 415 a form upload, 503 the
queue is full (with ``Retry-After``). Only a bug in autoseg gives a 500, with a one-line message;
its traceback goes to the server's log, never to the client.

Why the standard library and not FastAPI/uvicorn: one endpoint whose work takes seconds of
network time per request, so the web framework's speed does not matter, and a hospital machine
that runs the model offline needs no further packages. ``ThreadingHTTPServer`` gives each
connection a thread; the work itself is serialised by :class:`SegmentationService`.
"""

from __future__ import annotations

import hmac
import json
import sys
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from autoseg import __version__
from autoseg.errors import AutosegInputError
from autoseg.inference.predict_folder import OUTPUT_FORMATS
from autoseg.serving.service import SegmentationService, ServiceBusy, report_summary

#: Seconds a client may stay silent while sending a request before its connection is closed.
SOCKET_TIMEOUT_SECONDS = 120
#: Seconds a client is told to wait after a 503 (queue full).
RETRY_AFTER_SECONDS = 5
_CHUNK = 1 << 20


class SegmentationServer(ThreadingHTTPServer):
    """A threading HTTP server holding the service and the access token (None: no authentication)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], service: SegmentationService, token: str | None = None,
                 log: bool = True):
        super().__init__(address, SegmentationRequestHandler)
        self.service = service
        self.token = token
        self.log = log

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host}:{port}"


class SegmentationRequestHandler(BaseHTTPRequestHandler):
    """One HTTP request (see the module docstring)."""

    server: SegmentationServer
    protocol_version = "HTTP/1.1"
    server_version = f"autoseg/{__version__}"
    timeout = SOCKET_TIMEOUT_SECONDS

    # -- helpers ---------------------------------------------------------------------------------------

    def _send(self, status: int, body: bytes, content_type: str, headers: dict[str, str] | None = None,
              close: bool = False) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if close:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, content: dict, headers: dict[str, str] | None = None, close: bool = False) -> None:
        self._send(status, json.dumps(content).encode() + b"\n", "application/json", headers, close)

    def _error(self, status: int, message: str, headers: dict[str, str] | None = None, close: bool = False) -> None:
        self._json(status, {"error": " ".join(message.split())}, headers, close)

    def _authorised(self) -> bool:
        token = self.server.token
        if token is None:
            return True
        given = self.headers.get("Authorization", "")
        scheme, _, value = given.partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(value.strip().encode(), token.encode())

    def log_message(self, format: str, *args) -> None:  # noqa: A002 (BaseHTTPRequestHandler's signature)
        if self.server.log:
            sys.stderr.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {self.client_address[0]} {format % args}\n")

    # -- endpoints -------------------------------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        path = urlsplit(self.path).path
        if path != "/health":
            self._error(HTTPStatus.NOT_FOUND, f"{path}: not found; use GET /health or POST /segment")
            return
        self._json(HTTPStatus.OK, self.server.service.health(detailed=self._authorised()))

    def _refusal(self) -> tuple[int, str, dict[str, str]] | None:
        """Why a POST is refused before its body is read (status, message, headers), or None."""
        url = urlsplit(self.path)
        if url.path != "/segment":
            return HTTPStatus.NOT_FOUND, f"{url.path}: not found; use POST /segment", {}
        output_format = (parse_qs(url.query).get("output_format") or ["nifti"])[0]
        if output_format not in OUTPUT_FORMATS:
            return (HTTPStatus.BAD_REQUEST, f"output_format {output_format!r} is not one of "
                    f"{', '.join(OUTPUT_FORMATS)}", {})
        if not self._authorised():
            return (HTTPStatus.UNAUTHORIZED, "missing or wrong token (send 'Authorization: Bearer TOKEN')",
                    {"WWW-Authenticate": "Bearer"})
        length = self.headers.get("Content-Length")
        if length is None or not length.isdigit():
            return (HTTPStatus.LENGTH_REQUIRED, "send the scan as the request body with a Content-Length (e.g. curl "
                    "--data-binary @scan.nii.gz)", {})
        limit = self.server.service.max_upload_bytes
        if int(length) > limit:
            return (HTTPStatus.REQUEST_ENTITY_TOO_LARGE, f"upload of {int(length) / 2**20:.1f} MiB is over this "
                    f"server's limit of {limit / 2**20:.0f} MiB", {})
        if self.headers.get("Content-Type", "").startswith("multipart/"):
            return (HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send the scan itself as the request body (curl --data-binary "
                    "@scan.nii.gz -H 'X-Filename: scan.nii.gz'), not as a form", {})
        return None

    def handle_expect_100(self) -> bool:
        """A client that asks before sending its body (``Expect: 100-continue``, as curl does for large
        uploads) is refused before it uploads anything."""
        refusal = self._refusal() if self.command == "POST" else None
        if refusal is not None:
            self._error(refusal[0], refusal[1], refusal[2], close=True)
            return False
        return super().handle_expect_100()

    def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
        refusal = self._refusal()
        if refusal is not None:  # answered without reading the body: the connection closes
            self._error(refusal[0], refusal[1], refusal[2], close=True)
            return
        url = urlsplit(self.path)
        length = int(self.headers["Content-Length"])
        service = self.server.service
        query = parse_qs(url.query)
        filename = self.headers.get("X-Filename") or (query.get("filename") or [None])[0]
        output_format = (query.get("output_format") or ["nifti"])[0]
        try:
            folder = service.reserve()
        except ServiceBusy as busy:
            self._error(HTTPStatus.SERVICE_UNAVAILABLE, str(busy), {"Retry-After": str(RETRY_AFTER_SECONDS)},
                        close=True)
            return
        try:  # the slot is given back before answering, so a client's next request finds it free
            if not self._receive(folder / "upload", length):
                return
            result = service.segment(folder, filename, output_format)
        except AutosegInputError as error:
            failure: tuple[int, str] | None = (HTTPStatus.BAD_REQUEST, str(error))
        except Exception as error:  # a bug in autoseg: logged with its traceback by the service
            failure = (HTTPStatus.INTERNAL_SERVER_ERROR,
                       f"internal error ({type(error).__name__}: {error}); see the server log")
        else:
            failure = None
        finally:
            service.release(folder)
        if failure is not None:
            self._error(*failure)
            return
        report = json.dumps(report_summary(result.report), separators=(",", ":"), ensure_ascii=True)
        self._send(HTTPStatus.OK, result.content, result.content_type, {
            "Content-Disposition": f'attachment; filename="{result.filename}"',
            "X-Autoseg-Report": report, "X-Autoseg-Seconds": f"{result.seconds:.3f}"})

    def _receive(self, path: Path, length: int) -> bool:
        """Stream ``length`` bytes of the body to ``path``; False (connection dropped) when it ends early."""
        remaining = length
        with open(path, "wb") as handle:
            while remaining:
                try:
                    chunk = self.rfile.read(min(_CHUNK, remaining))
                except (TimeoutError, ConnectionError):
                    chunk = b""
                if not chunk:
                    self.close_connection = True
                    return False
                handle.write(chunk)
                remaining -= len(chunk)
        return True


def serve(service: SegmentationService, host: str = "127.0.0.1", port: int = 8000, token: str | None = None,
          log: bool = True) -> SegmentationServer:
    """A started-up (bound, not yet serving) server; call ``serve_forever()`` on it."""
    try:
        return SegmentationServer((host, port), service, token, log)
    except OSError as error:
        raise AutosegInputError(f"{host}:{port}: cannot listen there ({error.strerror})") from None
