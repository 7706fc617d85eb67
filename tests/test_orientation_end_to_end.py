"""Mixed orientations in one dataset: trained and predicted in one canonical axis order, written back in each
file's own geometry (issue: orientation handled)."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
from helpers import SHARED_DATA, on_grid_of, shrink_networks, turned_copy

from autoseg.cli import main
from autoseg.io.images import read_image, read_label
from autoseg.workdir import WorkDir

ORDERS = [((0, 1, 2), (True, True, False)), ((2, 0, 1), (False, False, True)), ((1, 2, 0), (True, False, False))]


@pytest.mark.slow
@pytest.mark.shared_data
def test_task04_with_mixed_orientations_trains_and_segments_turned_copies_like_the_originals(tmp_path):
    source = SHARED_DATA / "Dataset004_Hippocampus"
    if not (source / "dataset.json").is_file():
        pytest.skip(f"{source} not available")
    dataset = tmp_path / "Dataset906_HippocampusTurned"
    for folder in ("imagesTr", "labelsTr"):
        (dataset / folder).mkdir(parents=True)
    cases = sorted(p.name[: -len(".nii.gz")] for p in (source / "labelsTr").glob("*.nii.gz"))[:13]
    for index, case in enumerate(cases[:10]):  # every other training case stored turned, image and label alike
        image, label = source / "imagesTr" / f"{case}_0000.nii.gz", source / "labelsTr" / f"{case}.nii.gz"
        if index % 2:
            order, flips = ORDERS[index % 3]
            turned_copy(image, dataset / "imagesTr" / image.name, order, flips)
            turned_copy(label, dataset / "labelsTr" / label.name, order, flips)
        else:
            shutil.copy(image, dataset / "imagesTr" / image.name)
            shutil.copy(label, dataset / "labelsTr" / label.name)
    content = json.loads((source / "dataset.json").read_text())
    content["numTraining"] = 10
    (dataset / "dataset.json").write_text(json.dumps(content))
    work = tmp_path / "work"
    assert main(["plan", str(dataset), "-o", str(work), "-j", "1"]) == 0
    records = WorkDir(work).read_fingerprint()["cases"]
    for case in cases[:10]:  # turned or not, a case has the canonical shape and spacing of its source file
        _, geometry = read_image(source / "imagesTr" / f"{case}_0000.nii.gz")
        assert tuple(records[case]["shape"]) == geometry.shape
        assert records[case]["spacing"] == pytest.approx(geometry.spacing)
    shrink_networks(work)
    assert main(["train", str(work), "-c", "3d_fullres", "-f", "0", "--epochs", "1", "--iterations-per-epoch", "2",
                 "--num-workers", "0"]) == 0
    inputs = tmp_path / "in"
    inputs.mkdir()
    for index, case in enumerate(cases[10:]):
        image = source / "imagesTr" / f"{case}_0000.nii.gz"
        shutil.copy(image, inputs / image.name)
        order, flips = ORDERS[index]
        turned_copy(image, inputs / f"{case}T_0000.nii.gz", order, flips)
    assert main(["predict", "-i", str(inputs), "-o", str(tmp_path / "out"), "-m", str(work), "-c", "3d_fullres",
                 "-f", "0"]) == 0
    for case in cases[10:]:
        original = tmp_path / "out" / f"{case}.nii.gz"
        turned_output = tmp_path / "out" / f"{case}T.nii.gz"
        assert read_label(turned_output)[1] == read_image(inputs / f"{case}T_0000.nii.gz")[1]
        np.testing.assert_array_equal(on_grid_of(turned_output, original), read_label(original)[0])
