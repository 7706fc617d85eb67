"""Uploads become case folders: format from the name or the bytes, safe zips, case names."""

from __future__ import annotations

import gzip
import io
import zipfile

import numpy as np
import pytest
from helpers import write_volume

from autoseg.errors import AutosegInputError
from autoseg.serving.uploads import case_name, place_upload, sniff_ending, unpack_zip, upload_ending


def test_formats_are_told_by_their_first_bytes():
    nifti = bytearray(352)
    nifti[344:348] = b"n+1\x00"
    assert sniff_ending(bytes(nifti)) == ".nii"
    assert sniff_ending(gzip.compress(b"x" * 400)) == ".nii.gz"
    assert sniff_ending(b"NRRD0004\n" + b" " * 400) == ".nrrd"
    assert sniff_ending(b"ObjectType = Image\n" + b" " * 400) == ".mha"
    archive = io.BytesIO()
    with zipfile.ZipFile(archive, "w") as handle:
        handle.writestr("a.dcm", b"x")
    assert sniff_ending(archive.getvalue()) == ".zip"
    assert sniff_ending(b"hello world" * 40) is None


def test_a_known_name_wins_and_an_unknown_format_is_one_line():
    assert upload_ending("scan.NRRD", b"\x1f\x8b") == ".nrrd"
    assert upload_ending("scan.bin", gzip.compress(b"x" * 400)) == ".nii.gz"
    assert upload_ending(None, b"PK\x03\x04") == ".zip"
    with pytest.raises(AutosegInputError, match=r"^notes\.txt: cannot tell the image format") as error:
        upload_ending("notes.txt", b"hello" * 100)
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("filename, expected", [
    ("liver_001_0000.nii.gz", "liver_001"), ("scan.nrrd", "scan"), ("../../etc/passwd", "passwd"),
    ("C:\\data\\ct 1.mha", "ct_1"), (None, "upload"), ("...", "upload"), ("series.zip", "series")])
def test_case_names_are_safe_file_names(filename, expected):
    assert case_name(filename) == expected


def _zip(path, members: dict[str, bytes]):
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as handle:
        for name, content in members.items():
            handle.writestr(name, content)
    return path


def test_zips_that_leave_the_folder_or_unpack_too_large_are_refused(tmp_path):
    escaping = _zip(tmp_path / "a.zip", {"../outside.dcm": b"x"})
    with pytest.raises(AutosegInputError, match="points outside the archive"):
        unpack_zip(escaping, tmp_path / "out", 1 << 20, "a.zip")
    assert not (tmp_path / "outside.dcm").exists()
    bomb = _zip(tmp_path / "bomb.zip", {"zeros.dcm": bytes(10 << 20)})
    assert bomb.stat().st_size < 100_000
    with pytest.raises(AutosegInputError, match=r"bomb\.zip: zip unpacks to 10 MiB, more than 1 MiB"):
        unpack_zip(bomb, tmp_path / "out", 1 << 20, "bomb.zip")
    assert not (tmp_path / "out").exists()
    (tmp_path / "broken.zip").write_bytes(b"PK\x03\x04 broken")
    with pytest.raises(AutosegInputError, match=r"broken\.zip: not a readable zip"):
        unpack_zip(tmp_path / "broken.zip", tmp_path / "out", 1 << 20, "broken.zip")


def test_an_image_becomes_channel_0_of_its_case(tmp_path):
    upload = tmp_path / "upload"
    write_volume(tmp_path / "scan.nii.gz", np.zeros((4, 5, 6), np.int16))
    (tmp_path / "scan.nii.gz").rename(upload)
    assert place_upload(upload, "patient 7.nii.gz", tmp_path / "input", 1 << 20) == "patient_7"
    assert [p.name for p in (tmp_path / "input").iterdir()] == ["patient_7_0000.nii.gz"]


def test_a_zipped_multi_channel_case_keeps_its_files_and_one_case_is_allowed(tmp_path):
    write_volume(tmp_path / "a.nii.gz", np.zeros((4, 5, 6), np.int16))
    content = (tmp_path / "a.nii.gz").read_bytes()
    _zip(tmp_path / "upload", {"case/brain_0000.nii.gz": content, "case/brain_0001.nii.gz": content,
                               "__MACOSX/case/._brain_0000.nii.gz": b"junk"})
    assert place_upload(tmp_path / "upload", "brain.zip", tmp_path / "input", 1 << 20) == "brain"
    assert sorted(p.name for p in (tmp_path / "input").iterdir()) == ["brain_0000.nii.gz", "brain_0001.nii.gz"]
    _zip(tmp_path / "two", {"a_0000.nii.gz": content, "b_0000.nii.gz": content})
    with pytest.raises(AutosegInputError, match="holds 2 cases"):
        place_upload(tmp_path / "two", "two.zip", tmp_path / "input2", 1 << 20)


def test_a_zip_without_image_files_is_a_dicom_folder(tmp_path):
    _zip(tmp_path / "upload", {"DICOM/IM0001": b"x", "DICOM/IM0002": b"y"})
    assert place_upload(tmp_path / "upload", "ct.zip", tmp_path / "input", 1 << 20) == "ct"
    assert sorted(p.name for p in (tmp_path / "input" / "ct" / "DICOM").iterdir()) == ["IM0001", "IM0002"]


def test_an_empty_upload_is_refused(tmp_path):
    (tmp_path / "upload").write_bytes(b"")
    with pytest.raises(AutosegInputError, match=r"^scan\.nii\.gz: the upload is empty$"):
        place_upload(tmp_path / "upload", "scan.nii.gz", tmp_path / "input", 1 << 20)
