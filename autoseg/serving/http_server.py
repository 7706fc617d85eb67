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
message), 401 missing/wrong token (``Authorization: Bearer TOKEN``), 404 unknown path, 408 an upload
slower than :data:`MIN_UPLOAD_BYTES_PER_SECOND` after :data:`UPLOAD_GRACE_SECONDS` or longer than
the server's upload timeout, 411 no Content-Length, 413 upload over the limit (refused before
reading it) or decoding to more voxels than the limit, 415 a form upload, 503 the queue is full
(with ``Retry-After``). Only a bug in autoseg gives a 500, with a one-line message naming the
error's type and a number for the server's log, where its traceback is; no server path or
exception text reaches a client.

Slow clients cannot hold the service: a request's headers must arrive within
:data:`HEADER_SECONDS` (a watchdog closes the connection, however the bytes trickle), its body at
the minimum rate above, and at most :attr:`SegmentationServer.max_connections` connections are
served at once (more are answered 503 at once). The server refuses to listen beyond this machine
(any address but loopback) without a token unless told ``allow_unauthenticated``.

Why the standard library and not FastAPI/uvicorn: one endpoint whose work takes seconds of
network time per request, so the web framework's speed does not matter, and a hospital machine
that runs the model offline needs no further packages. ``ThreadingHTTPServer`` gives each
connection a thread; the work itself is serialised by :class:`SegmentationService`.
"""

from __future__ import annotations

import hmac
import ipaddress
import itertools
import json
import socket
import sys
import threading
import time
import traceback
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, quote, urlsplit

from autoseg import __version__
from autoseg.errors import AutosegInputError
from autoseg.inference.predict_folder import OUTPUT_FORMATS
from autoseg.serving.service import SegmentationService, ServiceBusy, report_summary, without_server_paths
from autoseg.serving.uploads import UploadTooLarge

#: Seconds a client may stay silent (between requests, or while receiving a response) before its
#: connection is closed.
SOCKET_TIMEOUT_SECONDS = 120
#: Seconds a request line and its headers may take to arrive, however slowly the bytes trickle.
HEADER_SECONDS = 30
#: An upload may take this many seconds before it must keep up :data:`MIN_UPLOAD_BYTES_PER_SECOND`
#: on average; a stalled or trickling client loses its queue slot then (408).
UPLOAD_GRACE_SECONDS = 30
#: Slowest average upload rate accepted after the grace period: 64 KiB/s (a 250 MB CT series in
#: about an hour; a real link is 100x faster).
MIN_UPLOAD_BYTES_PER_SECOND = 64 * 1024
#: Default longest time one upload may take, seconds (``--upload-timeout``).
DEFAULT_UPLOAD_SECONDS = 600
#: Seconds a client is told to wait after a 503 (queue full).
RETRY_AFTER_SECONDS = 5
_CHUNK = 1 << 20


class SegmentationServer(ThreadingHTTPServer):
    """A threading HTTP server holding the service and the access token (None: no authentication)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], service: SegmentationService, token: str | None = None,
                 log: bool = True, upload_seconds: float = DEFAULT_UPLOAD_SECONDS):
        super().__init__(address, SegmentationRequestHandler)
        self.service = service
        self.token = token
        self.log = log
        self.upload_seconds = upload_seconds
        #: Connections served at once; more are answered 503 and closed (each holds a thread).
        self.max_connections = 4 * service.capacity + 16
        self._connections = 0
        self._connections_lock = threading.Lock()
        self._error_numbers = itertools.count(1)

    def process_request(self, request, client_address) -> None:
        with self._connections_lock:
            full = self._connections >= self.max_connections
            if not full:
                self._connections += 1
        if full:
            _refuse_connection(request, self.max_connections)
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._connections_lock:
                self._connections -= 1

    def error_number(self) -> int:
        """A fresh number tying a 500 answer to its traceback in the server's log."""
        return next(self._error_numbers)

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

    # -- connection ------------------------------------------------------------------------------------

    def handle_one_request(self) -> None:
        """One request, with a watchdog that drops the connection when its headers are not in within
        :data:`HEADER_SECONDS` (the socket timeout alone is reset by every trickled byte)."""
        self._watchdog = threading.Timer(HEADER_SECONDS, self._drop_connection)
        self._watchdog.daemon = True
        self._watchdog.start()
        try:
            super().handle_one_request()
        finally:
            self._watchdog.cancel()

    def _drop_connection(self) -> None:
        try:
            self.connection.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass

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
        self._watchdog.cancel()
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
        self._watchdog.cancel()
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
        failure: tuple[int, str, dict[str, str]] | None = None
        try:  # the slot is given back before answering, so a client's next request finds it free
            problem = self._receive(folder / "upload", length)
            if problem:
                failure = (HTTPStatus.REQUEST_TIMEOUT, problem, {})
            elif problem is None:
                result = service.segment(folder, filename, output_format)
        except UploadTooLarge as error:
            failure = (HTTPStatus.REQUEST_ENTITY_TOO_LARGE, str(error), {})
        except AutosegInputError as error:
            failure = (HTTPStatus.BAD_REQUEST, str(error), {})
        except ServiceBusy as busy:
            failure = (HTTPStatus.SERVICE_UNAVAILABLE, str(busy), {"Retry-After": str(RETRY_AFTER_SECONDS)})
        except Exception as error:  # a bug in autoseg: its traceback to the server's log only
            number = self.server.error_number()
            sys.stderr.write(f"autoseg serve: internal error {number}:\n")
            traceback.print_exception(error, file=sys.stderr)
            failure = (HTTPStatus.INTERNAL_SERVER_ERROR,
                       f"internal error {number} ({type(error).__name__}); see the server log", {})
        finally:
            service.release(folder)
        if failure is not None:
            self._error(failure[0], without_server_paths(failure[1], (service.scratch_dir, service.model)),
                        failure[2], close=failure[0] == HTTPStatus.REQUEST_TIMEOUT)
            return
        if problem == "":  # the client went away during the upload
            return
        report = json.dumps(report_summary(result.report), separators=(",", ":"), ensure_ascii=True)
        self._send(HTTPStatus.OK, result.content, result.content_type, {
            "Content-Disposition": content_disposition(result.filename),
            "X-Autoseg-Report": report, "X-Autoseg-Seconds": f"{result.seconds:.3f}"})

    def _receive(self, path: Path, length: int) -> str | None:
        """Stream ``length`` bytes of the body to ``path``. Returns None when they all came, ``""`` when
        the connection dropped, else why the client was too slow:
        each read may wait only until the client falls below :data:`MIN_UPLOAD_BYTES_PER_SECOND`
        after :data:`UPLOAD_GRACE_SECONDS`, or past the server's upload timeout."""
        began = time.monotonic()
        received = 0
        try:
            with open(path, "wb") as handle:
                while received < length:
                    allowed = min(UPLOAD_GRACE_SECONDS + received / MIN_UPLOAD_BYTES_PER_SECOND,
                                  self.server.upload_seconds)
                    wait = began + allowed - time.monotonic()
                    if wait <= 0:
                        return self._too_slow(received, length, began)
                    self.connection.settimeout(wait)
                    try:
                        chunk = self.rfile.read1(min(_CHUNK, length - received))
                    except TimeoutError:
                        return self._too_slow(received, length, began)
                    except (ConnectionError, OSError):
                        chunk = b""
                    if not chunk:
                        self.close_connection = True
                        return ""
                    handle.write(chunk)
                    received += len(chunk)
        finally:
            if not self.close_connection:
                self.connection.settimeout(SOCKET_TIMEOUT_SECONDS)
        return None

    def _too_slow(self, received: int, length: int, began: float) -> str:
        self.close_connection = True
        return (f"upload too slow: {received} of {length} bytes in {time.monotonic() - began:.0f} s (at least "
                f"{MIN_UPLOAD_BYTES_PER_SECOND // 1024} KiB/s after {UPLOAD_GRACE_SECONDS} s, at most "
                f"{self.server.upload_seconds:g} s in all)")


