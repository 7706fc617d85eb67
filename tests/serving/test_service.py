"""``autoseg serve`` end to end on a tiny trained model: responses equal the CLI's files, bad uploads
get one-line 4xx answers, auth, limits, a full queue, concurrent clients, and the command itself."""

from __future__ import annotations

import http.client
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
from helpers import make_tiny_work_dir

from autoseg.inference.predict_folder import FolderPredictor, InferenceChoice, predict_folder
from autoseg.io.images import read_label
from autoseg.plans.training import IterationPlan
from autoseg.serving.http_server import serve
from autoseg.serving.service import SegmentationService
from autoseg.training.trainer import Trainer, TrainingOptions

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A work folder with two trained 3d_fullres folds, its test scans and the CLI's segmentations of them."""
    root = tmp_path_factory.mktemp("serve")
    dataset, work = make_tiny_work_dir(root, num_training=6, num_test=3)
    for fold in (0, 1):
        Trainer(work, "3d_fullres", fold, TrainingOptions(num_workers=0, progress=False),
                iteration_plan=IterationPlan(1, 2, 1)).run()
    choice = InferenceChoice(["3d_fullres"])
    predict_folder(work, dataset / "imagesTs", root / "cli", choice, use_mirroring=False, progress=False)
    scans = sorted((dataset / "imagesTs").iterdir())
    assert len({read_label(path)[0].shape for path in scans}) > 1  # different sizes: a mix-up would show
    return work, scans, root / "cli"


@contextmanager
def running(model, token=None, max_upload_bytes=1 << 30, capacity=16):
    work = model[0]
    predictor = FolderPredictor(work, InferenceChoice(["3d_fullres"]), use_mirroring=False)
    service = SegmentationService(work, predictor, max_upload_bytes, capacity)
    server = serve(service, "127.0.0.1", 0, token, log=False)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        service.close()
    assert not service.scratch_dir.exists()


def request(server, method, path, body=None, headers=None, length=None):
    """(status, headers, body) of one request; with ``length``, only headers announcing that many bytes are
    sent, and the answer read before any body (as a client sending ``Expect: 100-continue`` does)."""
    connection = http.client.HTTPConnection(*server.server_address[:2], timeout=60)
    try:
        if length is None:
            connection.request(method, path, body=body, headers=headers or {})
        else:
            connection.putrequest(method, path)
            for name, value in {**(headers or {}), "Content-Length": str(length), "Expect": "100-continue"}.items():
                connection.putheader(name, value)
            connection.endheaders()
        response = connection.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        connection.close()


def segmentation_of(content: bytes) -> np.ndarray:
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "seg.nii.gz"
        path.write_bytes(content)
        return read_label(path)[0]


def expected(model, scan: Path) -> np.ndarray:
    return read_label(model[2] / scan.name.replace("_0000.nii.gz", ".nii.gz"))[0]


def test_a_scan_gets_the_cli_segmentation_and_its_report(model):
    scan = model[1][0]
    with running(model) as server:
        status, headers, body = request(server, "POST", "/segment", scan.read_bytes(), {"X-Filename": scan.name})
        assert status == 200, body
        np.testing.assert_array_equal(segmentation_of(body), expected(model, scan))
        assert headers["Content-Disposition"] == f'attachment; filename="{scan.name.replace("_0000", "")}"'
        report = json.loads(headers["X-Autoseg-Report"])
        assert set(report["classes"]) and report["flag"] in {"ok", "review"}  # two folds: agreement measured
        assert float(headers["X-Autoseg-Seconds"]) > 0
        # no name: the format is told by the bytes (gzip -> .nii.gz)
        status, _, body = request(server, "POST", "/segment", scan.read_bytes())
        assert status == 200 and np.array_equal(segmentation_of(body), expected(model, scan))
        status, _, body = request(server, "GET", "/health")
        health = json.loads(body)
        assert status == 200 and health["served"] == 2 and health["configurations"] == ["3d_fullres"]


