"""Seeded generator of small CT-like and MRI-like datasets in the nnU-Net v2 raw layout.

Used by the test suite (tiny datasets, fast) and by ``autoseg demo`` (a dataset a
small CPU model can learn). Everything is reproducible: the same
:class:`SyntheticDatasetSpec` (including ``seed``) gives byte-identical arrays.

A case is a scan of an elliptic-cylinder "body" (axis along z) with a thin fat
rim, an oriented ellipsoidal contrast-enhanced **organ** (label 1) and, in most
cases, a hypo-enhancing **lesion** inside it (label 2, overrides 1). Two label-0
distractors make the task more than a threshold: an enhanced "vessel" tube with
about the organ's intensity and, in most cases, a bright "bone" cylinder.
Shapes are defined in millimetres, so anatomy has the same physical size in
every case of a dataset whatever its voxel spacing; in-plane sizes scale with
``R = min(in_plane_shape) * min(in_plane_spacing_mm) / 2`` (the smallest
possible in-plane half field of view, 25.6 mm for the default spec) so the body
always fits inside the field of view with a margin of background around it.

That is the default ``"organ_lesion"`` anatomy (small and fast: the tests and
``autoseg demo`` use it). :attr:`SyntheticDatasetSpec.anatomy` selects two opt-in
realistic anatomies for developing and benchmarking large-volume paths:

* ``"abdomen"`` (CT, one channel; labels :data:`ABDOMEN_LABELS`): elliptic body with
  subcutaneous fat, a spine (vertebrae and discs), aorta, vena cava and bowel gas
  (all label 0); a two-lobed **liver** (1, about 1.5 l), a **kidney** pair with renal
  sinus and perirenal fat (2, about 0.3 l together), a **spleen** (3, about 0.12 l)
  and, in most cases, 1-3 hypodense **liver lesions** (4, 8-24 mm across).
  :func:`large_ct_spec` gives 512 x 512 x 100-300 voxels at 0.7-0.9 mm in-plane and
  1-5 mm slices.
* ``"brain_tumour"`` (MRI, 1-4 channels named :data:`BRAIN_CONTRASTS`; labels
  :data:`BRAIN_TUMOUR_LABELS`): a skull-stripped brain (zero outside) with CSF rim,
  folded cortex, white matter, lateral ventricles and enhancing choroid plexus, and
  a BraTS-like tumour: **edema** (2) surrounds the tumour core, whose **enhancing**
  rim (3) surrounds the **necrosis** (1). Each region is separable from its
  neighbours only with both T1ce and FLAIR (edema is iso-intense to white matter
  in T1ce, enhancing tumour iso-intense to edema in FLAIR, necrosis to CSF in T1ce).
  :func:`brain_mr_spec` gives 240 x 240 x 155 voxels at 1 mm, two channels.

Their organ sizes are absolute millimetres (shrunk by one factor only when the
in-plane field of view is too small for the body, see
:data:`ABDOMEN_REFERENCE_HALF_FOV_MM`), and they are drawn in float32 inside
bounding boxes, so a 512 x 512 x 300 CT case takes a few seconds and about 1 GB.

Arrays use the array axis order ``(z, y, x)``; images are ``(C, z, y, x)``;
``spacing`` is in mm in array axis order. CT intensities are Hounsfield units
(HU); MRI intensities have no unit (tissue about 400, background exactly 0).
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from autoseg.errors import AutosegInputError
from autoseg.io.geometry import ImageGeometry
from autoseg.io.images import write_image, write_segmentation
from autoseg.utils.files import write_json

#: Label name -> value written to dataset.json.
LABELS = {"background": 0, "organ": 1, "lesion": 2}

#: Modalities the generator can simulate.
MODALITIES = ("CT", "MRI")

#: File endings the generator can write (single-file 3D formats).
WRITABLE_FILE_ENDINGS = (".nii.gz", ".nii", ".nrrd", ".mha")

#: SimpleITK direction cosines (row-major 3x3) of most cases.
IDENTITY_DIRECTION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
#: Direction of every case whose index is 1 modulo :data:`FLIPPED_DIRECTION_EVERY`
#: (x and y axes flipped), so geometry round trips are exercised.
FLIPPED_DIRECTION = (-1.0, 0.0, 0.0, 0.0, -1.0, 0.0, 0.0, 0.0, 1.0)
FLIPPED_DIRECTION_EVERY = 4
#: Origins (mm, each SimpleITK axis) are drawn uniformly from +-this value.
ORIGIN_RANGE_MM = 200.0

#: CT values are clipped to the int16 range scanners store.
CT_MIN_HU, CT_MAX_HU = -1024.0, 3071.0

# Tissue classes of the internal class map.
AIR, FAT, TISSUE, ORGAN, LESION, BONE, VESSEL = range(7)
_NUM_CLASSES = 7

#: Intensity per tissue class as (mean, half-width of the per-case uniform jitter).
CT_INTENSITIES_HU: dict[int, tuple[float, float]] = {
    AIR: (-1000.0, 0.0), FAT: (-100.0, 10.0), TISSUE: (40.0, 10.0), ORGAN: (150.0, 10.0),
    LESION: (70.0, 10.0), BONE: (700.0, 100.0), VESSEL: (170.0, 20.0)}
MRI_INTENSITIES: dict[int, tuple[float, float]] = {
    AIR: (0.0, 0.0), FAT: (800.0, 50.0), TISSUE: (400.0, 30.0), ORGAN: (600.0, 30.0),
    LESION: (300.0, 30.0), BONE: (80.0, 20.0), VESSEL: (650.0, 50.0)}
#: The second contrast of derived "aux" channels (arbitrary units, lesion bright, organ dark).
AUX_INTENSITIES: dict[int, tuple[float, float]] = {
    AIR: (0.0, 0.0), FAT: (300.0, 20.0), TISSUE: (500.0, 30.0), ORGAN: (350.0, 20.0),
    LESION: (650.0, 40.0), BONE: (100.0, 20.0), VESSEL: (550.0, 40.0)}

#: MRI noise is proportional to the signal: relative std = noise_std / this (10 % by default).
MRI_NOISE_REFERENCE = 250.0
#: Partial-volume blur (Gaussian sigma in voxels, every axis) of the main channel.
PARTIAL_VOLUME_SIGMA_VOXELS = 0.5
#: Blur of derived channels (sigma in voxels, (z, y, x)).
DERIVED_SIGMA_VOXELS = (0.5, 1.0, 1.0)

_MIN_SLICES = 8
_MIN_IN_PLANE = 16

#: Anatomies the generator can draw (see the module docstring); the first is the default.
ANATOMIES = ("organ_lesion", "abdomen", "brain_tumour")
#: Label name -> value of the ``"abdomen"`` anatomy (labels ordered by organ size).
ABDOMEN_LABELS = {"background": 0, "liver": 1, "kidney": 2, "spleen": 3, "liver_lesion": 4}
#: Label name -> value of the ``"brain_tumour"`` anatomy (BraTS-like: tumour core = necrosis +
#: enhancing, whole tumour = all three).
BRAIN_TUMOUR_LABELS = {"background": 0, "necrosis": 1, "edema": 2, "enhancing": 3}
ANATOMY_LABELS = {"organ_lesion": LABELS, "abdomen": ABDOMEN_LABELS, "brain_tumour": BRAIN_TUMOUR_LABELS}
#: Channel names (MR contrasts) of the ``"brain_tumour"`` anatomy, channel 0 first.
BRAIN_CONTRASTS = ("T1ce", "FLAIR", "T1", "T2")

#: Smallest in-plane half field of view (mm) that holds the abdomen at its natural size; below it
#: (``R = min(in_plane_shape) * in_plane_spacing_mm[0] / 2`` smaller) the whole anatomy shrinks by R / this.
ABDOMEN_REFERENCE_HALF_FOV_MM = 175.0
#: The same for the brain (the brain is at most 168 mm long).
BRAIN_REFERENCE_HALF_FOV_MM = 110.0

# Tissue classes of the abdomen class map.
(AB_AIR, AB_FAT, AB_TISSUE, AB_GAS, AB_BONE, AB_CORTEX, AB_DISC, AB_AORTA, AB_IVC, AB_LIVER, AB_KIDNEY,
 AB_SINUS, AB_SPLEEN, AB_LESION) = range(14)
#: Abdomen CT (portal venous phase) per tissue class as (mean HU, half-width of the per-case jitter).
#: Distractors: the aorta is as bright as kidney cortex, the vena cava as the liver, discs as lesions.
ABDOMEN_CT_HU: dict[int, tuple[float, float]] = {
    AB_AIR: (-1000.0, 0.0), AB_FAT: (-100.0, 10.0), AB_TISSUE: (45.0, 10.0), AB_GAS: (-950.0, 30.0),
    AB_BONE: (300.0, 50.0), AB_CORTEX: (800.0, 100.0), AB_DISC: (80.0, 10.0), AB_AORTA: (170.0, 25.0),
    AB_IVC: (120.0, 15.0), AB_LIVER: (115.0, 15.0), AB_KIDNEY: (180.0, 25.0), AB_SINUS: (-20.0, 15.0),
    AB_SPLEEN: (125.0, 15.0), AB_LESION: (60.0, 15.0)}

# Tissue classes of the brain class map.
BR_BACKGROUND, BR_CSF, BR_GM, BR_WM, BR_NECROSIS, BR_EDEMA, BR_ENHANCING, BR_PLEXUS = range(8)
#: Brain MR intensity (arbitrary units) per contrast and tissue class as (mean, half-width of the jitter).
BRAIN_MR_INTENSITIES: dict[str, dict[int, tuple[float, float]]] = {
    "T1ce": {BR_BACKGROUND: (0.0, 0.0), BR_CSF: (150.0, 20.0), BR_GM: (450.0, 25.0), BR_WM: (600.0, 25.0),
             BR_NECROSIS: (190.0, 20.0), BR_EDEMA: (540.0, 25.0), BR_ENHANCING: (950.0, 40.0),
             BR_PLEXUS: (900.0, 40.0)},
    "FLAIR": {BR_BACKGROUND: (0.0, 0.0), BR_CSF: (100.0, 20.0), BR_GM: (500.0, 25.0), BR_WM: (380.0, 25.0),
              BR_NECROSIS: (620.0, 30.0), BR_EDEMA: (820.0, 30.0), BR_ENHANCING: (780.0, 30.0),
              BR_PLEXUS: (300.0, 30.0)},
    "T1": {BR_BACKGROUND: (0.0, 0.0), BR_CSF: (150.0, 20.0), BR_GM: (450.0, 25.0), BR_WM: (650.0, 25.0),
           BR_NECROSIS: (200.0, 20.0), BR_EDEMA: (500.0, 25.0), BR_ENHANCING: (480.0, 25.0),
           BR_PLEXUS: (500.0, 30.0)},
    "T2": {BR_BACKGROUND: (0.0, 0.0), BR_CSF: (1000.0, 40.0), BR_GM: (600.0, 30.0), BR_WM: (400.0, 25.0),
           BR_NECROSIS: (850.0, 40.0), BR_EDEMA: (750.0, 30.0), BR_ENHANCING: (650.0, 30.0),
           BR_PLEXUS: (500.0, 30.0)},
}

#: Noise of large volumes is drawn in z slabs of about this many voxels (bounds the temporary memory).
_NOISE_CHUNK_VOXELS = 1 << 22


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


# ----------------------------------------------------------------------------- geometry helpers

def _centered_coordinates(shape: tuple[int, int, int], spacing: tuple[float, float, float]
                          ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Open grids of voxel-centre coordinates (mm) relative to the volume centre, ``(z, y, x)``."""
    grids = []
    for axis, (size, step) in enumerate(zip(shape, spacing, strict=True)):
        values = (np.arange(size, dtype=np.float64) - (size - 1) / 2.0) * step
        view = [1, 1, 1]
        view[axis] = size
        grids.append(values.reshape(view))
    return grids[0], grids[1], grids[2]


