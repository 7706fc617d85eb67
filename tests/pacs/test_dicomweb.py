"""``autoseg predict --dicomweb`` against a real Orthanc: a study is fetched (QIDO-RS, WADO-RS), segmented as
``predict -i`` would, and its DICOM-SEG stored (STOW-RS) referencing the source series; a rerun downloads and
stores nothing again; refused credentials, an unknown study and an unreachable server are one line each; a
series that breaks off fails alone and is fetched again next time. The credentials rules without Orthanc."""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np
import pytest
import requests
from helpers import make_tiny_work_dir
from orthanc import PASSWORD, USER, free_port, orthanc_missing, start_orthanc

from autoseg.cli import main
from autoseg.errors import AutosegInputError
from autoseg.pacs import dicomweb
from autoseg.pacs.credentials import (
    PASSWORD_VARIABLE,
    TOKEN_VARIABLE,
    USER_VARIABLE,
    BearerAuth,
    Credentials,
    parse_credentials,
    resolve_credentials,
    session_for,
)

STUDY = "1.2.826.0.1.3680043.8.498.1001"
TWO_SERIES_STUDY = "1.2.826.0.1.3680043.8.498.1002"


# -- credentials and arguments, no server -----------------------------------------------------------------


def test_credentials_come_from_the_file_then_the_token_then_user_and_password(tmp_path):
    basic = {USER_VARIABLE: "ann", PASSWORD_VARIABLE: "pw"}
    assert resolve_credentials(None, {}) is None
    source = f"${USER_VARIABLE}/${PASSWORD_VARIABLE}"
    assert resolve_credentials(None, basic) == Credentials("basic", "pw", "ann", source)
    token = resolve_credentials(None, {**basic, TOKEN_VARIABLE: "tok"})
    assert (token.kind, token.secret) == ("bearer", "tok")
    file = tmp_path / "auth"
    file.write_text("bob:s3:cret\nignored second line\n")
    file.chmod(0o600)
    from_file = resolve_credentials(file, {**basic, TOKEN_VARIABLE: "tok"})
    assert (from_file.kind, from_file.user, from_file.secret) == ("basic", "bob", "s3:cret")
    assert "s3:cret" not in repr(from_file) and "s3:cret" not in from_file.describe()


@pytest.mark.parametrize("line, kind, user, secret", [
    ("Bearer abc.def-ghi", "bearer", "", "abc.def-ghi"),
    ("  bearer   abc  \n", "bearer", "", "abc"),
    ("user:pass word:with colons", "basic", "user", "pass word:with colons"),
])
def test_credential_lines_are_a_bearer_token_or_user_and_password(line, kind, user, secret):
    parsed = parse_credentials(line, "f")
    assert (parsed.kind, parsed.user, parsed.secret) == (kind, user, secret)


@pytest.mark.parametrize("line", ["", "justatoken", "Bearer ", "Bearer two words", ":nouser", "user:", "a\x00b:c"])
def test_bad_credential_lines_are_refused_without_repeating_them(line):
    with pytest.raises(AutosegInputError) as caught:
        parse_credentials(line, "auth.txt")
    message = str(caught.value)
    assert message.startswith("auth.txt:") and "\n" not in message
    assert not any(part and part in message for part in ("justatoken", "nouser", "two words"))


def test_credentials_files_readable_by_others_are_refused_and_by_the_group_warned_about(tmp_path):
    file = tmp_path / "auth"
    file.write_text("Bearer tok\n")
    file.chmod(0o644)
    with pytest.raises(AutosegInputError, match=r"every user .*mode 0644.*chmod 600"):
        resolve_credentials(file, {})
    file.chmod(0o640)
    warnings = []
    assert resolve_credentials(file, {}, warn=warnings.append).secret == "tok"
    assert len(warnings) == 1 and "group may read" in warnings[0]
    with pytest.raises(AutosegInputError, match="not found"):
        resolve_credentials(tmp_path / "missing", {})


