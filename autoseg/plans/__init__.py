"""The plans.json schema: the contract every stage after planning reads (torch-free).

- :mod:`~autoseg.plans.schema`: :class:`Plans`, :class:`ConfigurationPlan`, :class:`ResamplingConfig`
- :mod:`~autoseg.plans.network`: :class:`NetworkConfig` (U-Net topology)
- :mod:`~autoseg.plans.training`: :class:`TrainingConfig`, :class:`AugmentationConfig`, :class:`IterationPlan`
- :mod:`~autoseg.plans.normalization`: per-channel normalization and the scheme registry
- :mod:`~autoseg.plans.architectures`: architecture specs (planning numbers) and their registry
"""

from autoseg.plans.network import NetworkConfig
from autoseg.plans.normalization import ChannelNormalization
from autoseg.plans.schema import PLANS_VERSION, ConfigurationPlan, Plans, ResamplingConfig
from autoseg.plans.training import AugmentationConfig, IterationPlan, TrainingConfig

__all__ = ["PLANS_VERSION", "AugmentationConfig", "ChannelNormalization", "ConfigurationPlan", "IterationPlan",
           "NetworkConfig", "Plans", "ResamplingConfig", "TrainingConfig"]
