"""The plans schema: ``plans.json`` as dataclasses, validated field by field when read.

``plans.json`` is the single source of configuration for preprocessing, training
and inference. It is meant to be read (every decision carries a reason) and may be
edited by hand: e.g. a fixed CT window per channel (``"scheme": "ct_window"``).
Planning writes it (:mod:`autoseg.planning`); every later stage reads it through
:func:`autoseg.workdir.WorkDir.load_plans`. Invalid values raise ``ValueError`` whose
message starts with the field, e.g. ``configurations.3d_fullres.batch_size must be a
positive integer, got 0``.
"""

from __future__ import annotations

import math
import re
from dataclasses import asdict, dataclass, field
from typing import Any

from autoseg.errors import AutosegInputError
from autoseg.io.labels import (
    class_names,
    evaluated_classes,
    foreground_values,
    ignore_value,
    is_region_based,
    label_definition_problem,
    network_regions,
    num_network_outputs,
)
from autoseg.plans.architectures import ARCHITECTURES
from autoseg.plans.network import NetworkConfig
from autoseg.plans.normalization import ChannelNormalization
from autoseg.plans.training import TrainingConfig

PLANS_VERSION = 1

#: Image interpolation orders :mod:`autoseg.preprocessing.resample` implements (cubic, linear, nearest).
IMAGE_ORDERS = (0, 1, 3)
#: Label resampling modes.
LABEL_MODES = ("per_class_linear", "nearest")

# Physical bounds of plans values (the network's are in :mod:`autoseg.plans.network`). plans.json
# may be edited by hand or arrive inside a model bundle from elsewhere; a value past these makes
# preprocessing, training or prediction allocate without end (a 100000^3 patch asks for 80 GB and
# more) and is refused when plans.json is read, naming the field. Each bound is far above what
# the planner chooses or anyone trains, so that hand-tuned plans stay possible.

#: Voxels of a patch along one axis: 2D patches of whole 2048x2048 slices (the largest in-plane
#: matrices of CT and digitised films); 3D patches stay below 512 (nnU-Net: at most about 320).
MAX_PATCH_AXIS_VOXELS = 2048
#: Voxels of a whole patch: 2^28 (268 M, 640^3). Training takes about 1.3 kB per patch voxel and
#: sample (the memory model's estimate for a plain U-Net), so such a patch needs about 350 GB, more
#: than any accelerator holds; the planner's largest patch on a 192 GB GPU is 384^3 (57 M voxels).
MAX_PATCH_VOXELS = 2**28
#: Patches per training step: nnU-Net's 2D batches of small images reach a few hundred.
MAX_BATCH_SIZE = 4096
#: Voxels of one batch (batch size x patch voxels): 2^30, 4 GiB of float32 input per channel alone;
#: the planner's largest batches (2D, 2048x2048 slices on a 192 GB GPU) hold about 90 M.
MAX_BATCH_VOXELS = 2**30
#: Target spacing (mm): from 1 um (micro-CT, microscopy-like scans) to 500 mm (no scan has slices
#: half a metre apart: such a spacing is a unit error, e.g. um or m taken for mm).
MIN_SPACING_MM = 1e-3
MAX_SPACING_MM = 500.0
#: Median image shape per axis at the target spacing (voxels): 65536, a 65 m field of view at 1 mm.
MAX_IMAGE_AXIS_VOXELS = 2**16
#: Input channels (image modalities): MSD's largest task has 4, multi-echo or multi-phase MRI a
#: dozen or so.
MAX_CHANNELS = 64
#: Network outputs (classes incl. background, or regions): TotalSegmentator has 118; the
#: probabilities of 512 classes of one 512x512x300 CT are 80 GB in float16.
MAX_NETWORK_OUTPUTS = 512
#: Label values: label maps are written as at most 16-bit integers.
MAX_LABEL_VALUE = 2**16 - 1
#: Trainable parameters of one network: 2^30 (4 GiB of float32 weights); nnU-Net ResEnc-L has
#: about 100 M, the planner's networks at most about 30 M.
MAX_NETWORK_PARAMETERS = 2**30
#: Configurations in one plans.json: six planned ones plus budget variants of each.
MAX_CONFIGURATIONS = 256
#: Configuration names and data identifiers are folder names (``results/{name}``,
#: ``preprocessed/{data_identifier}``): letters, digits, ``_ . + -``, starting with a letter or digit
#: (no ``/``, ``..``, absolute paths or hidden names).
FOLDER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]{0,127}")
#: Neighbouring slices a 2.5D configuration stacks on each side of the slice it segments: the planner
#: chooses 1-3 (``autoseg.planning.slice_context``); 16 (33 slices per input) bounds hand edits.
MAX_NEIGHBOUR_SLICES = 16
#: What a 2.5D input holds where a neighbour lies past the volume's first or last slice:
#: ``replicate`` repeats the end slice, ``zero`` puts zeros (the normalized image's mean).
NEIGHBOUR_SLICE_PADDINGS = ("replicate", "zero")