def test_bad_requests_get_a_one_line_4xx(model, tmp_path):
    import SimpleITK as sitk

    png = tmp_path / "slice.png"
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((16, 16), np.uint8)), str(png))
    with running(model, max_upload_bytes=4 << 20) as server:
        answers = {
            "corrupt": request(server, "POST", "/segment", b"\x1f\x8b" + os.urandom(4000), {"X-Filename": "ct.nii.gz"}),
            "text": request(server, "POST", "/segment", b"hello" * 100, {"X-Filename": "notes.txt"}),
            "too large": request(server, "POST", "/segment", headers={"X-Filename": "ct.nii.gz"}, length=5 << 20),
            "form": request(server, "POST", "/segment", b"--x\r\n",
                            {"Content-Type": "multipart/form-data; boundary=x"}),
            "path": request(server, "POST", "/predict", b"x"),
            "format": request(server, "POST", "/segment?output_format=png", b"x"),
            "2d": request(server, "POST", "/segment", png.read_bytes(), {"X-Filename": "slice.png"}),
        }
        statuses = {name: answer[0] for name, answer in answers.items()}
        assert statuses == {"corrupt": 400, "text": 400, "too large": 413, "form": 415, "path": 404, "format": 400,
                            "2d": 400}
        for name, (_, _, body) in answers.items():
            message = json.loads(body)["error"]
            assert "\n" not in message and "Traceback" not in message, name
            assert tempfile.gettempdir() not in message, (name, message)  # no server paths
        assert json.loads(answers["corrupt"][2])["error"].startswith("ct.nii.gz")
        status, _, body = request(server, "GET", "/health")
        assert status == 200 and json.loads(body)["queued"] == 0  # every refused request gave its slot back


def test_a_token_guards_segment_and_the_model_details(model):
    scan = model[1][0]
    with running(model, token="s3cret") as server:
        assert request(server, "POST", "/segment", scan.read_bytes())[0] == 401
        assert request(server, "POST", "/segment", scan.read_bytes(), {"Authorization": "Bearer wrong"})[0] == 401
        status, _, body = request(server, "POST", "/segment", scan.read_bytes(), {"Authorization": "Bearer s3cret"})
        assert status == 200 and np.array_equal(segmentation_of(body), expected(model, scan))
        status, _, body = request(server, "GET", "/health")
        assert status == 200 and "model" not in json.loads(body)
        assert "model" in json.loads(request(server, "GET", "/health", headers={"Authorization": "Bearer s3cret"})[2])


def test_a_full_queue_answers_503_and_frees_nothing_it_does_not_hold(model):
    scan = model[1][0]
    with running(model, capacity=1) as server:
        held = server.service.reserve()  # the one slot, as a request still uploading would hold it
        status, headers, body = request(server, "POST", "/segment", scan.read_bytes())
        assert status == 503 and headers["Retry-After"] and "already queued" in json.loads(body)["error"]
        server.service.release(held)
        assert request(server, "POST", "/segment", scan.read_bytes())[0] == 200


def test_concurrent_clients_each_get_their_own_case(model):
    scans = model[1]
    results: dict[tuple[int, int], tuple[int, bytes]] = {}

    def client(number: int) -> None:
        for round_ in range(2):
            scan = scans[(number + round_) % len(scans)]
            status, _, body = request(server, "POST", "/segment", scan.read_bytes(), {"X-Filename": scan.name})
            results[number, round_] = status, body

    with running(model) as server:
        threads = [threading.Thread(target=client, args=(number,)) for number in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=300)
    assert len(results) == 8
    for (number, round_), (status, body) in results.items():
        assert status == 200
        np.testing.assert_array_equal(segmentation_of(body), expected(model, scans[(number + round_) % len(scans)]))


