"""U-Net (plain or residual encoder) built from a :class:`NetworkConfig`; build it with
:func:`autoseg.model.builders.build_network`, which picks the encoder by architecture name.

Tensors are ``(B, C, z, y, x)`` for 3D and ``(B, C, y, x)`` for 2D; per-axis lists in the
config (kernel sizes, strides) follow the same spatial axis order. Stage 0 works at full
resolution; stage ``i`` is downsampled by the product of ``strides[1..i]``.

Layout:

* encoder stage ``i``: the first conv carries ``strides[i]`` (strided-conv downsampling,
  no pooling); ``unet`` stages are ``n_blocks_per_stage_encoder[i]`` conv-norm-act
  blocks, ``residual_encoder_unet`` stages are residual basic blocks (a plain
  conv-norm-act stem precedes the blocks of stage 0);
* decoder stage ``j`` (``j = 0`` just above the bottleneck) at encoder level
  ``L = n_stages - 2 - j``: transposed conv (kernel = stride = ``strides[L + 1]``) to
  ``features_per_stage[L]`` channels, concatenation ``(upsampled, skip)``, then
  ``n_conv_per_stage_decoder[j]`` conv-norm-act blocks;
* 1x1 conv segmentation heads at the levels used for deep supervision.

Convs that feed a normalization have no bias: instance normalization subtracts the
per-channel mean, so such a bias would have no effect.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from torch import Tensor, nn

from autoseg.plans.network import NetworkConfig

__all__ = ["ConvNormAct", "InstanceNorm", "ResidualBlock", "SegmentationNetwork", "plain_encoder_stage",
           "residual_encoder_stage"]

#: Builds encoder stage ``i``: ``(config, stage, in_channels) -> module``; the stage's first block downsamples.
EncoderStage = Callable[[NetworkConfig, int, int], nn.Module]


class InstanceNorm(nn.GroupNorm):
    """Instance normalization with a per-channel affine transform, for 2D and 3D inputs.

    Normalizes each (sample, channel) over its spatial axes, exactly like
    ``nn.InstanceNorm{2,3}d(affine=True)`` without running statistics. It is a group norm
    with one channel per group because the CPU group-norm kernel is faster and keeps
    ``channels_last``/``channels_last_3d`` tensors in their memory format, whereas
    instance norm copies them to a contiguous layout.
    """

    def __init__(self, num_channels: int, eps: float = 1e-5):
        super().__init__(num_groups=num_channels, num_channels=num_channels, eps=eps, affine=True)

    def extra_repr(self) -> str:
        return f"{self.num_channels}, eps={self.eps}, affine=True"


def _conv_class(dimension: int) -> type[nn.Module]:
    return nn.Conv3d if dimension == 3 else nn.Conv2d


def _transposed_conv_class(dimension: int) -> type[nn.Module]:
    return nn.ConvTranspose3d if dimension == 3 else nn.ConvTranspose2d


def _activation(negative_slope: float) -> nn.LeakyReLU:
    # In place: the backward of leaky ReLU only needs its output (valid for slope >= 0).
    return nn.LeakyReLU(negative_slope=negative_slope, inplace=True)


class ConvNormAct(nn.Sequential):
    """conv (no bias, padding ``kernel // 2`` per axis) -> instance norm -> leaky ReLU."""

    def __init__(
        self,
        dimension: int,
        in_channels: int,
        out_channels: int,
        kernel_size: Sequence[int],
        stride: Sequence[int],
        negative_slope: float,
    ):
        conv = _conv_class(dimension)(
            in_channels,
            out_channels,
            kernel_size=tuple(kernel_size),
            stride=tuple(stride),
            padding=tuple(k // 2 for k in kernel_size),
            bias=False,
        )
        super().__init__(conv, InstanceNorm(out_channels), _activation(negative_slope))


class ResidualBlock(nn.Module):
    """Basic residual block: ``act(norm(conv(act(norm(conv(x))))) + skip(x))``.

    The first conv carries the stride. ``skip`` is the identity, or a 1x1 (strided) conv
    followed by a norm when the stride or the channel count changes the shape.
    """

    def __init__(
        self,
        dimension: int,
        in_channels: int,
        out_channels: int,
        kernel_size: Sequence[int],
        stride: Sequence[int],
        negative_slope: float,
    ):
        super().__init__()
        conv = _conv_class(dimension)
        padding = tuple(k // 2 for k in kernel_size)
        self.conv1 = conv(in_channels, out_channels, tuple(kernel_size), tuple(stride), padding, bias=False)
        self.norm1 = InstanceNorm(out_channels)
        self.act1 = _activation(negative_slope)
        self.conv2 = conv(out_channels, out_channels, tuple(kernel_size), 1, padding, bias=False)
        self.norm2 = InstanceNorm(out_channels)
        self.act2 = _activation(negative_slope)
        if in_channels != out_channels or any(s != 1 for s in stride):
            self.skip: nn.Module = nn.Sequential(
                conv(in_channels, out_channels, 1, tuple(stride), 0, bias=False), InstanceNorm(out_channels)
            )
        else:
            self.skip = nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        out = self.act1(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        out += self.skip(x)  # in place: the norm's backward does not need its output
        return self.act2(out)


class DecoderStage(nn.Module):
    """Transposed-conv upsampling, concatenation with the encoder skip, conv-norm-act blocks."""

    def __init__(
        self,
        dimension: int,
        below_channels: int,
        channels: int,
        upsample_stride: Sequence[int],
        kernel_size: Sequence[int],
        n_convs: int,
        negative_slope: float,
    ):
        super().__init__()
        self.upsample = _transposed_conv_class(dimension)(
            below_channels, channels, kernel_size=tuple(upsample_stride), stride=tuple(upsample_stride)
        )
        blocks = [
            ConvNormAct(dimension, 2 * channels if i == 0 else channels, channels, kernel_size, [1] * dimension,
                        negative_slope)
            for i in range(n_convs)
        ]
        self.convs = nn.Sequential(*blocks)

    def forward(self, x: Tensor, skip: Tensor) -> Tensor:
        """``x``: (B, C_below, *spatial_below); ``skip``: (B, C, *spatial) -> (B, C, *spatial)."""
        return self.convs(torch.cat((self.upsample(x), skip), dim=1))


class SegmentationNetwork(nn.Module):
    """U-Net for ``(B, in_channels, *spatial)`` inputs, returning ``(B, num_classes, *spatial)`` logits.

    ``encoder_stage`` builds each encoder stage (:func:`plain_encoder_stage`,
    :func:`residual_encoder_stage`, or a registered architecture's own); the decoder and
    heads are shared. Set ``deep_supervision`` (a plain bool) to choose
    what :meth:`forward` returns; the segmentation heads for the lower resolutions exist
    whatever the flag, so the state dict does not depend on it.
    """

    def __init__(self, config: NetworkConfig, in_channels: int, num_classes: int, encoder_stage: EncoderStage):
        super().__init__()
        config.validate()
        if in_channels < 1 or num_classes < 1:
            raise ValueError(f"in_channels and num_classes must be >= 1, got {in_channels} and {num_classes}")
        self.config = copy.deepcopy(config)  # later edits of the caller's config do not apply
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.deep_supervision: bool = bool(config.deep_supervision)
        self._total_downsampling = tuple(config.total_downsampling())

        dim = config.dimension
        feats = config.features_per_stage
        slope = config.negative_slope
        n = config.n_stages

        stages = [encoder_stage(config, i, in_channels if i == 0 else feats[i - 1]) for i in range(n)]
        self.encoder = nn.ModuleList(stages)

        # decoder[j] works at encoder level n - 2 - j (deepest first)
        self.decoder = nn.ModuleList(
            DecoderStage(dim, feats[level + 1], feats[level], config.strides[level + 1],
                         config.kernel_sizes[level], config.n_conv_per_stage_decoder[j], slope)
            for j, level in enumerate(range(n - 2, -1, -1))
        )
        # heads[level]: full resolution first; every decoder level except the deepest one,
        # but at least the full-resolution head
        self.n_supervised_levels = max(1, n - 2)
        conv = _conv_class(dim)
        self.heads = nn.ModuleList(
            conv(feats[level], num_classes, kernel_size=1, bias=True) for level in range(self.n_supervised_levels)
        )
        self._initialize_weights(slope)

    def _initialize_weights(self, negative_slope: float) -> None:
        for module in self.modules():
            if isinstance(module, (nn.Conv2d, nn.Conv3d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
                nn.init.kaiming_normal_(module.weight, a=negative_slope)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, x: Tensor) -> Tensor | list[Tensor]:
        """``x``: (B, in_channels, *spatial), spatial divisible by ``config.total_downsampling()``.

        Returns the logits ``(B, num_classes, *spatial)``, or, when ``deep_supervision`` is
        True, a list of logits, full resolution first, whose sizes relative to the input are
        given by :meth:`output_scales`.
        """
        total = self._total_downsampling
        spatial = tuple(x.shape[2:])
        if len(spatial) != self.config.dimension or any(size % f for size, f in zip(spatial, total)):
            raise ValueError(
                f"input spatial shape {spatial} must have {self.config.dimension} axes divisible by the "
                f"total downsampling {total}"
            )
        skips = []
        for stage in self.encoder:
            x = stage(x)
            skips.append(x)
        x = skips.pop()  # bottleneck
        supervise = self.deep_supervision
        outputs: list[Tensor] = []
        for decoder_stage in self.decoder:
            level = len(skips) - 1
            x = decoder_stage(x, skips.pop())  # drop the reference: frees memory under no_grad
            if supervise and 0 < level < self.n_supervised_levels:
                outputs.append(self.heads[level](x))
        full = self.heads[0](x)
        if not supervise:
            return full
        outputs.append(full)
        outputs.reverse()
        return outputs

    def output_scales(self) -> list[list[float]]:
        """Per output of :meth:`forward` (full resolution first), per spatial axis: its size / input size."""
        n_outputs = self.n_supervised_levels if self.deep_supervision else 1
        scales = []
        factors = [1] * self.config.dimension
        for level in range(n_outputs):
            factors = [f * s for f, s in zip(factors, self.config.strides[level])]
            scales.append([1.0 / f for f in factors])
        return scales


def plain_encoder_stage(config: NetworkConfig, stage: int, in_channels: int) -> nn.Module:
    """``unet``: ``n_blocks_per_stage_encoder[stage]`` conv-norm-act blocks, the first one strided."""
    dim, out = config.dimension, config.features_per_stage[stage]
    kernel, stride = config.kernel_sizes[stage], config.strides[stage]
    return nn.Sequential(*[
        ConvNormAct(dim, in_channels if b == 0 else out, out, kernel, stride if b == 0 else [1] * dim,
                    config.negative_slope)
        for b in range(config.n_blocks_per_stage_encoder[stage])])


def residual_encoder_stage(config: NetworkConfig, stage: int, in_channels: int) -> nn.Module:
    """``residual_encoder_unet``: residual blocks, the first one strided; stage 0 starts with a conv stem."""
    dim, out = config.dimension, config.features_per_stage[stage]
    kernel, stride = config.kernel_sizes[stage], config.strides[stage]
    blocks: list[nn.Module] = []
    if stage == 0:
        blocks.append(ConvNormAct(dim, in_channels, out, kernel, stride, config.negative_slope))
        in_channels = out
    blocks += [ResidualBlock(dim, in_channels if b == 0 else out, out, kernel, stride if b == 0 else [1] * dim,
                             config.negative_slope)
               for b in range(config.n_blocks_per_stage_encoder[stage])]
    return nn.Sequential(*blocks)
