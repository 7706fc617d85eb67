"""The ``"brain_tumour"`` anatomy: a realistic BraTS-like brain MR case (1-4 contrasts).

A skull-stripped brain (zero outside) with CSF rim, folded cortex, white matter, lateral
ventricles and enhancing choroid plexus, and a tumour: **edema** (2) around the tumour core,
whose **enhancing** rim (3) surrounds the **necrosis** (1). At 240 x 240 x 155 voxels of 1 mm each
sub-region is about 0.3-2 % of the volume (BraTS-like; the rarest classes are what a time budget
must still learn). The tumour looks as infiltrative as a real one, so no threshold separates the
classes: a smooth random texture per contrast (about :data:`TUMOUR_TEXTURE_STD` relative,
:data:`TUMOUR_TEXTURE_SIGMA_MM` grain) modulates its intensities; the edema's signal fades with
the distance to the core down to :data:`EDEMA_EDGE_CONTRAST` of its full contrast over the healthy
tissue beneath it, so its labelled border has no sharp edge; the rim enhances unevenly (a smooth
field between :data:`RIM_ENHANCEMENT_RANGE` of full enhancement); and each contrast gets a per-case
gamma (:data:`CONTRAST_GAMMA_RANGE`, scanner differences that z-scoring does not remove).
Sizes are in mm; intensities have no unit (tissue about 400, background exactly 0); arrays are
``(C, z, y, x)`` / ``(z, y, x)``.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from autoseg.errors import AutosegInputError
from autoseg.synthetic.intensities import (
    MRI_NOISE_REFERENCE,
    _add_noise,
    _bias_field_float32,
    _blur_in_place,
    _table_values,
)
from autoseg.synthetic.shapes import (
    _anatomy_scale,
    _axis_coordinates,
    _box_shape,
    _ellipsoid_box,
    _ellipsoids_in,
    _random_orientation,
    _small_rotation,
    _union_box,
)
from autoseg.synthetic.spec import BRAIN_CONTRASTS, BRAIN_TUMOUR_LABELS, SyntheticDatasetSpec, draw_case_grid

#: The same for the brain (the brain is at most 168 mm long).
BRAIN_REFERENCE_HALF_FOV_MM = 110.0
#: Relative standard deviation of the tumour's smooth intensity texture (heterogeneous tumour tissue).
TUMOUR_TEXTURE_STD = 0.2
#: Grain of that texture: Gaussian smoothing of white noise, in mm.
TUMOUR_TEXTURE_SIGMA_MM = 2.5
#: The edema's contrast over the healthy tissue beneath it at its labelled border, as a fraction of
#: its contrast next to the core (it fades exponentially over EDEMA_FADE_MM between them).
EDEMA_EDGE_CONTRAST = 0.3
#: Range of the per-case fading length of the edema's signal, in mm.
EDEMA_FADE_MM = (5.0, 10.0)
#: The enhancing rim's enhancement varies smoothly along it between these fractions of the full value.
RIM_ENHANCEMENT_RANGE = (0.35, 1.0)
#: Per-case gamma of each contrast (intensity ** gamma after scaling to the case's maximum).
CONTRAST_GAMMA_RANGE = (0.8, 1.25)

# Tissue classes of the brain class map.
BR_BACKGROUND, BR_CSF, BR_GM, BR_WM, BR_NECROSIS, BR_EDEMA, BR_ENHANCING, BR_PLEXUS = range(8)
#: Brain MR intensity (arbitrary units) per contrast and tissue class as (mean, half-width of the jitter).
BRAIN_MR_INTENSITIES: dict[str, dict[int, tuple[float, float]]] = {
    "T1ce": {BR_BACKGROUND: (0.0, 0.0), BR_CSF: (150.0, 20.0), BR_GM: (450.0, 25.0), BR_WM: (600.0, 25.0),
             BR_NECROSIS: (190.0, 20.0), BR_EDEMA: (540.0, 25.0), BR_ENHANCING: (950.0, 40.0),
             BR_PLEXUS: (900.0, 40.0)},
    "FLAIR": {BR_BACKGROUND: (0.0, 0.0), BR_CSF: (100.0, 20.0), BR_GM: (500.0, 25.0), BR_WM: (380.0, 25.0),
              BR_NECROSIS: (600.0, 30.0), BR_EDEMA: (700.0, 30.0), BR_ENHANCING: (680.0, 30.0),
              BR_PLEXUS: (300.0, 30.0)},
    "T1": {BR_BACKGROUND: (0.0, 0.0), BR_CSF: (150.0, 20.0), BR_GM: (450.0, 25.0), BR_WM: (650.0, 25.0),
           BR_NECROSIS: (200.0, 20.0), BR_EDEMA: (500.0, 25.0), BR_ENHANCING: (480.0, 25.0),
           BR_PLEXUS: (500.0, 30.0)},
    "T2": {BR_BACKGROUND: (0.0, 0.0), BR_CSF: (1000.0, 40.0), BR_GM: (600.0, 30.0), BR_WM: (400.0, 25.0),
           BR_NECROSIS: (850.0, 40.0), BR_EDEMA: (750.0, 30.0), BR_ENHANCING: (650.0, 30.0),
           BR_PLEXUS: (500.0, 30.0)},
}


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], spacing: tuple[float, float, float],
                  sigma_mm: float) -> np.ndarray:
    """float32 white noise of ``shape`` ``(z, y, x)`` smoothed with ``sigma_mm`` and scaled to unit std."""
    noise = rng.standard_normal(shape, dtype=np.float32)
    ndimage.gaussian_filter(noise, sigma=[sigma_mm / step for step in spacing], mode="nearest", output=noise)
    noise /= max(float(noise.std()), 1e-6)
    return noise


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
    core_semi = rng.uniform(21.0, 27.0, size=3) * s
    core_rotation = _random_orientation(rng, 90.0)
    core_parts = [(np.zeros(3), core_rotation, core_semi)]
    for _ in range(int(rng.integers(1, 3))):
        offset = core_rotation @ (rng.uniform(-0.6, 0.6, size=3) * core_semi)
        core_parts.append((offset, _random_orientation(rng, 90.0), core_semi * rng.uniform(0.5, 0.8, size=3)))
    edema_parts = []
    for _ in range(int(rng.integers(2, 4))):
        offset = core_rotation @ (rng.uniform(-0.5, 0.5, size=3) * core_semi)
        edema_parts.append((offset, _random_orientation(rng, 90.0), core_semi + rng.uniform(2.0, 10.0, size=3) * s))
    rim_mm = rng.uniform(4.5, 6.5) * s
    edema_mm = rng.uniform(3.0, 6.0) * s
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

    distance_to_core = None
    if has_tumour:
        shift = [(tumour_center + o, r, a) for o, r, a in core_parts]
        edema_shift = [(tumour_center + o, r, a) for o, r, a in edema_parts]
        box = _union_box([_ellipsoid_box(coords, c, r, a, pad_mm=edema_mm + 2.0 * max_step) for c, r, a in shift]
                         + [_ellipsoid_box(coords, c, r, a) for c, r, a in edema_shift])
        if box is not None:
            box = tuple(slice(max(t.start, b.start), min(t.stop, b.stop)) for t, b in zip(box, brain_box, strict=True))
        if box is not None and all(part.stop > part.start for part in box):
            tumour_box, healthy = box, classes[box].copy()  # the tissue beneath the tumour
            inside = classes[box] != BR_BACKGROUND
            # the core stays one voxel inside the brain, so edema surrounds it everywhere
            core = _ellipsoids_in(box, coords, shift) & ndimage.binary_erosion(inside)
            if core.any():
                necrosis = ndimage.distance_transform_edt(core, sampling=spacing) > max(rim_mm, 1.01 * max_step)
                near = ndimage.distance_transform_edt(~core, sampling=spacing) <= max(edema_mm, 1.01 * max_step)
                edema = (near | _ellipsoids_in(box, coords, edema_shift)) & inside & ~core
                distance_to_core = ndimage.distance_transform_edt(~core, sampling=spacing).astype(np.float32)
                for mask, tissue, value in ((edema, BR_EDEMA, "edema"), (core, BR_ENHANCING, "enhancing"),
                                            (necrosis, BR_NECROSIS, "necrosis")):
                    classes[box][mask] = tissue
                    label[box][mask] = BRAIN_TUMOUR_LABELS[value]

    brain_mask = classes != BR_BACKGROUND
    image = np.empty((len(contrasts),) + shape, dtype=np.float32)
    infiltrative = has_tumour and distance_to_core is not None
    if infiltrative:
        box_shape = _box_shape(tumour_box)
        tumour_label = label[tumour_box]
        fade = np.exp(-distance_to_core / rng.uniform(*EDEMA_FADE_MM))
        edema_weight = EDEMA_EDGE_CONTRAST + (1.0 - EDEMA_EDGE_CONTRAST) * fade
        low, high = RIM_ENHANCEMENT_RANGE
        rim_weight = np.clip(0.5 * (low + high) + 0.5 * (high - low) * _smooth_field(rng, box_shape, spacing, 4.0),
                             low, high)
        del fade
    for channel, (values, coefficients) in enumerate(zip(tables, bias_coefficients, strict=True)):
        plane = image[channel]
        np.take(values, classes, out=plane, mode="clip")  # classes are valid indices
        if infiltrative:
            region = plane[tumour_box]
            beneath = np.take(values, healthy, mode="clip")
            edema = tumour_label == BRAIN_TUMOUR_LABELS["edema"]
            region[edema] = (beneath + edema_weight * (values[BR_EDEMA] - beneath))[edema]
            rim = tumour_label == BRAIN_TUMOUR_LABELS["enhancing"]
            region[rim] = (values[BR_EDEMA] + rim_weight * (values[BR_ENHANCING] - values[BR_EDEMA]))[rim]
            texture = 1.0 + TUMOUR_TEXTURE_STD * _smooth_field(rng, box_shape, spacing, TUMOUR_TEXTURE_SIGMA_MM)
            np.maximum(texture, 0.4, out=texture)
            region[tumour_label > 0] *= texture[tumour_label > 0]
        _blur_in_place(plane)
        plane *= _bias_field_float32(coefficients, coords)
        peak = max(float(plane.max()), 1e-6)
        plane /= peak
        np.power(np.maximum(plane, 0.0, out=plane), rng.uniform(*CONTRAST_GAMMA_RANGE), out=plane)
        plane *= peak
    for channel in range(len(contrasts)):
        plane = image[channel]
        _add_noise(rng, plane, spec.noise_std / MRI_NOISE_REFERENCE, relative=True)
        np.maximum(plane, 0.0, out=plane)
        plane[~brain_mask] = 0.0
    return image, label, spacing
