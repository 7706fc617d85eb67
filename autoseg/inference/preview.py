"""A PNG per predicted case: the segmentation over three orthogonal slices through the largest structure.

The slices cross at the centre of mass of the largest connected component of the
foreground (the image centre when nothing was found), in the canonical orientation
(:mod:`autoseg.io.orientation`): axial (anterior up, patient right on the left, as
radiologists look at it), coronal and sagittal (superior up), each with the aspect of its
voxel spacing. Grey levels span the 1st-99th percentile of the image; classes (or regions)
are coloured and named in a legend.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from scipy import ndimage

from autoseg.io.geometry import ImageGeometry
from autoseg.io.labels import class_mask
from autoseg.io.orientation import canonical_geometry, canonical_orientation, to_canonical
from autoseg.postprocessing.components import component_structure
from autoseg.utils.files import atomic_path

#: File name suffix of a case's preview: ``{case}_preview.png``.
PREVIEW_SUFFIX = "_preview.png"


def largest_structure_centre(segmentation: np.ndarray) -> tuple[int, int, int]:
    """Voxel ``(z, y, x)`` at the centre of mass of the largest foreground component (the array centre
    when there is no foreground)."""
    components, count = ndimage.label(segmentation > 0, structure=component_structure(segmentation.ndim))
    if count == 0:
        return tuple(int(s) // 2 for s in segmentation.shape)
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    centre = ndimage.center_of_mass(components == int(np.argmax(sizes)))
    return tuple(int(round(c)) for c in centre)


def write_preview(image: np.ndarray, segmentation: np.ndarray, geometry: ImageGeometry, path: str | os.PathLike,
                  classes: Mapping[int, Sequence[int]], names: Mapping[int, str]) -> Path:
    """Write the preview of one case (``image`` and ``segmentation`` ``(z, y, x)`` in the file's axis
    order, ``geometry`` the file's) to ``path`` (atomic)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    orientation = canonical_orientation(geometry)
    image, segmentation = to_canonical(image, orientation), to_canonical(segmentation, orientation)
    dz, dy, dx = canonical_geometry(geometry, orientation).spacing
    z, y, x = largest_structure_centre(segmentation)
    low, high = np.percentile(image, [1, 99]) if image.size else (0.0, 1.0)
    colours = plt.get_cmap("tab10")
    views = [("axial", image[z], segmentation[z], dy / dx, "upper"),
             ("coronal", image[:, y], segmentation[:, y], dz / dx, "lower"),
             ("sagittal", image[:, :, x], segmentation[:, :, x], dz / dy, "lower")]
    figure, axes = plt.subplots(1, 3, figsize=(12, 4.4))
    for axis, (title, grey, labels, aspect, origin) in zip(axes, views):
        axis.imshow(grey, cmap="gray", vmin=low, vmax=high, aspect=aspect, origin=origin, interpolation="nearest")
        for index, values in enumerate(classes.values()):
            mask = class_mask(labels, values)
            if mask.any():
                overlay = np.zeros((*mask.shape, 4))
                overlay[mask] = (*colours(index % 10)[:3], 0.45)
                axis.imshow(overlay, aspect=aspect, origin=origin, interpolation="nearest")
        axis.set_title(title)
        axis.axis("off")
    handles = [Patch(color=colours(index % 10), label=names.get(key, str(key))) for index, key in enumerate(classes)]
    figure.legend(handles=handles, loc="lower center", ncol=max(1, len(handles)), frameon=False)
    figure.tight_layout(rect=(0, 0.08, 1, 1))
    path = Path(path)
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=80)
    plt.close(figure)
    return path