def test_the_serve_command_starts_answers_and_stops_on_sigterm(model, tmp_path):
    work, scans, _ = model
    (tmp_path / "token").write_text("abc\n")
    process = subprocess.Popen([sys.executable, "-m", "autoseg.cli", "serve", "-m", str(work), "--port", "0",
                                "-c", "3d_fullres", "--no-tta", "--token-file", str(tmp_path / "token"), "--quiet"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "TQDM_DISABLE": "1"})
    try:
        lines = [process.stdout.readline() for _ in range(2)]
        assert "serving on http://127.0.0.1:" in lines[1] and "token required" in lines[1], lines
        host, port = lines[1].split("http://")[1].split()[0].split(":")
        connection = http.client.HTTPConnection(host, int(port), timeout=60)
        connection.request("POST", "/segment", body=scans[1].read_bytes(), headers={"Authorization": "Bearer abc"})
        response = connection.getresponse()
        assert response.status == 200
        np.testing.assert_array_equal(segmentation_of(response.read()), expected(model, scans[1]))
        connection.close()
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "stopped: 1 served" in out


def test_a_zipped_dicom_series_gets_a_nifti_or_a_dicom_seg(model, tmp_path):
    import zipfile

    from autoseg.io.images import read_image
    from autoseg.synthetic.dicom_series import write_ct_series

    work, scans, _ = model
    volume, geometry = read_image(scans[0])
    hu = np.clip(np.rint(volume), -1024, 3000).astype(np.int32)
    series = tmp_path / "cli" / "patient7"
    write_ct_series(hu, series, geometry.spacing, geometry.sitk_origin)
    predict_folder(work, tmp_path / "cli", tmp_path / "cli_out", InferenceChoice(["3d_fullres"]), use_mirroring=False,
                   progress=False)
    upload = tmp_path / "patient7.zip"
    with zipfile.ZipFile(upload, "w") as archive:
        for path in sorted(series.iterdir()):
            archive.write(path, f"DICOM/{path.name}")
    with running(model) as server:
        status, headers, body = request(server, "POST", "/segment", upload.read_bytes(), {"X-Filename": upload.name})
        assert status == 200, body
        assert headers["Content-Disposition"].endswith('patient7.nii.gz"')
        np.testing.assert_array_equal(segmentation_of(body), read_label(tmp_path / "cli_out" / "patient7.nii.gz")[0])
        status, headers, body = request(server, "POST", "/segment?output_format=dicom-seg", upload.read_bytes(),
                                        {"X-Filename": upload.name})
        assert status == 200 and headers["Content-Type"] == "application/dicom" and body[128:132] == b"DICM"


# -- hostile and careless clients ---------------------------------------------------------------------------


def answer_until_closed(connection) -> bytes:
    """Everything the server sends until it closes the connection (headers and body may come apart)."""
    answer = b""
    while chunk := connection.recv(4096):
        answer += chunk
    return answer


def test_a_stalled_upload_loses_its_slot_and_others_are_served(model, monkeypatch):
    import socket
    import time

    from autoseg.serving import http_server

    monkeypatch.setattr(http_server, "UPLOAD_GRACE_SECONDS", 1.0)
    scan = model[1][0]
    with running(model, capacity=1) as server:
        stalled = socket.create_connection(server.server_address[:2], timeout=30)
        stalled.sendall(b"POST /segment HTTP/1.1\r\nHost: x\r\nContent-Length: 100000\r\n\r\n" + b"\x1f")
        time.sleep(0.3)
        assert server.service.queued == 1  # the trickling client holds the only slot ...
        began = time.monotonic()
        answer = answer_until_closed(stalled)  # ... until it falls below the minimum rate
        assert b" 408 " in answer.split(b"\r\n")[0] and b"upload too slow" in answer
        assert time.monotonic() - began < 10
        stalled.close()
        assert request(server, "POST", "/segment", scan.read_bytes())[0] == 200