def is_folder_name(value: Any) -> bool:
    """Whether ``value`` is a safe single folder name (:data:`FOLDER_NAME`)."""
    return isinstance(value, str) and FOLDER_NAME.fullmatch(value) is not None


def _finite_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class ResamplingConfig:
    """How cases are resampled to the target spacing.

    Attributes:
        image_order: interpolation order for images: 3 = cubic (cubic convolution, not
            nnU-Net's B-spline: ~15x faster, see ``preprocessing/resample.py``),
            1 = linear, 0 = nearest.
        label_mode: ``"per_class_linear"`` (each class resampled linearly as a
            one-hot map, then argmax: smoother borders) or ``"nearest"``.
        anisotropy_threshold: a case whose largest/smallest spacing (or the target's)
            exceeds this is resampled in-plane first and along its thick axis
            separately, with ``thick_axis_order`` (0 = nearest: interpolating across
            thick slices invents anatomy).
        thick_axis_order: interpolation order of images along the thick axis (0 =
            nearest, 1 = linear); labels and probabilities always use nearest there.
    """

    image_order: int = 3
    label_mode: str = "per_class_linear"
    anisotropy_threshold: float = 3.0
    thick_axis_order: int = 0

    def validate(self, where: str = "resampling") -> None:
        if self.image_order not in IMAGE_ORDERS:
            raise ValueError(f"{where}.image_order must be one of {list(IMAGE_ORDERS)}, got {self.image_order!r}")
        if self.label_mode not in LABEL_MODES:
            raise ValueError(f"{where}.label_mode must be one of {list(LABEL_MODES)}, got {self.label_mode!r}")
        if self.thick_axis_order not in (0, 1):
            raise ValueError(f"{where}.thick_axis_order must be 0 or 1, got {self.thick_axis_order!r}")
        if not _finite_number(self.anisotropy_threshold) or not self.anisotropy_threshold > 1:
            raise ValueError(f"{where}.anisotropy_threshold must be a finite number > 1, "
                             f"got {self.anisotropy_threshold!r}")


def _positive_ints(values: Any, length: int) -> bool:
    return (isinstance(values, list) and len(values) == length
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in values))


