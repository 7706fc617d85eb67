"""Label rules: label values, the ignore label, and regions (nnU-Net v2's definitions).

Values: label maps hold consecutive integer values 0..M with background 0, as nnU-Net
requires. A label named ``ignore`` (nnU-Net v2's sparse annotations) must have the highest
value; it marks voxels nobody annotated: it is no network class, and those voxels count in
no loss and no metric.

Regions: label maps always hold integer values 0..M (background 0; the ``ignore`` value, when
declared, is the highest). In dataset.json a label may name a *list* of those values, a
region, together with ``regions_class_order``, e.g. for a brain tumour::

    "labels": {"background": 0, "whole_tumor": [1, 2, 3], "tumor_core": [2, 3], "enhancing": 3},
    "regions_class_order": [1, 2, 3]

The network then has one output per region (every label but background and ``ignore``, in
dataset.json order; a plain integer label is the one-value region), each a sigmoid: a voxel
may belong to several regions. A region's mask in a label map is the union of its values
(:func:`class_mask`). Predicted regions (sigmoid > :data:`REGION_THRESHOLD`) become a label
map again by writing ``regions_class_order[i]`` wherever region ``i`` is predicted, regions
in order, later ones overwriting earlier ones (:func:`region_masks_to_label_map`): list the
outermost region first. Each ``regions_class_order[i]`` must be one of region ``i``'s values
and they must differ, so the written map gives back the predicted regions wherever they
nest; it is also the key of region ``i`` in metrics, postprocessing and reports (named by
the label name).

The rules here work on numpy arrays and torch tensors alike.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

#: A voxel belongs to a predicted region when its sigmoid probability exceeds this.
REGION_THRESHOLD = 0.5

#: The label name of nnU-Net v2's sparse annotations: voxels nobody annotated.
IGNORE_LABEL_NAME = "ignore"


def label_value_sets(labels: Mapping[str, Any]) -> dict[str, tuple[int, ...]]:
    """Each label's values as a tuple (a plain integer label is a one-value tuple)."""
    return {name: tuple(int(v) for v in value) if isinstance(value, (list, tuple)) else (int(value),)
            for name, value in labels.items()}


def is_region_based(labels: Mapping[str, Any]) -> bool:
    """True when some label is a list of values (a region)."""
    return any(isinstance(value, (list, tuple)) for value in labels.values())


def ignore_value(labels: Mapping[str, Any]) -> int | None:
    """The value of the ``ignore`` label, or None when the labels have none."""
    return labels.get(IGNORE_LABEL_NAME)


def class_values(labels: Mapping[str, Any]) -> list[int]:
    """The values label maps hold but the ignore value, sorted (0..K-1); for a region-based
    dataset the union of its regions' values and background."""
    ignore = ignore_value(labels)
    return sorted({v for values in label_value_sets(labels).values() for v in values} - {ignore})


def map_values(labels: Mapping[str, Any]) -> list[int]:
    """Every value label maps may hold, background and the ignore value (when declared) included, sorted."""
    return sorted({v for values in label_value_sets(labels).values() for v in values})


def foreground_values(labels: Mapping[str, Any]) -> list[int]:
    """The values of :func:`class_values` other than background 0."""
    return [value for value in class_values(labels) if value != 0]


def num_network_outputs(labels: Mapping[str, Any]) -> int:
    """Output channels of the network: one per region of a region-based dataset, else one per
    class of :func:`class_values` (softmax, background included)."""
    return len(network_regions(labels)) if is_region_based(labels) else len(class_values(labels))


def evaluated_classes(labels: Mapping[str, Any],
                      regions_class_order: Sequence[int] | None) -> dict[int, tuple[int, ...]]:
    """What metrics, postprocessing and reports score, key -> label values of its mask: every
    foreground value alone, or for a region-based dataset each region under its
    ``regions_class_order`` value (:func:`region_keys`)."""
    if is_region_based(labels):
        if regions_class_order is None:
            raise ValueError("region-based labels need regions_class_order")
        return region_keys(labels, regions_class_order)
    return {value: (value,) for value in foreground_values(labels)}


def class_names(labels: Mapping[str, Any], regions_class_order: Sequence[int] | None) -> dict[int, str]:
    """Key of :func:`evaluated_classes` -> its label name."""
    if is_region_based(labels):
        return {int(key): name for key, (name, _) in zip(regions_class_order or [], network_regions(labels),
                                                          strict=True)}
    foreground = set(foreground_values(labels))
    return {int(value): name for name, value in labels.items() if value in foreground}


