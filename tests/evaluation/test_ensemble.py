"""Folder ensembling: averaged probabilities, argmax, postprocessing, headers and input checks."""

import json

import numpy as np
import pytest

from autoseg.errors import AutosegInputError
from autoseg.evaluation.ensemble import ensemble_folders, load_probabilities
from autoseg.io.geometry import ImageGeometry, geometry_mismatch
from autoseg.io.images import read_label
from autoseg.io.probabilities import save_probabilities

SHAPE = (3, 5, 6)  # (z, y, x)
GEOMETRY = ImageGeometry(shape=SHAPE, spacing=(2.0, 1.0, 0.5), sitk_spacing=(0.5, 1.0, 2.0),
                         sitk_origin=(10.0, -4.0, 3.5), sitk_direction=(1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0),
                         file_dimension=3)


def random_probabilities(seed, num_classes=3, shape=SHAPE):
    rng = np.random.default_rng(seed)
    values = rng.random((num_classes, *shape))
    return (values / values.sum(0)).astype(np.float16)


def write_probabilities(folder, case, probabilities, geometry=GEOMETRY):
    save_probabilities(probabilities, geometry, folder / case)


def test_load_probabilities_round_trip(tmp_path):
    probabilities = random_probabilities(0)
    write_probabilities(tmp_path, "case.a", probabilities)
    loaded, geometry = load_probabilities(tmp_path / "case.a")
    assert loaded.dtype == np.float32 and geometry == GEOMETRY
    np.testing.assert_array_equal(loaded, probabilities.astype(np.float32))
    import zipfile

    with zipfile.ZipFile(tmp_path / "case.a.npz") as archive:  # a compressed npz, one member per array
        assert [(m.filename, m.compress_type) for m in archive.infolist()] == [("probabilities.npy",
                                                                               zipfile.ZIP_DEFLATED)]


def test_ensemble_of_two_folders_is_the_average(tmp_path):
    first, second, output = tmp_path / "a", tmp_path / "b", tmp_path / "out"
    expected = {}
    for index, case in enumerate(["case_0", "case_1"]):
        p, q = random_probabilities(2 * index), random_probabilities(2 * index + 1)
        write_probabilities(first, case, p)
        write_probabilities(second, case, q)
        expected[case] = (p.astype(np.float32) + q.astype(np.float32)) / 2

    cases = ensemble_folders([first, second], output, save_probabilities=True)

    assert cases == ["case_0", "case_1"]
    for case, average in expected.items():
        saved, geometry = load_probabilities(output / case)
        np.testing.assert_allclose(saved, average, atol=1e-3)
        assert geometry == GEOMETRY
        assert json.loads((output / f"{case}.json").read_text())["num_classes"] == 3
        segmentation, header = read_label(output / f"{case}.nii.gz")
        np.testing.assert_array_equal(segmentation, np.argmax(average, axis=0))
        assert geometry_mismatch(GEOMETRY, header, tolerance=1e-6) is None
        assert header.sitk_origin == GEOMETRY.sitk_origin and header.sitk_spacing == GEOMETRY.sitk_spacing


def test_probabilities_are_not_written_unless_asked(tmp_path):
    for folder in ("a", "b"):
        write_probabilities(tmp_path / folder, "case_0", random_probabilities(len(folder)))
    ensemble_folders([tmp_path / "a", tmp_path / "b"], tmp_path / "out", file_ending=".nrrd")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["case_0.nrrd"]


def test_different_case_sets_name_the_folder_and_cases(tmp_path):
    for index in range(8):
        write_probabilities(tmp_path / "a", f"case_{index}", random_probabilities(index))
    write_probabilities(tmp_path / "b", "case_0", random_probabilities(0))
    with pytest.raises(AutosegInputError, match=r"/b: no probabilities for 7 case\(s\).*case_1, case_2, case_3, "
                                                r"case_4, case_5 and 2 more"):
        ensemble_folders([tmp_path / "a", tmp_path / "b"], tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_mismatched_geometry_names_both_files(tmp_path):
    moved = ImageGeometry(**{**GEOMETRY.__dict__, "sitk_origin": (12.0, -4.0, 3.5)})
    write_probabilities(tmp_path / "a", "case_0", random_probabilities(0))
    write_probabilities(tmp_path / "b", "case_0", random_probabilities(1), moved)
    with pytest.raises(AutosegInputError, match=r"b/case_0\.npz: origin .* differs .*a/case_0\.npz"):
        ensemble_folders([tmp_path / "a", tmp_path / "b"], tmp_path / "out")


def test_mismatched_class_count_names_both_files(tmp_path):
    write_probabilities(tmp_path / "a", "case_0", random_probabilities(0, num_classes=3))
    write_probabilities(tmp_path / "b", "case_0", random_probabilities(1, num_classes=2))
    with pytest.raises(AutosegInputError, match=r"b/case_0\.npz: 2 classes, .*a/case_0\.npz has 3"):
        ensemble_folders([tmp_path / "a", tmp_path / "b"], tmp_path / "out")


def test_postprocessing_is_applied(tmp_path):
    segmentation = np.zeros(SHAPE, dtype=np.int64)
    segmentation[0:2, 0:3, 0:3] = 1  # main object
    segmentation[2, 4, 5] = 1  # spurious voxel, not touching it
    probabilities = np.eye(2, dtype=np.float16)[segmentation].transpose(3, 0, 1, 2)
    for folder in ("a", "b"):
        write_probabilities(tmp_path / folder, "case_0", probabilities)
    steps = [{"operation": "keep_largest_component", "labels": None}]

    ensemble_folders([tmp_path / "a", tmp_path / "b"], tmp_path / "raw_out")
    ensemble_folders([tmp_path / "a", tmp_path / "b"], tmp_path / "post_out", postprocessing=steps)

    raw, _ = read_label(tmp_path / "raw_out" / "case_0.nii.gz")
    post, _ = read_label(tmp_path / "post_out" / "case_0.nii.gz")
    assert raw[2, 4, 5] == 1 and post[2, 4, 5] == 0
    assert np.count_nonzero(post) == 18


def test_bad_inputs_are_rejected(tmp_path):
    write_probabilities(tmp_path / "a", "case_0", random_probabilities(0))
    with pytest.raises(AutosegInputError, match="must not be one of the input folders"):
        ensemble_folders([tmp_path / "a"], tmp_path / "a")
    with pytest.raises(AutosegInputError, match="not one of keep_largest_component"):
        ensemble_folders([tmp_path / "a"], tmp_path / "out", postprocessing=[{"operation": "dilate"}])
    (tmp_path / "empty").mkdir()
    with pytest.raises(AutosegInputError, match="no \\*.npz probability files"):
        ensemble_folders([tmp_path / "empty"], tmp_path / "out")
    with pytest.raises(AutosegInputError, match="--file-ending '.xyz' is not supported"):
        ensemble_folders([tmp_path / "a"], tmp_path / "out", file_ending=".xyz")
