"""One synthetic case in memory: dispatch to the anatomy of the spec.

Images are float32 ``(C, z, y, x)`` (CT in HU, MRI without unit), labels uint8 ``(z, y, x)``,
spacing in mm ``(z, y, x)``.
"""

from __future__ import annotations

import numpy as np

from autoseg.synthetic.abdomen import _generate_abdomen_case
from autoseg.synthetic.brain_tumour import _generate_brain_tumour_case
from autoseg.synthetic.organ_lesion import _generate_organ_lesion_case
from autoseg.synthetic.spec import SyntheticDatasetSpec


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
    return _generate_organ_lesion_case(rng, spec)