@dataclass
class ConfigurationPlan:
    """One trainable configuration (``2d``, ``2.5d``, ``3d_fullres``, ``3d_lowres``, ``3d_cascade_fullres``,
    or a variant of one scaled to a time budget).

    Attributes:
        dimension: 2 or 3 (the network's spatial dimensions).
        data_identifier: folder of the preprocessed cache this configuration reads;
            configurations with identical preprocessing share one.
        target_spacing: mm. 3D: ``(z, y, x)``. 2D: in-plane ``(y, x)``; each case
            keeps its own slice spacing.
        patch_size: voxels, ``(z, y, x)`` in 3D, ``(y, x)`` in 2D; divisible by the
            network's total downsampling.
        batch_size: patches per training step.
        median_image_shape: median case shape at the target spacing (patch axes).
        network: the U-Net topology.
        estimated_memory_bytes: the memory model's estimate of one training step.
        previous_stage: for a cascade, the configuration whose predictions are extra inputs.
        training: optimisation, sampling and augmentation settings.
        measured_speed: seconds per training iteration measured on a device
            (``autoseg plan --benchmark``), with the device name and thread count;
            a time-budgeted ``autoseg train`` on that device uses it instead of measuring.
        variant_of: for a variant scaled down to a time budget, the planned
            configuration it was made from (None for planned configurations).
        neighbour_slices: 2.5D: the 2D network's input is the slice it segments and this many
            neighbouring slices on each side (along z, the cache's own slices), stacked as channels
            (:mod:`autoseg.preprocessing.neighbour_slices`); 0 for every other configuration.
        neighbour_slice_padding: 2.5D: what stands in for neighbours past the volume's ends, one of
            :data:`NEIGHBOUR_SLICE_PADDINGS`.
        reasons: why each value was chosen.
    """

    name: str
    dimension: int
    data_identifier: str
    target_spacing: list[float]
    patch_size: list[int]
    batch_size: int
    median_image_shape: list[int]
    network: NetworkConfig
    resampling: ResamplingConfig = field(default_factory=ResamplingConfig)
    estimated_memory_bytes: int = 0
    previous_stage: str | None = None
    training: TrainingConfig = field(default_factory=TrainingConfig)
    measured_speed: dict | None = None
    variant_of: str | None = None
    neighbour_slices: int = 0
    neighbour_slice_padding: str = "replicate"
    reasons: dict[str, str] = field(default_factory=dict)

    @property
    def slices_per_input(self) -> int:
        """Slices one network input holds per image channel: ``2 * neighbour_slices + 1`` (1 unless 2.5D)."""
        return 2 * self.neighbour_slices + 1

    def validate(self, where: str) -> None:
        """Raise ValueError naming the first invalid field (``where`` is e.g. ``configurations.2d``)."""
        if self.dimension not in (2, 3):
            raise ValueError(f"{where}.dimension must be 2 or 3, got {self.dimension!r}")
        if (not isinstance(self.neighbour_slices, int) or isinstance(self.neighbour_slices, bool)
                or not 0 <= self.neighbour_slices <= MAX_NEIGHBOUR_SLICES):
            raise ValueError(f"{where}.neighbour_slices must be an integer from 0 to {MAX_NEIGHBOUR_SLICES}, "
                             f"got {self.neighbour_slices!r}")
        if self.neighbour_slices and self.dimension != 2:
            raise ValueError(f"{where}.neighbour_slices is {self.neighbour_slices}: neighbouring slices are "
                             f"stacked for 2D networks only (dimension is {self.dimension})")
        if self.neighbour_slice_padding not in NEIGHBOUR_SLICE_PADDINGS:
            raise ValueError(f"{where}.neighbour_slice_padding must be one of {list(NEIGHBOUR_SLICE_PADDINGS)}, "
                             f"got {self.neighbour_slice_padding!r}")
        if not is_folder_name(self.data_identifier):
            raise ValueError(f"{where}.data_identifier must be a folder name (letters, digits, _ . + -), "
                             f"got {self.data_identifier!r}")
        if (not isinstance(self.target_spacing, list) or len(self.target_spacing) != self.dimension
                or not all(_finite_number(v) and MIN_SPACING_MM <= v <= MAX_SPACING_MM for v in self.target_spacing)):
            raise ValueError(f"{where}.target_spacing {self.target_spacing!r}: needs {self.dimension} values from "
                             f"{MIN_SPACING_MM} to {MAX_SPACING_MM:g} mm")
        if not _positive_ints(self.patch_size, self.dimension):
            raise ValueError(f"{where}.patch_size needs {self.dimension} positive integers, got {self.patch_size!r}")
        if max(self.patch_size) > MAX_PATCH_AXIS_VOXELS or math.prod(self.patch_size) > MAX_PATCH_VOXELS:
            raise ValueError(f"{where}.patch_size {self.patch_size}: at most {MAX_PATCH_AXIS_VOXELS} voxels per axis "
                             f"and {MAX_PATCH_VOXELS} voxels in all")
        if not isinstance(self.batch_size, int) or isinstance(self.batch_size, bool) or self.batch_size < 1:
            raise ValueError(f"{where}.batch_size must be a positive integer, got {self.batch_size!r}")
        if self.batch_size > MAX_BATCH_SIZE or self.batch_size * math.prod(self.patch_size) > MAX_BATCH_VOXELS:
            raise ValueError(f"{where}.batch_size {self.batch_size}: at most {MAX_BATCH_SIZE} patches and "
                             f"{MAX_BATCH_VOXELS} voxels per batch (patch {self.patch_size})")
        if (not isinstance(self.median_image_shape, list) or not self.median_image_shape
                or not all(_finite_number(v) and 0 < v <= MAX_IMAGE_AXIS_VOXELS for v in self.median_image_shape)):
            raise ValueError(f"{where}.median_image_shape {self.median_image_shape!r}: needs positive sizes of at "
                             f"most {MAX_IMAGE_AXIS_VOXELS} voxels")
        if not isinstance(self.estimated_memory_bytes, int) or isinstance(self.estimated_memory_bytes, bool) \
                or self.estimated_memory_bytes < 0:
            raise ValueError(f"{where}.estimated_memory_bytes must be a non-negative integer, "
                             f"got {self.estimated_memory_bytes!r}")
        if not isinstance(self.network, NetworkConfig):
            raise ValueError(f"{where}.network must be an object")
        self.network.validate(f"{where}.network")
        if self.network.dimension != self.dimension:
            raise ValueError(f"{where}.network.dimension {self.network.dimension} differs from "
                             f"{where}.dimension {self.dimension}")
        factors = self.network.total_downsampling()
        if any(size % factor for size, factor in zip(self.patch_size, factors)):
            raise ValueError(f"{where}.patch_size {self.patch_size} is not divisible by the network's total "
                             f"downsampling {factors} (the product of network.strides)")
        self.resampling.validate(f"{where}.resampling")
        self.training.validate(f"{where}.training")
        mirror_axes = self.training.augmentation.mirror_axes
        if any(not 0 <= axis < self.dimension for axis in mirror_axes):
            raise ValueError(f"{where}.training.augmentation.mirror_axes {mirror_axes} must be axes "
                             f"0..{self.dimension - 1}")

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["network"] = self.network.to_dict()
        data["training"] = self.training.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "configuration") -> ConfigurationPlan:
        """Parse and validate; ValueError messages start with the field (``where`` + name)."""
        if not isinstance(data, dict):
            raise ValueError(f"{where} must be an object")
        data = dict(data)
        for key in ("name", "dimension", "data_identifier", "target_spacing", "patch_size", "batch_size",
                    "median_image_shape", "network"):
            if key not in data:
                raise ValueError(f"{where}.{key} is missing")
        data["network"] = NetworkConfig.from_dict(data["network"], f"{where}.network")
        for key in ("resampling", "training"):
            if not isinstance(data.get(key, {}), dict):
                raise ValueError(f"{where}.{key} must be an object")
        try:
            data["resampling"] = ResamplingConfig(**data.get("resampling", {}))
        except TypeError as error:
            raise ValueError(f"{where}.resampling: {error}") from None
        try:
            data["training"] = TrainingConfig.from_dict(data.get("training", {}))
        except (TypeError, ValueError) as error:
            raise ValueError(f"{where}.training: {error}") from None
        try:
            plan = cls(**data)
        except TypeError as error:
            raise ValueError(f"{where}: {error}") from None
        plan.validate(where)
        return plan