def _rotation_about(axis: int, angle: float) -> np.ndarray:
    """Rotation matrix in ``(z, y, x)`` coordinates about one coordinate axis (radians)."""
    matrix = np.eye(3)
    i, j = [a for a in range(3) if a != axis]
    c, s = np.cos(angle), np.sin(angle)
    matrix[i, i], matrix[i, j], matrix[j, i], matrix[j, j] = c, -s, s, c
    return matrix


def _random_orientation(rng: np.random.Generator, max_tilt_deg: float) -> np.ndarray:
    """Any rotation about z, then a tilt of the long (z) axis by up to ``max_tilt_deg``."""
    spin = _rotation_about(0, rng.uniform(0.0, np.pi))
    tilt_axis = 1 if rng.random() < 0.5 else 2
    tilt = _rotation_about(tilt_axis, np.deg2rad(rng.uniform(-max_tilt_deg, max_tilt_deg)))
    return spin @ tilt


def _ellipsoid_mask(grid: tuple[np.ndarray, ...], center: np.ndarray, rotation: np.ndarray,
                    semi_axes: np.ndarray) -> np.ndarray:
    """Voxels whose centre lies in an ellipsoid (mm; local axes are the columns of ``rotation``)."""
    offsets = [grid[axis] - center[axis] for axis in range(3)]
    total = 0.0
    for local in range(3):
        along = (rotation[0, local] * offsets[0] + rotation[1, local] * offsets[1]
                 + rotation[2, local] * offsets[2])
        total = total + (along / semi_axes[local]) ** 2
    return np.asarray(total <= 1.0)


def _half_extents(rotation: np.ndarray, semi_axes: np.ndarray) -> np.ndarray:
    """Half size (mm) of the axis-aligned bounding box of a rotated ellipsoid, ``(z, y, x)``."""
    return np.sqrt(((rotation * semi_axes[None, :]) ** 2).sum(axis=1))


