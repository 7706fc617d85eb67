"""Starting a network from a trained model's weights (``autoseg train --init-from MODEL``), and the schedule
that fine-tunes them.

Which tensors load (:func:`transfer_weights`, pure over state dicts):

- a tensor whose name and shape match the model's is loaded;
- the input layer (every tensor that reads the network's input channels) is adapted when the channels
  differ only in how many slices a 2.5D input stacks or in a cascade's extra channels: each image
  channel's slices are aligned on the centre slice, slices the model did not see get zero weights and
  slices it saw but this network does not are added onto the centre slice, so the response to an
  input whose neighbours equal the slice is the model's; when the image channels differ it is
  re-initialised;
- the output layers (the segmentation heads) are loaded only when the labels are the same; otherwise
  they are re-initialised;
- anything else that differs (another topology, another dimension) is refused in one line: loading a
  part of such a network is not fine-tuning it.

The schedule (:func:`choose_fine_tuning_schedule`) multiplies the trainer's learning rate per parameter
group ("loaded" and "new"): the loaded layers are frozen while re-initialised layers learn their first
:data:`FROZEN_FRACTION` of the schedule (only when something was re-initialised: random output layers
would otherwise push large gradients into the features), then warm up linearly over
:data:`WARMUP_FRACTION` and learn at :data:`LOADED_LEARNING_RATE_FACTOR` of the rate new layers get.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from autoseg.errors import AutosegInputError
from autoseg.model.builders import build_network
from autoseg.model.checkpoints import load_checkpoint
from autoseg.plans.schema import Plans

#: Share of the schedule (0..1) during which loaded layers stay frozen when layers were re-initialised.
FROZEN_FRACTION = 0.1
#: Share of the schedule over which loaded layers' learning rate ramps up from 0 (after any frozen part).
WARMUP_FRACTION = 0.1
#: Loaded layers learn at this fraction of the learning rate new layers get.
LOADED_LEARNING_RATE_FACTOR = 0.5
#: Parameter groups of a fine-tuned network.
LOADED, NEW = "loaded", "new"


@dataclass(frozen=True)
class InputLayout:
    """How a network's input channels are made: ``image_channels`` x ``slices`` (channel-major, a 2.5D
    input's slices increasing z), then ``extra`` channels (a cascade's one-hot previous stage)."""

    image_channels: int
    slices: int = 1
    extra: int = 0

    @property
    def channels(self) -> int:
        return self.image_channels * self.slices + self.extra


@dataclass(frozen=True)
class NetworkFacts:
    """What the weight transfer must know of one side's network besides its state dict."""

    dimension: int
    layout: InputLayout
    num_classes: int
    labels: dict


@dataclass(frozen=True)
class InitialisationSource:
    """A trained model's fold to start from: its checkpoint, the facts of its network and how to name it."""

    description: str  # e.g. "model.zip fold 0 (3d_fullres)"
    checkpoint: Path
    facts: NetworkFacts
    configuration: str
    fold: int
    sha256: str


@dataclass
class WeightTransfer:
    """The outcome of :func:`transfer_weights`: the state dict to load and what happened to each tensor."""

    state: dict[str, torch.Tensor]
    loaded: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)  # input layer: slices or extra channels mapped
    reinitialised: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)  # one per kind of re-initialisation or adaptation

    @property
    def new_parameters(self) -> set[str]:
        """Names of the tensors that start from the fresh initialisation."""
        return set(self.reinitialised)


def _input_tensor(shape_source: torch.Size, shape_target: torch.Size, source: NetworkFacts,
                  target: NetworkFacts) -> bool:
    """Whether a tensor pair is an input-layer weight: equal but for axis 1, which holds each side's input channels."""
    return (len(shape_source) == len(shape_target) >= 2 and shape_source[0] == shape_target[0]
            and shape_source[2:] == shape_target[2:] and shape_source[1] == source.layout.channels
            and shape_target[1] == target.layout.channels)


def _output_tensor(name: str, shape_source: torch.Size, shape_target: torch.Size, source: NetworkFacts,
                   target: NetworkFacts) -> bool:
    """Whether a tensor pair belongs to a segmentation head: axis 0 holds each side's outputs."""
    return (name.startswith("heads.") and len(shape_source) == len(shape_target)
            and shape_source[1:] == shape_target[1:] and shape_source[0] == source.num_classes
            and shape_target[0] == target.num_classes)


