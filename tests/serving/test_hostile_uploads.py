"""Hostile and careless uploads, rule by rule: colliding or over-long zip names, members that unpack
to more than they declare, small files that decode to huge volumes, header-safe file names, the
loopback rule and the output-folder rule. Fast: no model."""

from __future__ import annotations

import io
import struct
import zipfile

import numpy as np
import pytest
from helpers import write_volume
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from autoseg.errors import AutosegInputError
from autoseg.serving.http_server import content_disposition, is_loopback, open_access_problem
from autoseg.serving.uploads import (
    MAX_CASE_NAME,
    UploadTooLarge,
    case_name,
    check_decoded_size,
    member_problem,
    place_upload,
    unpack_zip,
)
from autoseg.utils.files import MAX_NAME_BYTES, atomic_path, output_folder_problem, temporary_name


@pytest.mark.parametrize("names, problem", [
    (["a", "a/b"], "both a file 'a' and 'a/b'"),
    (["x/a", "x/a/b/c.dcm"], "both a file 'x/a'"),
    (["s.dcm", "s.dcm"], "holds 's.dcm' twice"),
    (["../etc/passwd"], "points outside"),
    (["/etc/passwd"], "points outside"),
    (["C:evil.dcm"], "points outside"),
    (["a\x00b"], "no usable name"),
    (["d/" + "n" * 230 + ".dcm"], "longer than"),
])
def test_zip_member_names_that_cannot_be_unpacked_side_by_side_are_named(names, problem):
    assert problem in member_problem(names)


def test_ordinary_member_names_pass():
    assert member_problem(["DICOM/1.dcm", "DICOM/2.dcm", "a/b", "a/c", "\N{GRINNING FACE}_0000.nii.gz"]) is None


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, content in members.items():
            archive.writestr(name, content)
    return buffer.getvalue()


def test_a_zip_with_a_file_and_a_folder_of_one_name_is_a_one_line_400(tmp_path):
    upload = tmp_path / "upload"
    upload.write_bytes(_zip({"a": b"x", "a/b": b"y"}))
    with pytest.raises(AutosegInputError, match=r"^series\.zip: zip holds both a file 'a' and 'a/b'") as error:
        place_upload(upload, "series.zip", tmp_path / "input", 1 << 20)
    assert "\n" not in str(error.value) and str(tmp_path) not in str(error.value)


def _forge_declared_size(archive: bytes, name: str, declared: int) -> bytes:
    """``archive`` with ``name``'s uncompressed size in its local and central headers set to ``declared``."""
    data = bytearray(archive)
    for signature, offset in ((b"PK\x03\x04", 22), (b"PK\x01\x02", 24)):
        start = data.find(signature)
        while start != -1:
            name_offset = start + (30 if signature == b"PK\x03\x04" else 46)
            name_length = struct.unpack_from("<H", data, start + (26 if signature == b"PK\x03\x04" else 28))[0]
            if bytes(data[name_offset:name_offset + name_length]) == name.encode():
                struct.pack_into("<I", data, start + offset, declared)
            start = data.find(signature, start + 4)
    return bytes(data)


def test_a_member_that_unpacks_past_its_declared_size_is_stopped(tmp_path):
    archive = _forge_declared_size(_zip({"DICOM/big.dcm": bytes(5 << 20)}), "DICOM/big.dcm", 1000)
    path = tmp_path / "bomb.zip"
    path.write_bytes(archive)
    with pytest.raises(AutosegInputError) as error:
        unpack_zip(path, tmp_path / "out", 64 << 20, "bomb.zip")
    assert str(error.value).startswith("bomb.zip: ") and "\n" not in str(error.value)
    written = [p.stat().st_size for p in (tmp_path / "out").rglob("*") if p.is_file()]
    assert all(size <= 1000 for size in written)  # never more than it declared


def test_declared_sizes_over_the_limit_are_refused_before_writing(tmp_path):
    path = tmp_path / "big.zip"
    path.write_bytes(_zip({"a.dcm": bytes(3 << 20)}))
    with pytest.raises(UploadTooLarge, match=r"^big\.zip: zip unpacks to 3 MiB, more than 1 MiB"):
        unpack_zip(path, tmp_path / "out", 1 << 20, "big.zip")
    assert not (tmp_path / "out").exists()


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=st.lists(st.text(min_size=1, max_size=80), min_size=1, max_size=5))
def test_any_member_names_give_a_case_or_a_one_line_error(tmp_path_factory, names):
    folder = tmp_path_factory.mktemp("fuzz")
    upload = folder / "upload"
    try:
        upload.write_bytes(_zip({name: b"x" for name in names}))
    except (ValueError, UnicodeEncodeError, IndexError):  # zipfile itself refuses to write some names
        return
    try:
        case = place_upload(upload, "fuzz.zip", folder / "input", 1 << 20)
    except AutosegInputError as error:
        assert "\n" not in str(error) and str(error).startswith("fuzz.zip: ")
    else:
        assert case and (folder / "input").is_dir()


