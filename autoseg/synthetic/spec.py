"""What a synthetic dataset holds: :class:`SyntheticDatasetSpec`, its labels and presets.

Also the first draws of every case (:func:`draw_case_grid`): shape ``(z, y, x)`` in voxels and
spacing ``(z, y, x)`` in mm. :func:`large_ct_spec` (abdomen CT, 512 x 512 x 100-300 voxels) and
:func:`brain_mr_spec` (brain MR, 240 x 240 x 155 voxels at 1 mm) are the realistic large presets.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np

from autoseg.errors import AutosegInputError

#: Label name -> value written to dataset.json.
LABELS = {"background": 0, "organ": 1, "lesion": 2}

#: Modalities the generator can simulate.
MODALITIES = ("CT", "MRI")

#: File endings the generator can write (single-file 3D formats).
WRITABLE_FILE_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".mha")

_MIN_SLICES = 8
_MIN_IN_PLANE = 16

#: Anatomies the generator can draw (see :mod:`autoseg.synthetic`); the first is the default.
ANATOMIES = ("organ_lesion", "abdomen", "brain_tumour")
#: Label name -> value of the ``"abdomen"`` anatomy (labels ordered by organ size).
ABDOMEN_LABELS = {"background": 0, "liver": 1, "kidney": 2, "spleen": 3, "liver_lesion": 4}
#: Label name -> value of the ``"brain_tumour"`` anatomy (BraTS-like: tumour core = necrosis +
#: enhancing, whole tumour = all three).
BRAIN_TUMOUR_LABELS = {"background": 0, "necrosis": 1, "edema": 2, "enhancing": 3}
ANATOMY_LABELS = {"organ_lesion": LABELS, "abdomen": ABDOMEN_LABELS, "brain_tumour": BRAIN_TUMOUR_LABELS}
#: Channel names (MR contrasts) of the ``"brain_tumour"`` anatomy, channel 0 first.
BRAIN_CONTRASTS = ("T1ce", "FLAIR", "T1", "T2")


@dataclass
class SyntheticDatasetSpec:
    """What to generate. Ranges are ``(low, high)`` and drawn uniformly per case.

    Attributes:
        num_training: cases in imagesTr/labelsTr (``case_000`` ...).
        num_test: held-out cases in imagesTs/labelsTs, numbered after the training cases.
        seed: master seed; case ``i`` only depends on ``seed``, ``i`` and the spec.
        modality: ``"CT"`` (HU) or ``"MRI"`` (arbitrary units, zero outside the body).
        in_plane_shape: ``(y, x)`` voxels of every case.
        in_plane_spacing_mm: range of the in-plane spacing (same for y and x in a case).
        slice_thickness_mm: range of the z spacing (mm); differs between cases.
        field_of_view_z_mm: range of the scanned z extent (mm); slices = extent / thickness
            (rounded, at least 8).
        noise_std: Gaussian noise std in HU for CT; for MRI the noise is proportional to
            the signal with relative std ``noise_std / 250``.
        dataset_name: folder name, e.g. ``Dataset900_SyntheticCT``.
        file_ending: one of :data:`WRITABLE_FILE_ENDINGS`.
        num_channels: channel 0 is the scan; channels 1, 3, ... ("aux") show a second
            contrast, channels 2, 4, ... (named like channel 0) are smoothed copies.
        lesion_probability: chance that a case has a lesion (label 2; for ``"abdomen"`` 1-3 liver
            lesions, for ``"brain_tumour"`` the tumour).
        anatomy: one of :data:`ANATOMIES`: ``"organ_lesion"`` (default, any modality and channel count),
            ``"abdomen"`` (``modality="CT"``, one channel) or ``"brain_tumour"`` (``modality="MRI"``,
            1-4 channels).
        num_slices_range: optional ``(low, high)`` bounds of the slice count: the count from
            ``field_of_view_z_mm / thickness`` is clipped to it (the z extent then follows), as
            thin-slice protocols cover less. ``None`` (default): no bounds besides at least 8.
    """

    num_training: int = 20
    num_test: int = 0
    seed: int = 0
    modality: str = "CT"
    in_plane_shape: tuple[int, int] = (64, 64)
    in_plane_spacing_mm: tuple[float, float] = (0.8, 1.2)
    slice_thickness_mm: tuple[float, float] = (2.5, 5.0)
    field_of_view_z_mm: tuple[float, float] = (80.0, 120.0)
    noise_std: float = 25.0
    dataset_name: str = "Dataset900_SyntheticCT"
    file_ending: str = ".nii.gz"
    num_channels: int = 1
    lesion_probability: float = 0.8
    anatomy: str = "organ_lesion"
    num_slices_range: tuple[int, int] | None = None

    def validate(self) -> None:
        """Raise :class:`AutosegInputError` naming the first invalid field."""
        if self.modality not in MODALITIES:
            raise AutosegInputError(f"synthetic dataset: modality must be one of {MODALITIES}, "
                                    f"got {self.modality!r}")
        if self.num_training < 1 or self.num_test < 0:
            raise AutosegInputError("synthetic dataset: need num_training >= 1 and num_test >= 0")
        if self.seed < 0:
            raise AutosegInputError(f"synthetic dataset: seed must be >= 0, got {self.seed}")
        if len(self.in_plane_shape) != 2 or min(self.in_plane_shape) < _MIN_IN_PLANE:
            raise AutosegInputError(f"synthetic dataset: in_plane_shape must be 2 sizes >= {_MIN_IN_PLANE}, "
                                    f"got {self.in_plane_shape}")
        for name in ("in_plane_spacing_mm", "slice_thickness_mm", "field_of_view_z_mm"):
            low, high = getattr(self, name)
            if not 0 < low <= high:
                raise AutosegInputError(f"synthetic dataset: {name} must be a range 0 < low <= high, "
                                        f"got {(low, high)}")
        if self.noise_std < 0:
            raise AutosegInputError(f"synthetic dataset: noise_std must be >= 0, got {self.noise_std}")
        if self.num_channels < 1:
            raise AutosegInputError(f"synthetic dataset: num_channels must be >= 1, got {self.num_channels}")
        if not 0.0 <= self.lesion_probability <= 1.0:
            raise AutosegInputError("synthetic dataset: lesion_probability must be in [0, 1]")
        if self.anatomy not in ANATOMIES:
            raise AutosegInputError(f"synthetic dataset: anatomy must be one of {ANATOMIES}, got {self.anatomy!r}")
        if self.anatomy == "abdomen" and (self.modality != "CT" or self.num_channels != 1):
            raise AutosegInputError("synthetic dataset: anatomy 'abdomen' needs modality 'CT' and num_channels 1")
        if self.anatomy == "brain_tumour" and (self.modality != "MRI"
                                               or not 1 <= self.num_channels <= len(BRAIN_CONTRASTS)):
            raise AutosegInputError("synthetic dataset: anatomy 'brain_tumour' needs modality 'MRI' and "
                                    f"num_channels 1-{len(BRAIN_CONTRASTS)}")
        if self.num_slices_range is not None and (
                len(self.num_slices_range) != 2 or not _MIN_SLICES <= self.num_slices_range[0]
                <= self.num_slices_range[1]):
            raise AutosegInputError(f"synthetic dataset: num_slices_range must be (low, high) with "
                                    f"{_MIN_SLICES} <= low <= high, got {self.num_slices_range}")
        if self.file_ending not in WRITABLE_FILE_ENDINGS:
            raise AutosegInputError(f"synthetic dataset: file_ending must be one of {WRITABLE_FILE_ENDINGS}, "
                                    f"got {self.file_ending!r}")
        if not re.fullmatch(r"[A-Za-z0-9_.\-]+", self.dataset_name):
            raise AutosegInputError(f"synthetic dataset: dataset_name {self.dataset_name!r} must be a plain "
                                    "folder name (letters, digits, '_', '-', '.')")

    @property
    def channel_names(self) -> dict[str, str]:
        """dataset.json ``channel_names``: ``{"0": modality, "1": "aux", "2": modality, ...}``
        (``"brain_tumour"``: the contrasts :data:`BRAIN_CONTRASTS`, ``{"0": "T1ce", "1": "FLAIR", ...}``)."""
        if self.anatomy == "brain_tumour":
            return {str(k): BRAIN_CONTRASTS[k] for k in range(self.num_channels)}
        return {str(k): self.modality if k % 2 == 0 else "aux" for k in range(self.num_channels)}

    @property
    def labels(self) -> dict[str, int]:
        """dataset.json ``labels`` (name -> value) of the anatomy."""
        return dict(ANATOMY_LABELS[self.anatomy])


def draw_case_grid(rng: np.random.Generator, spec: SyntheticDatasetSpec
                   ) -> tuple[tuple[int, int, int], tuple[float, float, float]]:
    """The first draws of every case: its shape ``(z, y, x)`` (voxels) and spacing ``(z, y, x)`` (mm).

    In-plane spacing and slice thickness are rounded to 0.001 mm; the slice count is
    ``field_of_view_z_mm / thickness`` rounded, at least 8 and clipped to ``num_slices_range``.
    """
    ny, nx = (int(v) for v in spec.in_plane_shape)
    in_plane = round(float(rng.uniform(*spec.in_plane_spacing_mm)), 3)
    thickness = round(float(rng.uniform(*spec.slice_thickness_mm)), 3)
    fov_z = float(rng.uniform(*spec.field_of_view_z_mm))
    nz = max(_MIN_SLICES, int(round(fov_z / thickness)))
    if spec.num_slices_range is not None:
        nz = min(max(nz, int(spec.num_slices_range[0])), int(spec.num_slices_range[1]))
    return (nz, ny, nx), (thickness, in_plane, in_plane)


def large_ct_spec(num_training: int = 20, num_test: int = 0, seed: int = 0, **overrides) -> SyntheticDatasetSpec:
    """Realistic large abdominal CT (``"abdomen"`` anatomy): 512 x 512 voxels in-plane at 0.7-0.9 mm,
    slices 1-5 mm thick covering 300-450 mm, clipped to 100-300 slices (thin-slice cases cover less),
    noise 20 HU. A 512 x 512 x 300 case is 78.6 M voxels (150 MB as int16). ``overrides`` replace any
    :class:`SyntheticDatasetSpec` field (e.g. a small ``in_plane_shape`` for tests)."""
    values = dict(num_training=num_training, num_test=num_test, seed=seed, modality="CT", anatomy="abdomen",
                  in_plane_shape=(512, 512), in_plane_spacing_mm=(0.7, 0.9), slice_thickness_mm=(1.0, 5.0),
                  field_of_view_z_mm=(300.0, 450.0), num_slices_range=(100, 300), noise_std=20.0,
                  dataset_name="Dataset910_SyntheticAbdomenCT")
    values.update(overrides)
    spec = SyntheticDatasetSpec(**values)
    spec.validate()
    return spec


def brain_mr_spec(num_training: int = 20, num_test: int = 0, seed: int = 0, **overrides) -> SyntheticDatasetSpec:
    """Realistic BraTS-like brain MR (``"brain_tumour"`` anatomy): 240 x 240 x 155 voxels at 1 mm, two
    channels (T1ce, FLAIR), a tumour in every case, noise 8 % of the signal. ``overrides`` replace any
    :class:`SyntheticDatasetSpec` field (``num_channels=4`` adds T1 and T2)."""
    values = dict(num_training=num_training, num_test=num_test, seed=seed, modality="MRI", anatomy="brain_tumour",
                  in_plane_shape=(240, 240), in_plane_spacing_mm=(1.0, 1.0), slice_thickness_mm=(1.0, 1.0),
                  field_of_view_z_mm=(155.0, 155.0), num_channels=2, noise_std=20.0, lesion_probability=1.0,
                  dataset_name="Dataset911_SyntheticBrainMR")
    values.update(overrides)
    spec = SyntheticDatasetSpec(**values)
    spec.validate()
    return spec