def adapted_input_weight(weight: torch.Tensor, source: InputLayout, target: InputLayout) -> torch.Tensor:
    """An input-layer weight ``(out, source.channels, *kernel)`` mapped onto ``target``'s channels: slices
    aligned on the centre, unseen slices and extra channels zero, cut slices added onto the centre slice."""
    if source.image_channels != target.image_channels:
        raise ValueError("image channels differ: nothing to map")
    shape = (weight.shape[0], target.channels, *weight.shape[2:])
    adapted = torch.zeros(shape, dtype=weight.dtype)
    centre_source, centre_target = source.slices // 2, target.slices // 2
    for channel in range(source.image_channels):
        for slice_index in range(source.slices):
            offset = slice_index - centre_source
            kept = -centre_target <= offset <= centre_target
            into = channel * target.slices + centre_target + (offset if kept else 0)
            adapted[:, into] += weight[:, channel * source.slices + slice_index]
    extra = min(source.extra, target.extra)
    if extra:
        begin_source, begin_target = source.image_channels * source.slices, target.image_channels * target.slices
        adapted[:, begin_target:begin_target + extra] = weight[:, begin_source:begin_source + extra]
    return adapted


def transfer_weights(source_state: Mapping[str, torch.Tensor], target_state: Mapping[str, torch.Tensor],
                     source: NetworkFacts, target: NetworkFacts, source_name: str = "the model") -> WeightTransfer:
    """The state dict a network of ``target`` facts starts from, built from ``source_state`` (rules in the
    module docstring); tensors that are not loaded keep ``target_state``'s fresh values. Raises a one-line
    :class:`AutosegInputError` naming ``source_name`` when the networks do not fit."""
    if source.dimension != target.dimension:
        raise AutosegInputError(f"{source_name} holds a {source.dimension}D network and this configuration trains a "
                                f"{target.dimension}D one: give a model of the same dimension (e.g. a 2d or 2.5d "
                                "model for a 2d or 2.5d configuration)")
    same_labels = source.labels == target.labels
    transfer = WeightTransfer(state=dict(target_state))
    misfits = []
    for name, fresh in target_state.items():
        if name not in source_state:
            misfits.append(f"{name} missing")
            continue
        loaded = source_state[name]
        heads = name.startswith("heads.")
        if heads and not same_labels:
            if loaded.shape == fresh.shape or _output_tensor(name, loaded.shape, fresh.shape, source, target):
                transfer.reinitialised.append(name)
                continue
        if loaded.shape == fresh.shape:
            transfer.state[name] = loaded.to(fresh.dtype)
            transfer.loaded.append(name)
        elif _input_tensor(loaded.shape, fresh.shape, source, target):
            try:
                transfer.state[name] = adapted_input_weight(loaded, source.layout, target.layout).to(fresh.dtype)
                transfer.adapted.append(name)
            except ValueError:
                transfer.reinitialised.append(name)
        else:
            misfits.append(f"{name} {list(loaded.shape)} vs {list(fresh.shape)}")
    unused = [name for name in source_state if name not in target_state]
    if misfits or unused:
        first = misfits[0] if misfits else f"{unused[0]} not in this network"
        raise AutosegInputError(
            f"{source_name}: its network does not fit this configuration's ({len(misfits) + len(unused)} of "
            f"{len(target_state)} tensors differ, e.g. {first}); plan this dataset with `autoseg plan DATA -o WORK "
            "--plans-from MODEL` so that the networks match")
    if any(not name.startswith("heads.") for name in transfer.reinitialised):
        transfer.reasons.append(f"the first convolution ({source.layout.image_channels} -> "
                                f"{target.layout.image_channels} image channels)")
    if transfer.adapted:
        transfer.reasons.append(f"the first convolution adapted ({source.layout.channels} -> {target.layout.channels} "
                                "input channels: slices aligned on the centre, new ones starting at zero)")
    if any(name.startswith("heads.") for name in transfer.reinitialised):
        change = (f"{source.num_classes} -> {target.num_classes} outputs" if source.num_classes != target.num_classes
                  else "other labels")
        transfer.reasons.append(f"the output layers ({change})")
    return transfer


