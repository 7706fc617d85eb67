"""The network part of a configuration's plan: what :func:`autoseg.training.network.build_network` reads."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

#: Architectures :func:`autoseg.training.network.build_network` can build.
ARCHITECTURES = ("unet", "residual_encoder_unet")


@dataclass
class NetworkConfig:
    """U-Net topology, one entry per resolution stage (stage 0 = full resolution).

    Attributes:
        architecture: ``"unet"`` (plain conv blocks) or ``"residual_encoder_unet"``
            (residual blocks in the encoder, plain decoder).
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
        factors = [1] * self.dimension
        for stride in self.strides:
            factors = [f * s for f, s in zip(factors, stride)]
        return factors

    def validate(self) -> None:
        """Raise ValueError when the lists disagree in length or values are invalid."""
        n = self.n_stages
        if self.architecture not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {self.architecture!r}, expected one of {ARCHITECTURES}")
        if self.dimension not in (2, 3):
            raise ValueError(f"dimension must be 2 or 3, got {self.dimension}")
        if len(self.kernel_sizes) != n or len(self.strides) != n or len(self.n_blocks_per_stage_encoder) != n:
            raise ValueError("kernel_sizes, strides and n_blocks_per_stage_encoder need one entry per stage")
        if len(self.n_conv_per_stage_decoder) != n - 1:
            raise ValueError("n_conv_per_stage_decoder needs n_stages - 1 entries")
        for per_axis in self.kernel_sizes + self.strides:
            if len(per_axis) != self.dimension:
                raise ValueError(f"per-axis entry {per_axis} does not have {self.dimension} values")
        if any(s != 1 for s in self.strides[0]):
            raise ValueError("strides[0] must be all ones")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> NetworkConfig:
        config = cls(**data)
        config.validate()
        return config