def _ellipse_2d(y: np.ndarray, x: np.ndarray, cy: float, cx: float, ry: float, rx: float) -> np.ndarray:
    return ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2 <= 1.0


# ----------------------------------------------------------------------------- anatomy

def _place_organ(rng: np.random.Generator, grid: tuple[np.ndarray, ...], allowed: list[np.ndarray],
                 scale_mm: float, half_fov: np.ndarray, body_center: np.ndarray,
                 fov_z_mm: float) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Draw an organ ellipsoid whose voxels all lie in an allowed region; return mask, centre,
    rotation and semi-axes (mm, local axes). ``allowed`` lists regions from strict to relaxed; the
    next one is only tried when the organ (shrunk step by step) never fits the previous one."""
    initial_axes = np.array([rng.uniform(0.12, 0.2) * fov_z_mm,
                             rng.uniform(0.26, 0.42) * scale_mm,
                             rng.uniform(0.26, 0.42) * scale_mm])
    rotation = _random_orientation(rng, max_tilt_deg=20.0)
    for region in allowed:
        semi_axes = initial_axes
        for _ in range(12):
            extents = _half_extents(rotation, semi_axes)
            room = np.maximum(half_fov - extents, 0.0)
            for _ in range(20):
                center = np.array([rng.uniform(-room[0], room[0]),
                                   body_center[0] + rng.uniform(-room[1], room[1]),
                                   body_center[1] + rng.uniform(-room[2], room[2])])
                mask = _ellipsoid_mask(grid, center, rotation, semi_axes)
                if mask.sum() >= 8 and not np.any(mask & ~region):
                    return mask, center, rotation, semi_axes
            semi_axes = semi_axes * 0.85
    raise AutosegInputError("synthetic dataset: the organ does not fit into the body; "
                            "use a larger in_plane_shape or a narrower in_plane_spacing_mm range")


def _bias_field(rng: np.random.Generator, grid: tuple[np.ndarray, ...]) -> np.ndarray:
    """Smooth multiplicative MRI bias field (about 0.7-1.4): exp of a random quadratic polynomial."""
    unit = [g / max(float(np.abs(g).max()), 1e-6) for g in grid]
    terms = [unit[0], unit[1], unit[2], unit[0] * unit[1], unit[0] * unit[2], unit[1] * unit[2],
             unit[0] ** 2, unit[1] ** 2, unit[2] ** 2]
    coefficients = rng.normal(0.0, 0.12, size=len(terms))
    log_field = sum(c * t for c, t in zip(coefficients, terms, strict=True))
    return np.exp(np.clip(np.broadcast_to(log_field, np.broadcast_shapes(*(g.shape for g in grid))),
                          -0.35, 0.35))


def _class_intensities(rng: np.random.Generator, table: dict[int, tuple[float, float]]) -> np.ndarray:
    return np.array([table[c][0] + rng.uniform(-table[c][1], table[c][1]) for c in range(_NUM_CLASSES)])


def _render(rng: np.random.Generator, classes: np.ndarray, table: dict[int, tuple[float, float]],
            sigma: float | tuple[float, ...], modality: str, noise_std: float, body: np.ndarray,
            bias: np.ndarray | None) -> np.ndarray:
    """Intensity image of a class map: per-case values, partial-volume blur, bias, noise."""
    values = _class_intensities(rng, table)
    image = ndimage.gaussian_filter(values[classes], sigma=sigma, mode="nearest")
    if modality == "CT":
        image = image + rng.normal(0.0, noise_std, size=image.shape) if noise_std > 0 else image
        return np.rint(image)
    if bias is not None:
        image = image * bias
    if noise_std > 0:
        image = image * (1.0 + rng.normal(0.0, noise_std / MRI_NOISE_REFERENCE, size=image.shape))
    return np.where(body, np.maximum(image, 0.0), 0.0)


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


def generate_case(rng: np.random.Generator, spec: SyntheticDatasetSpec
                  ) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Generate one case without touching the disk.

    Returns:
        image: float32 ``(C, z, y, x)``; CT in HU (whole numbers, clipped to [-1024, 3071]),
            MRI in arbitrary units with exact zeros outside the body (the brain for ``"brain_tumour"``).
        label: uint8 ``(z, y, x)`` with the values of ``spec.labels``: 0 background, 1 organ, 2 lesion
            for the default anatomy (see :data:`ABDOMEN_LABELS`, :data:`BRAIN_TUMOUR_LABELS`).
        spacing: voxel size in mm, ``(z, y, x)``.
    """
    spec.validate()
    if spec.anatomy == "abdomen":
        return _generate_abdomen_case(rng, spec)
    if spec.anatomy == "brain_tumour":
        return _generate_brain_tumour_case(rng, spec)
    shape, spacing = draw_case_grid(rng, spec)
    nz, ny, nx = shape
    thickness = spacing[0]
    grid = _centered_coordinates(shape, spacing)
    _, y2, x2 = grid  # (1, ny, 1) and (1, 1, nx)
    y2, x2 = y2[0], x2[0]

    # Body: elliptic cylinder along z, thin fat rim, kept well inside the field of view.
    min_half_y = ny * spec.in_plane_spacing_mm[0] / 2.0
    min_half_x = nx * spec.in_plane_spacing_mm[0] / 2.0
    scale = min(min_half_y, min_half_x)
    body_axes = np.array([rng.uniform(0.62, 0.75) * min_half_y, rng.uniform(0.78, 0.9) * min_half_x])
    body_center = rng.uniform(-0.03, 0.03, size=2) * scale
    rim = rng.uniform(0.06, 0.09) * scale
    body = _ellipse_2d(y2, x2, body_center[0], body_center[1], body_axes[0], body_axes[1])
    inner_axes = body_axes - rim
    inner = _ellipse_2d(y2, x2, body_center[0], body_center[1], inner_axes[0], inner_axes[1])

    # Distractors (label 0): bone cylinder near the back, enhanced vessel in front of it.
    bone_radius = rng.uniform(0.10, 0.14) * scale
    bone_y = body_center[0] + inner_axes[0] - bone_radius - rng.uniform(0.04, 0.10) * scale
    bone_x = body_center[1] + rng.uniform(-0.05, 0.05) * scale
    has_bone = rng.random() < 0.75
    bone = _ellipse_2d(y2, x2, bone_y, bone_x, bone_radius, bone_radius) & inner & has_bone
    vessel_radius = rng.uniform(0.09, 0.13) * scale
    vessel_y = bone_y - bone_radius - vessel_radius - rng.uniform(0.05, 0.15) * scale
    vessel_x = bone_x + rng.uniform(-0.25, 0.25) * scale
    has_vessel = rng.random() < 0.85
    vessel = _ellipse_2d(y2, x2, vessel_y, vessel_x, vessel_radius, vessel_radius) & inner & has_vessel

    # Organ: oriented ellipsoid inside the soft tissue, off the distractors and the end slices.
    # Regions from strict to relaxed (tiny or coarse grids may need the relaxed ones; the organ
    # then simply covers part of a distractor).
    keep_out = ndimage.binary_dilation(bone | vessel, iterations=2)
    eroded = ndimage.binary_erosion(inner, iterations=1)
    allowed = []
    for region_2d in (eroded & ~keep_out, eroded, inner):
        region = np.zeros(shape, dtype=bool)
        region[1:-1] = region_2d
        allowed.append(region)
    half_fov = np.array([(nz - 1) / 2.0 * thickness - thickness, inner_axes[0], inner_axes[1]])
    organ, organ_center, rotation, organ_axes = _place_organ(
        rng, grid, allowed, scale, half_fov, body_center, nz * thickness)

    # Lesion: smaller ellipsoid in the organ's frame, at least one voxel from its border.
    lesion = np.zeros(shape, dtype=bool)
    if rng.random() < spec.lesion_probability:
        core = ndimage.binary_erosion(organ, structure=ndimage.generate_binary_structure(3, 1))
        fractions = rng.uniform(0.4, 0.6, size=3)
        direction = rng.normal(size=3)
        direction /= max(float(np.linalg.norm(direction)), 1e-9)
        offset = direction * rng.uniform(0.0, max(1.0 - fractions.max() - 0.05, 0.0))
        lesion_center = organ_center + rotation @ (offset * organ_axes)
        lesion = _ellipsoid_mask(grid, lesion_center, rotation, fractions * organ_axes) & core
        if lesion.sum() < 4:  # small organ on a coarse grid: a central lesion instead
            lesion = _ellipsoid_mask(grid, organ_center, rotation, 0.7 * organ_axes) & core
        if lesion.sum() < 4:
            lesion[:] = False

    classes = np.full(shape, AIR, dtype=np.uint8)
    classes[:, body] = FAT
    classes[:, inner] = TISSUE
    classes[:, bone] = BONE
    classes[:, vessel] = VESSEL
    classes[organ] = ORGAN
    classes[lesion] = LESION
    label = np.zeros(shape, dtype=np.uint8)
    label[organ] = LABELS["organ"]
    label[lesion] = LABELS["lesion"]

    body_3d = np.broadcast_to(body, shape)
    bias = _bias_field(rng, grid) if spec.modality == "MRI" else None
    table = CT_INTENSITIES_HU if spec.modality == "CT" else MRI_INTENSITIES
    main = _render(rng, classes, table, PARTIAL_VOLUME_SIGMA_VOXELS, spec.modality, spec.noise_std,
                   body_3d, bias)
    if spec.modality == "CT":
        main = np.clip(main, CT_MIN_HU, CT_MAX_HU)
    channels = [main]
    for k in range(1, spec.num_channels):
        if k % 2 == 1:
            channels.append(_render(rng, classes, AUX_INTENSITIES, DERIVED_SIGMA_VOXELS, spec.modality,
                                    spec.noise_std, body_3d, bias))
        else:
            smooth = ndimage.gaussian_filter(main, sigma=DERIVED_SIGMA_VOXELS, mode="nearest")
            channels.append(np.rint(smooth) if spec.modality == "CT" else np.where(body_3d, smooth, 0.0))
    image = np.stack(channels).astype(np.float32)
    return image, label, spacing


