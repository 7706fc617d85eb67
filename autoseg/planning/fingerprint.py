"""The dataset fingerprint: geometry, intensity and class statistics of the training cases.

Written to ``dataset_fingerprint.json``. Per case: original shape and spacing (mm,
``(z, y, x)``), the nonzero bounding box and the shape after cropping to it, the
direction. Per channel: statistics of foreground intensities (voxels inside any
label) from up to :data:`FOREGROUND_SAMPLES_PER_CASE` voxels sampled per case. Per
class: voxel fraction and the number of cases containing it.

Cases are read in parallel worker processes, one case at a time each, so memory is
bounded by ``num_workers`` cases however large the dataset.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from autoseg.errors import DatasetVerificationError
from autoseg.io.dataset import DatasetDescription, RawCase, list_training_cases
from autoseg.io.labels import label_value_sets
from autoseg.io.orientation import canonical_geometry, canonical_orientation, to_canonical
from autoseg.io.verification import LoadedCase, verify_case, verify_structure
from autoseg.utils.crop import bounding_box, nonzero_mask
from autoseg.utils.parallel import default_case_workers, process_pool
from autoseg.utils.progress_bars import progress_bar

FINGERPRINT_VERSION = 1
#: Foreground voxels sampled per case for the intensity statistics.
FOREGROUND_SAMPLES_PER_CASE = 10_000


def case_fingerprint(case: LoadedCase, foreground_labels: Sequence[int],
                     rng: np.random.Generator) -> tuple[dict, np.ndarray]:
    """Fingerprint of one verified case and its sampled foreground intensities ``(C, n)``; shapes and
    spacings in the canonical axis order (:mod:`autoseg.io.orientation`), as preprocessing sees them."""
    orientation = canonical_orientation(case.geometry)
    image, label = to_canonical(case.image, orientation), to_canonical(case.label, orientation)
    geometry = canonical_geometry(case.geometry, orientation)
    box = bounding_box(nonzero_mask(image))
    cropped_shape = [stop - start for start, stop in box]
    foreground = np.isin(label, foreground_labels)  # annotated foreground: no ignore-label voxels
    indices = np.flatnonzero(foreground)
    if indices.size > FOREGROUND_SAMPLES_PER_CASE:
        indices = rng.choice(indices, FOREGROUND_SAMPLES_PER_CASE, replace=False)
    flat_image = image.reshape(image.shape[0], -1)
    samples = flat_image[:, indices]
    counts = np.bincount(label.ravel().clip(min=0), minlength=max(foreground_labels) + 1)
    record = {
        "shape": list(geometry.shape),
        "spacing": list(geometry.spacing),
        "direction": list(case.geometry.sitk_direction),
        "orientation": orientation.to_dict(),
        "bounding_box": box,
        "shape_after_crop": cropped_shape,
        "class_voxels": {str(label_value): int(counts[label_value]) for label_value in foreground_labels},
        "intensity_range": [[float(channel.min()), float(channel.max())] for channel in image],
    }
    return record, samples


def dataset_problems(description: DatasetDescription, case_records: dict[str, dict],
                     channel_samples: list[np.ndarray]) -> list[str]:
    """Problems no single case shows but that leave nothing to learn, one line each naming the folder:
    every label map all background; a channel constant in every image, or over all foreground voxels."""
    problems = []
    records = list(case_records.values())
    if records and not any(any(voxels > 0 for voxels in record["class_voxels"].values()) for record in records):
        problems.append(f"{description.root / 'labelsTr'}: every label map is all background (0): there is "
                        "nothing to learn; check that these label files belong to the images")
    for channel, name in sorted(description.channel_names.items()):
        ranges = [record["intensity_range"][channel] for record in records if "intensity_range" in record]
        if ranges and all(low == high for low, high in ranges):
            problems.append(f"{description.root / 'imagesTr'}: every image of channel {channel} ('{name}') is "
                            f"constant: there is nothing to learn from; check the image files")
        elif channel < len(channel_samples) and channel_samples[channel].size and \
                np.ptp(channel_samples[channel]) == 0:
            problems.append(f"{description.root / 'imagesTr'}: every labelled voxel of channel {channel} ('{name}') "
                            f"has intensity {float(channel_samples[channel][0]):g}: the foreground cannot be told "
                            "apart; check the image files")
    return problems


def channel_statistics(samples: np.ndarray) -> dict:
    """Foreground intensity statistics of one channel's pooled samples."""
    if samples.size == 0:
        return {"mean": 0.0, "std": 1.0, "median": 0.0, "min": 0.0, "max": 0.0,
                "percentile_00_5": 0.0, "percentile_99_5": 0.0, "num_samples": 0}
    samples = samples.astype(np.float64)
    low, median, high = np.percentile(samples, [0.5, 50.0, 99.5])
    return {"mean": float(samples.mean()), "std": float(samples.std()), "median": float(median),
            "min": float(samples.min()), "max": float(samples.max()),
            "percentile_00_5": float(low), "percentile_99_5": float(high), "num_samples": int(samples.size)}