def network_regions(labels: Mapping[str, Any]) -> list[tuple[str, tuple[int, ...]]]:
    """``(name, values)`` of every network output of a region-based dataset: each label but
    background (value 0) and ``ignore``, in dataset.json order."""
    return [(name, values) for name, values in label_value_sets(labels).items()
            if name != IGNORE_LABEL_NAME and values != (0,)]


def region_keys(labels: Mapping[str, Any], regions_class_order: Sequence[int]) -> dict[int, tuple[int, ...]]:
    """Region key (its ``regions_class_order`` value) -> its label values, in network output order."""
    return {int(key): values for key, (_, values) in zip(regions_class_order, network_regions(labels), strict=True)}


def label_definition_problem(labels: Mapping[str, Any], regions_class_order: Any) -> str | None:
    """What is wrong with region-based ``labels`` and ``regions_class_order`` (None when they are
    consistent); plain integer labels without ``regions_class_order`` are not judged here."""
    if not is_region_based(labels):
        if regions_class_order is not None:
            return "'regions_class_order' is given but no label is a region (a list of label values)"
        return None
    for name, value in labels.items():
        values = value if isinstance(value, (list, tuple)) else [value]
        if not values or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in values):
            return f"label '{name}' must be a non-negative integer or a non-empty list of them, got {value!r}"
        if len(set(values)) != len(values):
            return f"label '{name}' lists a value twice: {value!r}"
        if isinstance(value, (list, tuple)) and 0 in values:
            return f"region '{name}' contains background 0: {value!r}"
    sets = label_value_sets(labels)
    if (0,) not in sets.values():
        return "'labels' must declare background with value 0"
    if IGNORE_LABEL_NAME in labels and isinstance(labels[IGNORE_LABEL_NAME], (list, tuple)):
        return "label 'ignore' must be a single value, not a region"
    regions = network_regions(labels)
    if not regions:
        return "no region to train besides background and 'ignore'"
    by_values: dict[frozenset, str] = {}
    for name, values in regions:
        if frozenset(values) in by_values:
            return f"regions '{by_values[frozenset(values)]}' and '{name}' have the same values {list(values)}"
        by_values[frozenset(values)] = name
    ignore = labels.get(IGNORE_LABEL_NAME)
    region_values = sorted({v for _, values in regions for v in values})
    if ignore is not None and ignore in region_values:
        return f"the ignore value {ignore} is part of a region"
    all_values = sorted({0, *region_values, *([ignore] if ignore is not None else [])})
    if all_values != list(range(len(all_values))):
        missing = sorted(set(range(all_values[-1] + 1)) - set(all_values))
        return (f"label values must be consecutive 0..{len(all_values) - 1} (as in nnU-Net), got {all_values}, "
                f"missing {missing}")
    if ignore is not None and ignore != all_values[-1]:
        return f"label 'ignore' must have the highest value (as in nnU-Net), got {ignore} below {all_values[-1]}"
    if regions_class_order is None:
        return ("region-based labels need 'regions_class_order': the label value written for each region "
                f"({', '.join(name for name, _ in regions)}), outermost first")
    if (not isinstance(regions_class_order, (list, tuple))
            or any(isinstance(v, bool) or not isinstance(v, int) for v in regions_class_order)):
        return f"'regions_class_order' must be a list of label values, got {regions_class_order!r}"
    if len(regions_class_order) != len(regions):
        return (f"'regions_class_order' has {len(regions_class_order)} values for {len(regions)} regions "
                f"({', '.join(name for name, _ in regions)})")
    if len(set(regions_class_order)) != len(regions_class_order):
        return f"'regions_class_order' {list(regions_class_order)} lists a value twice"
    for value, (name, values) in zip(regions_class_order, regions):
        if value not in values:
            return (f"'regions_class_order' writes {value} for region '{name}', which is not one of its "
                    f"values {list(values)}")
    return None


def class_mask(label_map: Any, values: int | Sequence[int]) -> Any:
    """Boolean mask of the voxels of ``label_map`` (numpy array or torch tensor) holding any of ``values``
    (one value or a region's values)."""
    if isinstance(values, int):
        return label_map == values
    mask = label_map == values[0]
    for value in values[1:]:
        mask = mask | (label_map == value)
    return mask


def region_masks_to_label_map(masks: Any, regions_class_order: Sequence[int], out: Any) -> Any:
    """Write ``regions_class_order[i]`` into ``out`` (a zero-filled label map) wherever ``masks[i]``
    is set, regions in order (later ones overwrite earlier ones); returns ``out``.

    ``masks`` is ``(R, *spatial)`` boolean (numpy or torch, like ``out``)."""
    for mask, value in zip(masks, regions_class_order, strict=True):
        out[mask] = value
    return out
