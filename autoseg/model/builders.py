"""Network builders in a registry keyed by the architecture name in plans.json.

``network.architecture`` in plans.json names both an entry here (how to build the
torch module) and a spec in :mod:`autoseg.plans.architectures` (what the planner
needs to know about it). Training and inference build every network through
:func:`build_network`, so a registered architecture is trained and predicted with no
other change.

To add an architecture: register a builder ``(config, in_channels, num_classes) ->
nn.Module`` here (``@NETWORK_BUILDERS.register("name")``) and its spec in
``autoseg.plans.architectures``. The module must accept ``(B, in_channels, *spatial)``
and return logits ``(B, num_classes, *spatial)``, or, with ``deep_supervision``
true, a list of logits (full resolution first) with a matching ``output_scales()``.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from autoseg.model.unet import SegmentationNetwork, plain_encoder_stage, residual_encoder_stage
from autoseg.plans.network import NetworkConfig
from autoseg.utils.registry import Registry

NetworkBuilder = Callable[[NetworkConfig, int, int], nn.Module]

#: Architecture name -> builder of the torch module.
NETWORK_BUILDERS: Registry[NetworkBuilder] = Registry("architecture")


@NETWORK_BUILDERS.register("unet")
def build_plain_unet(config: NetworkConfig, in_channels: int, num_classes: int) -> SegmentationNetwork:
    """U-Net with plain conv-norm-act encoder stages (nnU-Net's default)."""
    return SegmentationNetwork(config, in_channels, num_classes, plain_encoder_stage)


@NETWORK_BUILDERS.register("residual_encoder_unet")
def build_residual_encoder_unet(config: NetworkConfig, in_channels: int, num_classes: int) -> SegmentationNetwork:
    """U-Net whose encoder stages are residual blocks (nnU-Net ResEnc)."""
    return SegmentationNetwork(config, in_channels, num_classes, residual_encoder_stage)


def build_network(config: NetworkConfig, in_channels: int, num_classes: int) -> nn.Module:
    """Build the network described by ``config`` for ``in_channels`` input channels and
    ``num_classes`` output classes (background included). Raises ValueError on an invalid config."""
    config.validate()
    return NETWORK_BUILDERS.get(config.architecture)(config, in_channels, num_classes)


def count_module_parameters(module: nn.Module) -> int:
    """Number of scalar parameters of ``module`` (each shared parameter counted once)."""
    return sum(p.numel() for p in module.parameters())