# ----------------------------------------------------------------------------- large anatomies
# Drawn in float32 inside bounding boxes: every anatomy is first drawn in millimetres (the random
# draws never depend on the voxel grid, so a seed gives the same anatomy at every spacing), then
# voxelized box by box into a uint8 class map and a label map.

Box = tuple[slice, slice, slice]


def _axis_coordinates(shape: tuple[int, int, int], spacing: tuple[float, float, float]) -> list[np.ndarray]:
    """Voxel-centre coordinates (mm, float64, ascending) of each axis relative to the volume centre."""
    return [(np.arange(size, dtype=np.float64) - (size - 1) / 2.0) * step
            for size, step in zip(shape, spacing, strict=True)]


def _anatomy_scale(spec: SyntheticDatasetSpec, reference_half_fov_mm: float) -> float:
    """1 when the smallest in-plane half field of view holds the anatomy, else the factor that shrinks it."""
    half_fov = min(spec.in_plane_shape) * spec.in_plane_spacing_mm[0] / 2.0
    return min(1.0, half_fov / reference_half_fov_mm)


def _small_rotation(rng: np.random.Generator, max_spin_deg: float, max_tilt_deg: float) -> np.ndarray:
    """Rotation about z by up to ``max_spin_deg``, then a tilt of z by up to ``max_tilt_deg`` (degrees)."""
    spin = _rotation_about(0, np.deg2rad(rng.uniform(-max_spin_deg, max_spin_deg)))
    tilt_axis = 1 if rng.random() < 0.5 else 2
    return spin @ _rotation_about(tilt_axis, np.deg2rad(rng.uniform(-max_tilt_deg, max_tilt_deg)))


def _box(coords: list[np.ndarray], low_mm: np.ndarray, high_mm: np.ndarray) -> Box | None:
    """Index box of the voxels whose centres lie in ``[low_mm, high_mm]`` per axis; None if empty."""
    slices = []
    for axis in range(3):
        start = int(np.searchsorted(coords[axis], low_mm[axis], side="left"))
        stop = int(np.searchsorted(coords[axis], high_mm[axis], side="right"))
        if stop <= start:
            return None
        slices.append(slice(start, stop))
    return slices[0], slices[1], slices[2]


def _ellipsoid_box(coords: list[np.ndarray], center: np.ndarray, rotation: np.ndarray, semi_axes: np.ndarray,
                   pad_mm: float = 0.0) -> Box | None:
    """Index box of an ellipsoid (mm), grown by ``pad_mm`` on every side."""
    half = _half_extents(rotation, semi_axes) + pad_mm
    return _box(coords, center - half, center + half)


def _union_box(boxes: list[Box | None]) -> Box | None:
    """Smallest box holding every given box (None entries are ignored)."""
    boxes = [box for box in boxes if box is not None]
    if not boxes:
        return None
    return tuple(slice(min(b[a].start for b in boxes), max(b[a].stop for b in boxes)) for a in range(3))


def _box_shape(box: Box) -> tuple[int, int, int]:
    return box[0].stop - box[0].start, box[1].stop - box[1].start, box[2].stop - box[2].start


