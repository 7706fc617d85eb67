"""Training settings: optimisation, sampling and augmentation, stored per configuration in plans.json.

Defaults follow nnU-Net (Isensee et al. 2021); the planner adapts some of them
(e.g. in-plane-only rotation on thick-slice data) and records why.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields

#: Validation batches per epoch are at most the training iterations divided by this.
VALIDATION_ITERATIONS_DIVISOR = 5
#: The trainer used when plans.json names none (see ``autoseg.training.trainer.TRAINERS``).
DEFAULT_TRAINER = "default"
#: Values of ``foreground_class_sampling`` (the sampler's rules, :mod:`autoseg.training.sampling`).
FOREGROUND_CLASS_SAMPLING = ("balanced", "per_case")
#: Values of ``cross_entropy_weighting`` (the loss's rules, :mod:`autoseg.training.loss`).
CROSS_ENTROPY_WEIGHTING = ("none", "frequency")
#: Upper bounds of the training length and workers (plans.json may come from elsewhere): 10x
#: nnU-Net's 1000 epochs, 400x its 250 iterations per epoch, more worker processes than any machine's cores.
MAX_EPOCHS = 10_000
MAX_ITERATIONS_PER_EPOCH = 100_000
MAX_NUM_WORKERS = 1024
#: Learning rates above this diverge at once (nnU-Net: 0.01).
MAX_LEARNING_RATE = 10.0


@dataclass
class AugmentationConfig:
    """Data augmentation, applied on the fly to each training patch.

    Probabilities are per sample. Angles in degrees, ``sigma`` in voxels;
    intensities are in normalized units (after z-scoring).

    Attributes:
        rotation_degrees: maximal rotation angle around each rotated axis (uniform +-).
        rotate_in_plane_only: rotate only around the slice axis (axis 0, ``z``):
            used for thick-slice data and 2D networks.
        scale_range: isotropic zoom factor range (0.7-1.4: objects shrink or grow).
        mirror_axes: spatial axes (of the patch) mirrored with probability 0.5 each;
            the predictor mirrors the same axes for test-time augmentation.
        slice_thickness_probability: CT option: simulate another slice thickness by
            dropping slices along axis 0 and interpolating them back (0 = off).
        intensity_shift_probability: CT option: add a random offset to all intensities
            (scanner calibration drift; 0 = off).
    """

    rotation_probability: float = 0.2
    rotation_degrees: float = 30.0
    rotate_in_plane_only: bool = False
    scale_probability: float = 0.2
    scale_range: tuple[float, float] = (0.7, 1.4)
    noise_probability: float = 0.1
    noise_variance: tuple[float, float] = (0.0, 0.1)
    blur_probability: float = 0.2
    blur_sigma: tuple[float, float] = (0.5, 1.0)
    brightness_probability: float = 0.15
    brightness_range: tuple[float, float] = (0.75, 1.25)
    contrast_probability: float = 0.15
    contrast_range: tuple[float, float] = (0.75, 1.25)
    low_resolution_probability: float = 0.25
    low_resolution_zoom: tuple[float, float] = (0.5, 1.0)
    gamma_probability: float = 0.3
    gamma_range: tuple[float, float] = (0.7, 1.5)
    inverted_gamma_probability: float = 0.1
    mirror_axes: list[int] = field(default_factory=lambda: [0, 1, 2])
    slice_thickness_probability: float = 0.0
    slice_thickness_factor: tuple[float, float] = (1.5, 3.0)
    intensity_shift_probability: float = 0.0
    intensity_shift_range: tuple[float, float] = (-0.2, 0.2)


@dataclass
class TrainingConfig:
    """Optimisation and sampling settings of one configuration.

    Attributes:
        epochs, iterations_per_epoch: training length (nnU-Net: 1000 x 250 on a GPU).
        validation_iterations_per_epoch: batches of validation patches per epoch for
            the pseudo-Dice that selects ``checkpoint_best``.
        initial_lr, momentum, weight_decay: SGD with Nesterov momentum.
        lr_exponent: polynomial decay ``lr = initial_lr * (1 - step / steps) ** lr_exponent``.
        gradient_clip_norm: gradients are rescaled to at most this L2 norm.
        oversample_foreground: fraction of each batch forced to contain foreground.
        foreground_class_sampling: how a forced-foreground sample picks its class: ``"balanced"``
            (every foreground class equally often, rare ones included) or ``"per_case"`` (nnU-Net's:
            a class among those of a random case); see :mod:`autoseg.training.sampling`.
        cross_entropy_weighting: ``"none"`` (nnU-Net's voxel mean) or ``"frequency"`` (rarer classes of
            the batch weigh more, :func:`autoseg.training.loss.frequency_class_weights`); the planner
            chooses it from the smallest class's share of the voxels.
        checkpoint_every_epochs: how often ``checkpoint_latest.pt`` is written.
        num_workers: augmentation worker processes (None = fit the machine).
        trainer: name of the trainer class (``autoseg.training.trainer.TRAINERS``) that
            builds network, loss, optimizer and schedule; ``--trainer`` overrides it.
    """

    epochs: int = 1000
    iterations_per_epoch: int = 250
    validation_iterations_per_epoch: int = 50
    initial_lr: float = 0.01
    momentum: float = 0.99
    weight_decay: float = 3e-5
    lr_exponent: float = 0.9
    gradient_clip_norm: float = 12.0
    oversample_foreground: float = 0.33
    foreground_class_sampling: str = "balanced"
    cross_entropy_weighting: str = "none"
    checkpoint_every_epochs: int = 50
    num_workers: int | None = None
    trainer: str = DEFAULT_TRAINER
    augmentation: AugmentationConfig = field(default_factory=AugmentationConfig)

    def iteration_plan(self) -> IterationPlan:
        """The planned training length (nnU-Net's 1000 x 250 unless plans.json says otherwise)."""
        return IterationPlan(self.epochs, self.iterations_per_epoch,
                             validation_iterations(self.iterations_per_epoch, self.validation_iterations_per_epoch))

    def validate(self, where: str = "training") -> None:
        """Raise ValueError naming the field when a value is out of range."""
        for name in ("epochs", "iterations_per_epoch", "validation_iterations_per_epoch", "checkpoint_every_epochs"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{where}.{name} must be a positive integer, got {value!r}")
        if self.epochs > MAX_EPOCHS:
            raise ValueError(f"{where}.epochs {self.epochs}: at most {MAX_EPOCHS}")
        if max(self.iterations_per_epoch, self.validation_iterations_per_epoch) > MAX_ITERATIONS_PER_EPOCH:
            raise ValueError(f"{where}.iterations_per_epoch / validation_iterations_per_epoch: at most "
                             f"{MAX_ITERATIONS_PER_EPOCH}")
        for name in ("initial_lr", "momentum", "weight_decay", "lr_exponent", "gradient_clip_norm",
                     "oversample_foreground"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value):
                raise ValueError(f"{where}.{name} must be a finite number, got {value!r}")
        if not 0 < self.initial_lr <= MAX_LEARNING_RATE:
            raise ValueError(f"{where}.initial_lr must be in (0, {MAX_LEARNING_RATE:g}], got {self.initial_lr}")
        if not 0 <= self.momentum < 1 or self.weight_decay < 0 or self.lr_exponent < 0 or self.gradient_clip_norm <= 0:
            raise ValueError(f"{where}: momentum must be in [0, 1), weight_decay and lr_exponent >= 0, "
                             f"gradient_clip_norm > 0")
        if not 0 <= self.oversample_foreground <= 1:
            raise ValueError(f"{where}.oversample_foreground must be in [0, 1], got {self.oversample_foreground}")
        if self.foreground_class_sampling not in FOREGROUND_CLASS_SAMPLING:
            raise ValueError(f"{where}.foreground_class_sampling must be one of {list(FOREGROUND_CLASS_SAMPLING)}, "
                             f"got {self.foreground_class_sampling!r}")
        if self.cross_entropy_weighting not in CROSS_ENTROPY_WEIGHTING:
            raise ValueError(f"{where}.cross_entropy_weighting must be one of {list(CROSS_ENTROPY_WEIGHTING)}, "
                             f"got {self.cross_entropy_weighting!r}")
        if self.num_workers is not None and (not isinstance(self.num_workers, int) or isinstance(self.num_workers, bool)
                                             or not 0 <= self.num_workers <= MAX_NUM_WORKERS):
            raise ValueError(f"{where}.num_workers must be 0..{MAX_NUM_WORKERS} or null, got {self.num_workers!r}")
        axes = self.augmentation.mirror_axes
        if not isinstance(axes, list) or not all(isinstance(a, int) and not isinstance(a, bool) for a in axes):
            raise ValueError(f"{where}.augmentation.mirror_axes must be a list of axes, got {axes!r}")
        if not isinstance(self.trainer, str) or not self.trainer:
            raise ValueError(f"{where}.trainer must be a trainer name, got {self.trainer!r}")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainingConfig:
        data = dict(data)
        augmentation = dict(data.pop("augmentation", {}))
        known = {f.name for f in fields(AugmentationConfig)}
        unknown = set(augmentation) - known
        if unknown:
            raise ValueError(f"unknown augmentation settings {sorted(unknown)}")
        for key, value in augmentation.items():
            if isinstance(value, list) and key != "mirror_axes":
                augmentation[key] = tuple(value)
        known_training = {f.name for f in fields(cls)}
        unknown = set(data) - known_training
        if unknown:
            raise ValueError(f"unknown training settings {sorted(unknown)}")
        return cls(augmentation=AugmentationConfig(**augmentation), **data)


def validation_iterations(iterations_per_epoch: int, configured: int | None = None) -> int:
    """Validation batches per epoch: ``configured`` (default: the cap), at most a fifth of the training iterations.

    One rule for the trainer and for the time budget, which must count the same batches.
    """
    cap = max(1, math.ceil(iterations_per_epoch / VALIDATION_ITERATIONS_DIVISOR))
    return cap if configured is None else max(1, min(int(configured), cap))


@dataclass(frozen=True)
class IterationPlan:
    """How long one training run is: ``epochs x iterations_per_epoch`` training iterations,
    plus ``validation_iterations_per_epoch`` validation batches after each epoch.

    The Trainer takes it as an input: from the plans (:meth:`TrainingConfig.iteration_plan`),
    from the command line, or from the time-budget decision (``autoseg.training.network_choice``).
    """

    epochs: int
    iterations_per_epoch: int
    validation_iterations_per_epoch: int

    @property
    def total_iterations(self) -> int:
        return self.epochs * self.iterations_per_epoch

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ForegroundSampling:
    """How training draws foreground, when a time budget decides it (else the plans' settings).

    Attributes:
        oversample_foreground: fraction of each batch forced to contain foreground (replaces
            ``TrainingConfig.oversample_foreground``).
        class_weights: probability that a forced-foreground sample is centred on each label value
            (``{value: weight}``, summing to 1; see :mod:`autoseg.training.sampling`).
        reason: why, for the log and run.json.
    """

    oversample_foreground: float
    class_weights: dict[int, float]
    reason: str = ""

    def to_dict(self) -> dict:
        return {"oversample_foreground": self.oversample_foreground,
                "class_weights": {str(value): weight for value, weight in self.class_weights.items()},
                "reason": self.reason}

    @classmethod
    def from_dict(cls, data: dict) -> ForegroundSampling:
        return cls(float(data["oversample_foreground"]),
                   {int(value): float(weight) for value, weight in data["class_weights"].items()},
                   str(data.get("reason", "")))
