"""The default ``"organ_lesion"`` anatomy: a small CT-like or MRI-like case (tests, ``autoseg demo``).

An elliptic-cylinder "body" (axis along z) with a thin fat rim, an oriented ellipsoidal
contrast-enhanced **organ** (label 1) and, in most cases, a hypo-enhancing **lesion** inside it
(label 2, overrides 1); an enhanced "vessel" tube and, in most cases, a bright "bone" cylinder are
label-0 distractors. Sizes are in mm and scale with the smallest in-plane half field of view;
arrays are ``(z, y, x)``; CT in HU, MRI in arbitrary units (zero outside the body).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from autoseg.errors import AutosegInputError
from autoseg.synthetic.intensities import (
    CT_MAX_HU,
    CT_MIN_HU,
    DERIVED_SIGMA_VOXELS,
    MRI_NOISE_REFERENCE,
    PARTIAL_VOLUME_SIGMA_VOXELS,
    _bias_field,
)
from autoseg.synthetic.shapes import (
    _centered_coordinates,
    _ellipse_2d,
    _ellipsoid_mask,
    _half_extents,
    _random_orientation,
)
from autoseg.synthetic.spec import LABELS, SyntheticDatasetSpec, draw_case_grid

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


def _generate_organ_lesion_case(rng: np.random.Generator, spec: SyntheticDatasetSpec
                                ) -> tuple[np.ndarray, np.ndarray, tuple[float, float, float]]:
    """One ``"organ_lesion"`` case (see the module docstring); returns like :func:`generate_case`."""
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