def _quadratic_form(coords: list[np.ndarray], box: Box, center: np.ndarray, rotation: np.ndarray,
                    semi_axes: np.ndarray) -> np.ndarray:
    """float32 ``sum_k (local_k / semi_axis_k)^2`` at the voxel centres of ``box`` (<= 1 inside)."""
    matrix = rotation @ np.diag(1.0 / np.asarray(semi_axes, dtype=np.float64) ** 2) @ rotation.T
    a = [[float(v) for v in row] for row in matrix]  # Python floats keep the float32 arithmetic
    dz, dy, dx = ((coords[axis][box[axis]] - center[axis]).astype(np.float32) for axis in range(3))
    dy, dx = dy[:, None], dx[None, :]
    plane = a[1][1] * dy * dy + a[2][2] * dx * dx + (2.0 * a[1][2]) * (dy * dx)
    slope = (2.0 * a[0][1]) * dy + (2.0 * a[0][2]) * dx
    form = dz[:, None, None] * slope[None]
    form += plane[None]
    form += (a[0][0] * dz * dz)[:, None, None]
    return form


def _or_ellipsoid(mask: np.ndarray, box: Box, coords: list[np.ndarray], center: np.ndarray,
                  rotation: np.ndarray, semi_axes: np.ndarray) -> np.ndarray:
    """OR an ellipsoid (mm) into ``mask``, a bool array covering ``box``; only its own box is evaluated."""
    own = _ellipsoid_box(coords, center, rotation, semi_axes)
    if own is None:
        return mask
    inter = tuple(slice(max(o.start, b.start), min(o.stop, b.stop)) for o, b in zip(own, box, strict=True))
    if any(s.stop <= s.start for s in inter):
        return mask
    local = tuple(slice(s.start - b.start, s.stop - b.start) for s, b in zip(inter, box, strict=True))
    mask[local] |= _quadratic_form(coords, inter, center, rotation, semi_axes) <= 1.0
    return mask