def test_long_client_names_give_short_distinct_case_names():
    first, second = case_name("a" * 300 + "1.nii.gz"), case_name("a" * 300 + "2.nii.gz")
    assert len(first) <= MAX_CASE_NAME and len(second) <= MAX_CASE_NAME and first != second
    assert case_name("scan_0000.nii.gz") == "scan"


def test_a_small_file_that_decodes_to_a_huge_volume_is_refused_from_its_header(tmp_path):
    input_dir = tmp_path / "input"
    input_dir.mkdir()
    write_volume(input_dir / "zeros_0000.nii.gz", np.zeros((100, 100, 100), np.uint8))
    assert (input_dir / "zeros_0000.nii.gz").stat().st_size < 20_000  # a million voxels in a few kB
    check_decoded_size(input_dir, 1_000_000, "zeros.nii.gz")
    with pytest.raises(UploadTooLarge, match=r"^zeros\.nii\.gz: decodes to 1,000,000 voxels, more than this "
                                             r"server's limit of 999,999"):
        check_decoded_size(input_dir, 999_999, "zeros.nii.gz")


def test_content_disposition_carries_any_name_in_latin1_headers():
    assert content_disposition("case.nii.gz") == 'attachment; filename="case.nii.gz"'
    header = content_disposition("\N{GRINNING FACE}é.nii.gz")
    header.encode("latin-1")  # what http.server does with it
    assert 'filename="__.nii.gz"' in header and "filename*=UTF-8''%F0%9F%98%80%C3%A9.nii.gz" in header
    assert '\\' not in content_disposition('a"b\\.nii.gz').split(";")[1]


def test_only_loopback_may_serve_without_a_token():
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1")
    assert not is_loopback("0.0.0.0") and not is_loopback("") and not is_loopback("no-such-host.invalid")
    assert open_access_problem("127.0.0.1", None, False) is None
    assert "--no-token" in open_access_problem("0.0.0.0", None, False)
    assert open_access_problem("0.0.0.0", "token", False) is None
    assert open_access_problem("0.0.0.0", None, True) is None


def test_the_serve_command_refuses_the_network_without_a_token_before_loading(tmp_path, capsys, monkeypatch):
    from autoseg.cli import main

    monkeypatch.delenv("AUTOSEG_SERVE_TOKEN", raising=False)
    assert main(["serve", "-m", str(tmp_path / "no-model"), "--host", "0.0.0.0"]) == 1
    err = capsys.readouterr().err
    assert "--host 0.0.0.0: other machines could send scans" in err and "Traceback" not in err


def test_an_output_folder_equal_to_or_inside_the_input_is_named(tmp_path):
    (tmp_path / "in").mkdir()
    assert "is the input folder" in output_folder_problem([tmp_path / "in"], tmp_path / "in")
    assert "is the input folder" in output_folder_problem([tmp_path / "in"], tmp_path / "in" / "sub" / "..")
    assert "inside the input folder" in output_folder_problem([tmp_path / "in"], tmp_path / "in" / "out")
    assert output_folder_problem([tmp_path / "in"], tmp_path / "in" / "out", inside_too=False) is None
    assert output_folder_problem([tmp_path / "in"], tmp_path / "out") is None


def test_predict_refuses_its_input_folder_as_output(tmp_path, capsys):
    from autoseg.cli import main

    (tmp_path / "scans").mkdir()
    assert main(["predict", "-i", str(tmp_path / "scans"), "-o", str(tmp_path / "scans"), "-m",
                 str(tmp_path / "model")]) == 1
    assert "is the input folder" in capsys.readouterr().err


def test_temporary_names_of_long_legal_names_fit_the_file_system(tmp_path):
    target = tmp_path / ("c" * 243 + ".nii.gz")  # 250 characters: legal
    temporary = temporary_name(target)
    assert len(temporary.name.encode()) <= MAX_NAME_BYTES and temporary.name.endswith(".nii.gz")
    with atomic_path(target) as path:
        path.write_bytes(b"x")
    assert target.read_bytes() == b"x"
    unicode_target = tmp_path / ("\N{GRINNING FACE}" * 60 + ".nii.gz")  # 247 bytes
    assert len(temporary_name(unicode_target).name.encode()) <= MAX_NAME_BYTES


def test_the_stale_temporary_rule_still_knows_shortened_names(tmp_path):
    from autoseg.utils.files import TEMPORARY_NAME

    assert TEMPORARY_NAME.match(temporary_name(tmp_path / ("c" * 250 + ".nii.gz")).name)
