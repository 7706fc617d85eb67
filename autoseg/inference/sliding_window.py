"""Sliding-window prediction of a whole (preprocessed) image with a patch-based network.

Pure torch, no file I/O. Images are tensors ``(C, *spatial)`` in array axis order
(``(C, z, y, x)`` for 3D); the returned probabilities are ``(K, *spatial)`` (float32, or
float16 when asked): softmax probabilities of K classes including background, summing to 1
per voxel, or, with ``activation="sigmoid"`` (region-based plans), one independent
probability per region.

The network is any callable mapping a float tensor ``(B, C, *patch_size)`` to logits
``(B, K, *patch_size)``. It is called as is: put a ``torch.nn.Module`` in eval mode first.

Windows overlap (``step_size`` is a fraction of the patch size); each window's softmax
probabilities are weighted by an importance map (a Gaussian centred on the patch, so
predictions near patch borders, which see less context, count less), normalized by the
summed weights of all windows covering each voxel (known from the layout before any window
is predicted, so each window adds its final share). The patch passed in is the window:
the predictor may use one larger than the training patch
(:func:`autoseg.planning.inference_cost.inference_window`). Where the image is smaller
than the window it is padded with zeros, virtually (no padded copy is made).
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
from collections.abc import Callable, Sequence

import torch

from autoseg.planning.inference_cost import windows_along_axis
from autoseg.preprocessing.neighbour_slices import stack_neighbour_slices
from autoseg.utils.progress_bars import progress_bar

#: Network logits ``(B, K, *patch)`` -> probabilities, by the plans' output activation.
OUTPUT_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "softmax": lambda logits: torch.softmax(logits, dim=1),
    "sigmoid": torch.sigmoid,
}

__all__ = [
    "SlidingWindowOptions",
    "gaussian_importance_map",
    "predict_sliding_window",
    "predict_sliding_window_per_mirroring",
    "predict_volume_with_2d_network",
    "predict_volume_with_2d_network_per_mirroring",
    "sliding_window_starts",
]

Network = Callable[[torch.Tensor], torch.Tensor]
DeviceLike = torch.device | str


@dataclasses.dataclass(frozen=True)
class SlidingWindowOptions:
    """How a sliding-window prediction runs. Sizes are in voxels, axes in array order
    (``(z, y, x)`` for 3D; ``(y, x)`` for the 2D patch of slice-wise prediction).

    Attributes:
        patch_size: the window, one size per spatial axis (voxels): ``(pz, py, px)`` for
            :func:`predict_sliding_window`, ``(py, px)`` for :func:`predict_volume_with_2d_network`.
        step_size: window step as a fraction of the patch size, in ``(0, 1]`` (0.5: half overlap).
        use_gaussian: weight windows by the Gaussian importance map (else uniformly).
        mirror_axes: spatial axes (0-based over the patch axes: ``0 = z`` in 3D, ``0 = y`` in 2D) for
            mirroring test-time augmentation, all ``2**k`` flip combinations averaged; None: none.
        window_batch_size: 3D only: windows stacked into one network call.
        slice_batch_size: 2D only: consecutive z-slices forming the batch of one network call.
        device: where the network runs.
        accumulation_device: where the ``(K, *spatial)`` result is accumulated (None: ``device``);
            e.g. CPU for a large volume with the network on a GPU.
        autocast: run the network under ``torch.autocast`` (mixed precision).
        show_progress: a progress bar over windows on a terminal (nothing in a log: the case is the unit there).
        accumulation_dtype: dtype of the result: float32, or float16 for half the memory on large
            images (as nnU-Net v2 accumulates; the weights are summed in float32 either way).
        activation: ``"softmax"`` (classes) or ``"sigmoid"`` (regions), see :data:`OUTPUT_ACTIVATIONS`.
        neighbour_slices: 2D only: K > 0 for a 2.5D network, whose input for slice z is slices
            z-K..z+K of every channel (:func:`autoseg.preprocessing.neighbour_slices.stack_neighbour_slices`).
        neighbour_slice_padding: 2D only: how slices beyond the volume's ends are filled
            (``stack_neighbour_slices``'s ``padding``).
    """

    patch_size: tuple[int, ...]
    step_size: float = 0.5
    use_gaussian: bool = True
    mirror_axes: tuple[int, ...] | None = None
    window_batch_size: int = 1
    slice_batch_size: int = 16
    device: DeviceLike = "cpu"
    accumulation_device: DeviceLike | None = None
    autocast: bool = False
    show_progress: bool = False
    accumulation_dtype: torch.dtype = torch.float32
    activation: str = "softmax"
    neighbour_slices: int = 0
    neighbour_slice_padding: str = "replicate"

    def __post_init__(self) -> None:
        object.__setattr__(self, "patch_size", tuple(int(p) for p in self.patch_size))
        if self.mirror_axes is not None:
            object.__setattr__(self, "mirror_axes", tuple(int(a) for a in self.mirror_axes))


# --------------------------------------------------------------------------- importance map


@functools.lru_cache(maxsize=32)
def _gaussian_cached(patch_size: tuple[int, ...], sigma_scale: float, device: torch.device) -> torch.Tensor:
    # Separable: the product of one 1D Gaussian per axis. Computed in float64, centred
    # at (p - 1) / 2 so the map is exactly mirror-symmetric along every axis.
    with torch.no_grad():
        gauss = torch.ones((), dtype=torch.float64)
        for p in patch_size:
            coords = torch.arange(p, dtype=torch.float64) - (p - 1) / 2.0
            sigma = sigma_scale * p
            profile = torch.exp(-0.5 * (coords / sigma) ** 2)
            gauss = gauss.unsqueeze(-1) * profile
        gauss = (gauss / gauss.max()).to(torch.float32)
        # Zeros and float32 subnormals would make border voxels weightless; replace them
        # by the smallest normal value present (the maximum, 1, always is).
        tiny = torch.finfo(torch.float32).tiny
        too_small = gauss < tiny
        if bool(too_small.any()):
            gauss[too_small] = gauss[~too_small].min()
        return gauss.to(device)


def gaussian_importance_map(
    patch_size: Sequence[int], sigma_scale: float = 1.0 / 8, device: DeviceLike | None = None
) -> torch.Tensor:
    """Gaussian importance weights of shape ``patch_size`` (float32), maximum 1.

    Centred on the patch with ``sigma = sigma_scale * patch_size`` per axis (in voxels,
    array axis order). Every value is strictly positive. The result is cached per
    arguments and shared between callers: do not modify it in place.
    """
    patch = tuple(int(p) for p in patch_size)
    if not patch or any(p < 1 for p in patch):
        raise ValueError(f"patch_size must be positive integers, got {tuple(patch_size)}")
    if not sigma_scale > 0:
        raise ValueError(f"sigma_scale must be > 0, got {sigma_scale}")
    dev = torch.device("cpu") if device is None else torch.device(device)
    return _gaussian_cached(patch, float(sigma_scale), dev)


# --------------------------------------------------------------------------- window positions


def sliding_window_starts(
    image_size: Sequence[int], patch_size: Sequence[int], step_size: float = 0.5
) -> list[list[int]]:
    """Start index of every window along each spatial axis (array axis order).

    Per axis the number of windows is ``ceil((image - patch) / (patch * step_size)) + 1``,
    spread evenly (rounded to integers) so the first window starts at 0 and the last one
    ends exactly at the image border (repeated positions, possible only when
    ``patch * step_size < 1``, are dropped). Requires ``image >= patch`` on every axis and
    ``0 < step_size <= 1``.
    """
    if len(image_size) != len(patch_size):
        raise ValueError(f"image_size {tuple(image_size)} and patch_size {tuple(patch_size)} differ in rank")
    if not 0 < step_size <= 1:
        raise ValueError(f"step_size must be in (0, 1], got {step_size}")
    starts: list[list[int]] = []
    for image, patch in zip(image_size, patch_size, strict=True):
        image, patch = int(image), int(patch)
        if patch < 1 or image < patch:
            raise ValueError(f"image size {tuple(image_size)} must be >= patch {tuple(patch_size)} per axis")
        free = image - patch
        n_steps = windows_along_axis(image, patch, step_size)
        if n_steps == 1:
            starts.append([0])
            continue
        # round(i * free / (n_steps - 1)), half up, in exact integer arithmetic; when
        # patch * step_size < 1 rounding repeats positions, which are dropped.
        denom = n_steps - 1
        starts.append(sorted({(2 * i * free + denom) // (2 * denom) for i in range(n_steps)}))
    return starts


# --------------------------------------------------------------------------- helpers


def _flip_sets(mirror_axes: Sequence[int] | None, n_spatial: int) -> list[tuple[int, ...]]:
    """Tensor dims (batch and channel first) to flip for each test-time-augmentation pass."""
    if not mirror_axes:
        return [()]
    axes = [int(a) for a in mirror_axes]
    if len(set(axes)) != len(axes) or any(not 0 <= a < n_spatial for a in axes):
        raise ValueError(f"mirror_axes must be distinct axes in [0, {n_spatial}), got {tuple(mirror_axes)}")
    dims = [a + 2 for a in axes]
    return [combo for r in range(len(dims) + 1) for combo in itertools.combinations(dims, r)]


def _window_layout(
    spatial: Sequence[int], window: tuple[int, ...], step_size: float
) -> list[tuple[tuple[slice, ...], tuple[slice, ...]]]:
    """Every window as ``(slices into the image, slices into the window)``.

    Where the image is smaller than the window along an axis it is zero-padded, centred, up
    to the window, virtually: windows are laid out over the padded extent, but only their
    part inside the image is read and accumulated (the padding is zeros, the
    post-normalization mean), so no padded copy of the image or of the result is made.
    """
    padded = [max(int(size), length) for size, length in zip(spatial, window, strict=True)]
    before = [(p - int(size)) // 2 for p, size in zip(padded, spatial, strict=True)]
    layout = []
    for start in itertools.product(*sliding_window_starts(padded, window, step_size)):
        image_part, window_part = [], []
        for first, length, offset, size in zip(start, window, before, spatial, strict=True):
            low = first - offset  # image coordinate of the window's first voxel
            image_low, image_high = max(0, low), min(int(size), low + length)
            image_part.append(slice(image_low, image_high))
            window_part.append(slice(image_low - low, image_high - low))
        layout.append((tuple(image_part), tuple(window_part)))
    return layout


def _window_input(image: torch.Tensor, image_part: tuple[slice, ...], window_part: tuple[slice, ...],
                  window: tuple[int, ...], leading: int) -> torch.Tensor:
    """The window's input: the image's voxels, zero-padded where the window reaches outside it.

    ``image`` has ``leading`` non-spatial axes before the spatial ones (1: ``(C, ...)``;
    2: ``(C, Z, y, x)`` read slice-wise by a 2D window).
    """
    part = image[(slice(None),) * leading + image_part]
    if tuple(part.shape[leading:]) == window:
        return part
    padded = part.new_zeros((*part.shape[:leading], *window))
    padded[(slice(None),) * leading + window_part] = part
    return padded


def _window_weight_map(patch_size: tuple[int, ...], use_gaussian: bool, device: torch.device) -> torch.Tensor | float:
    """Weight of each window voxel: the Gaussian importance map, or 1 everywhere."""
    return gaussian_importance_map(patch_size, device=device) if use_gaussian else 1.0


def _window_shares(
    layout: list[tuple[tuple[slice, ...], tuple[slice, ...]]],
    spatial: tuple[int, ...],
    weight: torch.Tensor | float,
    device: torch.device,
) -> Callable[[tuple[slice, ...], tuple[slice, ...]], torch.Tensor]:
    """``share(image_part, window_part)``: each window voxel's weight divided by the sum of the
    weights of every window covering that image voxel.

    The weights depend on the layout only, so their sum is known before any window is
    predicted; a window's probabilities times its share are final contributions in [0, 1]
    that add up to the result, which is why float16 can accumulate them without losing
    the small weights near patch borders (and no division is left for the end).
    """
    weight_sum = torch.zeros(spatial, dtype=torch.float32, device=device)
    for image_part, window_part in layout:
        weight_sum[image_part].add_(weight[window_part] if isinstance(weight, torch.Tensor) else weight)

    def share(image_part: tuple[slice, ...], window_part: tuple[slice, ...]) -> torch.Tensor:
        part = weight[window_part] if isinstance(weight, torch.Tensor) else weight
        return part / weight_sum[image_part]

    return share


def _predict_batch_per_mirroring(
    network: Network,
    x: torch.Tensor,
    settings: list[list[tuple[int, ...]]],
    num_classes: int,
    autocast: bool,
    activation: str = "softmax",
) -> list[torch.Tensor]:
    """Probabilities (:data:`OUTPUT_ACTIVATIONS`) of a batch ``(B, C, *patch)`` for several mirroring
    settings (each a list of flip passes) at once, each averaged over its flip passes: every distinct
    flip pass runs once and is added to each setting that holds it. Returns one ``(B, K, *patch)``
    float32 tensor on ``x.device`` per setting."""
    to_probabilities = OUTPUT_ACTIVATIONS[activation]
    expected = (x.shape[0], num_classes, *x.shape[2:])
    passes = list(dict.fromkeys(dims for flip_sets in settings for dims in flip_sets))
    totals: list[torch.Tensor | None] = [None] * len(settings)
    for dims in passes:
        inp = torch.flip(x, dims) if dims else x
        if autocast:
            with torch.autocast(device_type=x.device.type):
                logits = network(inp)
        else:
            logits = network(inp)
        if not isinstance(logits, torch.Tensor):
            raise TypeError(f"network must return one tensor in eval mode, got {type(logits).__name__}")
        if tuple(logits.shape) != expected:
            raise ValueError(f"network output shape {tuple(logits.shape)} != expected {expected}")
        probs = to_probabilities(logits.float())
        if dims:
            probs = torch.flip(probs, dims)
        holders = [index for index, flip_sets in enumerate(settings) if dims in flip_sets]
        for index in holders:
            if totals[index] is None:
                totals[index] = probs if len(holders) == 1 else probs.clone()
            else:
                totals[index] += probs
    for index, flip_sets in enumerate(settings):
        if len(flip_sets) > 1:
            totals[index] /= len(flip_sets)
    return totals  # type: ignore[return-value]


def _check_common(
    image: torch.Tensor, patch: tuple[int, ...], num_classes: int, batch: int, name: str
) -> None:
    if image.ndim != len(patch) + 1:
        raise ValueError(
            f"image of shape {tuple(image.shape)} needs {len(patch) + 1} dims (C, *spatial) for patch {patch}"
        )
    if any(p < 1 for p in patch):
        raise ValueError(f"patch_size must be positive, got {patch}")
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    if batch < 1:
        raise ValueError(f"{name} must be >= 1, got {batch}")


# --------------------------------------------------------------------------- predictors


def predict_sliding_window(
    network: Network, image: torch.Tensor, num_classes: int, options: SlidingWindowOptions
) -> torch.Tensor:
    """Predict class probabilities for a whole image with overlapping windows.

    Args:
        network: callable ``(B, C, *patch_size) -> (B, K, *patch_size)`` logits.
        image: preprocessed image ``(C, *spatial)``, array axis order (``(C, z, y, x)``
            in 3D); stays on its own device, windows are copied to ``options.device``.
        num_classes: K, including background.
        options: the window and how it runs (:class:`SlidingWindowOptions`;
            ``len(options.patch_size) == image.ndim - 1``; ``window_batch_size`` is used,
            ``slice_batch_size`` and the ``neighbour_slice*`` fields are not).

    Returns:
        ``(K, *spatial)`` probabilities (``options.accumulation_dtype``) on
        ``options.accumulation_device`` (default ``options.device``; softmax: summing to 1 per
        voxel). Where the image is smaller than the patch it is zero-padded (0 is the
        post-normalization mean) and the padding is cropped off the result.
    """
    return predict_sliding_window_per_mirroring(
        network, image, num_classes, dataclasses.replace(options, mirror_axes=None), [options.mirror_axes])[0]


def _mirror_settings_check(options: SlidingWindowOptions) -> None:
    if options.mirror_axes is not None:
        raise ValueError("options.mirror_axes must be None when mirror_settings are given "
                         f"(got {options.mirror_axes}): each setting names its own mirror axes")


def predict_sliding_window_per_mirroring(
    network: Network,
    image: torch.Tensor,
    num_classes: int,
    options: SlidingWindowOptions,
    mirror_settings: Sequence[Sequence[int] | None],
) -> list[torch.Tensor]:
    """:func:`predict_sliding_window` for several test-time mirroring settings at once (each a list of
    mirror axes, or None, in place of ``options.mirror_axes``, which must be None), one
    ``(K, *spatial)`` result per setting: each distinct flip pass runs once and feeds every setting
    that includes it (measuring no mirroring, each single axis and all axes costs the network passes
    of all axes alone), at one accumulator per setting.
    """
    _mirror_settings_check(options)
    patch = options.patch_size
    window_batch_size = options.window_batch_size
    _check_common(image, patch, num_classes, window_batch_size, "window_batch_size")
    device = torch.device(options.device)
    acc_device = device if options.accumulation_device is None else torch.device(options.accumulation_device)
    settings = [_flip_sets(axes, len(patch)) for axes in mirror_settings]

    with torch.no_grad():
        spatial = tuple(image.shape[1:])
        layout = _window_layout(spatial, patch, options.step_size)
        share = _window_shares(layout, spatial, _window_weight_map(patch, options.use_gaussian, acc_device),
                               acc_device)

        results = [torch.zeros((num_classes, *spatial), dtype=options.accumulation_dtype, device=acc_device)
                   for _ in settings]
        with progress_bar(total=len(layout), disable=not options.show_progress, desc="sliding window", unit="window",
                          plain_lines=False) as bar:
            for first in range(0, len(layout), window_batch_size):
                batch = layout[first : first + window_batch_size]
                x = torch.stack([_window_input(image, image_part, window_part, patch, 1)
                                 for image_part, window_part in batch])
                x = x.to(device=device, dtype=torch.float32)
                outs = _predict_batch_per_mirroring(network, x, settings, num_classes, options.autocast,
                                                    options.activation)
                for out, probs in zip(outs, results, strict=True):
                    out = out.to(acc_device)
                    for i, (image_part, window_part) in enumerate(batch):
                        contribution = out[(i, slice(None), *window_part)] * share(image_part, window_part)
                        probs[(slice(None), *image_part)].add_(contribution)
                bar.update(len(batch))
    return results


def predict_volume_with_2d_network(
    network: Network, image: torch.Tensor, num_classes: int, options: SlidingWindowOptions
) -> torch.Tensor:
    """Predict a volume ``(C, Z, Y, X)`` slice by slice with a 2D network.

    The 2D sliding window runs over ``(y, x)`` with ``options.patch_size`` ``(py, px)``; up to
    ``options.slice_batch_size`` consecutive z-slices form the batch of each network call
    (``window_batch_size`` is not used). ``options.mirror_axes`` refer to the 2D patch axes
    (0 = y, 1 = x). Returns ``(K, Z, Y, X)`` probabilities (``options.accumulation_dtype``) on
    ``options.accumulation_device`` (default ``options.device``), identical to running
    :func:`predict_sliding_window` on every slice ``image[:, z]``. ``options.neighbour_slices``
    K > 0: a 2.5D network, whose input for slice z is slices z-K..z+K of every channel
    (:func:`autoseg.preprocessing.neighbour_slices.stack_neighbour_slices`, ends by
    ``options.neighbour_slice_padding``).
    """
    return predict_volume_with_2d_network_per_mirroring(
        network, image, num_classes, dataclasses.replace(options, mirror_axes=None), [options.mirror_axes])[0]


def predict_volume_with_2d_network_per_mirroring(
    network: Network,
    image: torch.Tensor,
    num_classes: int,
    options: SlidingWindowOptions,
    mirror_settings: Sequence[Sequence[int] | None],
) -> list[torch.Tensor]:
    """:func:`predict_volume_with_2d_network` for several mirroring settings at once (2D patch axes, in
    place of ``options.mirror_axes``, which must be None), one result per setting, as
    :func:`predict_sliding_window_per_mirroring` does."""
    _mirror_settings_check(options)
    patch = options.patch_size
    slice_batch_size = options.slice_batch_size
    if len(patch) != 2 or image.ndim != 4:
        raise ValueError(f"need image (C, Z, Y, X) and patch (py, px), got {tuple(image.shape)}, {patch}")
    _check_common(image, (1, *patch), num_classes, slice_batch_size, "slice_batch_size")
    device = torch.device(options.device)
    acc_device = device if options.accumulation_device is None else torch.device(options.accumulation_device)
    settings = [_flip_sets(axes, 2) for axes in mirror_settings]

    with torch.no_grad():
        n_z = image.shape[1]
        layout = _window_layout(tuple(image.shape[2:]), patch, options.step_size)
        weight = _window_weight_map(patch, options.use_gaussian, acc_device)
        share = _window_shares(layout, tuple(image.shape[2:]), weight, acc_device)
        shares = [share(image_part, window_part) for image_part, window_part in layout]  # the same for every slice

        results = [torch.zeros((num_classes, *image.shape[1:]), dtype=options.accumulation_dtype, device=acc_device)
                   for _ in settings]
        chunks = range(0, n_z, slice_batch_size)
        with progress_bar(total=len(chunks) * len(layout), disable=not options.show_progress,
                          desc="2D sliding window", unit="window", plain_lines=False) as bar:
            for z0 in chunks:
                zs = slice(z0, min(z0 + slice_batch_size, n_z))
                slices = stack_neighbour_slices(image, zs, options.neighbour_slices, options.neighbour_slice_padding)
                for (image_part, window_part), window_share in zip(layout, shares, strict=True):
                    # (C, b, py, px) -> (b, C, py, px), a fresh contiguous copy on device
                    x = _window_input(slices, image_part, window_part, patch, 2).transpose(0, 1)
                    x = x.to(device, torch.float32, memory_format=torch.contiguous_format, copy=True)
                    outs = _predict_batch_per_mirroring(network, x, settings, num_classes, options.autocast,
                                                        options.activation)
                    for out, probs in zip(outs, results, strict=True):
                        contribution = out.to(acc_device)[(slice(None), slice(None), *window_part)] * window_share
                        probs[(slice(None), zs, *image_part)].add_(contribution.transpose(0, 1))
                    bar.update(1)
    return results