def _ellipsoids_in(box: Box, coords: list[np.ndarray],
                   ellipsoids: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> np.ndarray:
    """Union of ``(center, rotation, semi_axes)`` ellipsoids as a bool array covering ``box``."""
    mask = np.zeros(_box_shape(box), dtype=bool)
    for center, rotation, semi_axes in ellipsoids:
        _or_ellipsoid(mask, box, coords, center, rotation, semi_axes)
    return mask


def _table_values(rng: np.random.Generator, table: dict[int, tuple[float, float]]) -> np.ndarray:
    """float32 intensity per tissue class: the table's mean plus a per-case uniform jitter."""
    return np.array([table[c][0] + rng.uniform(-table[c][1], table[c][1]) for c in range(len(table))],
                    dtype=np.float32)


def _add_noise(rng: np.random.Generator, image: np.ndarray, std: float, relative: bool) -> None:
    """Add Gaussian noise of ``std`` in place (``relative``: multiply by ``1 + std * N(0, 1)``), in z slabs."""
    if std <= 0:
        return
    step = max(1, _NOISE_CHUNK_VOXELS // max(1, image[0].size))
    for start in range(0, image.shape[0], step):
        block = image[start:start + step]
        noise = rng.standard_normal(block.shape, dtype=np.float32)
        noise *= std
        if relative:
            noise += 1.0
            block *= noise
        else:
            block += noise


def _bias_field_float32(coefficients: np.ndarray, coords: list[np.ndarray]) -> np.ndarray:
    """Smooth multiplicative MR bias field (float32, about 0.7-1.4): exp of a quadratic polynomial."""
    z, y, x = (c / max(float(np.abs(c).max()), 1e-6) for c in coords)
    z = z.astype(np.float32)[:, None, None]
    y = y.astype(np.float32)[None, :, None]
    x = x.astype(np.float32)[None, None, :]
    c = [float(v) for v in coefficients]
    in_plane = c[1] * y + c[2] * x + c[5] * (y * x) + c[7] * (y * y) + c[8] * (x * x)
    field = z * (c[3] * y + c[4] * x)
    field += in_plane
    field += c[0] * z + c[6] * (z * z)
    np.clip(field, -0.35, 0.35, out=field)
    return np.exp(field, out=field)


def _blur_in_place(image: np.ndarray) -> None:
    """Partial-volume blur (Gaussian, :data:`PARTIAL_VOLUME_SIGMA_VOXELS`) of a float32 ``(z, y, x)`` array.

    scipy filters one axis at a time through line buffers, so input and output may be the same array.
    """
    ndimage.gaussian_filter(image, sigma=PARTIAL_VOLUME_SIGMA_VOXELS, mode="nearest", output=image)


def _paint(maps: tuple[np.ndarray, np.ndarray, list[np.ndarray], np.ndarray],
           ellipsoids: list[tuple[np.ndarray, np.ndarray, np.ndarray]], tissue: int, value: int | None = None,
           within: int | None = None) -> tuple[Box | None, np.ndarray | None]:
    """Voxelize a union of ellipsoids into ``maps = (classes, label, coords, allowed_2d)``.

    Voxels outside the in-plane ``allowed_2d`` region (and, with ``within``, outside that label) are
    left alone; the others get class ``tissue`` and, unless ``value`` is None, label ``value``.
    Returns the box and the mask painted in it (None, None when the union misses the volume).
    """
    classes, label, coords, allowed = maps
    box = _union_box([_ellipsoid_box(coords, c, r, a) for c, r, a in ellipsoids])
    if box is None:
        return None, None
    mask = _ellipsoids_in(box, coords, ellipsoids) & allowed[box[1], box[2]][None]
    if within is not None:
        mask &= label[box] == within
    classes[box][mask] = tissue
    if value is not None:
        label[box][mask] = value
    return box, mask


def _generate_abdomen_case(rng: np.random.Generator, spec: SyntheticDatasetSpec
                           ) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """One ``"abdomen"`` CT case (see the module docstring); returns like :func:`generate_case`.

    Patient axes: +y posterior, +x the patient's left, +z superior (LPS); sizes in mm times the scale.
    """
    shape, spacing = draw_case_grid(rng, spec)
    coords = _axis_coordinates(shape, spacing)
    s = _anatomy_scale(spec, ABDOMEN_REFERENCE_HALF_FOV_MM)
    y2, x2 = coords[1][:, None], coords[2][None, :]

    # Body cross-section (constant along z), subcutaneous fat rim.
    body_axes = np.array([rng.uniform(105.0, 125.0), rng.uniform(140.0, 165.0)]) * s
    cy, cx = rng.uniform(-5.0, 5.0, size=2) * s
    inner_axes = body_axes - rng.uniform(8.0, 20.0) * s
    # Spine: vertebral body (cancellous bone in a cortical shell) with a spinous process; discs along z.
    spine_r = rng.uniform(17.0, 22.0) * s
    spine_y = cy + inner_axes[0] - spine_r - rng.uniform(25.0, 35.0) * s
    spine_x = cx + rng.uniform(-4.0, 4.0) * s
    shell = rng.uniform(1.5, 2.5) * s
    disc_period, disc_height = rng.uniform(30.0, 36.0) * s, rng.uniform(6.0, 9.0) * s
    disc_phase = rng.uniform(0.0, disc_period)
    # Great vessels in front of the spine: aorta (left), inferior vena cava (right).
    aorta_r = rng.uniform(10.0, 13.0) * s
    aorta_y = spine_y - spine_r - aorta_r - rng.uniform(2.0, 8.0) * s
    aorta_x = spine_x + rng.uniform(10.0, 20.0) * s
    ivc_axes = np.array([rng.uniform(8.0, 11.0), rng.uniform(11.0, 15.0)]) * s
    ivc_y, ivc_x = aorta_y + rng.uniform(-5.0, 5.0) * s, spine_x - rng.uniform(22.0, 30.0) * s
    # Bowel gas pockets in the anterior half.
    gas = []
    for _ in range(int(rng.integers(3, 9))):
        center = np.array([rng.uniform(-150.0, 150.0) * s, cy - inner_axes[0] * rng.uniform(0.1, 0.7),
                           cx + inner_axes[1] * rng.uniform(-0.5, 0.5)])
        semi = np.array([rng.uniform(10.0, 30.0), rng.uniform(8.0, 20.0), rng.uniform(8.0, 20.0)]) * s
        gas.append((center, _random_orientation(rng, 30.0), semi))
    # Liver: large right lobe and smaller left lobe crossing the midline in front.
    liver_rotation = _small_rotation(rng, 15.0, 10.0)
    liver_z = rng.uniform(30.0, 60.0) * s
    right_lobe = (np.array([liver_z, cy + rng.uniform(-10.0, 10.0) * s, cx - rng.uniform(50.0, 65.0) * s]),
                  liver_rotation,
                  np.array([rng.uniform(65.0, 80.0), rng.uniform(60.0, 72.0), rng.uniform(65.0, 80.0)]) * s)
    left_lobe = (np.array([liver_z + rng.uniform(5.0, 20.0) * s, cy - rng.uniform(25.0, 40.0) * s,
                           cx + rng.uniform(5.0, 25.0) * s]),
                 liver_rotation,
                 np.array([rng.uniform(35.0, 45.0), rng.uniform(28.0, 38.0), rng.uniform(50.0, 62.0)]) * s)
    # Kidneys beside the spine (the right one lower), hilum facing the spine, in perirenal fat.
    kidneys = []
    for side in (-1.0, 1.0):
        center = np.array([-rng.uniform(15.0, 35.0) * s - (rng.uniform(5.0, 15.0) * s if side < 0 else 0.0),
                           spine_y - rng.uniform(0.0, 10.0) * s, spine_x + side * rng.uniform(55.0, 70.0) * s])
        rotation = (_rotation_about(0, np.deg2rad(side * rng.uniform(20.0, 40.0)))
                    @ _rotation_about(2, np.deg2rad(rng.uniform(-10.0, 10.0))))
        semi = np.array([rng.uniform(50.0, 58.0), rng.uniform(25.0, 30.0), rng.uniform(22.0, 27.0)]) * s
        sinus_center = center + rotation @ np.array([0.0, 0.0, -side * 0.35 * semi[2]])
        sinus_semi = semi * np.array([0.55, 0.4, 0.45])
        fat_semi = semi + rng.uniform(6.0, 12.0) * s
        kidneys.append(((center, rotation, semi), (sinus_center, rotation, sinus_semi),
                        (center, rotation, fat_semi)))
    # Spleen: posterolateral on the left above the kidney, long axis oblique.
    spleen = (np.array([rng.uniform(50.0, 70.0) * s, cy + rng.uniform(15.0, 35.0) * s,
                        cx + rng.uniform(70.0, 85.0) * s]),
              _rotation_about(0, np.deg2rad(rng.uniform(30.0, 50.0)))
              @ _rotation_about(1, np.deg2rad(rng.uniform(-10.0, 10.0))),
              np.array([rng.uniform(38.0, 48.0), rng.uniform(30.0, 38.0), rng.uniform(16.0, 22.0)]) * s)
    # Liver lesions (8-24 mm across) well inside the right lobe.
    lesions = []
    if rng.random() < spec.lesion_probability:
        for _ in range(int(rng.integers(1, 4))):
            direction = rng.normal(size=3)
            direction *= rng.uniform(0.0, 0.55) / max(float(np.linalg.norm(direction)), 1e-9)
            center = right_lobe[0] + liver_rotation @ (direction * right_lobe[2])
            semi = rng.uniform(4.0, 12.0) * s * rng.uniform(0.8, 1.2, size=3)
            lesions.append((center, _random_orientation(rng, 90.0), semi))
    values = _table_values(rng, ABDOMEN_CT_HU)

    # Voxelize: in-plane template for every slice, discs, then 3D structures box by box.
    body = _ellipse_2d(y2, x2, cy, cx, body_axes[0], body_axes[1])
    inner = _ellipse_2d(y2, x2, cy, cx, inner_axes[0], inner_axes[1])
    vertebra = _ellipse_2d(y2, x2, spine_y, spine_x, spine_r, 1.1 * spine_r)
    cancellous = _ellipse_2d(y2, x2, spine_y, spine_x, spine_r - shell, 1.1 * spine_r - shell)
    process = _ellipse_2d(y2, x2, spine_y + spine_r + 12.0 * s, spine_x, 14.0 * s, 5.0 * s) & inner
    aorta = _ellipse_2d(y2, x2, aorta_y, aorta_x, aorta_r, aorta_r)
    ivc = _ellipse_2d(y2, x2, ivc_y, ivc_x, ivc_axes[0], ivc_axes[1])
    template = np.full(shape[1:], AB_AIR, dtype=np.uint8)
    template[body] = AB_FAT
    template[inner] = AB_TISSUE
    template[vertebra | process] = AB_CORTEX
    template[cancellous] = AB_BONE
    template[aorta] = AB_AORTA
    template[ivc] = AB_IVC
    allowed = inner & ~(vertebra | process | aorta | ivc)  # where gas and organs may lie
    classes = np.empty(shape, dtype=np.uint8)
    classes[:] = template
    disc_slices = np.nonzero(np.mod(coords[0] - disc_phase, disc_period) < disc_height)[0]
    vertebra_y, vertebra_x = np.nonzero(vertebra)
    classes[disc_slices[:, None], vertebra_y[None, :], vertebra_x[None, :]] = AB_DISC
    label = np.zeros(shape, dtype=np.uint8)
    maps = (classes, label, coords, allowed)
    for pocket in gas:
        _paint(maps, [pocket], AB_GAS)
    for _, _, perirenal in kidneys:
        _paint(maps, [perirenal], AB_FAT)
    _paint(maps, [right_lobe, left_lobe], AB_LIVER, ABDOMEN_LABELS["liver"])
    for kidney, sinus, _ in kidneys:
        box, mask = _paint(maps, [kidney], AB_KIDNEY, ABDOMEN_LABELS["kidney"])
        if box is not None:
            classes[box][_ellipsoids_in(box, coords, [sinus]) & mask] = AB_SINUS
    _paint(maps, [spleen], AB_SPLEEN, ABDOMEN_LABELS["spleen"])
    for lesion in lesions:
        _paint(maps, [lesion], AB_LESION, ABDOMEN_LABELS["liver_lesion"], within=ABDOMEN_LABELS["liver"])

    image = np.take(values, classes)  # float32
    del classes, maps
    _blur_in_place(image)
    _add_noise(rng, image, spec.noise_std, relative=False)
    np.rint(image, out=image)
    np.clip(image, CT_MIN_HU, CT_MAX_HU, out=image)
    return image[None], label, spacing


def _generate_brain_tumour_case(rng: np.random.Generator, spec: SyntheticDatasetSpec
                                ) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """One ``"brain_tumour"`` MR case (see the module docstring); returns like :func:`generate_case`."""
    shape, spacing = draw_case_grid(rng, spec)
    coords = _axis_coordinates(shape, spacing)
    s = _anatomy_scale(spec, BRAIN_REFERENCE_HALF_FOV_MM)
    max_step = max(spacing)

    # Brain ellipsoid with a CSF rim and a folded cortex (depths modulated by a smooth wave pattern).
    brain_axes = np.array([rng.uniform(55.0, 65.0), rng.uniform(72.0, 84.0), rng.uniform(58.0, 68.0)]) * s
    brain_center = np.array([rng.uniform(-5.0, 5.0), rng.uniform(-4.0, 4.0), rng.uniform(-3.0, 3.0)]) * s
    brain_rotation = _small_rotation(rng, 8.0, 5.0)
    csf_mm, cortex_mm, fold_mm = rng.uniform(1.5, 3.0) * s, rng.uniform(2.5, 4.0) * s, rng.uniform(1.5, 3.0) * s
    wave_frequencies = rng.uniform(10.0, 18.0, size=3)
    wave_phases = rng.uniform(0.0, 2.0 * np.pi, size=3)
    # Lateral ventricles with choroid plexus (enhancing in T1ce: a distractor for the enhancing tumour).
    ventricles = []
    for side in (-1.0, 1.0):
        center = brain_center + brain_rotation @ (np.array(
            [rng.uniform(5.0, 12.0), rng.uniform(-5.0, 5.0), side * rng.uniform(6.0, 10.0)]) * s)
        semi = np.array([rng.uniform(12.0, 18.0), rng.uniform(25.0, 35.0), rng.uniform(5.0, 8.0)]) * s
        plexus_center = center + brain_rotation @ np.array([-0.3 * semi[0], 0.4 * semi[1], 0.0])
        plexus_semi = np.array([rng.uniform(3.0, 5.0), rng.uniform(5.0, 8.0), rng.uniform(2.5, 4.0)]) * s
        ventricles.append(((center, brain_rotation, semi), (plexus_center, brain_rotation, plexus_semi)))
    # Tumour in one hemisphere: a lumpy core (union of ellipsoids) whose outer rim (rim_mm) enhances
    # around necrosis, inside a larger lumpy edema that reaches at least edema_mm beyond the core.
    has_tumour = rng.random() < spec.lesion_probability
    side = 1.0 if rng.random() < 0.5 else -1.0
    core_semi = rng.uniform(10.0, 25.0, size=3) * s
    core_rotation = _random_orientation(rng, 90.0)
    core_parts = [(np.zeros(3), core_rotation, core_semi)]
    for _ in range(int(rng.integers(1, 3))):
        offset = core_rotation @ (rng.uniform(-0.6, 0.6, size=3) * core_semi)
        core_parts.append((offset, _random_orientation(rng, 90.0), core_semi * rng.uniform(0.5, 0.8, size=3)))
    edema_parts = []
    for _ in range(int(rng.integers(2, 4))):
        offset = core_rotation @ (rng.uniform(-0.5, 0.5, size=3) * core_semi)
        edema_parts.append((offset, _random_orientation(rng, 90.0), core_semi + rng.uniform(5.0, 30.0, size=3) * s))
    rim_mm = rng.uniform(2.0, 5.0) * s
    edema_mm = rng.uniform(3.0, 8.0) * s
    reach = max(float(np.linalg.norm(o)) + float(a.max()) for o, _, a in core_parts)
    direction = rng.normal(size=3)
    direction *= rng.uniform(0.0, 0.8) / max(float(np.linalg.norm(direction)), 1e-9)
    direction[2] = side * abs(direction[2])
    room = np.maximum(brain_axes - reach - 8.0 * s, 0.0)
    tumour_center = brain_center + brain_rotation @ (direction * room)
    contrasts = BRAIN_CONTRASTS[:spec.num_channels]
    tables = [_table_values(rng, BRAIN_MR_INTENSITIES[name]) for name in contrasts]
    bias_coefficients = [rng.normal(0.0, 0.12, size=9) for _ in contrasts]

    # Voxelize the brain and its layers inside the brain's box.
    classes = np.zeros(shape, dtype=np.uint8)
    label = np.zeros(shape, dtype=np.uint8)
    brain_box = _ellipsoid_box(coords, brain_center, brain_rotation, brain_axes)
    if brain_box is None:
        raise AutosegInputError("synthetic dataset: the brain lies outside the field of view")
    offsets = [(coords[axis][brain_box[axis]] - brain_center[axis]).astype(np.float32) for axis in range(3)]
    offsets = [offsets[0][:, None, None], offsets[1][None, :, None], offsets[2][None, None, :]]
    radius = np.zeros(_box_shape(brain_box), dtype=np.float32)
    wave = np.zeros_like(radius)
    for local in range(3):
        along = sum(float(brain_rotation[axis, local]) * offsets[axis] for axis in range(3)) / float(
            brain_axes[local])
        radius += along * along
        wave += np.sin(float(wave_frequencies[local]) * along + float(wave_phases[local]))
    np.sqrt(radius, out=radius)
    brain = radius <= 1.0
    depth = (1.0 - radius) * float(brain_axes.mean())  # approximate distance to the surface (mm)
    wave *= fold_mm / 3.0  # -fold_mm .. fold_mm
    sub = np.full(radius.shape, BR_WM, dtype=np.uint8)
    sub[depth < csf_mm + cortex_mm + fold_mm + wave] = BR_GM
    sub[depth < csf_mm + np.maximum(wave, 0.0)] = BR_CSF
    sub[~brain] = BR_BACKGROUND
    classes[brain_box] = sub
    del radius, wave, depth, sub, offsets
    for ventricle, plexus in ventricles:
        for part, tissue in ((ventricle, BR_CSF), (plexus, BR_PLEXUS)):
            box = _ellipsoid_box(coords, *part)
            if box is not None:
                classes[box][_ellipsoids_in(box, coords, [part]) & (classes[box] != BR_BACKGROUND)] = tissue

    if has_tumour:
        shift = [(tumour_center + o, r, a) for o, r, a in core_parts]
        edema_shift = [(tumour_center + o, r, a) for o, r, a in edema_parts]
        box = _union_box([_ellipsoid_box(coords, c, r, a, pad_mm=edema_mm + 2.0 * max_step) for c, r, a in shift]
                         + [_ellipsoid_box(coords, c, r, a) for c, r, a in edema_shift])
        if box is not None:
            box = tuple(slice(max(t.start, b.start), min(t.stop, b.stop)) for t, b in zip(box, brain_box, strict=True))
        if box is not None and all(part.stop > part.start for part in box):
            inside = classes[box] != BR_BACKGROUND
            # the core stays one voxel inside the brain, so edema surrounds it everywhere
            core = _ellipsoids_in(box, coords, shift) & ndimage.binary_erosion(inside)
            if core.any():
                necrosis = ndimage.distance_transform_edt(core, sampling=spacing) > max(rim_mm, 1.01 * max_step)
                near = ndimage.distance_transform_edt(~core, sampling=spacing) <= max(edema_mm, 1.01 * max_step)
                edema = (near | _ellipsoids_in(box, coords, edema_shift)) & inside & ~core
                for mask, tissue, value in ((edema, BR_EDEMA, "edema"), (core, BR_ENHANCING, "enhancing"),
                                            (necrosis, BR_NECROSIS, "necrosis")):
                    classes[box][mask] = tissue
                    label[box][mask] = BRAIN_TUMOUR_LABELS[value]

    brain_mask = classes != BR_BACKGROUND
    image = np.empty((len(contrasts),) + shape, dtype=np.float32)
    for channel, (values, coefficients) in enumerate(zip(tables, bias_coefficients, strict=True)):
        plane = image[channel]
        np.take(values, classes, out=plane, mode="clip")  # classes are valid indices
        _blur_in_place(plane)
        plane *= _bias_field_float32(coefficients, coords)
    for channel in range(len(contrasts)):
        plane = image[channel]
        _add_noise(rng, plane, spec.noise_std / MRI_NOISE_REFERENCE, relative=True)
        np.maximum(plane, 0.0, out=plane)
        plane[~brain_mask] = 0.0
    return image, label, spacing


# ----------------------------------------------------------------------------- dataset on disk

def case_rngs(seed: int, index: int) -> tuple[np.random.Generator, np.random.Generator]:
    """Independent generators for the content and the file geometry of case number ``index``.

    Case ``index`` is the same whatever ``num_training`` / ``num_test`` are.
    """
    content = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index, 0)))
    geometry = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(index, 1)))
    return content, geometry


