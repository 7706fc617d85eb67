"""The plans schema: ``plans.json`` as dataclasses.

``plans.json`` is the single source of configuration for preprocessing, training
and inference. It is meant to be read (every decision carries a reason) and may be
edited by hand: e.g. a fixed CT window per channel (``"scheme": "ct_window"``).
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from autoseg.errors import AutosegInputError
from autoseg.planning.network_config import NetworkConfig
from autoseg.training.config import TrainingConfig
from autoseg.utils.files import read_json, write_json

PLANS_VERSION = 1

#: Normalization schemes ``autoseg.preprocessing.normalize`` implements.
NORMALIZATION_SCHEMES = ("ct", "zscore", "ct_window", "none")


@dataclass
class ChannelNormalization:
    """How one input channel is normalized.

    Schemes:
        ``ct``: clip to ``[clip_low, clip_high]`` (dataset foreground 0.5/99.5
            percentiles, HU), then subtract ``mean`` and divide by ``std`` (dataset
            foreground statistics).
        ``ct_window``: clip to the fixed window ``[clip_low, clip_high]`` (HU, e.g.
            [-200, 500]), then map it linearly to [-1, 1].
        ``zscore``: per image, subtract its mean and divide by its std; inside the
            nonzero region when ``use_nonzero_mask`` (voxels outside stay 0).
        ``none``: leave intensities as they are.
    """

    channel: int
    channel_name: str
    scheme: str
    use_nonzero_mask: bool = False
    clip_low: float | None = None
    clip_high: float | None = None
    mean: float | None = None
    std: float | None = None
    reason: str = ""

    def validate(self) -> None:
        if self.scheme not in NORMALIZATION_SCHEMES:
            raise ValueError(f"channel {self.channel}: unknown normalization scheme {self.scheme!r} "
                             f"(expected one of {NORMALIZATION_SCHEMES})")
        if self.scheme in ("ct", "ct_window"):
            if self.clip_low is None or self.clip_high is None or self.clip_low >= self.clip_high:
                raise ValueError(f"channel {self.channel}: scheme {self.scheme!r} needs clip_low < clip_high")
        if self.scheme == "ct" and (self.mean is None or not self.std):
            raise ValueError(f"channel {self.channel}: scheme 'ct' needs mean and a nonzero std")


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


@dataclass
class ConfigurationPlan:
    """One trainable configuration (``2d``, ``3d_fullres``, ``3d_lowres``, ``3d_cascade_fullres``).

    Attributes:
        dimension: 2 or 3 (the network's spatial dimensions).
        data_identifier: folder of the preprocessed cache this configuration reads;
            configurations with identical preprocessing share one.
        target_spacing: mm. 3D: ``(z, y, x)``. 2D: in-plane ``(y, x)``; each case
            keeps its own slice spacing.
        patch_size: voxels, ``(z, y, x)`` in 3D, ``(y, x)`` in 2D.
        batch_size: patches per training step.
        median_image_shape: median case shape at the target spacing (patch axes).
        network: the U-Net topology.
        estimated_memory_bytes: the memory model's estimate of one training step.
        previous_stage: for a cascade, the configuration whose predictions are extra inputs.
        training: optimisation, sampling and augmentation settings.
        measured_speed: seconds per training iteration measured on a device
            (``autoseg plan --benchmark``), with the device name and thread count.
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
    reasons: dict[str, str] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["network"] = self.network.to_dict()
        data["training"] = self.training.to_dict()
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ConfigurationPlan:
        data = dict(data)
        data["network"] = NetworkConfig.from_dict(data["network"])
        data["resampling"] = ResamplingConfig(**data.get("resampling", {}))
        data["training"] = TrainingConfig.from_dict(data.get("training", {}))
        return cls(**data)


@dataclass
class Plans:
    """Everything preprocessing, training and inference need to know about a dataset."""

    dataset_name: str
    raw_dataset: str
    channel_names: dict[str, str]
    labels: dict[str, int]
    file_ending: str
    num_training_cases: int
    memory_budget: dict[str, Any]
    normalization: list[ChannelNormalization]
    configurations: dict[str, ConfigurationPlan]
    reasons: dict[str, str] = field(default_factory=dict)
    source_signature: str = ""
    version: int = PLANS_VERSION

    @property
    def num_channels(self) -> int:
        return len(self.channel_names)

    @property
    def num_classes(self) -> int:
        """Network outputs: largest label value + 1."""
        return max(self.labels.values()) + 1

    @property
    def foreground_labels(self) -> list[int]:
        return sorted(value for value in self.labels.values() if value != 0)

    def input_channels(self, configuration: str) -> int:
        """Network input channels: image channels, plus one-hot previous-stage classes for a cascade."""
        extra = len(self.foreground_labels) if self.configurations[configuration].previous_stage else 0
        return self.num_channels + extra

    def configuration(self, name: str) -> ConfigurationPlan:
        if name not in self.configurations:
            raise AutosegInputError(f"plans.json: no configuration {name!r} "
                                    f"(available: {', '.join(self.configurations)})")
        return self.configurations[name]

    def to_dict(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "dataset_name": self.dataset_name,
            "raw_dataset": self.raw_dataset,
            "channel_names": self.channel_names,
            "labels": self.labels,
            "file_ending": self.file_ending,
            "num_training_cases": self.num_training_cases,
            "memory_budget": self.memory_budget,
            "normalization": [asdict(entry) for entry in self.normalization],
            "configurations": {name: plan.to_dict() for name, plan in self.configurations.items()},
            "reasons": self.reasons,
            "source_signature": self.source_signature,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Plans:
        if data.get("version") != PLANS_VERSION:
            raise ValueError(f"plans version {data.get('version')!r} is not supported (expected {PLANS_VERSION})")
        normalization = [ChannelNormalization(**entry) for entry in data["normalization"]]
        for entry in normalization:
            entry.validate()
        return cls(
            dataset_name=data["dataset_name"], raw_dataset=data["raw_dataset"],
            channel_names=dict(data["channel_names"]), labels=dict(data["labels"]),
            file_ending=data["file_ending"], num_training_cases=int(data["num_training_cases"]),
            memory_budget=dict(data["memory_budget"]), normalization=normalization,
            configurations={name: ConfigurationPlan.from_dict(plan)
                            for name, plan in data["configurations"].items()},
            reasons=dict(data.get("reasons", {})), source_signature=data.get("source_signature", ""),
            version=data["version"],
        )


def save_plans(plans: Plans, path: str | os.PathLike) -> None:
    """Write plans.json atomically."""
    write_json(path, plans.to_dict())


def load_plans(path: str | os.PathLike) -> Plans:
    """Read and validate plans.json; errors name the file."""
    path = Path(path)
    if not path.is_file():
        raise AutosegInputError(f"{path}: not found (run `autoseg plan` first)")
    try:
        return Plans.from_dict(read_json(path))
    except (KeyError, TypeError, ValueError) as error:
        raise AutosegInputError(f"{path}: invalid plans ({error})") from None