def test_half_of_basic_auth_in_the_environment_is_refused():
    with pytest.raises(AutosegInputError, match=f"{USER_VARIABLE} is set but \\${PASSWORD_VARIABLE} is not"):
        resolve_credentials(None, {USER_VARIABLE: "ann"})
    with pytest.raises(AutosegInputError, match=f"{PASSWORD_VARIABLE} is set"):
        resolve_credentials(None, {PASSWORD_VARIABLE: "pw"})


def test_sessions_send_the_credentials():
    request = requests.Request("GET", "http://pacs/dicom-web").prepare()
    assert session_for(Credentials("bearer", "tok")).auth(request).headers["Authorization"] == "Bearer tok"
    assert session_for(Credentials("basic", "pw", "ann")).auth(request).headers["Authorization"].startswith("Basic ")
    assert session_for(None).auth is None
    assert "tok" not in repr(BearerAuth("tok"))


def test_urls_with_credentials_or_without_http_are_refused():
    assert dicomweb.check_url("https://pacs:8443/dicom-web/") == "https://pacs:8443/dicom-web"
    with pytest.raises(AutosegInputError, match="holds credentials"):
        dicomweb.check_url("https://ann:pw@pacs/dicom-web")
    with pytest.raises(AutosegInputError, match="not an http"):
        dicomweb.check_url("pacs/dicom-web")
    assert dicomweb.plain_http_warning("http://pacs/dicom-web", Credentials("bearer", "t")) is not None
    assert dicomweb.plain_http_warning("http://127.0.0.1:8042/dicom-web", Credentials("bearer", "t")) is None


def test_http_failures_become_one_line_naming_the_url():
    def http_error(code: int) -> requests.HTTPError:
        response = requests.Response()
        response.status_code, response.reason = code, "Whatever"
        return requests.HTTPError(response=response)

    refused = dicomweb.request_problem(http_error(403), "https://pacs/dw", "listing")
    assert isinstance(refused, dicomweb.ServerProblem)
    assert str(refused) == "https://pacs/dw: the server refused the credentials (HTTP 403)"
    assert str(dicomweb.request_problem(http_error(500), "u", "retrieving series 1.2")) == \
        "u: retrieving series 1.2: HTTP 500 Whatever"
    dns = requests.ConnectionError("HTTPSConnectionPool(host='nope', port=443): Max retries exceeded (Caused by "
                                   "NameResolutionError(\"Failed to resolve 'nope' ([Errno -2] Name or service not "
                                   "known)\"))")
    assert str(dicomweb.request_problem(dns, "https://nope/dw", "x")) == \
        "https://nope/dw: cannot connect (Name or service not known)"


@pytest.mark.parametrize("arguments, message", [
    (["--study", STUDY], "--study needs --dicomweb"),
    (["--store"], "--store needs --dicomweb"),
    (["--dicomweb-auth", "f"], "--dicomweb-auth needs --dicomweb"),
])
def test_dicomweb_options_need_dicomweb(tmp_path, capsys, arguments, message):
    assert main(["predict", "-i", str(tmp_path), "-o", str(tmp_path / "o"), "-m", "m", *arguments]) == 1
    assert message in capsys.readouterr().err


def test_input_and_dicomweb_exclude_each_other_and_store_needs_dicom_seg(tmp_path, capsys):
    for both_or_none in (["-i", "x", "--dicomweb", "http://h/dw"], []):
        with pytest.raises(SystemExit) as caught:
            main(["predict", *both_or_none, "-o", "o", "-m", "m"])
        assert caught.value.code == 2
    capsys.readouterr()
    base = ["predict", "--dicomweb", "http://127.0.0.1:1/dw", "-o", str(tmp_path), "-m", "m"]
    assert main(base) == 1 and "--dicomweb needs --study" in capsys.readouterr().err
    assert main([*base, "--study", STUDY, "--store", "--output-format", "nifti"]) == 1
    assert "--output-format dicom-seg" in capsys.readouterr().err
    assert main([*base, "--study", "../etc"]) == 1 and "not a DICOM UID" in capsys.readouterr().err