def test_headers_that_trickle_are_cut_off(model, monkeypatch):
    import socket
    import time

    from autoseg.serving import http_server

    monkeypatch.setattr(http_server, "HEADER_SECONDS", 1.0)
    with running(model) as server:
        slow = socket.create_connection(server.server_address[:2], timeout=30)
        began = time.monotonic()
        for byte in b"POST /segment HTTP/1.1\r\n":
            try:
                slow.sendall(bytes([byte]))
            except OSError:
                break
            time.sleep(0.2)
        assert slow.recv(4096) == b"" and time.monotonic() - began < 10  # closed by the watchdog
        slow.close()


def test_connections_over_the_limit_get_503_at_once(model):
    import socket

    with running(model) as server:
        server.max_connections = 1
        idle = socket.create_connection(server.server_address[:2], timeout=30)
        try:
            status, _, body = request(server, "GET", "/health")
            assert status == 503 and "connections are open" in json.loads(body)["error"]
        finally:
            idle.close()


def test_client_mistakes_are_4xx_without_server_paths(model, tmp_path):
    import zipfile

    scan = model[1][0]
    collide = tmp_path / "collide.zip"
    with zipfile.ZipFile(collide, "w") as archive:
        archive.writestr("a", b"x")
        archive.writestr("a/b", b"y")
    emoji = tmp_path / "emoji.zip"
    with zipfile.ZipFile(emoji, "w") as archive:
        archive.write(scan, "\N{GRINNING FACE}_0000.nii.gz")
    with running(model) as server:
        long_name = request(server, "POST", "/segment", scan.read_bytes(), {"X-Filename": "n" * 300 + ".nii.gz"})
        collided = request(server, "POST", "/segment", collide.read_bytes(), {"X-Filename": "collide.zip"})
        emojied = request(server, "POST", "/segment", emoji.read_bytes(), {"X-Filename": "emoji.zip"})
    assert long_name[0] == 200 and np.array_equal(segmentation_of(long_name[2]), expected(model, scan))
    assert collided[0] == 400 and json.loads(collided[2])["error"].startswith("collide.zip: zip holds both a file")
    assert emojied[0] == 200 and "filename*=UTF-8''%F0%9F%98%80.nii.gz" in emojied[1]["Content-Disposition"]
    for _, _, body in (long_name, collided):
        assert tempfile.gettempdir() not in body.decode(errors="replace")


def test_an_upload_decoding_past_the_voxel_limit_is_413(model):
    scan = model[1][0]
    with running(model) as server:
        server.service.max_voxels = 100
        status, _, body = request(server, "POST", "/segment", scan.read_bytes(), {"X-Filename": scan.name})
    assert status == 413 and "voxels, more than this server's limit of 100" in json.loads(body)["error"]


def test_an_internal_error_names_its_type_and_log_number_only(model, monkeypatch, capsys):
    scan = model[1][0]
    with running(model) as server:
        def broken(*_):
            raise KeyError(f"{server.service.scratch_dir}/request-x/input")

        monkeypatch.setattr(server.service, "segment", broken)
        status, _, body = request(server, "POST", "/segment", scan.read_bytes())
    message = json.loads(body)["error"]
    assert status == 500 and message == "internal error 1 (KeyError); see the server log"
    assert "internal error 1:" in capsys.readouterr().err


def test_serving_the_network_needs_a_token_or_an_explicit_opt_out(model):
    from autoseg.errors import AutosegInputError

    with pytest.raises(AutosegInputError, match="--host 0.0.0.0: other machines could send scans"):
        serve(None, "0.0.0.0", 0)
    work = model[0]
    predictor = FolderPredictor(work, InferenceChoice(["3d_fullres"]), use_mirroring=False)
    service = SegmentationService(work, predictor, model_name="kidney.zip")
    server = serve(service, "0.0.0.0", 0, log=False, allow_unauthenticated=True)
    try:
        assert service.health(detailed=True)["model"] == "kidney.zip"  # the name, never the server's path
    finally:
        server.server_close()
        service.close()
