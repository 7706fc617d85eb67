"""Estimate of the memory one training step needs, from the network topology.

Counts, in bytes: the activations autograd keeps for the backward pass (per conv
block the conv, normalization and nonlinearity outputs; decoder upsampling and skip
concatenation; segmentation heads and their softmax) for the whole batch, plus the
weights with their gradients and SGD momentum (fp32). It is a model, not a
measurement: its purpose is to compare candidate patch and batch sizes against a
budget, so it must grow with each of them (tests check this).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from autoseg.planning.network_config import NetworkConfig

#: Tensors autograd keeps per conv block: conv output, norm output, activation output.
TENSORS_PER_CONV_BLOCK = 3
#: fp32 weight + gradient + momentum.
BYTES_PER_PARAMETER = 12


def count_parameters(network: NetworkConfig, in_channels: int, num_classes: int) -> int:
    """Number of trainable parameters of the network ``build_network`` makes from ``network``."""
    total = 0
    features = network.features_per_stage
    channels = in_channels
    residual = network.architecture == "residual_encoder_unet"
    for stage, (out, kernel) in enumerate(zip(features, network.kernel_sizes)):
        kernel_voxels = math.prod(kernel)
        if residual:
            total += channels * out * kernel_voxels + 3 * out  # stem or strided first conv
            # two convs per residual block
            total += network.n_blocks_per_stage_encoder[stage] * 2 * (out * out * kernel_voxels + 3 * out)
        else:
            for block in range(network.n_blocks_per_stage_encoder[stage]):
                block_in = channels if block == 0 else out
                total += block_in * out * kernel_voxels + 3 * out  # conv weights + bias + norm affine
        channels = out
    for depth, n_conv in enumerate(network.n_conv_per_stage_decoder):
        stage = network.n_stages - 2 - depth
        below, here = features[stage + 1], features[stage]
        total += below * here * math.prod(network.strides[stage + 1]) + here  # transposed conv
        kernel_voxels = math.prod(network.kernel_sizes[stage])
        for block in range(n_conv):
            block_in = 2 * here if block == 0 else here
            total += block_in * here * kernel_voxels + 3 * here
        total += here * num_classes + num_classes  # segmentation head
    return total


def activation_elements_per_sample(network: NetworkConfig, patch_size: Sequence[int],
                                   in_channels: int, num_classes: int) -> int:
    """Activation elements autograd keeps for one sample of ``patch_size`` voxels."""
    voxels_per_stage = []
    shape = [float(v) for v in patch_size]
    for stride in network.strides:
        shape = [s / st for s, st in zip(shape, stride)]
        voxels_per_stage.append(math.prod(shape))
    convs_per_block = 2 if network.architecture == "residual_encoder_unet" else 1
    elements = in_channels * voxels_per_stage[0]
    for stage, features in enumerate(network.features_per_stage):
        n_convs = network.n_blocks_per_stage_encoder[stage] * convs_per_block
        elements += TENSORS_PER_CONV_BLOCK * n_convs * features * voxels_per_stage[stage]
    for depth, n_conv in enumerate(network.n_conv_per_stage_decoder):
        stage = network.n_stages - 2 - depth
        features = network.features_per_stage[stage]
        voxels = voxels_per_stage[stage]
        elements += features * voxels  # transposed conv output
        elements += 2 * features * voxels  # concatenation with the skip
        elements += TENSORS_PER_CONV_BLOCK * n_conv * features * voxels
        if network.deep_supervision or stage == 0:
            elements += 2 * num_classes * voxels  # logits and softmax
    return int(elements)


def estimate_training_memory_bytes(network: NetworkConfig, patch_size: Sequence[int], batch_size: int,
                                   in_channels: int, num_classes: int, bytes_per_activation: int) -> int:
    """Bytes one training step needs (activations for the batch + parameters, gradients, momentum).

    ``bytes_per_activation`` is 4 for fp32 training (CPU) and 2 with mixed precision (CUDA).
    """
    activations = activation_elements_per_sample(network, patch_size, in_channels, num_classes)
    parameters = count_parameters(network, in_channels, num_classes)
    return int(batch_size * activations * bytes_per_activation + parameters * BYTES_PER_PARAMETER)
