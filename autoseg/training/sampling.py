"""Training patch sampling from the preprocessed cache, with foreground oversampling.

The sampler cuts regions of ``sample_patch_size`` voxels out of the cached cases; the
augmentation (``autoseg.training.augmentation``) rotates/zooms them and centre-crops
them to the network's ``patch_size``. Axis order is ``(z, y, x)`` for 3D regions and
``(y, x)`` for 2D regions (cut from one slice ``z`` of a case; a 2.5D region holds that
slice's neighbours too, as channels: :mod:`autoseg.preprocessing.neighbour_slices`).

Placement along each axis of length ``n`` (region ``R``, final patch ``P``):

* image at least as large as the region (``n >= R``): the region lies inside the image,
  its start uniform in ``[0, n - R]`` (no padding);
* otherwise padding is unavoidable; the final patch (the centre of the region) is placed
  uniformly so that it lies inside the image (``P <= n``) or covers it (``P > n``).

A foreground sample centres the region on a recorded voxel of a foreground class, then
clips it into the same allowed range, and finally shifts it (if needed) so that the
voxel lies inside the centre ``P`` of the region, i.e. inside the final patch before
augmentation. Regions reaching past the image are padded with 0 (the normalized mean)
for the image and 0 (background) for labels.

Which class a foreground sample shows (``class_sampling``, :data:`autoseg.plans.training.FOREGROUND_CLASS_SAMPLING`):

* ``"balanced"`` (default): the class is drawn uniformly among the foreground classes of
  the sampled cases (or with ``class_weights``, e.g. those a time budget chose so that the
  rarest class is shown often enough, :mod:`autoseg.training.class_exposure`), then a case
  that contains it, then one of its voxels. A lesion that only some cases have is shown as
  often as the organ every case has.
* ``"per_case"`` (nnU-Net's): the case is drawn first, then a class among those it
  contains: a class present in a tenth of the cases is shown a tenth as often.
"""

from __future__ import annotations

import errno
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from autoseg.errors import AutosegInputError
from autoseg.plans.training import FOREGROUND_CLASS_SAMPLING
from autoseg.preprocessing.cache import REBUILD_HINT, cached_case_problem
from autoseg.preprocessing.neighbour_slices import stack_neighbour_slices
from autoseg.utils.files import read_json
from autoseg.workdir import cached_case_paths

__all__ = ["PatchSampler", "num_foreground_samples"]


def num_foreground_samples(batch_size: int, oversample_foreground: float) -> int:
    """Samples per batch forced to contain foreground: ``round(B * p)``, at least 1 if ``p > 0`` and ``B >= 2``."""
    count = int(round(batch_size * oversample_foreground))
    if oversample_foreground > 0 and batch_size >= 2:
        count = max(count, 1)
    return min(count, batch_size)


