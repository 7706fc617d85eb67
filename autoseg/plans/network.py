"""The network part of a configuration's plan: what :func:`autoseg.model.builders.build_network` reads."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from autoseg.plans.architectures import ARCHITECTURES

# Physical bounds of a network plan. plans.json may be edited by hand or come inside a model
# bundle from elsewhere: a value past these is a typo or an attack (it would make training or
# prediction allocate without end), never a network anyone trains. Each is far above what the
# planner chooses, so that hand-tuned networks stay possible.

#: Resolution stages: the planner pools each axis down to >= 4 voxels, so a 2048-voxel axis gives
#: 10 stages; nnU-Net's deepest plans (2D, 512x512 slices) have 8.
MAX_STAGES = 12
#: Feature maps of one stage: nnU-Net caps them at 320 (3D) and 512 (2D); ResEnc-XL-like widths stay far below.
MAX_FEATURES_PER_STAGE = 2048
#: Conv kernel size per axis: the planner uses 3 (1 along an axis not yet pooled); large-kernel
#: designs (MedNeXt) use up to 7.
MAX_KERNEL_SIZE = 9
#: Downsampling stride per stage and axis: the planner uses 1 or 2; 4 allows an aggressive first pooling.
MAX_STRIDE = 4
#: Conv blocks per encoder or decoder stage: ResEnc-L has at most 6 per stage.
MAX_BLOCKS_PER_STAGE = 16


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def total_downsampling(strides: Sequence[Sequence[int]]) -> list[int]:
    """Product of the per-stage strides, per axis: patch sizes must be divisible by it."""
    return [math.prod(stride[axis] for stride in strides) for axis in range(len(strides[0]))]


@dataclass
class NetworkConfig:
    """U-Net topology, one entry per resolution stage (stage 0 = full resolution).

    Attributes:
        architecture: a name registered in :data:`autoseg.plans.architectures.ARCHITECTURES`:
            ``"unet"`` (plain conv blocks) or ``"residual_encoder_unet"`` (residual
            blocks in the encoder, plain decoder).
        dimension: 2 or 3 (spatial dimensions of the convolutions).
        features_per_stage: output channels of each stage, e.g. ``[32, 64, 128, 256, 320]``.
        kernel_sizes: conv kernel size per stage and axis (axis order as the patch:
            ``(z, y, x)`` in 3D, ``(y, x)`` in 2D); 1 along an axis that is not yet
            pooled because its spacing is too coarse.
        strides: downsampling stride per stage and axis; ``strides[0]`` is all ones
            (stage 0 does not downsample), later stages downsample by 1 or 2 per axis.
        n_blocks_per_stage_encoder: conv blocks per encoder stage (``unet``: 2 convs
            each; ``residual_encoder_unet``: residual blocks of two convs each).
        n_conv_per_stage_decoder: conv blocks per decoder stage, ``n_stages - 1`` entries
            ordered deepest first (entry 0 is the decoder stage just above the
            bottleneck, the last entry works at full resolution).
        deep_supervision: add segmentation heads at lower decoder stages.
        negative_slope: LeakyReLU slope.
    """

    architecture: str
    dimension: int
    features_per_stage: list[int]
    kernel_sizes: list[list[int]]
    strides: list[list[int]]
    n_blocks_per_stage_encoder: list[int]
    n_conv_per_stage_decoder: list[int]
    deep_supervision: bool = True
    negative_slope: float = 0.01
    extra: dict = field(default_factory=dict)

    @property
    def n_stages(self) -> int:
        return len(self.features_per_stage)

    def total_downsampling(self) -> list[int]:
        """Product of strides per axis: the patch size must be divisible by it."""
        return total_downsampling(self.strides)

    def validate(self, where: str = "network") -> None:
        """Raise ValueError naming the field (``where`` + field) when a value is invalid."""
        if not isinstance(self.features_per_stage, list):
            raise ValueError(f"{where}.features_per_stage must be a list, got {self.features_per_stage!r}")
        n = self.n_stages
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"{where}.architecture: unknown architecture {self.architecture!r} "
                             f"(known: {', '.join(ARCHITECTURES.names())})")
        if self.dimension not in (2, 3):
            raise ValueError(f"{where}.dimension must be 2 or 3, got {self.dimension}")
        if not 2 <= n <= MAX_STAGES:
            raise ValueError(f"{where}.features_per_stage: a U-Net needs 2 to {MAX_STAGES} stages, got {n}")
        if any(not _is_int(f) or not 1 <= f <= MAX_FEATURES_PER_STAGE for f in self.features_per_stage):
            raise ValueError(f"{where}.features_per_stage must be integers 1..{MAX_FEATURES_PER_STAGE}, "
                             f"got {self.features_per_stage}")
        for name in ("kernel_sizes", "strides", "n_blocks_per_stage_encoder", "n_conv_per_stage_decoder"):
            if not isinstance(getattr(self, name), list):
                raise ValueError(f"{where}.{name} must be a list, got {getattr(self, name)!r}")
        for name in ("kernel_sizes", "strides", "n_blocks_per_stage_encoder"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{where}.{name} needs one entry per stage ({n}), "
                                 f"got {len(getattr(self, name))}")
        if len(self.n_conv_per_stage_decoder) != n - 1:
            raise ValueError(f"{where}.n_conv_per_stage_decoder needs n_stages - 1 = {n - 1} entries, "
                             f"got {len(self.n_conv_per_stage_decoder)}")
        for name in ("kernel_sizes", "strides"):
            for per_axis in getattr(self, name):
                if not isinstance(per_axis, list) or len(per_axis) != self.dimension or not all(
                        _is_int(v) for v in per_axis):
                    raise ValueError(f"{where}.{name}: per-axis entry {per_axis} is not {self.dimension} integers")
        if any(not 1 <= k <= MAX_KERNEL_SIZE or k % 2 == 0 for kernel in self.kernel_sizes for k in kernel):
            raise ValueError(f"{where}.kernel_sizes must be odd, 1..{MAX_KERNEL_SIZE}, got {self.kernel_sizes}")
        if any(not 1 <= s <= MAX_STRIDE for stride in self.strides for s in stride):
            raise ValueError(f"{where}.strides must be 1..{MAX_STRIDE}, got {self.strides}")
        if any(s != 1 for s in self.strides[0]):
            raise ValueError(f"{where}.strides[0] must be all ones, got {self.strides[0]}")
        if any(not _is_int(b) or not 1 <= b <= MAX_BLOCKS_PER_STAGE
               for b in list(self.n_blocks_per_stage_encoder) + list(self.n_conv_per_stage_decoder)):
            raise ValueError(f"{where}: n_blocks_per_stage_encoder and n_conv_per_stage_decoder entries must be "
                             f"integers 1..{MAX_BLOCKS_PER_STAGE}")
        if not isinstance(self.deep_supervision, bool):
            raise ValueError(f"{where}.deep_supervision must be true or false, got {self.deep_supervision!r}")
        if not _finite(self.negative_slope) or not 0 <= self.negative_slope <= 1:
            raise ValueError(f"{where}.negative_slope must be in [0, 1], got {self.negative_slope}")
        if not isinstance(self.extra, dict):
            raise ValueError(f"{where}.extra must be an object, got {self.extra!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict, where: str = "network") -> NetworkConfig:
        if not isinstance(data, dict):
            raise ValueError(f"{where} must be an object")
        try:
            config = cls(**data)
        except TypeError as error:
            raise ValueError(f"{where}: {error}") from None
        config.validate(where)
        return config
