"""Tests of the synthetic dataset generator (autoseg/synthetic/)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from scipy import ndimage

from autoseg.errors import AutosegInputError
from autoseg.io.dataset import load_dataset_description
from autoseg.io.geometry import geometry_mismatch
from autoseg.io.images import read_image, read_label
from autoseg.synthetic import (
    ABDOMEN_LABELS,
    BRAIN_TUMOUR_LABELS,
    FLIPPED_DIRECTION,
    IDENTITY_DIRECTION,
    SyntheticDatasetSpec,
    brain_mr_spec,
    case_rngs,
    draw_case_grid,
    generate_case,
    generate_synthetic_dataset,
    large_ct_spec,
)

#: A small spec for tests that write files.
TINY = dict(in_plane_shape=(32, 32), field_of_view_z_mm=(40.0, 60.0))


def _case(index: int, spec: SyntheticDatasetSpec, seed: int = 0):
    return generate_case(case_rngs(seed, index)[0], spec)


def test_generate_case_is_reproducible_and_seed_dependent():
    spec = SyntheticDatasetSpec(num_channels=2)
    image_a, label_a, spacing_a = generate_case(np.random.default_rng(7), spec)
    image_b, label_b, spacing_b = generate_case(np.random.default_rng(7), spec)
    assert image_a.tobytes() == image_b.tobytes()
    assert label_a.tobytes() == label_b.tobytes()
    assert spacing_a == spacing_b
    image_c, label_c, _ = generate_case(np.random.default_rng(8), spec)
    assert image_a.shape != image_c.shape or not np.array_equal(image_a, image_c)
    assert label_a.shape != label_c.shape or not np.array_equal(label_a, label_c)


def test_case_shapes_dtypes_and_anisotropic_spacing():
    spec = SyntheticDatasetSpec()
    for index in range(4):
        image, label, spacing = _case(index, spec)
        assert image.dtype == np.float32 and label.dtype == np.uint8
        assert image.ndim == 4 and image.shape[0] == 1
        assert image.shape[1:] == label.shape and label.shape[1:] == (64, 64)
        assert set(np.unique(label)) <= {0, 1, 2} and (label == 1).any()
        thickness, spacing_y, spacing_x = spacing
        assert spacing_y == spacing_x and 0.8 <= spacing_x <= 1.2
        assert 2.5 <= thickness <= 5.0 and thickness > 2 * spacing_x
        assert 80.0 - thickness <= label.shape[0] * thickness <= 120.0 + thickness


def test_slice_thickness_and_count_vary_between_cases():
    spec = SyntheticDatasetSpec()
    cases = [_case(index, spec) for index in range(6)]
    thicknesses = {spacing[0] for _, _, spacing in cases}
    slice_counts = {label.shape[0] for _, label, _ in cases}
    in_plane = {spacing[1] for _, _, spacing in cases}
    assert len(thicknesses) >= 4 and len(slice_counts) >= 3 and len(in_plane) >= 4


def test_ct_intensities_are_plausible():
    spec = SyntheticDatasetSpec()
    organ_means = []
    for index in range(5):
        image, label, _ = _case(index, spec)
        ct = image[0]
        assert np.array_equal(ct, np.rint(ct)) and ct.min() >= -1024 and ct.max() <= 3071
        corners = ct[:, :4, :4]
        assert abs(corners.mean() + 1000) < 15 and corners.std() < 40
        organ = ct[label == 1]
        organ_means.append(organ.mean())
        assert 110 < organ.mean() < 180
        if (label == 2).any():
            assert ct[label == 2].mean() < organ.mean() - 30
        # not a pure threshold: some label-0 voxels are as bright as the organ
        body_background = (label == 0) & (ct > -500)
        assert (ct[body_background] > organ.mean()).sum() > 0
    assert abs(np.mean(organ_means) - 150) < 25


def test_lesion_is_inside_organ_and_presence_varies():
    spec = SyntheticDatasetSpec()
    cross = ndimage.generate_binary_structure(3, 1)
    present = []
    for index in range(12):
        _, label, _ = _case(index, spec)
        lesion = label == 2
        present.append(bool(lesion.any()))
        grown = ndimage.binary_dilation(lesion, structure=cross)
        assert not np.any(grown & (label == 0)), "lesion touches background"
    assert any(present) and not all(present)
    for probability, expected in ((0.0, False), (1.0, True)):
        spec = SyntheticDatasetSpec(lesion_probability=probability)
        assert all(bool((_case(index, spec)[1] == 2).any()) == expected for index in range(3))


def test_mri_is_zero_outside_body_with_a_margin():
    spec = SyntheticDatasetSpec(modality="MRI", num_channels=3)
    for index in range(3):
        image, label, _ = _case(index, spec)
        nonzero = np.any(image != 0, axis=0)
        assert np.all(image[:, ~nonzero] == 0)
        assert np.all(image >= 0)
        # background is exactly zero around the body, so cropping to nonzero shrinks y and x
        ys, xs = np.nonzero(nonzero.any(axis=0))
        assert ys.min() > 0 and xs.min() > 0 and ys.max() < 63 and xs.max() < 63
        assert (image[0][label > 0] > 0).all()
        assert image[0][label == 1].mean() > image[0][(label == 0) & nonzero].mean()
        # every channel has the same body mask
        assert np.array_equal(image[0] != 0, image[1] != 0)


def test_dataset_layout_and_geometry_round_trip(tmp_path):
    spec = SyntheticDatasetSpec(num_training=3, num_test=2, num_channels=2, **TINY)
    root = generate_synthetic_dataset(tmp_path, spec)
    assert root == tmp_path / "Dataset900_SyntheticCT"
    data = json.loads((root / "dataset.json").read_text())
    assert data["name"] == "Dataset900_SyntheticCT"
    assert data["channel_names"] == {"0": "CT", "1": "aux"}
    assert data["labels"] == {"background": 0, "organ": 1, "lesion": 2}
    assert data["numTraining"] == 3 and data["file_ending"] == ".nii.gz"
    # fields added for the large anatomies are only recorded when they differ from the default
    assert "anatomy" not in data["synthetic_spec"] and "num_slices_range" not in data["synthetic_spec"]
    description = load_dataset_description(root)
    assert description.num_channels == 2 and description.foreground_labels == [1, 2]

    names = {folder: sorted(p.name for p in (root / folder).iterdir())
             for folder in ("imagesTr", "labelsTr", "imagesTs", "labelsTs")}
    assert names["imagesTr"] == [f"case_{i:03d}_{c:04d}.nii.gz" for i in range(3) for c in range(2)]
    assert names["labelsTr"] == [f"case_{i:03d}.nii.gz" for i in range(3)]
    assert names["imagesTs"] == [f"case_{i:03d}_{c:04d}.nii.gz" for i in (3, 4) for c in range(2)]
    assert names["labelsTs"] == ["case_003.nii.gz", "case_004.nii.gz"]

    directions = []
    for index in range(5):
        split = "Tr" if index < 3 else "Ts"
        label_path = root / f"labels{split}" / f"case_{index:03d}.nii.gz"
        label_file = sitk.ReadImage(str(label_path))
        assert label_file.GetPixelID() == sitk.sitkUInt8
        label, label_geometry = read_label(label_path)
        assert set(np.unique(label)) <= {0, 1, 2}
        expected_image, expected_label, spacing = _case(index, spec)
        assert np.array_equal(label, expected_label)
        assert np.allclose(label_geometry.spacing, spacing, rtol=1e-6)
        assert np.abs(label_geometry.sitk_origin).max() > 0
        directions.append(label_geometry.sitk_direction)
        for channel in range(2):
            image_path = root / f"images{split}" / f"case_{index:03d}_{channel:04d}.nii.gz"
            assert sitk.ReadImage(str(image_path)).GetPixelID() == sitk.sitkInt16
            image, image_geometry = read_image(image_path)
            assert image_geometry == label_geometry
            assert geometry_mismatch(image_geometry, label_geometry, tolerance=1e-6) is None
            assert np.array_equal(image, expected_image[channel])
    assert FLIPPED_DIRECTION in directions and IDENTITY_DIRECTION in directions


def test_dataset_is_reproducible_and_seed_dependent(tmp_path):
    def arrays(folder, seed):
        spec = SyntheticDatasetSpec(num_training=2, seed=seed, **TINY)
        root = generate_synthetic_dataset(folder, spec)
        return [sitk.GetArrayFromImage(sitk.ReadImage(str(path))).tobytes()
                for path in sorted(root.rglob("*.nii.gz"))]

    first, again, other = arrays(tmp_path / "a", 3), arrays(tmp_path / "b", 3), arrays(tmp_path / "c", 4)
    assert first == again
    assert first != other


def test_case_content_does_not_depend_on_dataset_size():
    small = SyntheticDatasetSpec(num_training=2, **TINY)
    large = SyntheticDatasetSpec(num_training=10, num_test=3, **TINY)
    image_a, label_a, _ = _case(1, small)
    image_b, label_b, _ = _case(1, large)
    assert np.array_equal(image_a, image_b) and np.array_equal(label_a, label_b)


def test_mri_multichannel_dataset_files(tmp_path):
    spec = SyntheticDatasetSpec(num_training=1, modality="MRI", num_channels=3, file_ending=".nrrd",
                                dataset_name="Dataset901_SyntheticMRI", **TINY)
    root = generate_synthetic_dataset(tmp_path, spec)
    data = json.loads((root / "dataset.json").read_text())
    assert data["channel_names"] == {"0": "MRI", "1": "aux", "2": "MRI"}
    assert data["file_ending"] == ".nrrd"
    files = sorted(p.name for p in (root / "imagesTr").iterdir())
    assert files == ["case_000_0000.nrrd", "case_000_0001.nrrd", "case_000_0002.nrrd"]
    assert not (root / "imagesTs").exists()
    image = sitk.ReadImage(str(root / "imagesTr" / "case_000_0000.nrrd"))
    assert image.GetPixelID() == sitk.sitkFloat32
    assert (root / "labelsTr" / "case_000.nrrd").is_file()


@pytest.mark.parametrize("change", [
    dict(modality="PET"), dict(num_training=0), dict(seed=-1), dict(in_plane_shape=(8, 64)),
    dict(slice_thickness_mm=(5.0, 2.5)), dict(in_plane_spacing_mm=(0.0, 1.0)), dict(noise_std=-1.0),
    dict(num_channels=0), dict(file_ending=".png"), dict(dataset_name="../escape"),
    dict(lesion_probability=1.5), dict(anatomy="lungs"), dict(anatomy="brain_tumour"),
    dict(anatomy="abdomen", modality="MRI"), dict(anatomy="abdomen", num_channels=2),
    dict(anatomy="brain_tumour", modality="MRI", num_channels=5), dict(num_slices_range=(4, 10)),
    dict(num_slices_range=(50, 20)),
])
def test_invalid_spec_is_rejected(change, tmp_path):
    with pytest.raises(AutosegInputError):
        generate_synthetic_dataset(tmp_path, SyntheticDatasetSpec(**change))
    assert not any(tmp_path.iterdir())


# ----------------------------------------------------------------------------- large anatomies (small shapes)

def _small_abdomen(**changes) -> SyntheticDatasetSpec:
    """The large CT preset at 96 x 96 voxels of 3.5 mm (anatomy at 0.96 of its natural size), 4-5 mm slices."""
    values = dict(num_training=2, in_plane_shape=(96, 96), in_plane_spacing_mm=(3.5, 3.5),
                  slice_thickness_mm=(4.0, 5.0), field_of_view_z_mm=(300.0, 300.0), num_slices_range=None,
                  lesion_probability=1.0)
    values.update(changes)
    return large_ct_spec(**values)


def _small_brain(**changes) -> SyntheticDatasetSpec:
    """The brain MR preset at 2.5 mm voxels (96 x 96 x 62, same field of view)."""
    values = dict(num_training=2, in_plane_shape=(96, 96), in_plane_spacing_mm=(2.5, 2.5),
                  slice_thickness_mm=(2.5, 2.5))
    values.update(changes)
    return brain_mr_spec(**values)


def _volumes_mm3(label: np.ndarray, spacing, values) -> list[float]:
    return [float(np.count_nonzero(label == value) * np.prod(spacing)) for value in values]


def test_presets_draw_realistic_large_grids():
    ct = large_ct_spec()
    assert ct.anatomy == "abdomen" and ct.modality == "CT" and ct.in_plane_shape == (512, 512)
    grids = [draw_case_grid(case_rngs(0, index)[0], ct) for index in range(40)]
    counts = [shape[0] for shape, _ in grids]
    thicknesses = [spacing[0] for _, spacing in grids]
    assert all(shape[1:] == (512, 512) and 0.7 <= spacing[1] == spacing[2] <= 0.9 for shape, spacing in grids)
    assert all(100 <= count <= 300 for count in counts) and min(counts) < 130 and max(counts) == 300
    assert min(thicknesses) < 1.5 and max(thicknesses) > 4.0  # thin and thick slices
    assert all(250.0 <= count * thickness <= 505.0 for count, thickness in zip(counts, thicknesses))
    mr = brain_mr_spec()
    assert mr.channel_names == {"0": "T1ce", "1": "FLAIR"} and mr.labels == BRAIN_TUMOUR_LABELS
    assert draw_case_grid(case_rngs(0, 0)[0], mr) == ((155, 240, 240), (1.0, 1.0, 1.0))
    assert large_ct_spec(num_training=3, in_plane_shape=(96, 96)).in_plane_shape == (96, 96)


def test_num_slices_range_clips_the_slice_count():
    spec = SyntheticDatasetSpec(num_slices_range=(20, 22))  # 80-120 mm / 2.5-5 mm alone gives 16-48
    counts = {draw_case_grid(case_rngs(0, index)[0], spec)[0][0] for index in range(12)}
    assert counts <= {20, 21, 22} and len(counts) >= 2


def test_abdomen_organs_are_labelled_and_ordered_by_size():
    spec = _small_abdomen()
    for index in range(3):
        image, label, spacing = _case(index, spec)
        assert image.dtype == np.float32 and label.dtype == np.uint8 and image.shape == (1,) + label.shape
        assert set(np.unique(label)) == set(ABDOMEN_LABELS.values())
        liver, kidney, spleen, lesion = _volumes_mm3(label, spacing, (1, 2, 3, 4))
        assert 0.8e6 < liver < 2.2e6 and 1.5e5 < kidney < 4e5 and 0.5e5 < spleen < 1.8e5 and 100 < lesion < 2.5e4
        assert liver > 3 * kidney and kidney > spleen > lesion
        ct = image[0]
        assert np.array_equal(ct, np.rint(ct)) and ct.min() >= -1024 and ct.max() <= 3071
        assert abs(ct[:, :3, :3].mean() + 1000) < 15
        liver_hu = ct[label == 1].mean()
        assert 95 < liver_hu < 140 and ct[label == 4].mean() < liver_hu - 15
        assert ct[label == 2].mean() > liver_hu  # enhancing kidney cortex
        # not a threshold: bone and vessels (label 0) are at least as bright as the organs
        assert (ct[label == 0] > 150).sum() > 0.5 * (label == 2).sum()


def test_abdomen_physical_sizes_do_not_depend_on_spacing():
    # same in-plane field of view (R = 144 mm), so the same anatomy in mm, voxelized differently
    coarse = _small_abdomen(in_plane_spacing_mm=(3.0, 3.0), slice_thickness_mm=(4.0, 4.0))
    fine = _small_abdomen(in_plane_shape=(144, 144), in_plane_spacing_mm=(2.0, 2.0), slice_thickness_mm=(2.5, 2.5))
    for index in range(2):
        _, label_a, spacing_a = _case(index, coarse)
        _, label_b, spacing_b = _case(index, fine)
        assert label_a.shape != label_b.shape
        for value in (1, 2, 3):
            (volume_a,), (volume_b,) = (_volumes_mm3(label_a, spacing_a, [value]),
                                        _volumes_mm3(label_b, spacing_b, [value]))
            assert abs(volume_a - volume_b) < 0.1 * volume_b, (index, value, volume_a, volume_b)
            centres = []
            for label, spacing in ((label_a, spacing_a), (label_b, spacing_b)):
                indices = np.argwhere(label == value).mean(axis=0)
                centres.append((indices - (np.array(label.shape) - 1) / 2) * np.array(spacing))
            assert np.abs(centres[0] - centres[1]).max() < 3.0  # mm


def test_brain_tumour_regions_are_nested_and_need_both_channels():
    spec = _small_brain()
    cross = ndimage.generate_binary_structure(3, 1)
    for index in range(3):
        image, label, spacing = _case(index, spec)
        assert image.dtype == np.float32 and image.shape == (2,) + label.shape == (2, 62, 96, 96)
        assert set(np.unique(label)) == set(BRAIN_TUMOUR_LABELS.values())
        necrosis, edema, enhancing = label == 1, label == 2, label == 3
        core = necrosis | enhancing
        # the enhancing rim encloses the necrosis, the edema encloses the core
        assert not np.any(ndimage.binary_dilation(necrosis, cross) & ~core)
        assert not np.any(ndimage.binary_dilation(core, cross) & (label == 0))
        assert edema.sum() > 0 and enhancing.sum() > 0
        brain = image[0] != 0
        assert np.array_equal(brain, image[1] != 0) and image.min() >= 0 and not np.any(label[~brain])
        assert 1.0e6 < brain.sum() * np.prod(spacing) < 2.0e6  # mm^3, about a brain's volume
        t1ce, flair = image
        healthy = brain & (label == 0)

        def mean(channel, mask):
            return float(channel[mask].mean())

        # T1ce shows the enhancing rim but not the edema; FLAIR the edema but not the enhancing rim
        assert mean(t1ce, enhancing) > 1.2 * mean(t1ce, edema)
        assert abs(mean(t1ce, edema) - mean(t1ce, healthy)) < 0.3 * mean(t1ce, healthy)
        assert mean(flair, edema) > 1.2 * mean(flair, healthy)
        edema_next_to_core = edema & ndimage.binary_dilation(core, cross)
        assert abs(mean(flair, enhancing) - mean(flair, edema_next_to_core)) < 0.2 * mean(flair, edema_next_to_core)
        # ... but no threshold separates them: the fading, textured edema overlaps healthy brain in FLAIR
        # and the unevenly enhancing rim overlaps healthy brain in T1ce
        assert np.mean(flair[edema] < np.percentile(flair[healthy], 95)) > 0.2
        assert np.mean(t1ce[enhancing] < np.percentile(t1ce[healthy], 99)) > 0.1
        # necrosis is dark in T1ce (like CSF) but brighter than healthy brain in FLAIR
        assert mean(t1ce, necrosis) < 0.75 * mean(t1ce, edema) and mean(flair, necrosis) > 1.3 * mean(flair, healthy)
        assert np.corrcoef(t1ce[brain], flair[brain])[0, 1] < 0.8


@pytest.mark.parametrize("make_spec", [_small_abdomen, _small_brain])
def test_large_anatomies_are_reproducible(make_spec):
    spec = make_spec()
    image_a, label_a, spacing_a = generate_case(np.random.default_rng(5), spec)
    image_b, label_b, spacing_b = generate_case(np.random.default_rng(5), spec)
    assert image_a.tobytes() == image_b.tobytes() and label_a.tobytes() == label_b.tobytes()
    assert spacing_a == spacing_b
    image_c, label_c, _ = generate_case(np.random.default_rng(6), spec)
    assert image_a.shape != image_c.shape or not np.array_equal(label_a, label_c)


@pytest.mark.parametrize("make_spec, pixel_id", [(_small_abdomen, sitk.sitkInt16), (_small_brain, sitk.sitkFloat32)])
def test_large_anatomy_dataset_files(make_spec, pixel_id, tmp_path):
    spec = make_spec(num_training=1, num_test=1)
    root = generate_synthetic_dataset(tmp_path, spec)
    data = json.loads((root / "dataset.json").read_text())
    assert data["labels"] == spec.labels and data["channel_names"] == spec.channel_names
    assert data["synthetic_spec"]["anatomy"] == spec.anatomy
    description = load_dataset_description(root)
    assert description.foreground_labels == sorted(v for v in spec.labels.values() if v > 0)
    assert description.num_channels == spec.num_channels
    for index, split in ((0, "Tr"), (1, "Ts")):
        expected_image, expected_label, _ = _case(index, spec)
        label, _ = read_label(root / f"labels{split}" / f"case_{index:03d}.nii.gz")
        assert np.array_equal(label, expected_label)
        image_path = root / f"images{split}" / f"case_{index:03d}_0000.nii.gz"
        assert sitk.ReadImage(str(image_path)).GetPixelID() == pixel_id
        assert np.array_equal(read_image(image_path)[0], expected_image[0])