# -- against Orthanc --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def orthanc(tmp_path_factory):
    """A running Orthanc (skips where it is not installed)."""
    missing = orthanc_missing()
    if missing:
        pytest.skip(missing)
    server = start_orthanc(tmp_path_factory.mktemp("orthanc"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A work folder with one trained 3d_fullres fold and a CT volume (HU, spacing, origin) of its test scans."""
    from autoseg.io.images import read_image
    from autoseg.plans.training import IterationPlan
    from autoseg.training.trainer import Trainer, TrainingOptions

    root = tmp_path_factory.mktemp("model")
    dataset, work = make_tiny_work_dir(root, num_training=6, num_test=2)
    Trainer(work, "3d_fullres", 0, TrainingOptions(num_workers=0, progress=False),
            iteration_plan=IterationPlan(1, 2, 1)).run()
    scans = []
    for path in sorted((dataset / "imagesTs").iterdir()):
        volume, geometry = read_image(path)
        scans.append((np.clip(np.rint(volume), -1024, 3000).astype(np.int32), geometry.spacing, geometry.sitk_origin))
    return work, scans


@pytest.fixture
def basic_auth(monkeypatch):
    monkeypatch.delenv(TOKEN_VARIABLE, raising=False)
    monkeypatch.setenv(USER_VARIABLE, USER)
    monkeypatch.setenv(PASSWORD_VARIABLE, PASSWORD)


def upload_series(orthanc, folder: Path, scan, study: str, number: int = 1) -> str:
    """Write ``scan`` as a CT series of ``study`` into ``folder``, upload it; its Series Instance UID."""
    import pydicom

    from autoseg.synthetic.dicom_series import write_ct_series

    hu, spacing, origin = scan
    paths = write_ct_series(hu, folder, spacing, origin, study_uid=study, series_number=number)
    orthanc.upload(folder)
    return str(pydicom.dcmread(paths[0], stop_before_pixels=True).SeriesInstanceUID)


def predict_dicomweb(orthanc, work: Path, out: Path, study: str, *extra: str, url: str | None = None) -> int:
    return main(["predict", "--dicomweb", url or orthanc.dicomweb_url, "--study", study, "-m", str(work), "-o",
                 str(out), "-c", "3d_fullres", "--no-tta", *extra])


def one_error_line(err: str) -> str:
    """The only ``error:`` line of ``err`` (progress bars aside), which holds no traceback."""
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.slow
def test_a_study_is_segmented_like_predict_i_and_its_seg_stored_referencing_the_series(
        orthanc, model, basic_auth, tmp_path, capsys):
    import pydicom

    from autoseg.inference.predict_folder import InferenceChoice, predict_folder

    work, scans = model
    series_uid = upload_series(orthanc, tmp_path / "local" / "patient", scans[0], STUDY)
    predict_folder(work, tmp_path / "local", tmp_path / "reference", InferenceChoice(["3d_fullres"]),
                   use_mirroring=False, progress=False, output_format="dicom-seg")
    out = tmp_path / "out"
    assert predict_dicomweb(orthanc, work, out, STUDY, "--store") == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert f"downloaded series {series_uid}" in printed and "1 DICOM-SEG(s) stored" in printed
    seg = pydicom.dcmread(out / f"{series_uid}.dcm")
    reference = pydicom.dcmread(tmp_path / "reference" / "patient.dcm")
    np.testing.assert_array_equal(seg.pixel_array, reference.pixel_array)  # the same mask, frame by frame
    assert len(seg.SegmentSequence) == len(reference.SegmentSequence)
    assert (out / ".dicomweb" / STUDY / series_uid).is_dir()

    stored = orthanc.series_of_modality("SEG")
    assert len(stored) == 1
    instance = orthanc.get(f"/instances/{stored[0]['Instances'][0]}/file")
    arrived = pydicom.dcmread(io.BytesIO(instance))
    assert arrived.SOPInstanceUID == seg.SOPInstanceUID
    assert arrived.ReferencedSeriesSequence[0].SeriesInstanceUID == series_uid

    # A rerun: the SEG series now in the study is skipped, nothing is downloaded or stored again.
    assert predict_dicomweb(orthanc, work, out, STUDY, "--store") == 0
    printed = capsys.readouterr().out
    assert "is not an image series" in printed and "SEG" in printed
    assert "already downloaded" in printed and "already stored" in printed
    assert len(orthanc.series_of_modality("SEG")) == 1


@pytest.mark.slow
def test_both_series_of_a_study_are_segmented_and_one_that_breaks_off_fails_alone(
        orthanc, model, tmp_path, capsys, monkeypatch):
    from dicomweb_client import DICOMwebClient

    from autoseg.io.images import read_label

    work, scans = model
    first = upload_series(orthanc, tmp_path / "s1", scans[0], TWO_SERIES_STUDY, 1)
    second = upload_series(orthanc, tmp_path / "s2", scans[1], TWO_SERIES_STUDY, 2)
    for name in (TOKEN_VARIABLE, USER_VARIABLE, PASSWORD_VARIABLE):
        monkeypatch.delenv(name, raising=False)
    auth = tmp_path / "auth"
    auth.write_text(f"{USER}:{PASSWORD}\n")
    auth.chmod(0o600)
    out = tmp_path / "out"

    original = DICOMwebClient.iter_series

    def breaks_off(self, study_instance_uid, series_instance_uid, **kwargs):
        for index, dataset in enumerate(original(self, study_instance_uid, series_instance_uid, **kwargs)):
            if series_instance_uid == first and index == 2:
                raise requests.exceptions.ChunkedEncodingError("Connection broken: IncompleteRead")
            yield dataset

    monkeypatch.setattr(DICOMwebClient, "iter_series", breaks_off)
    assert predict_dicomweb(orthanc, work, out, TWO_SERIES_STUDY, "--dicomweb-auth", str(auth)) == 1
    line = one_error_line(capsys.readouterr().err)
    assert line.startswith(f"error: {orthanc.dicomweb_url}: retrieving series {first}") and "Connection" in line
    assert (out / f"{second}.nii.gz").is_file() and not (out / f"{first}.nii.gz").exists()
    assert not (out / ".dicomweb" / TWO_SERIES_STUDY / first).exists()

    monkeypatch.setattr(DICOMwebClient, "iter_series", original)
    assert predict_dicomweb(orthanc, work, out, TWO_SERIES_STUDY, "--dicomweb-auth", str(auth)) == 0
    printed = capsys.readouterr().out
    assert f"downloaded series {first}" in printed and f"series {second} (CT, 'synthetic CT', #2): already" in printed
    for uid, scan in ((first, scans[0]), (second, scans[1])):
        assert read_label(out / f"{uid}.nii.gz")[0].shape == scan[0].shape


@pytest.mark.slow
def test_a_wrong_password_is_one_line_naming_the_url_and_401(orthanc, model, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(USER_VARIABLE, USER)
    monkeypatch.setenv(PASSWORD_VARIABLE, "wrong")
    assert predict_dicomweb(orthanc, model[0], tmp_path / "out", STUDY) == 1
    assert one_error_line(capsys.readouterr().err) == \
        f"error: {orthanc.dicomweb_url}: the server refused the credentials (HTTP 401)"


@pytest.mark.slow
def test_an_unknown_study_is_one_line(orthanc, model, basic_auth, tmp_path, capsys):
    assert predict_dicomweb(orthanc, model[0], tmp_path / "out", "1.2.3.999") == 1
    line = one_error_line(capsys.readouterr().err)
    assert orthanc.dicomweb_url in line and "study 1.2.3.999 not found" in line


def test_an_unreachable_server_is_one_line(tmp_path, capsys, basic_auth):
    url = f"http://127.0.0.1:{free_port()}/dicom-web"  # nothing listens there
    assert main(["predict", "--dicomweb", url, "--study", STUDY, "-m", "m", "-o", str(tmp_path / "out")]) == 1
    assert one_error_line(capsys.readouterr().err) == f"error: {url}: cannot connect (Connection refused)"
    assert os.environ[PASSWORD_VARIABLE] not in capsys.readouterr().err