def content_disposition(filename: str) -> str:
    """A ``Content-Disposition`` header for ``filename`` that HTTP's Latin-1 headers can carry: an
    ASCII ``filename`` (other characters as ``_``) and the exact name as RFC 6266/5987 ``filename*``."""
    fallback = "".join(c if 32 <= ord(c) < 127 and c not in '"\\' else "_" for c in filename)
    if fallback == filename:
        return f'attachment; filename="{filename}"'
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


def _refuse_connection(request: socket.socket, limit: int) -> None:
    """Answer 503 on a connection over the server's limit without reading from it."""
    body = json.dumps({"error": f"{limit} connections are open; retry later"}).encode() + b"\n"
    head = (f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {len(body)}"
            f"\r\nRetry-After: {RETRY_AFTER_SECONDS}\r\nConnection: close\r\n\r\n").encode()
    try:
        request.settimeout(1)
        request.sendall(head + body)
    except OSError:
        pass


def open_access_problem(host: str, token: str | None, allow_unauthenticated: bool) -> str | None:
    """Why serving on ``host`` is refused (other machines reach it and no token guards it), or None."""
    if token is not None or allow_unauthenticated or is_loopback(host):
        return None
    return (f"--host {host or '(every interface)'}: other machines could send scans and read segmentations without "
            "a token; set AUTOSEG_SERVE_TOKEN or --token-file, or pass --no-token to serve without one")


def is_loopback(host: str) -> bool:
    """Whether every address ``host`` names is this machine's loopback (``127.0.0.1``, ``::1``,
    ``localhost``); an empty host (every interface) or an unresolvable one is not."""
    if not host:
        return False
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
    except OSError:
        return False
    return bool(addresses) and all(ipaddress.ip_address(address.split("%")[0]).is_loopback for address in addresses)


def serve(service: SegmentationService, host: str = "127.0.0.1", port: int = 8000, token: str | None = None,
          log: bool = True, upload_seconds: float = DEFAULT_UPLOAD_SECONDS,
          allow_unauthenticated: bool = False) -> SegmentationServer:
    """A started-up (bound, not yet serving) server; call ``serve_forever()`` on it.

    Refuses (one line) to listen on an address other machines reach without a ``token``, unless
    ``allow_unauthenticated``: every scan sent and segmentation returned would be open to them."""
    problem = open_access_problem(host, token, allow_unauthenticated)
    if problem:
        raise AutosegInputError(problem)
    if upload_seconds <= 0:
        raise AutosegInputError(f"--upload-timeout must be positive, got {upload_seconds:g}")
    try:
        return SegmentationServer((host, port), service, token, log, upload_seconds)
    except OSError as error:
        raise AutosegInputError(f"{host}:{port}: cannot listen there ({error.strerror})") from None
