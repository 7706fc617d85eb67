"""Shared test helpers (importable as ``helpers``): tiny raw datasets written with SimpleITK."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def write_volume(path: Path, array: np.ndarray, spacing_zyx=(1.0, 1.0, 1.0), origin_xyz=(0.0, 0.0, 0.0),
                 direction=None) -> Path:
    """Write a (z, y, x) array with the given spacing (array order) and origin (SimpleITK order)."""
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(tuple(float(v) for v in spacing_zyx[::-1]))
    image.SetOrigin(tuple(float(v) for v in origin_xyz))
    if direction is not None:
        image.SetDirection(tuple(float(v) for v in direction))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))
    return path


def make_raw_dataset(root: Path, num_cases: int = 3, shape=(8, 16, 16), spacing=(2.0, 1.0, 1.0),
                     channel_names=None, labels=None, file_ending=".nii.gz", seed: int = 0) -> Path:
    """A tiny valid dataset: a bright box (label 1) with a core (label 2) in noise."""
    channel_names = channel_names or {"0": "CT"}
    labels = labels or {"background": 0, "organ": 1, "core": 2}
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(json.dumps({
        "name": root.name, "channel_names": channel_names, "labels": labels,
        "numTraining": num_cases, "file_ending": file_ending}))
    for index in range(num_cases):
        label = np.zeros(shape, dtype=np.uint8)
        z, y, x = shape
        label[z // 4: 3 * z // 4, y // 4: 3 * y // 4, x // 4: 3 * x // 4] = 1
        label[z // 2 - 1: z // 2 + 1, y // 2 - 2: y // 2 + 2, x // 2 - 2: x // 2 + 2] = 2
        for channel in channel_names:
            image = (rng.normal(0, 20, shape) + 100 * label - 500).astype(np.float32)
            write_volume(root / "imagesTr" / f"case_{index:03d}_{int(channel):04d}{file_ending}", image, spacing)
        write_volume(root / "labelsTr" / f"case_{index:03d}{file_ending}", label, spacing)
    return root


def shared_dataset(name: str) -> Path:
    """Path to a dataset in ../shared/data, or skip the test when it is absent."""
    path = SHARED_DATA / name
    if not (path / "dataset.json").is_file():
        pytest.skip(f"{path} not available")
    return path


def shrink_networks(work_dir: Path, base_features: int = 4, cap: int = 16) -> None:
    """Make every planned network tiny (features base, 2*base, ... up to cap) so tests train in seconds."""
    plans_path = work_dir / "plans.json"
    plans = json.loads(plans_path.read_text())
    for configuration in plans["configurations"].values():
        stages = len(configuration["network"]["features_per_stage"])
        configuration["network"]["features_per_stage"] = [min(base_features * 2**i, cap) for i in range(stages)]
        configuration["batch_size"] = 2
    plans_path.write_text(json.dumps(plans, indent=2))


def make_tiny_work_dir(root: Path, num_training: int = 6, in_plane_shape=(24, 24), seed: int = 0,
                       num_test: int = 0) -> tuple[Path, Path]:
    """A planned and preprocessed synthetic CT dataset with tiny networks: (dataset dir, work dir)."""
    from autoseg.commands.plan import run_planning
    from autoseg.synthetic import SyntheticDatasetSpec, generate_synthetic_dataset

    spec = SyntheticDatasetSpec(num_training=num_training, num_test=num_test, in_plane_shape=in_plane_shape,
                                field_of_view_z_mm=(50.0, 70.0), seed=seed)
    dataset = generate_synthetic_dataset(root, spec)
    work = root / "work"
    run_planning(dataset, work, num_workers=1, progress=False)
    shrink_networks(work)
    return dataset, work


def make_easy_dataset(root: Path, num_cases: int = 8, shape=(16, 32, 32), seed: int = 0) -> Path:
    """An easy task: a bright ellipsoid (label 1, ~15% of the volume) with a darker core (label 2), noise."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(json.dumps({
        "name": root.name, "channel_names": {"0": "CT"}, "labels": {"background": 0, "organ": 1, "core": 2},
        "numTraining": num_cases, "file_ending": ".nii.gz"}))
    zz, yy, xx = np.meshgrid(*[np.arange(s) for s in shape], indexing="ij")
    for index in range(num_cases):
        centre = [rng.uniform(0.35, 0.65) * s for s in shape]
        radii = [rng.uniform(0.22, 0.3) * s for s in shape]
        distance = sum(((grid - c) / r) ** 2 for grid, c, r in zip((zz, yy, xx), centre, radii))
        label = np.zeros(shape, np.uint8)
        label[distance < 1] = 1
        label[distance < 0.3] = 2
        image = (rng.normal(0, 30, shape) + np.select([label == 2, label == 1], [60, 200], -100)).astype(np.float32)
        write_volume(root / "imagesTr" / f"case_{index:03d}_0000.nii.gz", image, (2.0, 1.0, 1.0))
        write_volume(root / "labelsTr" / f"case_{index:03d}.nii.gz", label, (2.0, 1.0, 1.0))
    return root


