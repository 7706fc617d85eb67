"""``autoseg listen`` against a real Orthanc: the PACS C-STOREs a series, the node segments it and
C-STOREs the DICOM-SEG back; C-ECHO; a dataset that cannot be decoded, a series that cannot be
segmented and a calling AE not allowed leave the node running and lose nothing."""

from __future__ import annotations

import os
import struct
import time

import numpy as np
import pytest
from helpers import make_tiny_work_dir
from orthanc import free_port, orthanc_missing, start_orthanc

from autoseg.errors import AutosegInputError
from autoseg.pacs.dimse import Peer, send_files
from autoseg.pacs.listener import SeriesStore, series_key


def test_peers_are_parsed_or_refused_in_one_line():
    assert Peer.parse("ORTHANC@127.0.0.1:4242") == Peer("ORTHANC", "127.0.0.1", 4242)
    assert Peer.parse("PACS@[::1]:104") == Peer("PACS", "::1", 104)
    for bad in ("ORTHANC@127.0.0.1", "127.0.0.1:4242", "A_TITLE_LONGER_THAN_16@h:1", "X@h:70000"):
        with pytest.raises(AutosegInputError, match="--send-to"):
            Peer.parse(bad)


def test_series_without_a_uid_are_grouped_by_what_identifies_them():
    assert series_key("1.2.3", "9", 1, "CT1") == "1.2.3"
    blank = series_key("", "1.2", 3, "CT1")
    assert blank.startswith("unidentified-") and blank == series_key("", "1.2", 3, "CT1")
    assert blank != series_key("", "1.2", 4, "CT1") != series_key("", "1.2", 3, "CT2")
    assert series_key("../etc", "", "", "X").startswith("unidentified-")  # never a path


def test_a_series_left_mid_segmentation_is_received_again_after_a_restart(tmp_path):
    store = SeriesStore(tmp_path)
    store.write_instance("1.2.3", "1.2.3.4", b"x")
    store.take_for_segmenting("1.2.3")
    assert store.recover() == ["1.2.3"]  # killed while segmenting: back in received
    assert (store.received / "1.2.3" / "1.2.3.4.dcm").read_bytes() == b"x"
    assert not any(store.segmenting.iterdir())