def describe_transfer(transfer: WeightTransfer, source_description: str) -> str:
    """The one summary line, e.g. ``initialised from model.zip fold 0: 412 of 418 tensors loaded;
    re-initialised: the output layers (3 -> 2 outputs)``."""
    total = len(transfer.state)
    line = f"initialised from {source_description}: {len(transfer.loaded)} of {total} tensors loaded"
    reinitialised = [reason for reason in transfer.reasons if "adapted" not in reason]
    adapted = [reason for reason in transfer.reasons if "adapted" in reason]
    if adapted:
        line += "; " + "; ".join(adapted)
    if reinitialised:
        line += "; re-initialised: " + ", ".join(reinitialised)
    return line


@dataclass(frozen=True)
class FineTuningSchedule:
    """Learning-rate factors of the "loaded" group over the schedule's progress (0..1); the "new" group
    always gets factor 1 (see the module docstring). Stored in checkpoints and run.json."""

    frozen_fraction: float
    warmup_fraction: float
    loaded_factor: float
    reason: str

    def factor(self, group: str, progress: float) -> float:
        """Multiplier of the trainer's learning rate for ``group`` at ``progress`` (0..1)."""
        if group != LOADED:
            return 1.0
        if progress < self.frozen_fraction:
            return 0.0
        ramp = (progress - self.frozen_fraction) / self.warmup_fraction if self.warmup_fraction > 0 else 1.0
        return self.loaded_factor * min(1.0, ramp)

    def frozen(self, group: str, progress: float) -> bool:
        """Whether ``group`` takes no step at ``progress`` (its gradients are dropped, momentum included)."""
        return group == LOADED and progress < self.frozen_fraction

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> FineTuningSchedule:
        return cls(float(data["frozen_fraction"]), float(data["warmup_fraction"]), float(data["loaded_factor"]),
                   str(data.get("reason", "")))


def choose_fine_tuning_schedule(transfer: WeightTransfer) -> FineTuningSchedule:
    """The schedule for a transfer: loaded layers frozen for :data:`FROZEN_FRACTION` when any layer was
    re-initialised, then warmed up over :data:`WARMUP_FRACTION` to :data:`LOADED_LEARNING_RATE_FACTOR`."""
    frozen = FROZEN_FRACTION if transfer.reinitialised else 0.0
    reason = (f"loaded layers learn at {LOADED_LEARNING_RATE_FACTOR:g} x the learning rate after a linear warm-up "
              f"over {WARMUP_FRACTION:.0%} of the schedule, so that the model's features are adapted, not overwritten")
    if frozen:
        reason = (f"loaded layers frozen for the first {frozen:.0%} while the re-initialised ones learn (random "
                  f"layers would send large gradients into the features); then {reason[len('loaded layers '):]}")
    return FineTuningSchedule(frozen, WARMUP_FRACTION, LOADED_LEARNING_RATE_FACTOR, reason)


def parameter_group(name: str, new_parameters: set[str]) -> str:
    """The group (:data:`LOADED` or :data:`NEW`) of the parameter ``name`` of a fine-tuned network."""
    return NEW if name in new_parameters else LOADED


def network_facts(plans: Plans, configuration_name: str) -> NetworkFacts:
    """The :class:`NetworkFacts` of a configuration of ``plans``."""
    configuration = plans.configuration(configuration_name)
    extra = len(plans.foreground_labels) if configuration.previous_stage else 0
    return NetworkFacts(configuration.dimension, InputLayout(plans.num_channels, configuration.slices_per_input, extra),
                        plans.num_classes, dict(plans.labels))


def source_state(source: InitialisationSource) -> dict[str, torch.Tensor]:
    """The network weights of ``source``'s checkpoint (on the CPU, ``weights_only``)."""
    content = load_checkpoint(source.checkpoint, map_location="cpu")
    state = content.get("network") if isinstance(content, dict) else None
    if not isinstance(state, dict) or not all(isinstance(value, torch.Tensor) for value in state.values()):
        raise AutosegInputError(f"{source.checkpoint}: holds no network weights")
    return state


def check_transfer(source: InitialisationSource, plans: Plans, configuration_name: str) -> WeightTransfer:
    """:func:`transfer_weights` from ``source`` into the network ``plans`` describe for ``configuration_name``
    (built on the ``meta`` device: no memory), so that a misfit is refused before a run writes anything."""
    state = source_state(source)
    with torch.device("meta"):
        network = build_network(plans.configuration(configuration_name).network,
                                plans.input_channels(configuration_name), plans.num_classes)
    return transfer_weights(state, network.state_dict(), source.facts, network_facts(plans, configuration_name),
                            source.description)