class PatchSampler:
    """Draws batches of regions from cached cases (an iterator of batch dicts).

    Args:
        folder: the preprocessed cache folder (``{case}.npy``, ``{case}_seg.npy``, ``{case}.json``).
        case_ids: cases to sample from (uniformly, with replacement).
        patch_size: the network patch in voxels, ``(z, y, x)`` (3D) or ``(y, x)`` (2D).
        batch_size: samples per batch ``B``.
        dimension: 2 or 3.
        oversample_foreground: fraction of each batch forced to contain foreground.
        sample_patch_size: the (larger) region cut out before spatial augmentation;
            defaults to ``patch_size``.
        annotated_only: sparse annotations (an ignore label): samples not forced to contain
            foreground are centred on an annotated voxel of any class, background included
            (the ``"0"`` class locations of the cache), not anywhere: a patch of unannotated
            voxels adds nothing to the loss.
        previous_stage_folder: cascade: folder with ``{case}.npy`` label maps ``(z, y, x)`` of
            the previous stage on the cache's grid; sampled as seg channel 1.
        seed: seed of the sampler's random generator.
        class_sampling: how a forced-foreground sample picks its class, one of
            :data:`autoseg.plans.training.FOREGROUND_CLASS_SAMPLING` (module docstring).
        class_weights: with ``"balanced"``, the probability of each foreground label value
            (``{value: weight}``; values no sampled case holds are dropped, the rest renormalised;
            default uniform).
        neighbour_slices: 2D only: 2.5D input, the sampled slice and this many neighbours on each side
            stacked as channels (``C * (2K + 1)`` data channels,
            :func:`autoseg.preprocessing.neighbour_slices.stack_neighbour_slices`); the label is the
            sampled slice's.
        neighbour_slice_padding: what stands in for neighbours past the volume's ends (``replicate`` or
            ``zero``).

    ``sample_batch()`` returns ``{"data": float32 (B, C, *sample_patch_size), "seg": int16
    (B, S, *sample_patch_size), "case_ids": [...]}`` with seg channel 0 the label and (cascade)
    channel 1 the previous stage's prediction.
    """

    def __init__(self, folder: Path, case_ids: Sequence[str], patch_size: Sequence[int], batch_size: int,
                 dimension: int, oversample_foreground: float = 0.33, sample_patch_size: Sequence[int] | None = None,
                 previous_stage_folder: Path | None = None, seed: int = 0, annotated_only: bool = False,
                 class_sampling: str = "balanced", class_weights: Mapping[int, float] | None = None,
                 neighbour_slices: int = 0, neighbour_slice_padding: str = "replicate"):
        if dimension not in (2, 3):
            raise ValueError(f"dimension must be 2 or 3, got {dimension}")
        if neighbour_slices and dimension != 2:
            raise ValueError(f"neighbour_slices ({neighbour_slices}) need 2D patches, got dimension {dimension}")
        if neighbour_slices < 0:
            raise ValueError(f"neighbour_slices must be >= 0, got {neighbour_slices}")
        self.neighbour_slices = int(neighbour_slices)
        self.slices_per_channel = 2 * self.neighbour_slices + 1  # slices a sample holds per image channel
        self.neighbour_slice_padding = neighbour_slice_padding
        if len(patch_size) != dimension:
            raise ValueError(f"patch_size {tuple(patch_size)} does not have {dimension} axes")
        if not case_ids:
            raise ValueError("PatchSampler needs at least one case")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not 0.0 <= oversample_foreground <= 1.0:
            raise ValueError(f"oversample_foreground must be in [0, 1], got {oversample_foreground}")
        if class_sampling not in FOREGROUND_CLASS_SAMPLING:
            raise ValueError(f"class_sampling must be one of {FOREGROUND_CLASS_SAMPLING}, got {class_sampling!r}")
        self.class_sampling = class_sampling
        self.folder = Path(folder)
        self.case_ids = list(case_ids)
        self.patch_size = tuple(int(v) for v in patch_size)
        self.sample_patch_size = tuple(int(v) for v in (sample_patch_size or patch_size))
        if len(self.sample_patch_size) != dimension or any(
                r < p for r, p in zip(self.sample_patch_size, self.patch_size)):
            raise ValueError(f"sample_patch_size {self.sample_patch_size} must have {dimension} axes, "
                             f"each >= patch_size {self.patch_size}")
        self.batch_size = int(batch_size)
        self.dimension = dimension
        self.oversample_foreground = float(oversample_foreground)
        self.num_foreground = num_foreground_samples(self.batch_size, self.oversample_foreground)
        self.previous_stage_folder = Path(previous_stage_folder) if previous_stage_folder is not None else None
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        self._arrays: dict[str, tuple[np.ndarray, np.ndarray, np.ndarray | None]] = {}
        # Foreground voxel lists per case: {case: [(class value, (N, 3) int array), ...]} (non-empty only).
        self.foreground: dict[str, list[tuple[int, np.ndarray]]] = {}
        # With annotated_only, the annotated voxel lists per case, background (0) included.
        self.annotated: dict[str, list[tuple[int, np.ndarray]]] = {}
        for case_id in self.case_ids:
            problem = cached_case_problem(self.folder, case_id)  # headers only: damage is found before training
            if problem:
                raise AutosegInputError(f"{problem}; {REBUILD_HINT}")
            properties_path = cached_case_paths(self.folder, case_id)[2]
            try:
                properties = read_json(properties_path)
            except (OSError, ValueError) as error:
                raise AutosegInputError(f"{properties_path}: cannot read case properties ({error})") from None
            classes = [(int(key), np.asarray(locations, dtype=np.int64).reshape(-1, 3))
                       for key, locations in sorted(properties.get("class_locations", {}).items(),
                                                    key=lambda item: int(item[0])) if locations]
            self.foreground[case_id] = [(value, locations) for value, locations in classes if value > 0]
            if annotated_only:
                self.annotated[case_id] = classes
            if self.previous_stage_folder is not None:
                previous_path = self.previous_stage_folder / f"{case_id}.npy"
                if not previous_path.is_file():  # checked here: in a worker process it would be less clear
                    raise AutosegInputError(f"{previous_path}: previous-stage prediction not found")
        # "balanced": foreground class value -> the cases holding it (in case order)
        self.cases_by_class: dict[int, list[str]] = {}
        for case_id in self.case_ids:
            for value, _ in self.foreground[case_id]:
                self.cases_by_class.setdefault(value, []).append(case_id)
        self.class_values = sorted(self.cases_by_class)
        self.class_probabilities = None
        if class_weights is not None and self.class_values:
            weights = np.array([max(float(class_weights.get(value, 0.0)), 0.0) for value in self.class_values])
            if weights.sum() <= 0:
                raise ValueError(f"class_weights {dict(class_weights)} give no weight to a class the cases hold "
                                 f"({self.class_values})")
            self.class_probabilities = weights / weights.sum()
        self.thread_id = 0

    # --- batchgenerators data-loader protocol -------------------------------------------
    def __iter__(self) -> PatchSampler:
        return self

    def __next__(self) -> dict:
        return self.sample_batch()

    def reseed(self, *entropy: int) -> None:
        """Restart the random generator from ``(seed, *entropy)`` (e.g. a worker index)."""
        self.rng = np.random.default_rng([self.seed, *entropy])

    def set_thread_id(self, thread_id: int) -> None:
        """Called by batchgenerators in each worker: give the worker its own random stream."""
        self.thread_id = thread_id
        self.reseed(thread_id)

    def __getstate__(self) -> dict:
        # Worker processes started by spawn/forkserver get the sampler pickled: send no
        # memory maps (they would be pickled as full copies), the worker reopens them.
        state = self.__dict__.copy()
        state["_arrays"] = {}
        return state

    # --- arrays ---------------------------------------------------------------------------
    def _open(self, case_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """Memory-mapped image (C, z, y, x), label (z, y, x) and previous-stage map (z, y, x) or None."""
        arrays = self._arrays.get(case_id)
        if arrays is not None:
            return arrays
        try:
            arrays = self._load(case_id)
        except OSError as error:
            if error.errno != errno.EMFILE:
                raise
            # Every memmap holds a file descriptor: on huge datasets drop the cache and retry.
            self._arrays.clear()
            arrays = self._load(case_id)
        self._arrays[case_id] = arrays
        return arrays

    def _load(self, case_id: str) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        image_path, label_path, _ = cached_case_paths(self.folder, case_id)
        image = np.load(image_path, mmap_mode="r")
        label = np.load(label_path, mmap_mode="r")
        if image.ndim != 4 or label.shape != image.shape[1:]:
            raise AutosegInputError(f"{image_path}: image {image.shape} and label {label.shape} "
                                    "are not (C, z, y, x) and (z, y, x) of the same grid")
        previous = None
        if self.previous_stage_folder is not None:
            previous_path = self.previous_stage_folder / f"{case_id}.npy"
            previous = np.load(previous_path, mmap_mode="r")
            if previous.shape != label.shape:
                raise AutosegInputError(f"{previous_path}: shape {previous.shape} does not match the "
                                        f"cached label {label.shape} of case {case_id}")
        return image, label, previous

    # --- placement ------------------------------------------------------------------------
    def _allowed_starts(self, size: int, axis: int) -> tuple[int, int]:
        """Inclusive range of region starts along one patch axis of an image axis of ``size`` voxels."""
        region, patch = self.sample_patch_size[axis], self.patch_size[axis]
        if size >= region:
            return 0, size - region
        margin = (region - patch) // 2  # offset of the final (centre-cropped) patch inside the region
        low, high = min(0, size - patch), max(0, size - patch)
        return low - margin, high - margin

    def _random_start(self, size: int, axis: int) -> int:
        low, high = self._allowed_starts(size, axis)
        return int(self.rng.integers(low, high + 1))

    def _foreground_start(self, size: int, axis: int, voxel: int) -> int:
        region, patch = self.sample_patch_size[axis], self.patch_size[axis]
        low, high = self._allowed_starts(size, axis)
        start = min(max(voxel - region // 2, low), high)
        margin = (region - patch) // 2
        # The voxel must lie in the final patch [start + margin, start + margin + patch).
        return min(max(start, voxel - margin - patch + 1), voxel - margin)

    # --- sampling ---------------------------------------------------------------------------
    def sample_batch(self) -> dict:
        """One batch (see the class docstring); the last ``num_foreground`` samples are forced foreground."""
        batch = self.batch_size
        region = self.sample_patch_size
        num_seg = 2 if self.previous_stage_folder is not None else 1
        data = None
        seg = np.zeros((batch, num_seg, *region), dtype=np.int16)
        chosen = []
        for index in range(batch):
            forced = index >= batch - self.num_foreground
            case_id, voxel = self._draw_case_and_voxel(forced)
            chosen.append(case_id)
            image, label, previous = self._open(case_id)
            channels = image.shape[0] * self.slices_per_channel
            if data is None:
                data = np.zeros((batch, channels, *region), dtype=np.float32)
            elif channels != data.shape[1]:
                raise AutosegInputError(f"{cached_case_paths(self.folder, case_id)[0]}: {image.shape[0]} channels, "
                                        f"other cases have {data.shape[1] // self.slices_per_channel}")
            shape = label.shape
            if self.dimension == 3:
                starts = [self._start(shape[axis], axis, voxel, axis) for axis in range(3)]
                source = ()
            else:
                z = int(voxel[0]) if voxel is not None else int(self.rng.integers(shape[0]))
                starts = [self._start(shape[axis + 1], axis, voxel, axis + 1) for axis in range(2)]
                source = (z,)
            spatial = shape[3 - self.dimension:]
            src, dst = [], []
            for start, size, length in zip(starts, spatial, region):
                low, high = max(start, 0), min(start + length, size)
                src.append(slice(low, high))
                dst.append(slice(low - start, high - start))
            src, dst = tuple(src), tuple(dst)
            if self.neighbour_slices:  # 2.5D: crop in-plane (a view), then read the neighbouring slices
                data[(index, slice(None), *dst)] = stack_neighbour_slices(
                    image[(slice(None), slice(None), *src)], source[0], self.neighbour_slices,
                    self.neighbour_slice_padding)
            else:
                data[(index, slice(None), *dst)] = image[(slice(None), *source, *src)]
            seg[(index, 0, *dst)] = label[(*source, *src)]
            if previous is not None:
                seg[(index, 1, *dst)] = previous[(*source, *src)]
        return {"data": data, "seg": seg, "case_ids": chosen}

    def _draw_case_and_voxel(self, forced: bool) -> tuple[str, np.ndarray | None]:
        """The case of one sample and the voxel ``(z, y, x)`` its region is centred on (None: anywhere).

        A forced-foreground sample follows :attr:`class_sampling`; the others are centred on a random
        annotated voxel with ``annotated_only``, else placed anywhere.
        """
        if forced and self.class_sampling == "balanced" and self.cases_by_class:
            value = self.class_values[int(self.rng.choice(len(self.class_values), p=self.class_probabilities))]
            holders = self.cases_by_class[value]
            case_id = holders[int(self.rng.integers(len(holders)))]
            locations = dict(self.foreground[case_id])[value]
            return case_id, locations[int(self.rng.integers(len(locations)))]
        case_id = self.case_ids[int(self.rng.integers(len(self.case_ids)))]
        classes = self.foreground[case_id] if forced else self.annotated.get(case_id, [])
        if not classes:  # not forced (and not annotated_only), or a case without foreground
            return case_id, None
        _, locations = classes[int(self.rng.integers(len(classes)))]
        return case_id, locations[int(self.rng.integers(len(locations)))]

    def _start(self, size: int, axis: int, voxel: np.ndarray | None, voxel_axis: int) -> int:
        if voxel is None:
            return self._random_start(size, axis)
        return self._foreground_start(size, axis, int(voxel[voxel_axis]))