def case_geometry(rng: np.random.Generator, index: int, shape: tuple[int, int, int],
                  spacing: tuple[float, float, float]) -> ImageGeometry:
    """File header of a case: spacing from the case, random origin (mm), identity direction except
    every :data:`FLIPPED_DIRECTION_EVERY`-th case (index 1, 5, ...), which gets x and y flipped."""
    origin = tuple(round(float(v), 2) for v in rng.uniform(-ORIGIN_RANGE_MM, ORIGIN_RANGE_MM, size=3))
    direction = FLIPPED_DIRECTION if index % FLIPPED_DIRECTION_EVERY == 1 else IDENTITY_DIRECTION
    return ImageGeometry(shape=tuple(int(v) for v in shape), spacing=tuple(float(v) for v in spacing),
                         sitk_spacing=tuple(float(v) for v in spacing[::-1]), sitk_origin=origin,
                         sitk_direction=direction, file_dimension=3)


def case_id(index: int) -> str:
    """Case identifier of case number ``index``: ``case_000``, ``case_001``, ..."""
    return f"case_{index:03d}"


def write_case(root: str | Path, spec: SyntheticDatasetSpec, index: int, image: np.ndarray, label: np.ndarray,
               spacing: tuple[float, float, float]) -> None:
    """Write case ``index`` (the arrays of :func:`generate_case`) into the dataset folder ``root``.

    Training cases go to ``imagesTr/{case}_{XXXX}{ending}`` and ``labelsTr/{case}{ending}``, test
    cases (``index >= num_training``) to ``imagesTs``/``labelsTs``. CT images are written as int16
    (HU), MRI images as float32, labels as uint8; the file geometry comes from :func:`case_geometry`.
    """
    root = Path(root)
    images_dir, labels_dir = ("imagesTr", "labelsTr") if index < spec.num_training else ("imagesTs", "labelsTs")
    image_dtype = np.int16 if spec.modality == "CT" else np.float32
    geometry = case_geometry(case_rngs(spec.seed, index)[1], index, label.shape, spacing)
    name = case_id(index)
    for channel, array in enumerate(image):
        write_image(array.astype(image_dtype), geometry, root / images_dir / f"{name}_{channel:04d}{spec.file_ending}")
    write_segmentation(label, geometry, root / labels_dir / f"{name}{spec.file_ending}")


