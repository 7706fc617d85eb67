"""Damaged image files are refused with one line naming the file, before SimpleITK turns damage into zeros."""

from __future__ import annotations

import gzip
import struct

import numpy as np
import pytest
import SimpleITK as sitk

from autoseg.errors import AutosegInputError
from autoseg.io.file_integrity import check_image_file
from autoseg.io.images import read_case_images, read_image


def write(array: np.ndarray, path, spacing=(0.8, 0.8, 2.0)) -> None:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    sitk.WriteImage(image, str(path), True)


def cut(path, keep_bytes: int, destination) -> None:
    destination.write_bytes(path.read_bytes()[:keep_bytes])


@pytest.mark.parametrize("dtype", [np.float32, np.int16])
def test_a_truncated_nii_gz_is_refused(tmp_path, dtype):
    source = tmp_path / "case.nii.gz"
    write((np.random.default_rng(0).random((12, 20, 24)) * 100).astype(dtype), source)
    check_image_file(source)
    truncated = tmp_path / "truncated.nii.gz"
    for keep in (len(source.read_bytes()) // 2, len(source.read_bytes()) - 3):
        cut(source, keep, truncated)
        # SimpleITK itself reads the file, the missing part as zeros
        with pytest.raises(AutosegInputError, match=r"truncated\.nii\.gz: file is truncated"):
            read_image(truncated)


def test_an_uncompressed_nii_cut_short_is_refused(tmp_path):
    source = tmp_path / "case.nii"
    write(np.ones((8, 10, 12), np.int16), source)
    truncated = tmp_path / "short.nii"
    cut(source, len(source.read_bytes()) - 100, truncated)
    with pytest.raises(AutosegInputError, match=r"short\.nii: file is truncated: 1820 of the 1920 voxel bytes"):
        check_image_file(truncated)


def test_corrupt_compressed_data_are_refused(tmp_path):
    source = tmp_path / "case.nii.gz"
    write(np.random.default_rng(1).random((12, 20, 24)).astype(np.float32), source)
    data = bytearray(source.read_bytes())
    data[len(data) // 2: len(data) // 2 + 64] = bytes(64)
    (tmp_path / "corrupt.nii.gz").write_bytes(bytes(data))
    with pytest.raises(AutosegInputError, match=r"corrupt\.nii\.gz: (compressed data are corrupt|file is truncated)"):
        check_image_file(tmp_path / "corrupt.nii.gz")


@pytest.mark.parametrize("ending", [".nii.gz", ".nii", ".mha"])
def test_nan_voxels_are_reported_in_every_format(tmp_path, ending):
    array = np.random.default_rng(0).random((6, 8, 10)).astype(np.float32)
    array[2, 3, 4], array[5, 0, 0] = np.nan, np.inf
    path = tmp_path / f"image{ending}"
    write(array, path)
    assert np.isnan(sitk.GetArrayFromImage(sitk.ReadImage(str(path)))).sum() == (0 if "nii" in ending else 1)
    with pytest.raises(AutosegInputError, match=rf"image{ending.replace('.', '[.]')}: contains 2 NaN/Inf voxels"):
        read_case_images([path])


def test_a_zero_spacing_in_a_nifti_header_is_refused(tmp_path):
    source = tmp_path / "case.nii.gz"
    write(np.ones((4, 5, 6), np.int16), source)
    header = bytearray(gzip.decompress(source.read_bytes()))
    struct.pack_into("<f", header, 84, 0.0)  # pixdim[2]: the y spacing
    (tmp_path / "zero.nii").write_bytes(bytes(header))
    assert sitk.ReadImage(str(tmp_path / "zero.nii")).GetSpacing()[1] == 1.0  # what SimpleITK makes of it
    with pytest.raises(AutosegInputError, match=r"zero\.nii: voxel spacing in the header is 0\.8x0x2 mm"):
        read_image(tmp_path / "zero.nii")


def test_a_big_endian_nifti_is_parsed_in_its_byte_order(tmp_path):
    array = np.random.default_rng(2).random((5, 6, 7)).astype(np.float32)
    big_endian = tmp_path / "big.nii"
    write(array, tmp_path / "little.nii")
    data = bytearray((tmp_path / "little.nii").read_bytes())
    # rewrite the header fields these checks read and the voxels in big-endian order
    size, = struct.unpack_from("<i", data, 0)
    dims = struct.unpack_from("<8h", data, 40)
    datatype, bitpix = struct.unpack_from("<2h", data, 70)
    pixdim = struct.unpack_from("<8f", data, 76)
    offset, = struct.unpack_from("<f", data, 108)
    struct.pack_into(">i", data, 0, size)
    struct.pack_into(">8h", data, 40, *dims)
    struct.pack_into(">2h", data, 70, datatype, bitpix)
    struct.pack_into(">8f", data, 76, *pixdim)
    struct.pack_into(">f", data, 108, offset)
    voxels = np.frombuffer(bytes(data[int(offset):]), "<f4").astype(">f4")
    voxels[3] = np.nan
    big_endian.write_bytes(bytes(data[: int(offset)]) + voxels.tobytes())
    with pytest.raises(AutosegInputError, match="contains 1 NaN/Inf voxels"):
        check_image_file(big_endian)


def test_a_gzip_file_of_another_format_must_decode_to_the_end(tmp_path):
    payload = gzip.compress(bytes(range(256)) * 400)
    (tmp_path / "image.gipl.gz").write_bytes(payload[:-20])
    with pytest.raises(AutosegInputError, match="file is truncated"):
        check_image_file(tmp_path / "image.gipl.gz")
    (tmp_path / "whole.gipl.gz").write_bytes(payload)
    check_image_file(tmp_path / "whole.gipl.gz")