def aggregate_fingerprint(description: DatasetDescription, case_records: dict[str, dict],
                          channel_samples: list[np.ndarray]) -> dict:
    """Dataset-level fingerprint from per-case records and pooled foreground samples per channel."""
    records = list(case_records.values())
    total_voxels = float(sum(np.prod(record["shape"]) for record in records))
    classes = {}
    names = {values[0]: name for name, values in label_value_sets(description.labels).items() if len(values) == 1}
    for value in description.foreground_labels:
        name = names.get(value, f"value {value}")  # a value only regions name
        voxels = [record["class_voxels"][str(value)] for record in records]
        classes[str(value)] = {"name": name, "voxel_fraction": float(sum(voxels) / total_voxels),
                               "num_cases_present": int(sum(1 for v in voxels if v > 0))}
    spacings = np.array([record["spacing"] for record in records])
    cropped = np.array([record["shape_after_crop"] for record in records])
    return {
        "version": FINGERPRINT_VERSION,
        "dataset_name": description.name,
        "channel_names": {str(k): v for k, v in description.channel_names.items()},
        "labels": dict(description.labels),
        **({"regions_class_order": description.regions_class_order} if description.regions_class_order else {}),
        "file_ending": description.file_ending,
        "num_cases": len(records),
        "foreground_samples_per_case": FOREGROUND_SAMPLES_PER_CASE,
        "median_spacing": np.median(spacings, axis=0).tolist(),
        "median_shape_after_crop": np.median(cropped, axis=0).tolist(),
        "channels": {str(channel): {"name": description.channel_names[channel], **channel_statistics(samples)}
                     for channel, samples in enumerate(channel_samples)},
        "classes": classes,
        "cases": case_records,
    }


def _analyze(arguments: tuple[RawCase, DatasetDescription, int]) -> tuple[str, list[str], dict | None,
                                                                          np.ndarray | None]:
    case, description, seed = arguments
    problems, loaded = verify_case(case, description)
    if loaded is None:
        return case.case_id, problems, None, None
    record, samples = case_fingerprint(loaded, description.foreground_labels, np.random.default_rng(seed))
    return case.case_id, problems, record, samples


def extract_fingerprint(description: DatasetDescription, num_workers: int | None = None,
                        seed: int = 1234, progress: bool = True) -> dict:
    """Verify every training case and compute the fingerprint.

    Raises :class:`DatasetVerificationError` listing every problem (one line each,
    naming the file) if the dataset fails verification; nothing is written here.
    """
    cases = list_training_cases(description)
    problems = verify_structure(description, cases)
    if not cases:
        raise DatasetVerificationError(problems)
    num_workers = num_workers or default_case_workers()
    jobs = [(case, description, seed + index) for index, case in enumerate(cases)]
    records: dict[str, dict] = {}
    samples_per_channel: list[list[np.ndarray]] = [[] for _ in range(description.num_channels)]
    bar = progress_bar(total=len(jobs), desc="verify + fingerprint", unit="case", disable=not progress)
    if num_workers > 1 and len(jobs) > 1:
        with process_pool(num_workers) as pool:
            results = list(_with_bar(pool.imap(_analyze, jobs, chunksize=1), bar))
    else:
        results = list(_with_bar(map(_analyze, jobs), bar))
    bar.close()
    for case_id, case_problems, record, samples in results:
        problems.extend(case_problems)
        if record is not None:
            records[case_id] = record
            for channel in range(description.num_channels):
                samples_per_channel[channel].append(samples[channel])
    if problems:
        raise DatasetVerificationError(problems)
    pooled = [np.concatenate(chunks) if chunks else np.zeros(0) for chunks in samples_per_channel]
    problems = dataset_problems(description, records, pooled)
    if problems:
        raise DatasetVerificationError(problems)
    return aggregate_fingerprint(description, records, pooled)


def _with_bar(iterator, bar):
    for item in iterator:
        bar.update(1)
        yield item
