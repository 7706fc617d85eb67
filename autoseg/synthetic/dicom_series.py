"""Writing a volume as a DICOM CT series (pydicom), to develop and test DICOM input without patient data.

The series is what a scanner exports: one file per slice, unsigned stored values with
Rescale Intercept (HU = stored + intercept), the patient and study attributes a viewer and
highdicom expect, Image Position (Patient) per slice in mm (patient LPS). Needs the
``dicom`` extra.
"""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from autoseg.io.dicom import require_pydicom


def write_ct_series(volume_hu: np.ndarray, folder: str | Path, spacing_zyx: Sequence[float] = (2.0, 0.8, 0.8),
                    origin_xyz: Sequence[float] = (-100.0, -120.0, 40.0), intercept: float = -1024.0,
                    series_number: int = 1, description: str = "synthetic CT", study_uid: str | None = None,
                    file_order: Sequence[int] | None = None, file_prefix: str = "slice",
                    direction: Sequence[float] = (1, 0, 0, 0, 1, 0, 0, 0, 1)) -> list[Path]:
    """Write ``volume_hu`` (``(z, y, x)`` integer HU) as a CT series in ``folder``.

    ``direction`` is SimpleITK's (row-major 3x3, its columns the directions of the x, y and z
    array axes in patient LPS; identity: axial slices). Slice ``k`` lies at ``origin + k *
    spacing_z * (third column)``. ``file_order`` names the files in another order than the
    slices (e.g. shuffled) to show that readers sort by position. Returns the files written.
    """
    pydicom = require_pydicom()
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    volume_hu = np.asarray(volume_hu)
    stored = np.rint(volume_hu - intercept)
    if stored.min() < 0 or stored.max() > np.iinfo(np.uint16).max:
        raise ValueError(f"HU values do not fit unsigned 16 bits with intercept {intercept}")
    stored = stored.astype(np.uint16)
    study_uid = study_uid or generate_uid()
    series_uid, frame_uid = generate_uid(), generate_uid()
    today = datetime.date(2026, 1, 2).strftime("%Y%m%d")
    order = list(file_order) if file_order is not None else list(range(volume_hu.shape[0]))
    axes = np.asarray(direction, dtype=float).reshape(3, 3)
    row_direction, column_direction, slice_direction = axes[:, 0], axes[:, 1], axes[:, 2]
    paths = []
    for file_index, k in enumerate(order):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, meta.MediaStorageSOPInstanceUID
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Synthetic^Case", "SYN0001", "", "O"
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = today, "120000", "1", ""
        ds.ReferringPhysicianName = ""
        ds.Modality, ds.SeriesNumber, ds.SeriesDescription = "CT", series_number, description
        ds.Manufacturer = "autoseg synthetic"
        ds.InstanceNumber = k + 1
        ds.ImageOrientationPatient = [float(v) for v in (*row_direction, *column_direction)]
        position = np.asarray(origin_xyz, dtype=float) + k * float(spacing_zyx[0]) * slice_direction
        ds.ImagePositionPatient = [float(v) for v in position]
        ds.PixelSpacing = [float(spacing_zyx[1]), float(spacing_zyx[2])]  # row spacing (y), column spacing (x)
        ds.SliceThickness = float(spacing_zyx[0])
        ds.Rows, ds.Columns = int(volume_hu.shape[1]), int(volume_hu.shape[2])
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = intercept, 1.0, "HU"
        ds.PixelData = stored[k].tobytes()
        path = folder / f"{file_prefix}{file_index:04d}.dcm"
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        paths.append(path)
    return paths