@dataclass
class Plans:
    """Everything preprocessing, training and inference need to know about a dataset."""

    dataset_name: str
    raw_dataset: str
    channel_names: dict[str, str]
    labels: dict[str, int | list[int]]
    file_ending: str
    num_training_cases: int
    memory_budget: dict[str, Any]
    normalization: list[ChannelNormalization]
    configurations: dict[str, ConfigurationPlan]
    reasons: dict[str, str] = field(default_factory=dict)
    source_signature: str = ""
    budget_plan: dict[str, Any] | None = None
    version: int = PLANS_VERSION
    regions_class_order: list[int] | None = None

    @property
    def num_channels(self) -> int:
        return len(self.channel_names)

    @property
    def num_classes(self) -> int:
        """Network outputs (:func:`autoseg.io.labels.num_network_outputs`): softmax classes, background
        included, or one sigmoid per region."""
        return num_network_outputs(self.labels)

    @property
    def foreground_labels(self) -> list[int]:
        """Foreground values label maps hold (for regions: the union of the regions' values)."""
        return foreground_values(self.labels)

    @property
    def is_region_based(self) -> bool:
        """Trained on regions, one sigmoid output each (:mod:`autoseg.io.labels`)."""
        return is_region_based(self.labels)

    @property
    def output_activation(self) -> str:
        """``"sigmoid"`` per region for region-based plans, else ``"softmax"`` over the classes."""
        return "sigmoid" if self.is_region_based else "softmax"

    @property
    def regions(self) -> list[tuple[int, ...]] | None:
        """The label values of each network output of a region-based plan (None otherwise)."""
        return [values for _, values in network_regions(self.labels)] if self.is_region_based else None

    @property
    def evaluated_classes(self) -> dict[int, tuple[int, ...]]:
        """What metrics and postprocessing score: key -> label values (:func:`autoseg.io.labels.evaluated_classes`)."""
        return evaluated_classes(self.labels, self.regions_class_order)

    @property
    def class_names(self) -> dict[int, str]:
        """Key of :attr:`evaluated_classes` -> label name."""
        return class_names(self.labels, self.regions_class_order)

    @property
    def ignore_label(self) -> int | None:
        """The value of the ``ignore`` label (unannotated voxels), or None."""
        return ignore_value(self.labels)

    def input_channels(self, configuration: str) -> int:
        """Network input channels: image channels (times the slices of a 2.5D input), plus one-hot
        previous-stage classes for a cascade."""
        plan = self.configurations[configuration]
        extra = len(self.foreground_labels) if plan.previous_stage else 0
        return self.num_channels * plan.slices_per_input + extra

    def configuration(self, name: str) -> ConfigurationPlan:
        if name not in self.configurations:
            raise AutosegInputError(f"plans.json: no configuration {name!r} "
                                    f"(available: {', '.join(self.configurations)})")
        return self.configurations[name]

    def budget_choice(self, name: str) -> str | None:
        """The configuration ``autoseg plan --time-budget`` chose to train for ``name`` (a variant or itself)."""
        if not self.budget_plan:
            return None
        return self.budget_plan.get("configurations", {}).get(name, {}).get("trained_as")

    def variants_of(self, name: str) -> list[str]:
        """Names of the budget variants recorded for the planned configuration ``name``."""
        return [other for other, plan in self.configurations.items() if plan.variant_of == name]

    def validate(self) -> None:
        """Raise ValueError naming the first invalid field."""
        labels = self.labels
        if not isinstance(self.channel_names, dict) or not 1 <= len(self.channel_names) <= MAX_CHANNELS:
            count = len(self.channel_names) if isinstance(self.channel_names, dict) else self.channel_names
            raise ValueError(f"channel_names must name 1 to {MAX_CHANNELS} channels, got {count!r}")
        if not isinstance(labels, dict) or not labels:
            raise ValueError(f"labels must map names to values, got {labels!r}")
        values = [v for value in labels.values() for v in (value if isinstance(value, list) else [value])]
        if any(isinstance(v, int) and not isinstance(v, bool) and v > MAX_LABEL_VALUE for v in values):
            raise ValueError(f"labels: values must be at most {MAX_LABEL_VALUE} (16-bit label maps), "
                             f"got {max(v for v in values if isinstance(v, int))}")
        if self.is_region_based or self.regions_class_order is not None:
            problem = label_definition_problem(labels, self.regions_class_order)
            if problem is not None:
                raise ValueError(f"labels: {problem}")
        elif (not labels or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in labels.values())
                or 0 not in labels.values()):
            raise ValueError(f"labels must map names to non-negative integers including background 0, got {labels}")
        elif self.ignore_label is not None and self.ignore_label != max(labels.values()):
            raise ValueError(f"labels: 'ignore' must have the highest value, got {labels}")
        channels = sorted(entry.channel for entry in self.normalization)
        if channels != list(range(self.num_channels)):
            raise ValueError(f"normalization needs one entry per channel 0..{self.num_channels - 1}, "
                             f"got channels {channels}")
        for index, entry in enumerate(self.normalization):
            entry.validate(f"normalization[{index}]")
        if self.num_classes > MAX_NETWORK_OUTPUTS:
            raise ValueError(f"labels: {self.num_classes} network outputs, at most {MAX_NETWORK_OUTPUTS}")
        if not self.configurations:
            raise ValueError("configurations is empty")
        if len(self.configurations) > MAX_CONFIGURATIONS:
            raise ValueError(f"configurations: {len(self.configurations)}, at most {MAX_CONFIGURATIONS}")
        for name, plan in self.configurations.items():
            where = f"configurations.{name}"
            if not is_folder_name(name):
                raise ValueError(f"configurations: name {name!r} is not a folder name (letters, digits, _ . + -)")
            if plan.name != name:
                raise ValueError(f"{where}.name is {plan.name!r}, expected {name!r}")
            for reference, value in (("previous_stage", plan.previous_stage), ("variant_of", plan.variant_of)):
                if value is not None and value not in self.configurations:
                    raise ValueError(f"{where}.{reference}: no configuration {value!r} "
                                     f"(available: {', '.join(self.configurations)})")
        for name, plan in self.configurations.items():  # previous stages resolved: the input channels are known
            parameters = ARCHITECTURES.get(plan.network.architecture).count_parameters(
                plan.network, self.input_channels(name), self.num_classes)
            if parameters > MAX_NETWORK_PARAMETERS:
                raise ValueError(f"configurations.{name}.network: {parameters} parameters, at most "
                                 f"{MAX_NETWORK_PARAMETERS} (features_per_stage {plan.network.features_per_stage}, "
                                 f"kernel_sizes {plan.network.kernel_sizes[0]}...)")

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "dataset_name": self.dataset_name,
            "raw_dataset": self.raw_dataset,
            "channel_names": self.channel_names,
            "labels": self.labels,
            **({"regions_class_order": self.regions_class_order} if self.regions_class_order is not None else {}),
            "file_ending": self.file_ending,
            "num_training_cases": self.num_training_cases,
            "memory_budget": self.memory_budget,
            "normalization": [asdict(entry) for entry in self.normalization],
            "configurations": {name: plan.to_dict() for name, plan in self.configurations.items()},
            "reasons": self.reasons,
            "source_signature": self.source_signature,
            **({"budget_plan": self.budget_plan} if self.budget_plan is not None else {}),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plans:
        """Parse and validate a plans.json object; ValueError messages start with the field."""
        if not isinstance(data, dict):
            raise ValueError("expected a JSON object")
        if data.get("version") != PLANS_VERSION:
            raise ValueError(f"version {data.get('version')!r} is not supported (expected {PLANS_VERSION})")
        for key in ("dataset_name", "raw_dataset", "channel_names", "labels", "file_ending", "num_training_cases",
                    "memory_budget", "normalization", "configurations"):
            if key not in data:
                raise ValueError(f"{key} is missing")
        for key, kind in (("channel_names", dict), ("labels", dict), ("memory_budget", dict), ("normalization", list)):
            if not isinstance(data[key], kind):
                raise ValueError(f"{key} must be {'an object' if kind is dict else 'a list'}")
        normalization = []
        for index, entry in enumerate(data["normalization"]):
            if not isinstance(entry, dict):
                raise ValueError(f"normalization[{index}] must be an object")
            try:
                normalization.append(ChannelNormalization(**entry))
            except TypeError as error:
                raise ValueError(f"normalization[{index}]: {error}") from None
        if not isinstance(data["configurations"], dict):
            raise ValueError("configurations must be an object")
        plans = cls(
            dataset_name=data["dataset_name"], raw_dataset=data["raw_dataset"],
            channel_names=dict(data["channel_names"]), labels=dict(data["labels"]),
            file_ending=data["file_ending"], num_training_cases=int(data["num_training_cases"]),
            memory_budget=dict(data["memory_budget"]), normalization=normalization,
            configurations={name: ConfigurationPlan.from_dict(plan, f"configurations.{name}")
                            for name, plan in data["configurations"].items()},
            reasons=dict(data.get("reasons", {})), source_signature=data.get("source_signature", ""),
            budget_plan=data.get("budget_plan"), version=data["version"],
            regions_class_order=data.get("regions_class_order"),
        )
        plans.validate()
        return plans
