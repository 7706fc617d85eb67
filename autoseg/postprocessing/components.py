"""Connected-component postprocessing of predicted label maps: operations in a registry.

Segmentations are integer label maps in ``(z, y, x)`` order (any dimension works).
Connected components use full connectivity by default (26-neighbourhood in 3D, 8 in
2D, ``scipy.ndimage.generate_binary_structure(ndim, ndim)``); ``connectivity=r``
uses rank ``r`` instead (1 = face neighbours only).

A postprocessing plan is a JSON-able list of steps applied in order, e.g.::

    [{"operation": "keep_largest_component", "labels": null},
     {"operation": "keep_largest_component", "labels": [2]}]

``labels: null`` treats the whole foreground (label > 0) as one mask; an entry that is a
list of values is one region (the union of those values, e.g. ``"labels": [[1, 2]]``, see
:mod:`autoseg.io.labels`), whose removed voxels become background. A step may
carry ``"connectivity": r``; without it full connectivity is used. A new operation is
a function ``(segmentation, step) -> segmentation`` registered in :data:`OPERATIONS`.
How steps are chosen: :mod:`autoseg.evaluation.learn_postprocessing`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
from scipy import ndimage

from autoseg.errors import AutosegInputError
from autoseg.io.labels import class_mask
from autoseg.utils.registry import Registry

KEEP_LARGEST_COMPONENT = "keep_largest_component"


def component_structure(ndim: int, connectivity: int | None = None) -> np.ndarray:
    """Structuring element for connected components: full connectivity when ``connectivity`` is None."""
    rank = ndim if connectivity is None else int(connectivity)
    if not 1 <= rank <= ndim:
        raise ValueError(f"connectivity must be between 1 and {ndim} for {ndim}D arrays, got {connectivity}")
    return ndimage.generate_binary_structure(ndim, rank)


def _outside_largest_component(mask: np.ndarray, structure: np.ndarray) -> np.ndarray | None:
    """Boolean mask of the voxels of ``mask`` outside its largest component (None if nothing to remove).

    Ties between equally large components go to the one labelled first (raster order).
    """
    components, count = ndimage.label(mask, structure=structure)
    if count <= 1:
        return None
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    largest = int(np.argmax(sizes))
    return (components != largest) & mask


def keep_largest_component(segmentation: np.ndarray, labels: Sequence[int | Sequence[int]] | None = None,
                           connectivity: int | None = None) -> np.ndarray:
    """Remove all but the largest connected component; returns a new array.

    With ``labels=None`` the whole foreground (``segmentation > 0``) is one mask: voxels
    of every component except the largest are set to 0, whatever their label. With a
    list of labels, each label's mask is handled separately and the removed voxels of
    that label are set to 0; an entry that is a list of values is a region, the union of
    their masks. Full connectivity unless ``connectivity`` is given.
    """
    segmentation = np.asarray(segmentation)
    structure = component_structure(segmentation.ndim, connectivity)
    result = segmentation.copy()
    masks = [segmentation > 0] if labels is None else [
        class_mask(segmentation, label if isinstance(label, (list, tuple)) else [label]) for label in labels]
    for mask in masks:
        remove = _outside_largest_component(mask, structure)
        if remove is not None:
            result[remove] = 0
    return result


def _step_labels(step: Mapping[str, Any]) -> list[int | list[int]] | None:
    labels = step.get("labels")
    return None if labels is None else [[int(v) for v in label] if isinstance(label, (list, tuple)) else int(label)
                                        for label in labels]


Operation = Callable[[np.ndarray, Mapping[str, Any]], np.ndarray]

#: Operation name (``"operation"`` of a step) -> ``(segmentation, step) -> new segmentation``.
OPERATIONS: Registry[Operation] = Registry("postprocessing operation")


@OPERATIONS.register(KEEP_LARGEST_COMPONENT)
def _keep_largest_component_step(segmentation: np.ndarray, step: Mapping[str, Any]) -> np.ndarray:
    return keep_largest_component(segmentation, _step_labels(step), step.get("connectivity"))


def apply_postprocessing(segmentation: np.ndarray, steps: Sequence[Mapping[str, Any]]) -> np.ndarray:
    """Apply the steps of a postprocessing plan in order; returns a new array."""
    result = np.array(segmentation, copy=True)
    for step in steps:
        result = OPERATIONS.get(step.get("operation"))(result, step)
    return result


def _is_value(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_postprocessing_steps(steps: Sequence[Mapping[str, Any]], source: str) -> list[dict[str, Any]]:
    """Validate a postprocessing plan (list of steps) before any work; errors name ``source``."""
    if not isinstance(steps, (list, tuple)):
        raise AutosegInputError(f"{source}: postprocessing must be a list of steps")
    checked = []
    for index, step in enumerate(steps):
        if not isinstance(step, Mapping) or step.get("operation") not in OPERATIONS:
            raise AutosegInputError(f"{source}: postprocessing step {index} is not one of "
                                    f"{', '.join(OPERATIONS.names())}: {step!r}")
        labels = step.get("labels")
        if labels is not None and (not isinstance(labels, (list, tuple)) or not all(
                _is_value(v) or (isinstance(v, (list, tuple)) and v and all(_is_value(w) for w in v))
                for v in labels)):
            raise AutosegInputError(f"{source}: postprocessing step {index}: 'labels' must be null or a list "
                                    f"of label values or regions (lists of values), got {labels!r}")
        checked.append(dict(step))
    return checked


def make_keep_largest_step(labels: list[int | list[int]] | None, connectivity: int | None = None) -> dict[str, Any]:
    """A keep-largest-component step for ``labels`` (None: the whole foreground)."""
    step: dict[str, Any] = {"operation": KEEP_LARGEST_COMPONENT, "labels": labels}
    if connectivity is not None:
        step["connectivity"] = int(connectivity)
    return step
