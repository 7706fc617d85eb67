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

The package has one concern per module: :mod:`~autoseg.synthetic.spec` (the spec, labels, presets
and the case grid), :mod:`~autoseg.synthetic.shapes` and :mod:`~autoseg.synthetic.intensities`
(helpers shared by the anatomies), one module per anatomy (:mod:`~autoseg.synthetic.organ_lesion`,
:mod:`~autoseg.synthetic.abdomen`, :mod:`~autoseg.synthetic.brain_tumour`),
:mod:`~autoseg.synthetic.case` (one case in memory) and :mod:`~autoseg.synthetic.dataset` (files on
disk). Everything public is re-exported here.
"""

from __future__ import annotations

from autoseg.synthetic.abdomen import (
    AB_AIR,
    AB_AORTA,
    AB_BONE,
    AB_CORTEX,
    AB_DISC,
    AB_FAT,
    AB_GAS,
    AB_IVC,
    AB_KIDNEY,
    AB_LESION,
    AB_LIVER,
    AB_SINUS,
    AB_SPLEEN,
    AB_TISSUE,
    ABDOMEN_CT_HU,
    ABDOMEN_REFERENCE_HALF_FOV_MM,
)
from autoseg.synthetic.brain_tumour import (
    BR_BACKGROUND,
    BR_CSF,
    BR_EDEMA,
    BR_ENHANCING,
    BR_GM,
    BR_NECROSIS,
    BR_PLEXUS,
    BR_WM,
    BRAIN_MR_INTENSITIES,
    BRAIN_REFERENCE_HALF_FOV_MM,
)
from autoseg.synthetic.case import (
    generate_case,
)
from autoseg.synthetic.dataset import (
    FLIPPED_DIRECTION,
    FLIPPED_DIRECTION_EVERY,
    IDENTITY_DIRECTION,
    ORIGIN_RANGE_MM,
    case_geometry,
    case_id,
    case_rngs,
    generate_synthetic_dataset,
    write_case,
    write_dataset_description,
)
from autoseg.synthetic.intensities import (
    CT_MAX_HU,
    CT_MIN_HU,
    DERIVED_SIGMA_VOXELS,
    MRI_NOISE_REFERENCE,
    PARTIAL_VOLUME_SIGMA_VOXELS,
)
from autoseg.synthetic.organ_lesion import (
    AIR,
    AUX_INTENSITIES,
    BONE,
    CT_INTENSITIES_HU,
    FAT,
    LESION,
    MRI_INTENSITIES,
    ORGAN,
    TISSUE,
    VESSEL,
)
from autoseg.synthetic.shapes import (
    Box,
)
from autoseg.synthetic.spec import (
    ABDOMEN_LABELS,
    ANATOMIES,
    ANATOMY_LABELS,
    BRAIN_CONTRASTS,
    BRAIN_TUMOUR_LABELS,
    LABELS,
    MODALITIES,
    WRITABLE_FILE_ENDINGS,
    SyntheticDatasetSpec,
    brain_mr_spec,
    draw_case_grid,
    large_ct_spec,
)

__all__ = [
    "ABDOMEN_CT_HU",
    "ABDOMEN_LABELS",
    "ABDOMEN_REFERENCE_HALF_FOV_MM",
    "AB_AIR",
    "AB_AORTA",
    "AB_BONE",
    "AB_CORTEX",
    "AB_DISC",
    "AB_FAT",
    "AB_GAS",
    "AB_IVC",
    "AB_KIDNEY",
    "AB_LESION",
    "AB_LIVER",
    "AB_SINUS",
    "AB_SPLEEN",
    "AB_TISSUE",
    "AIR",
    "ANATOMIES",
    "ANATOMY_LABELS",
    "AUX_INTENSITIES",
    "BONE",
    "BRAIN_CONTRASTS",
    "BRAIN_MR_INTENSITIES",
    "BRAIN_REFERENCE_HALF_FOV_MM",
    "BRAIN_TUMOUR_LABELS",
    "BR_BACKGROUND",
    "BR_CSF",
    "BR_EDEMA",
    "BR_ENHANCING",
    "BR_GM",
    "BR_NECROSIS",
    "BR_PLEXUS",
    "BR_WM",
    "Box",
    "CT_INTENSITIES_HU",
    "CT_MAX_HU",
    "CT_MIN_HU",
    "DERIVED_SIGMA_VOXELS",
    "FAT",
    "FLIPPED_DIRECTION",
    "FLIPPED_DIRECTION_EVERY",
    "IDENTITY_DIRECTION",
    "LABELS",
    "LESION",
    "MODALITIES",
    "MRI_INTENSITIES",
    "MRI_NOISE_REFERENCE",
    "ORGAN",
    "ORIGIN_RANGE_MM",
    "PARTIAL_VOLUME_SIGMA_VOXELS",
    "SyntheticDatasetSpec",
    "TISSUE",
    "VESSEL",
    "WRITABLE_FILE_ENDINGS",
    "brain_mr_spec",
    "case_geometry",
    "case_id",
    "case_rngs",
    "draw_case_grid",
    "generate_case",
    "generate_synthetic_dataset",
    "large_ct_spec",
    "write_case",
    "write_dataset_description",
]