def add_cascade(work_dir: Path) -> None:
    """Add 3d_lowres (half the in-plane resolution) and 3d_cascade_fullres to a tiny work folder's plans.

    Tiny test images never need a cascade by the planner's rule; this builds the same
    configurations it would make for large images, then preprocesses the lowres cache.
    """
    import copy

    from autoseg.planning.planner import make_network_config
    from autoseg.preprocessing.cache import preprocess_dataset
    from autoseg.workdir import WorkDir

    plans = WorkDir(work_dir).load_plans()
    fullres = plans.configurations["3d_fullres"]
    lowres = copy.deepcopy(fullres)
    lowres.name = lowres.data_identifier = "3d_lowres"
    lowres.target_spacing = [fullres.target_spacing[0]] + [2 * s for s in fullres.target_spacing[1:]]
    lowres.median_image_shape = [fullres.median_image_shape[0]] + [max(8, s // 2) for s in
                                                                   fullres.median_image_shape[1:]]
    lowres.network, patch = make_network_config(lowres.target_spacing, lowres.median_image_shape, 3)
    lowres.network.features_per_stage = [4] * lowres.network.n_stages
    lowres.patch_size = list(patch)
    cascade = copy.deepcopy(fullres)
    cascade.name, cascade.previous_stage = "3d_cascade_fullres", "3d_lowres"
    plans.configurations["3d_lowres"] = lowres
    plans.configurations["3d_cascade_fullres"] = cascade
    WorkDir(work_dir).save_plans(plans)
    preprocess_dataset(plans, work_dir, ["3d_lowres"], num_workers=1, progress=False)


def task04_subset(root: Path, name: str, num_training: int = 10, num_held_out: int = 2) -> Path:
    """The first Task04 cases as a dataset: ``num_training`` in imagesTr/labelsTr, the next ``num_held_out``
    in imagesTs/labelsTs with their labels (skips the test when ../shared is absent)."""
    import shutil

    source = SHARED_DATA / "Dataset004_Hippocampus"
    if not (source / "dataset.json").is_file():
        pytest.skip(f"{source} not available")
    dataset = root / name
    cases = sorted(p.name[: -len(".nii.gz")] for p in (source / "labelsTr").glob("*.nii.gz"))
    for folder in ("imagesTr", "labelsTr", "imagesTs", "labelsTs"):
        (dataset / folder).mkdir(parents=True)
    for index, case in enumerate(cases[: num_training + num_held_out]):
        held_out = index >= num_training
        shutil.copy(source / "imagesTr" / f"{case}_0000.nii.gz",
                    dataset / ("imagesTs" if held_out else "imagesTr") / f"{case}_0000.nii.gz")
        shutil.copy(source / "labelsTr" / f"{case}.nii.gz",
                    dataset / ("labelsTs" if held_out else "labelsTr") / f"{case}.nii.gz")
    content = json.loads((source / "dataset.json").read_text())
    content["numTraining"] = num_training
    (dataset / "dataset.json").write_text(json.dumps(content))
    return dataset


def turned_copy(source: Path, target: Path, order=(2, 0, 1), flips=(True, False, True)) -> None:
    """The same physical image stored with its axes permuted and flipped (another scanner or converter)."""
    image = sitk.ReadImage(str(source))
    sitk.WriteImage(sitk.Flip(sitk.PermuteAxes(image, list(order)), list(flips)), str(target))


def on_grid_of(moving_path: Path, reference_path: Path) -> np.ndarray:
    """A label map resampled (nearest neighbour, same physical space) onto another file's grid."""
    reference = sitk.ReadImage(str(reference_path))
    moved = sitk.Resample(sitk.ReadImage(str(moving_path)), reference, sitk.Transform(), sitk.sitkNearestNeighbor)
    return sitk.GetArrayFromImage(moved)


def write_case(folder: Path, case_id: str, image: np.ndarray, label: np.ndarray, seed: int = 0) -> None:
    """One case in the preprocessed-cache layout: ``{case}.npy`` (C, z, y, x), ``{case}_seg.npy``, ``{case}.json``."""
    from autoseg.preprocessing.preprocess import sample_class_locations
    from autoseg.utils.files import save_npy, write_json

    save_npy(folder / f"{case_id}.npy", image.astype(np.float32))
    save_npy(folder / f"{case_id}_seg.npy", label.astype(np.int8))
    labels = [int(v) for v in np.unique(label) if v > 0]
    locations = sample_class_locations(label, labels, np.random.default_rng(seed))
    write_json(folder / f"{case_id}.json", {"case_id": case_id, "class_locations": locations}, indent=None)


def position_image(shape: tuple[int, ...]) -> np.ndarray:
    """(1, z, y, x) image whose value is 1 + the voxel's flat index: reveals where a sample came from."""
    return (np.arange(int(np.prod(shape)), dtype=np.float32) + 1).reshape(1, *shape)


CT_STATS = {"mean": 100.0, "std": 50.0, "median": 90.0, "min": -1000.0, "max": 2000.0,
            "percentile_00_5": -50.0, "percentile_99_5": 300.0, "num_samples": 1000}


def planner_fingerprint(shape, spacing, num_cases=20, channel_name="CT", cropped_fraction=1.0, thickness=None):
    """A dataset fingerprint of ``num_cases`` cases of ``shape`` voxels at ``spacing`` mm (``thickness``: slice
    spacings used in turn), for planner tests."""
    cases = {}
    for index in range(num_cases):
        case_spacing = list(spacing)
        if thickness is not None:
            case_spacing[0] = float(thickness[index % len(thickness)])
        cropped = [max(1, int(round(s * cropped_fraction ** (1 / 3)))) for s in shape]
        cases[f"case_{index}"] = {"shape": list(shape), "spacing": case_spacing,
                                  "direction": [1, 0, 0, 0, 1, 0, 0, 0, 1],
                                  "bounding_box": [[0, s] for s in cropped], "shape_after_crop": cropped,
                                  "class_voxels": {"1": 100, "2": 10}}
    return {"dataset_name": "Test", "channel_names": {"0": channel_name},
            "labels": {"background": 0, "organ": 1, "tumour": 2}, "file_ending": ".nii.gz",
            "channels": {"0": CT_STATS}, "cases": cases}
