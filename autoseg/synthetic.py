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
from autoseg.io.images import ImageGeometry, write_image, write_segmentation
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
        lesion_probability: chance that a case has a lesion (label 2).
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
        if self.file_ending not in WRITABLE_FILE_ENDINGS:
            raise AutosegInputError(f"synthetic dataset: file_ending must be one of {WRITABLE_FILE_ENDINGS}, "
                                    f"got {self.file_ending!r}")
        if not re.fullmatch(r"[A-Za-z0-9_.\-]+", self.dataset_name):
            raise AutosegInputError(f"synthetic dataset: dataset_name {self.dataset_name!r} must be a plain "
                                    "folder name (letters, digits, '_', '-', '.')")

    @property
    def channel_names(self) -> dict[str, str]:
        """dataset.json ``channel_names``: ``{"0": modality, "1": "aux", "2": modality, ...}``."""
        return {str(k): self.modality if k % 2 == 0 else "aux" for k in range(self.num_channels)}


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


def generate_case(rng: np.random.Generator, spec: SyntheticDatasetSpec
                  ) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """Generate one case without touching the disk.

    Returns:
        image: float32 ``(C, z, y, x)``; CT in HU (whole numbers, clipped to [-1024, 3071]),
            MRI in arbitrary units with exact zeros outside the body.
        label: uint8 ``(z, y, x)`` with 0 background, 1 organ, 2 lesion.
        spacing: voxel size in mm, ``(z, y, x)``.
    """
    spec.validate()
    ny, nx = (int(v) for v in spec.in_plane_shape)
    in_plane = round(float(rng.uniform(*spec.in_plane_spacing_mm)), 3)
    thickness = round(float(rng.uniform(*spec.slice_thickness_mm)), 3)
    fov_z = float(rng.uniform(*spec.field_of_view_z_mm))
    nz = max(_MIN_SLICES, int(round(fov_z / thickness)))
    shape = (nz, ny, nx)
    spacing = (thickness, in_plane, in_plane)
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
    image_dtype = np.int16 if spec.modality == "CT" else np.float32
    total = spec.num_training + spec.num_test
    for index in range(total):
        images_dir, labels_dir = ("imagesTr", "labelsTr") if index < spec.num_training else ("imagesTs",
                                                                                             "labelsTs")
        content_rng, geometry_rng = case_rngs(spec.seed, index)
        image, label, spacing = generate_case(content_rng, spec)
        geometry = case_geometry(geometry_rng, index, label.shape, spacing)
        name = case_id(index)
        for channel, array in enumerate(image):
            write_image(array.astype(image_dtype), geometry,
                        root / images_dir / f"{name}_{channel:04d}{spec.file_ending}")
        write_segmentation(label, geometry, root / labels_dir / f"{name}{spec.file_ending}")
    write_json(root / "dataset.json", {
        "name": spec.dataset_name,
        "description": f"synthetic {spec.modality} dataset generated by autoseg.synthetic (seed {spec.seed})",
        "channel_names": spec.channel_names,
        "labels": dict(LABELS),
        "numTraining": spec.num_training,
        "file_ending": spec.file_ending,
        "synthetic_spec": asdict(spec),
    })
    return root