#: Spec fields added after the first datasets were written, with their defaults: dataset.json records
#: them only when they differ, so a spec without them still writes the same file byte for byte.
_LATER_SPEC_FIELDS = {"anatomy": "organ_lesion", "num_slices_range": None}


def write_dataset_description(root: str | Path, spec: SyntheticDatasetSpec) -> None:
    """Write ``root/dataset.json`` of the spec (labels and channel names of its anatomy, the spec itself)."""
    record = asdict(spec)
    for field, default in _LATER_SPEC_FIELDS.items():
        if record[field] == default:
            del record[field]
    kind = spec.modality if spec.anatomy == "organ_lesion" else f"{spec.modality} {spec.anatomy}"
    write_json(Path(root) / "dataset.json", {
        "name": spec.dataset_name,
        "description": f"synthetic {kind} dataset generated by autoseg.synthetic (seed {spec.seed})",
        "channel_names": spec.channel_names,
        "labels": spec.labels,
        "numTraining": spec.num_training,
        "file_ending": spec.file_ending,
        "synthetic_spec": record,
    })


def generate_synthetic_dataset(output_root: str | Path, spec: SyntheticDatasetSpec | None = None) -> Path:
    """Write ``output_root/{dataset_name}/`` in the nnU-Net v2 raw layout and return that folder.

    Training cases ``case_000 ..`` go to ``imagesTr/{case}_{XXXX}{ending}`` and
    ``labelsTr/{case}{ending}``; with ``num_test > 0`` the following case numbers go to
    ``imagesTs``/``labelsTs`` (reference labels for held-out evaluation). CT images are
    written as int16 (HU), MRI images as float32, labels as uint8. ``dataset.json`` is
    written last. Existing files of the same names are overwritten.
    """
    spec = SyntheticDatasetSpec() if spec is None else spec
    spec.validate()
    root = Path(output_root) / spec.dataset_name
    for index in range(spec.num_training + spec.num_test):
        image, label, spacing = generate_case(case_rngs(spec.seed, index)[0], spec)
        write_case(root, spec, index, image, label, spacing)
        del image, label  # large cases: free before the next one is drawn
    write_dataset_description(root, spec)
    return root


# ----------------------------------------------------------------------------- realistic large presets

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
