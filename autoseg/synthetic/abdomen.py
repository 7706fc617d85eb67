"""The ``"abdomen"`` anatomy: a realistic large CT case (one channel, HU).

Elliptic body with subcutaneous fat, a spine (vertebrae and discs), aorta, vena cava and bowel
gas (all label 0); a two-lobed **liver** (1), a **kidney** pair with renal sinus and perirenal
fat (2), a **spleen** (3) and, in most cases, 1-3 hypodense **liver lesions** (4, 8-24 mm
across). Sizes are absolute mm (shrunk only when the in-plane field of view is too small);
drawn in float32 inside bounding boxes; arrays are ``(z, y, x)``.
"""

from __future__ import annotations

import numpy as np

from autoseg.synthetic.intensities import CT_MAX_HU, CT_MIN_HU, _add_noise, _blur_in_place, _table_values
from autoseg.synthetic.shapes import (
    Box,
    _anatomy_scale,
    _axis_coordinates,
    _ellipse_2d,
    _ellipsoid_box,
    _ellipsoids_in,
    _random_orientation,
    _rotation_about,
    _small_rotation,
    _union_box,
)
from autoseg.synthetic.spec import ABDOMEN_LABELS, SyntheticDatasetSpec, draw_case_grid

#: Smallest in-plane half field of view (mm) that holds the abdomen at its natural size; below it
#: (``R = min(in_plane_shape) * in_plane_spacing_mm[0] / 2`` smaller) the whole anatomy shrinks by R / this.
ABDOMEN_REFERENCE_HALF_FOV_MM = 175.0

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