missing = orthanc_missing()
needs_orthanc = pytest.mark.skipif(missing is not None, reason=missing or "")


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A trained tiny 3d_fullres fold and a CT series of one of its test scans (DICOM)."""
    from autoseg.io.images import read_image
    from autoseg.plans.training import IterationPlan
    from autoseg.synthetic.dicom_series import write_ct_series
    from autoseg.training.trainer import Trainer, TrainingOptions

    root = tmp_path_factory.mktemp("listen")
    dataset, work = make_tiny_work_dir(root, num_training=5, num_test=2)
    Trainer(work, "3d_fullres", 0, TrainingOptions(num_workers=0, progress=False),
            iteration_plan=IterationPlan(1, 2, 1)).run()
    volume, geometry = read_image(sorted((dataset / "imagesTs").iterdir())[0])
    hu = np.clip(np.rint(volume), -1024, 3000).astype(np.int32)
    write_ct_series(hu, root / "series", geometry.spacing, geometry.sitk_origin)
    return work, root / "series"


@pytest.fixture(scope="module")
def node(model, tmp_path_factory):
    """Orthanc and a listener that know each other; the listener accepts only ORTHANC and STORESCU."""
    from autoseg.inference.predict_folder import FolderPredictor, InferenceChoice
    from autoseg.pacs.listener import SeriesListener

    root = tmp_path_factory.mktemp("node")
    port = free_port()
    orthanc = start_orthanc(root / "orthanc", {"AUTOSEG": ("AUTOSEG", "127.0.0.1", port)})
    predictor = FolderPredictor(model[0], InferenceChoice(["3d_fullres"], folds=[0]), use_mirroring=False)
    listener = SeriesListener(model[0], predictor, root / "listen", "AUTOSEG", "127.0.0.1", port,
                              Peer("ORTHANC", "127.0.0.1", orthanc.dicom_port), ["ORTHANC", "STORESCU"],
                              idle_seconds=1.0)
    listener.start()
    yield orthanc, listener
    listener.stop()
    orthanc.stop()


def _wait_for(condition, seconds: float = 120):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError("timed out")


@needs_orthanc
@pytest.mark.slow
def test_a_series_the_pacs_sends_comes_back_as_a_seg_referencing_it(model, node):
    import io

    import pydicom

    orthanc, listener = node
    instances = orthanc.upload(model[1])
    series = orthanc.get(f"/instances/{instances[0]}/series")
    source_uid = series["MainDicomTags"]["SeriesInstanceUID"]
    orthanc.post("/modalities/AUTOSEG/store", {"Resources": [series["ID"]], "Synchronous": True})
    segs = _wait_for(lambda: orthanc.series_of_modality("SEG"))
    seg = pydicom.dcmread(io.BytesIO(orthanc.get(f"/instances/{segs[0]['Instances'][0]}/file")))
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == source_uid
    assert source_uid in listener.segmented and not listener.failed
    assert not any(listener.store.received.iterdir())  # the received images are deleted once the SEG is sent
    assert (listener.store.segmented / source_uid / "report.json").is_file()


@needs_orthanc
@pytest.mark.slow
def test_the_node_answers_c_echo(node):
    orthanc, _ = node
    assert orthanc.post("/modalities/AUTOSEG/echo", {}) is not None  # Orthanc answers 200 when the echo succeeds


@needs_orthanc
@pytest.mark.slow
def test_an_undecodable_dataset_gets_a_failure_status_and_the_node_goes_on(node, tmp_path, capfd, monkeypatch):
    import pynetdicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.filewriter import write_file_meta_info
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    _, listener = node
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = CTImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian

    def element(group: int, number: int, vr: bytes, value: bytes) -> bytes:
        value += b"\0" * (len(value) % 2)
        return struct.pack("<HH", group, number) + vr + struct.pack("<H", len(value)) + value

    # SOP Class and Instance (what the sender reads), then a sequence of undefined length holding junk
    body = (element(0x0008, 0x0016, b"UI", CTImageStorage.encode())
            + element(0x0008, 0x0018, b"UI", meta.MediaStorageSOPInstanceUID.encode())
            + struct.pack("<HH", 0x0008, 0x1115) + b"SQ\0\0" + struct.pack("<I", 0xFFFFFFFF) + os.urandom(32))
    path = tmp_path / "broken.dcm"
    with open(path, "wb") as handle:
        handle.write(b"\x00" * 128 + b"DICM")
        write_file_meta_info(handle, meta, enforce_standard=True)
        handle.write(body)
    monkeypatch.setattr(pynetdicom._config, "STORE_SEND_CHUNKED_DATASET", True)  # the file's bytes, as they are
    ae = pynetdicom.AE(ae_title="STORESCU")
    ae.add_requested_context(CTImageStorage, ExplicitVRLittleEndian)
    ae.add_requested_context("1.2.840.10008.1.1")  # Verification
    association = ae.associate("127.0.0.1", listener.port, ae_title="AUTOSEG")
    assert association.is_established
    try:
        status = association.send_c_store(path)
    finally:
        association.release()
    assert status.Status == 0xC210
    assert "dataset cannot be decoded" in capfd.readouterr().err
    association = ae.associate("127.0.0.1", listener.port, ae_title="AUTOSEG")
    assert association.is_established and association.send_c_echo().Status == 0x0000
    association.release()


@needs_orthanc
@pytest.mark.slow
def test_a_series_that_cannot_be_segmented_is_kept_with_its_reason(node, model, tmp_path):
    import shutil

    import pydicom

    _, listener = node
    broken = tmp_path / "broken"
    shutil.copytree(model[1], broken)
    odd = sorted(broken.iterdir())[1]
    dataset = pydicom.dcmread(odd)
    dataset.Rows, dataset.PixelData = dataset.Rows // 2, dataset.PixelData[: len(dataset.PixelData) // 2]
    dataset.save_as(odd)
    send_files(sorted(broken.iterdir()), Peer("AUTOSEG", "127.0.0.1", listener.port), "STORESCU")
    uid = str(dataset.SeriesInstanceUID)
    reason = _wait_for(lambda: (listener.store.failed / uid / "reason.txt").is_file()
                       and (listener.store.failed / uid / "reason.txt").read_text())
    assert "different sizes" in reason and len(list((listener.store.failed / uid).rglob("*.dcm"))) > 0
    assert uid in listener.failed


@needs_orthanc
@pytest.mark.slow
def test_a_calling_ae_title_not_allowed_is_rejected(node):
    import pynetdicom

    _, listener = node
    ae = pynetdicom.AE(ae_title="STRANGER")
    ae.add_requested_context("1.2.840.10008.1.1")
    association = ae.associate("127.0.0.1", listener.port, ae_title="AUTOSEG")
    assert association.is_rejected


def test_sending_to_a_node_that_does_not_answer_is_one_line(tmp_path):
    from autoseg.synthetic.dicom_series import write_ct_series

    write_ct_series(np.zeros((2, 8, 8), np.int32), tmp_path / "s", (2.0, 1.0, 1.0), (0.0, 0.0, 0.0))
    with pytest.raises(AutosegInputError, match=r"^NOBODY@127\.0\.0\.1:\d+: the association was refused"):
        send_files(sorted((tmp_path / "s").iterdir()), Peer("NOBODY", "127.0.0.1", free_port()), "AUTOSEG")



@pytest.mark.slow
def test_the_listen_command_answers_c_echo_and_stops_on_sigterm(model, tmp_path):
    import signal
    import subprocess
    import sys

    import pynetdicom

    process = subprocess.Popen([sys.executable, "-m", "autoseg.cli", "listen", "-m", str(model[0]), "--port", "0",
                                "-c", "3d_fullres", "-f", "0", "--no-tta", "-o", str(tmp_path / "node"), "--idle", "1"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               env={**os.environ, "TQDM_DISABLE": "1"})
    try:
        lines = [process.stdout.readline() for _ in range(2)]
        assert "listening as AUTOSEG on 127.0.0.1:" in lines[1], lines
        port = int(lines[1].split("127.0.0.1:")[1].split()[0])
        ae = pynetdicom.AE(ae_title="ECHOSCU")
        ae.add_requested_context("1.2.840.10008.1.1")
        association = ae.associate("127.0.0.1", port, ae_title="AUTOSEG")
        assert association.is_established and association.send_c_echo().Status == 0x0000
        association.release()
    finally:
        process.send_signal(signal.SIGTERM)
        out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "stopped: 0 series segmented, 0 failed" in out
    assert (tmp_path / "node" / "received").is_dir()
