"""Training losses: soft Dice, Dice + cross-entropy, and deep-supervision weighting.

Logits are ``(B, K, *spatial)`` with K classes including background (class 0); targets
are integer label maps ``(B, 1, *spatial)`` or ``(B, *spatial)`` (any numeric dtype holding
integer values in ``[0, K)``). ``spatial`` is ``(z, y, x)`` in 3D and ``(y, x)`` in 2D.

With ``ignore_label`` (sparse annotations, :mod:`autoseg.io.dataset`), target voxels of that
value are left out of both losses: their probabilities and one-hot targets are zeroed
before the Dice sums and cross-entropy is averaged over the other voxels only, so the
gradient at those voxels is exactly zero.

Cross-entropy can weight classes by their rarity in the batch (``class_weighting="frequency"``,
:func:`frequency_class_weights`): averaged over voxels, plain cross-entropy gives a class of 100
voxels in a 256x256 batch almost no gradient, and once the softmax has learned to suppress it the
Dice term's gradient vanishes too (it passes through ``p (1 - p)``), so a small lesion can stay
at Dice 0 however often it is shown (measured on the large synthetic CT,
BENCHMARKS.md, "Small and rare structures within a time budget"). The planner chooses it for
datasets with a class under 1% of the voxels.

Region-based datasets (:mod:`autoseg.io.labels`) train one sigmoid per region instead:
:class:`RegionDiceBCELoss` turns the label map into region masks (a region is the union of its
label values) and adds the soft Dice of the sigmoid probabilities to the binary
cross-entropy, ignored voxels left out of both in the same way.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from autoseg.io.labels import class_mask
from autoseg.plans.training import CROSS_ENTROPY_WEIGHTING

__all__ = [
    "DeepSupervisionLoss",
    "DiceCELoss",
    "RegionDiceBCELoss",
    "SoftDiceLoss",
    "deep_supervision_weights",
    "downsample_target",
    "frequency_class_weights",
]

#: Frequency weighting: a class's weight is its voxel frequency in the batch to this power.
CE_WEIGHT_EXPONENT = -0.5
#: ... and at most this times the mean weight per voxel.
CE_WEIGHT_CAP = 50.0


def frequency_class_weights(labels: Tensor, num_classes: int, annotated: Tensor | None = None) -> Tensor:
    """Cross-entropy weight of each class (float32 ``(K,)``) from the label map ``labels`` (any shape,
    values in ``[0, K)``): ``frequency ** CE_WEIGHT_EXPONENT`` (a class 100x rarer weighs 10x more),
    scaled so the mean weight per (annotated) voxel is 1, capped at :data:`CE_WEIGHT_CAP`; classes
    absent from the batch get 0 (they have no voxel to weigh)."""
    values = labels if annotated is None else labels[annotated]
    counts = torch.bincount(values.flatten(), minlength=num_classes)[:num_classes].float()
    frequency = counts / counts.sum().clamp_min(1.0)
    weights = torch.where(counts > 0, frequency.clamp_min(1e-12) ** CE_WEIGHT_EXPONENT, torch.zeros_like(frequency))
    weights = weights / (weights * frequency).sum().clamp_min(1e-12)
    return weights.clamp(max=CE_WEIGHT_CAP)


def _label_indices(target: Tensor, logits: Tensor) -> Tensor:
    """``target`` as an int64 ``(B, 1, *spatial)`` tensor matching ``logits`` ``(B, K, *spatial)``."""
    if target.ndim == logits.ndim - 1:
        target = target.unsqueeze(1)
    if target.ndim != logits.ndim or target.shape[1] != 1 or target.shape[0] != logits.shape[0] \
            or target.shape[2:] != logits.shape[2:]:
        raise ValueError(
            f"target shape {tuple(target.shape)} does not match logits shape {tuple(logits.shape)}: "
            "expected (B, 1, *spatial) or (B, *spatial)"
        )
    return target.long()


def _annotated(labels: Tensor, ignore_label: int | None) -> tuple[Tensor, Tensor | None]:
    """``labels`` with ignored voxels set to 0, and the mask of annotated voxels (None without ignore)."""
    if ignore_label is None:
        return labels, None
    mask = labels != ignore_label
    return labels.masked_fill(~mask, 0), mask


class SoftDiceLoss(nn.Module):
    """``1 - mean soft Dice`` over the included classes, on softmax probabilities.

    Per class k: ``(2 * sum(p_k * g_k) + smooth) / (sum(p_k) + sum(g_k) + smooth)``, the sums
    running over batch and spatial axes together (``batch_dice``) or over the spatial axes
    of each sample (then the Dice values of all samples and classes are averaged). An
    empty class predicted empty scores 1 thanks to ``smooth``.
    """

    def __init__(self, batch_dice: bool = True, include_background: bool = False, smooth: float = 1e-5,
                 ignore_label: int | None = None):
        super().__init__()
        self.batch_dice = batch_dice
        self.include_background = include_background
        self.smooth = smooth
        self.ignore_label = ignore_label

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """``logits`` (B, K, *spatial), ``target`` (B, 1, *spatial) or (B, *spatial) -> scalar loss."""
        labels, annotated = _annotated(_label_indices(target, logits), self.ignore_label)
        probs = torch.softmax(logits.float(), dim=1)
        with torch.no_grad():
            onehot = torch.zeros_like(probs).scatter_(1, labels, 1.0)
        if annotated is not None:
            probs = probs * annotated
            onehot = onehot * annotated
        if not self.include_background:
            if probs.shape[1] < 2:
                raise ValueError("SoftDiceLoss without background needs at least 2 classes")
            probs, onehot = probs[:, 1:], onehot[:, 1:]
        return 1.0 - _soft_dice(probs, onehot, self.batch_dice, self.smooth)


class DiceCELoss(nn.Module):
    """``weight_dice * SoftDiceLoss + weight_ce * cross-entropy`` on the same logits and labels."""

    def __init__(
        self,
        weight_dice: float = 1.0,
        weight_ce: float = 1.0,
        batch_dice: bool = True,
        include_background: bool = False,
        smooth: float = 1e-5,
        ignore_label: int | None = None,
        class_weighting: str = "none",
    ):
        super().__init__()
        if class_weighting not in CROSS_ENTROPY_WEIGHTING:
            raise ValueError(f"class_weighting must be one of {CROSS_ENTROPY_WEIGHTING}, got {class_weighting!r}")
        self.weight_dice = weight_dice
        self.weight_ce = weight_ce
        self.ignore_label = ignore_label
        self.class_weighting = class_weighting
        self.dice = SoftDiceLoss(batch_dice=batch_dice, include_background=include_background, smooth=smooth,
                                 ignore_label=ignore_label)

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """``logits`` (B, K, *spatial), ``target`` (B, 1, *spatial) or (B, *spatial) -> scalar loss."""
        labels = _label_indices(target, logits)
        loss = logits.new_zeros((), dtype=torch.float32)
        if self.weight_ce != 0:
            annotated = None if self.ignore_label is None else labels[:, 0] != self.ignore_label
            weights = None
            if self.class_weighting == "frequency":
                weights = frequency_class_weights(labels[:, 0], logits.shape[1], annotated)
            if annotated is None:
                cross_entropy = F.cross_entropy(logits.float(), labels[:, 0], weight=weights, reduction="none").mean()
            else:  # the mean over annotated voxels (0, not NaN, when a patch has none)
                cross_entropy = F.cross_entropy(logits.float(), labels[:, 0], weight=weights,
                                                ignore_index=self.ignore_label, reduction="sum") \
                    / annotated.sum().clamp_min(1)
            loss = loss + self.weight_ce * cross_entropy
        if self.weight_dice != 0:
            loss = loss + self.weight_dice * self.dice(logits, labels)
        return loss


def _soft_dice(probs: Tensor, targets: Tensor, batch_dice: bool, smooth: float) -> Tensor:
    """Mean soft Dice of ``(B, K, *spatial)`` probabilities against same-shape 0/1 targets."""
    axes = [0, *range(2, probs.ndim)] if batch_dice else list(range(2, probs.ndim))
    intersection = (probs * targets).sum(axes)
    denominator = probs.sum(axes) + targets.sum(axes)
    return ((2.0 * intersection + smooth) / (denominator + smooth).clamp_min(1e-8)).mean()


class RegionDiceBCELoss(nn.Module):
    """``weight_dice * (1 - soft Dice) + weight_bce * binary cross-entropy`` for one sigmoid per region.

    Logits are ``(B, R, *spatial)``, one channel per region in ``regions`` (each a sequence of
    label values whose union is the region); the target is the integer label map. Dice is
    computed on the sigmoid probabilities per region (sums over batch and space with
    ``batch_dice``), cross-entropy is the mean over regions and annotated voxels (voxels of
    ``ignore_label`` count in neither, and get an exactly zero gradient).
    """

    def __init__(self, regions: Sequence[Sequence[int]], weight_dice: float = 1.0, weight_bce: float = 1.0,
                 batch_dice: bool = True, smooth: float = 1e-5, ignore_label: int | None = None):
        super().__init__()
        if not regions or any(len(values) == 0 for values in regions):
            raise ValueError(f"regions must be non-empty lists of label values, got {regions}")
        self.regions = [tuple(int(v) for v in values) for values in regions]
        self.weight_dice = weight_dice
        self.weight_bce = weight_bce
        self.batch_dice = batch_dice
        self.smooth = smooth
        self.ignore_label = ignore_label

    def region_targets(self, target: Tensor, logits: Tensor) -> tuple[Tensor, Tensor | None]:
        """``(B, R, *spatial)`` float 0/1 region masks of the label map, and the annotated-voxel mask
        ``(B, 1, *spatial)`` (None without an ignore label)."""
        labels = _label_indices(target, logits)
        if logits.shape[1] != len(self.regions):
            raise ValueError(f"logits have {logits.shape[1]} channels for {len(self.regions)} regions")
        masks = torch.cat([class_mask(labels, values) for values in self.regions], dim=1).float()
        annotated = None if self.ignore_label is None else (labels != self.ignore_label)
        return masks, annotated

    def forward(self, logits: Tensor, target: Tensor) -> Tensor:
        """``logits`` (B, R, *spatial), ``target`` (B, 1, *spatial) or (B, *spatial) -> scalar loss."""
        with torch.no_grad():
            targets, annotated = self.region_targets(target, logits)
        logits = logits.float()
        loss = logits.new_zeros(())
        if self.weight_bce != 0:
            if annotated is None:
                bce = F.binary_cross_entropy_with_logits(logits, targets)
            else:  # the mean over annotated voxels and regions (0, not NaN, when a patch has none)
                weight = annotated.float().expand_as(logits)
                bce = (F.binary_cross_entropy_with_logits(logits, targets, weight=weight, reduction="sum")
                       / weight.sum().clamp_min(1))
            loss = loss + self.weight_bce * bce
        if self.weight_dice != 0:
            probs = torch.sigmoid(logits)
            if annotated is not None:
                probs, targets = probs * annotated, targets * annotated
            loss = loss + self.weight_dice * (1.0 - _soft_dice(probs, targets, self.batch_dice, self.smooth))
        return loss


def deep_supervision_weights(n_outputs: int) -> list[float]:
    """Weights 1, 1/2, 1/4, ... for outputs ordered full resolution first, normalized to sum 1."""
    if n_outputs < 1:
        raise ValueError(f"n_outputs must be >= 1, got {n_outputs}")
    raw = [0.5**i for i in range(n_outputs)]
    total = sum(raw)
    return [w / total for w in raw]


def downsample_target(target: Tensor, scales: Sequence[Sequence[float]]) -> list[Tensor]:
    """Nearest-neighbour downsampling of a label map to each scale (one list per output).

    ``target`` is ``(B, 1, *spatial)`` or ``(B, *spatial)``; each result keeps that layout and
    dtype, with spatial size ``round(size * scale)`` per axis. Output voxel ``i`` takes input
    voxel ``floor(i * size / new_size)``: for an integer factor f that is every f-th voxel
    starting at 0, the voxels on which the strided convs of the encoder are centred. An
    axis with an integer factor is sliced (no copy); scale 1 on all axes returns ``target``.
    """
    n_spatial = len(scales[0]) if scales else 0
    if any(len(s) != n_spatial for s in scales) or target.ndim < n_spatial + 1:
        raise ValueError(f"scales {scales} do not fit target shape {tuple(target.shape)}")
    first_axis = target.ndim - n_spatial
    results = []
    for scale in scales:
        out = target
        for axis, factor in enumerate(scale, start=first_axis):
            size = target.shape[axis]
            new_size = max(1, round(size * factor))
            if new_size == size:
                continue
            if new_size > size:
                raise ValueError(f"scale {factor} > 1 is not a downsampling")
            if size % new_size == 0:
                index = [slice(None)] * out.ndim
                index[axis] = slice(None, None, size // new_size)
                out = out[tuple(index)]
            else:
                positions = torch.arange(new_size, device=target.device) * size // new_size
                out = out.index_select(axis, positions)
        results.append(out)
    return results


class DeepSupervisionLoss(nn.Module):
    """``sum_i weights[i] * base_loss(outputs[i], targets[i])`` over deep-supervision outputs.

    ``outputs`` and ``targets`` are lists ordered full resolution first (as returned by the
    network and :func:`downsample_target`), or a single logits tensor and a single target
    (weight 1). Outputs with weight 0 are skipped.
    """

    def __init__(self, base_loss: nn.Module, weights: Sequence[float]):
        super().__init__()
        self.base_loss = base_loss
        self.weights = [float(w) for w in weights]

    def forward(self, outputs: Tensor | Sequence[Tensor], targets: Tensor | Sequence[Tensor]) -> Tensor:
        """Scalar weighted loss; list lengths must equal ``len(weights)``."""
        if isinstance(outputs, Tensor):
            if not isinstance(targets, Tensor):
                raise TypeError("a single output tensor needs a single target tensor")
            return self.base_loss(outputs, targets)
        if isinstance(targets, Tensor):
            raise TypeError("a list of outputs needs a list of targets (see downsample_target)")
        if not (len(outputs) == len(targets) == len(self.weights)):
            raise ValueError(
                f"got {len(outputs)} outputs and {len(targets)} targets for {len(self.weights)} weights"
            )
        total = None
        for weight, output, target in zip(self.weights, outputs, targets):
            if weight == 0:
                continue
            term = weight * self.base_loss(output, target)
            total = term if total is None else total + term
        if total is None:
            raise ValueError("all deep-supervision weights are 0")
        return total
