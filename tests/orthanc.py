"""A real Orthanc PACS for the integration tests: started from a config file of the test's own, on free
loopback ports, with the DICOMweb plugin, HTTP basic authentication and a database in a temporary folder.

``.ci/run`` installs the Debian packages ``orthanc`` and ``orthanc-dicomweb``; where they are absent
the tests that need them skip with that reason.
"""

from __future__ import annotations

import base64
import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

ORTHANC = shutil.which("Orthanc") or "/usr/sbin/Orthanc"
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
USER, PASSWORD = "autoseg", "test-secret"
AE_TITLE = "ORTHANC"


def orthanc_missing() -> str | None:
    """Why Orthanc cannot run here, or None."""
    if not Path(ORTHANC).exists():
        return "Orthanc is not installed (apt-get install orthanc orthanc-dicomweb)"
    if not DICOMWEB_PLUGIN.exists():
        return "the Orthanc DICOMweb plugin is not installed (apt-get install orthanc-dicomweb)"
    return None


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass
class Orthanc:
    """A running Orthanc: its REST API (``get``/``post``), its DICOMweb root and its DICOM port."""

    process: subprocess.Popen
    http_port: int
    dicom_port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def dicomweb_url(self) -> str:
        return f"{self.url}/dicom-web"

    def _request(self, method: str, path: str, body: bytes | None = None, content_type: str | None = None):
        request = urllib.request.Request(self.url + path, data=body, method=method)
        token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
        if content_type:
            request.add_header("Content-Type", content_type)
        with urllib.request.urlopen(request, timeout=60) as response:
            content = response.read()
        return json.loads(content) if content[:1] in (b"{", b"[") else content

    def get(self, path: str):
        return self._request("GET", path)

    def post(self, path: str, body: bytes | dict, content_type: str = "application/json"):
        data = json.dumps(body).encode() if isinstance(body, dict) else body
        return self._request("POST", path, data, content_type)

    def upload(self, folder: Path) -> list[str]:
        """POST every file of ``folder`` to /instances; the Orthanc ids of the instances."""
        return [self.post("/instances", path.read_bytes(), "application/dicom")["ID"]
                for path in sorted(folder.rglob("*")) if path.is_file()]

    def series_of_modality(self, modality: str) -> list[dict]:
        """The series Orthanc holds whose Modality is ``modality`` (their main DICOM tags)."""
        found = []
        for series_id in self.get("/series"):
            series = self.get(f"/series/{series_id}")
            if series["MainDicomTags"].get("Modality") == modality:
                found.append(series)
        return found

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()


def start_orthanc(folder: Path, modalities: dict[str, tuple[str, str, int]] | None = None) -> Orthanc:
    """Start Orthanc with a config of its own under ``folder``; ``modalities``: name -> (AE title, host, port)
    of the DICOM peers it may send to."""
    folder.mkdir(parents=True, exist_ok=True)
    http_port, dicom_port = free_port(), free_port()
    config = {
        "Name": "autoseg-test", "StorageDirectory": str(folder / "db"), "IndexDirectory": str(folder / "db"),
        "HttpPort": http_port, "DicomPort": dicom_port, "DicomAet": AE_TITLE,
        "RemoteAccessAllowed": False, "AuthenticationEnabled": True, "RegisteredUsers": {USER: PASSWORD},
        "Plugins": [str(DICOMWEB_PLUGIN)], "DicomWeb": {"Enable": True, "Root": "/dicom-web/"},
        "DicomModalities": {name: list(peer) for name, peer in (modalities or {}).items()},
        "DicomCheckCalledAet": False, "DicomAlwaysAllowStore": True, "DicomAlwaysAllowEcho": True,
        "StableAge": 2, "HttpTimeout": 60, "DicomScuTimeout": 30,
    }
    (folder / "orthanc.json").write_text(json.dumps(config, indent=1))
    log = folder / "orthanc.log"
    process = subprocess.Popen([ORTHANC, str(folder / "orthanc.json")], stdout=open(log, "wb"),
                               stderr=subprocess.STDOUT)
    orthanc = Orthanc(process, http_port, dicom_port, log)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"Orthanc exited at start: {log.read_text()[-2000:]}")
        try:
            orthanc.get("/system")
            return orthanc
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(0.3)
    orthanc.stop()
    raise RuntimeError(f"Orthanc did not answer within 60 s: {log.read_text()[-2000:]}")
