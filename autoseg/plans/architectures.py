"""Network architectures as the planner sees them: one spec class per architecture, in a registry.

plans.json names an architecture (``network.architecture``); this registry says what
that name means in numbers, without torch: how many blocks each encoder stage gets,
how many convolutions a block holds, and how many parameters the built network has
(the memory model uses both). The torch modules themselves are built by
:mod:`autoseg.model.builders`, whose registry has an entry under the same name (a
test checks that both registries agree, and that the counts match the built networks).

To add an architecture: subclass :class:`ArchitectureSpec`, register it here with
``ARCHITECTURES.add(...)``, and register its builder in ``autoseg.model.builders``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from autoseg.utils.registry import Registry

if TYPE_CHECKING:  # type hints only: network.py imports this module to validate names
    from autoseg.plans.network import NetworkConfig


def conv_norm_parameters(channels_in: int, channels_out: int, kernel) -> int:
    """A conv without bias followed by an affine instance norm (scale and shift per channel)."""
    return channels_in * channels_out * math.prod(kernel) + 2 * channels_out


class ArchitectureSpec:
    """What the planner needs to know about one architecture.

    Attributes:
        name: the name in plans.json.
        convs_per_encoder_block: convolutions per encoder block (activation count).
    """

    name = ""
    convs_per_encoder_block = 1

    def encoder_blocks(self, n_stages: int) -> list[int]:
        """Blocks per encoder stage for a network of ``n_stages`` stages."""
        raise NotImplementedError

    def encoder_parameters(self, network: NetworkConfig, in_channels: int) -> int:
        """Trainable parameters of the encoder."""
        raise NotImplementedError

    def count_parameters(self, network: NetworkConfig, in_channels: int, num_classes: int) -> int:
        """Trainable parameters of the whole network: encoder, then the shared U-Net decoder and heads.

        Decoder stage at level L: transposed conv (with bias) from ``features[L+1]`` to
        ``features[L]``, then conv-norm blocks on the concatenation; 1x1 heads (with bias)
        at every level used for deep supervision (at least the full-resolution one).
        """
        features = network.features_per_stage
        total = self.encoder_parameters(network, in_channels)
        for depth, n_conv in enumerate(network.n_conv_per_stage_decoder):
            level = network.n_stages - 2 - depth
            below, here = features[level + 1], features[level]
            total += below * here * math.prod(network.strides[level + 1]) + here
            for block in range(n_conv):
                total += conv_norm_parameters(2 * here if block == 0 else here, here, network.kernel_sizes[level])
        for level in range(max(1, network.n_stages - 2)):
            total += features[level] * num_classes + num_classes
        return total


class PlainUNetSpec(ArchitectureSpec):
    """``unet``: each encoder stage is two conv-norm-act blocks (nnU-Net's default)."""

    name = "unet"
    convs_per_encoder_block = 1

    def encoder_blocks(self, n_stages: int) -> list[int]:
        return [2] * n_stages

    def encoder_parameters(self, network: NetworkConfig, in_channels: int) -> int:
        features = network.features_per_stage
        total = 0
        for stage, (out, kernel) in enumerate(zip(features, network.kernel_sizes)):
            channels_in = in_channels if stage == 0 else features[stage - 1]
            for block in range(network.n_blocks_per_stage_encoder[stage]):
                total += conv_norm_parameters(channels_in if block == 0 else out, out, kernel)
        return total


class ResidualEncoderUNetSpec(ArchitectureSpec):
    """``residual_encoder_unet``: a conv stem, then residual blocks of two convs (1, 3, 4, 6, 6, ... per stage)."""

    name = "residual_encoder_unet"
    convs_per_encoder_block = 2

    def encoder_blocks(self, n_stages: int) -> list[int]:
        return [1, 3, 4, 6][:n_stages] + [6] * max(0, n_stages - 4)

    def encoder_parameters(self, network: NetworkConfig, in_channels: int) -> int:
        features = network.features_per_stage
        total = 0
        for stage, (out, kernel) in enumerate(zip(features, network.kernel_sizes)):
            channels_in = in_channels if stage == 0 else features[stage - 1]
            stride = network.strides[stage]
            if stage == 0:
                total += conv_norm_parameters(in_channels, out, kernel)  # stem
                channels_in = out
            for block in range(network.n_blocks_per_stage_encoder[stage]):
                block_in = channels_in if block == 0 else out
                total += conv_norm_parameters(block_in, out, kernel) + conv_norm_parameters(out, out, kernel)
                if block == 0 and (block_in != out or any(s != 1 for s in stride)):
                    total += conv_norm_parameters(block_in, out, [1] * network.dimension)  # projection
        return total


#: Architecture name (``network.architecture`` in plans.json) -> its spec.
ARCHITECTURES: Registry[ArchitectureSpec] = Registry("architecture")
ARCHITECTURES.add(PlainUNetSpec.name, PlainUNetSpec())
ARCHITECTURES.add(ResidualEncoderUNetSpec.name, ResidualEncoderUNetSpec())


def count_parameters(network: NetworkConfig, in_channels: int, num_classes: int) -> int:
    """Trainable parameters of the network :func:`autoseg.model.builders.build_network` makes from ``network``."""
    return ARCHITECTURES.get(network.architecture).count_parameters(network, in_channels, num_classes)
