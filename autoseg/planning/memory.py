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

from autoseg.plans.architectures import ARCHITECTURES, count_parameters
from autoseg.plans.network import NetworkConfig

#: Tensors autograd keeps per conv block: conv output, norm output, activation output.
TENSORS_PER_CONV_BLOCK = 3
#: fp32 weight + gradient + momentum.
BYTES_PER_PARAMETER = 12


def activation_elements_per_sample(network: NetworkConfig, patch_size: Sequence[int],
                                   in_channels: int, num_classes: int) -> int:
    """Activation elements autograd keeps for one sample of ``patch_size`` voxels."""
    voxels_per_stage = []
    shape = [float(v) for v in patch_size]
    for stride in network.strides:
        shape = [s / st for s, st in zip(shape, stride)]
        voxels_per_stage.append(math.prod(shape))
    convs_per_block = ARCHITECTURES.get(network.architecture).convs_per_encoder_block
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
