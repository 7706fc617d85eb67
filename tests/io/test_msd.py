"""Medical Segmentation Decathlon tasks as downloaded -> the nnU-Net v2 layout (``autoseg convert-msd``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
from helpers import SHARED_DATA

from autoseg.cli import main
from autoseg.io.dataset import list_training_cases, load_dataset_description
from autoseg.io.images import read_label, read_raw

SHAPE = (6, 12, 10)  # z, y, x
SPACING_XYZ = (0.9, 0.8, 2.5)
ORIGIN_XYZ = (-10.0, 5.0, 30.0)
#: an oblique direction: rotation about z, so a wrong channel geometry shows
ANGLE = np.deg2rad(20)
DIRECTION_3D = np.array([[np.cos(ANGLE), -np.sin(ANGLE), 0], [np.sin(ANGLE), np.cos(ANGLE), 0], [0, 0, 1]])


def write_4d(path: Path, channels: np.ndarray) -> None:
    """``channels`` ``(C, z, y, x)`` as a 4D NIfTI (x, y, z, channel), the spatial geometry above."""
    image = sitk.GetImageFromArray(channels, isVector=False)
    direction = np.eye(4)
    direction[:3, :3] = DIRECTION_3D
    image.SetSpacing((*SPACING_XYZ, 1.0))
    image.SetOrigin((*ORIGIN_XYZ, 0.0))
    image.SetDirection(tuple(direction.ravel()))
    path.parent.mkdir(parents=True, exist_ok=True)
    sitk.WriteImage(image, str(path))


def write_label(path: Path, label: np.ndarray) -> None:
    image = sitk.GetImageFromArray(label)
    image.SetSpacing(SPACING_XYZ)
    image.SetOrigin(ORIGIN_XYZ)
    image.SetDirection(tuple(DIRECTION_3D.ravel()))
    sitk.WriteImage(image, str(path))


def make_msd_task(root: Path, num_training: int = 5, num_channels: int = 2) -> tuple[Path, dict]:
    """A small MSD task: 4D images, old dataset.json, macOS '._' files beside every file."""
    task = root / "Task09_Test"
    rng = np.random.default_rng(0)
    arrays = {}
    training = []
    for index in range(num_training + 1):
        case = f"test_{index:03d}"
        channels = rng.normal(100, 20, (num_channels, *SHAPE)).astype(np.float32)
        label = np.zeros(SHAPE, np.uint8)
        label[2:4, 3:8, 2:7] = 1
        label[3, 4:6, 3:5] = 2
        channels[0][label > 0] += 200
        folder = "imagesTr" if index < num_training else "imagesTs"
        write_4d(task / folder / f"{case}.nii.gz", channels)
        (task / folder / f"._{case}.nii.gz").write_bytes(b"\x00\x05\x16\x07AppleDouble junk")
        arrays[case] = (channels, label)
        if index < num_training:
            (task / "labelsTr").mkdir(parents=True, exist_ok=True)
            write_label(task / "labelsTr" / f"{case}.nii.gz", label)
            (task / "labelsTr" / f"._{case}.nii.gz").write_bytes(b"junk")
            training.append({"image": f"./imagesTr/{case}.nii.gz", "label": f"./labelsTr/{case}.nii.gz"})
    modality = {str(i): name for i, name in enumerate(["FLAIR", "T1w", "T2w"][:num_channels])}
    (task / "dataset.json").write_text(json.dumps({
        "name": "Test", "description": "MSD-style test task", "tensorImageSize": "4D", "modality": modality,
        "labels": {"0": "background", "1": "edema", "2": "tumour"}, "numTraining": num_training,
        "numTest": 1, "training": training, "test": [f"./imagesTs/test_{num_training:03d}.nii.gz"]}))
    return task, arrays


def test_a_multi_channel_task_converts_with_its_geometry_and_plans(tmp_path, capsys):
    from autoseg.commands.plan import run_planning

    task, arrays = make_msd_task(tmp_path)
    output = tmp_path / "Dataset009_Test"
    assert main(["convert-msd", str(task), "-o", str(output), "-j", "1"]) == 0
    assert "5 training and 1 test cases, 2 channel(s) (FLAIR, T1w)" in capsys.readouterr().out

    content = json.loads((output / "dataset.json").read_text())
    assert content["channel_names"] == {"0": "FLAIR", "1": "T1w"}
    assert content["labels"] == {"background": 0, "edema": 1, "tumour": 2}
    assert content["numTraining"] == 5 and content["file_ending"] == ".nii.gz"
    assert sorted(p.name for p in (output / "imagesTs").iterdir()) == ["test_005_0000.nii.gz", "test_005_0001.nii.gz"]
    assert not any(p.name.startswith("._") for p in output.rglob("*"))
    assert not (tmp_path / "Dataset009_Test.partial").exists()

    description = load_dataset_description(output)
    assert [case.case_id for case in list_training_cases(description)] == [f"test_{i:03d}" for i in range(5)]
    for case, (channels, label) in arrays.items():
        folder = "imagesTr" if case != "test_005" else "imagesTs"
        for channel in range(2):
            array, geometry = read_raw(output / folder / f"{case}_{channel:04d}.nii.gz")
            np.testing.assert_array_equal(array, channels[channel])
            assert geometry.sitk_spacing == pytest.approx(SPACING_XYZ)
            assert geometry.sitk_origin == pytest.approx(ORIGIN_XYZ)
            assert np.asarray(geometry.sitk_direction) == pytest.approx(DIRECTION_3D.ravel())
        if folder == "imagesTr":
            np.testing.assert_array_equal(read_label(output / "labelsTr" / f"{case}.nii.gz")[0], label)

    result = run_planning(output, tmp_path / "work", num_workers=1, preprocess=False, progress=False)
    assert result.plans.num_channels == 2 and result.plans.foreground_labels == [1, 2]


def test_bad_tasks_are_one_line_and_leave_nothing(tmp_path, capsys):
    task, _ = make_msd_task(tmp_path, num_training=3)
    output = tmp_path / "out"

    # a file with three channels where dataset.json declares two
    write_4d(task / "imagesTr" / "test_001.nii.gz", np.zeros((3, *SHAPE), np.float32))
    assert main(["convert-msd", str(task), "-o", str(output), "-j", "1"]) == 1
    error = capsys.readouterr().err.strip()
    assert error == (f"error: {task / 'imagesTr' / 'test_001.nii.gz'}: dataset.json declares 2 modalities, "
                     "the file holds 3 channels")
    assert not output.exists() and not (tmp_path / "out.partial").exists()

    # a truncated file is named (SimpleITK would read its missing part as zeros)
    write_4d(task / "imagesTr" / "test_001.nii.gz", np.zeros((2, *SHAPE), np.float32))
    whole = (task / "imagesTr" / "test_001.nii.gz").read_bytes()
    (task / "imagesTr" / "test_001.nii.gz").write_bytes(whole[: len(whole) // 2])
    assert main(["convert-msd", str(task), "-o", str(output), "-j", "1"]) == 1
    assert "test_001.nii.gz: file is truncated" in capsys.readouterr().err
    assert not output.exists()

    # a label map whose geometry differs from its image fails the verification `plan` does
    write_4d(task / "imagesTr" / "test_001.nii.gz", np.zeros((2, *SHAPE), np.float32))
    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((6, 12, 11), np.uint8)), str(task / "labelsTr" / "test_001.nii.gz"))
    assert main(["convert-msd", str(task), "-o", str(output), "-j", "1"]) == 1
    err = capsys.readouterr().err
    assert f"{output} (converted from {task})/labelsTr/test_001.nii.gz" in err and "nothing was written" in err
    assert not output.exists() and not (tmp_path / "out.partial").exists()


def test_existing_outputs_and_v2_datasets_are_refused(tmp_path, capsys):
    task, _ = make_msd_task(tmp_path, num_training=3)
    output = tmp_path / "out"
    assert main(["convert-msd", str(task), "-o", str(output), "-j", "1"]) == 0
    assert main(["convert-msd", str(task), "-o", str(output), "-j", "1"]) == 1
    assert f"{output}: exists and is not empty; use --overwrite" in capsys.readouterr().err
    (tmp_path / "out.partial").mkdir()  # left by a killed run
    assert main(["convert-msd", str(task), "-o", str(output), "--overwrite", "-j", "1"]) == 0
    assert "left by an interrupted conversion" in capsys.readouterr().out
    assert main(["convert-msd", str(output), "-o", str(tmp_path / "again")]) == 1
    assert "already in the nnU-Net v2 format" in capsys.readouterr().err


@pytest.mark.slow
def test_task04_cases_in_the_msd_format_round_trip(tmp_path):
    """A few Task04 cases as MSD ships them (4D with one channel, old dataset.json) -> v2 -> plan."""
    from autoseg.commands.plan import run_planning

    source = SHARED_DATA / "Dataset004_Hippocampus"
    if not (source / "dataset.json").is_file():
        pytest.skip(f"{source} not available")
    cases = sorted(p.name[: -len("_0000.nii.gz")] for p in (source / "imagesTr").glob("*_0000.nii.gz"))[:6]
    task = tmp_path / "Task04_Hippocampus"
    (task / "labelsTr").mkdir(parents=True)
    (task / "imagesTr").mkdir()
    for case in cases:
        image = sitk.ReadImage(str(source / "imagesTr" / f"{case}_0000.nii.gz"))
        volume = sitk.GetArrayFromImage(image)[None]  # one channel on a fourth axis
        four_d = sitk.GetImageFromArray(volume, isVector=False)
        direction = np.eye(4)
        direction[:3, :3] = np.asarray(image.GetDirection()).reshape(3, 3)
        four_d.SetSpacing((*image.GetSpacing(), 1.0))
        four_d.SetOrigin((*image.GetOrigin(), 0.0))
        four_d.SetDirection(tuple(direction.ravel()))
        sitk.WriteImage(four_d, str(task / "imagesTr" / f"{case}.nii.gz"))
        shutil.copy(source / "labelsTr" / f"{case}.nii.gz", task / "labelsTr" / f"{case}.nii.gz")
    (task / "dataset.json").write_text(json.dumps({
        "name": "Hippocampus", "tensorImageSize": "3D", "modality": {"0": "MRI"},
        "labels": {"0": "background", "1": "Anterior", "2": "Posterior"}, "numTraining": len(cases),
        "numTest": 0, "training": [{"image": f"./imagesTr/{c}.nii.gz", "label": f"./labelsTr/{c}.nii.gz"}
                                   for c in cases], "test": []}))
    output = tmp_path / "Dataset004_Hippocampus"
    assert main(["convert-msd", str(task), "-o", str(output), "-j", "1"]) == 0
    for case in cases:
        converted, geometry = read_raw(output / "imagesTr" / f"{case}_0000.nii.gz")
        original, original_geometry = read_raw(source / "imagesTr" / f"{case}_0000.nii.gz")
        np.testing.assert_array_equal(converted, original)
        assert geometry.sitk_spacing == pytest.approx(original_geometry.sitk_spacing)
    planned = run_planning(output, tmp_path / "work", num_workers=1, preprocess=False, progress=False)
    assert planned.plans.labels == {"background": 0, "Anterior": 1, "Posterior": 2}


def test_files_outside_the_task_folder_are_refused(tmp_path, capsys):
    """dataset.json may not pull in files outside the task: '..', absolute paths, links that leave it."""
    task, _ = make_msd_task(tmp_path, num_training=2)
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.copy(task / "imagesTr" / "test_000.nii.gz", outside / "secret.nii.gz")
    original = json.loads((task / "dataset.json").read_text())
    output = tmp_path / "out"
    for image in ("../elsewhere/secret.nii.gz", "./imagesTr/../../elsewhere/secret.nii.gz",
                  str(outside / "secret.nii.gz")):
        content = json.loads(json.dumps(original))
        content["training"][1]["image"] = image
        (task / "dataset.json").write_text(json.dumps(content))
        assert main(["convert-msd", str(task), "-o", str(output), "-j", "1"]) == 1
        error = capsys.readouterr().err.strip()
        assert error.startswith(f"error: {task / 'dataset.json'}: 'training' entry {image!r}"), error
        assert f"inside the task folder {task}; refused" in error and "\n" not in error
        assert not output.exists()
    (task / "dataset.json").write_text(json.dumps(original))
    (task / "imagesTr" / "test_001.nii.gz").unlink()
    (task / "imagesTr" / "test_001.nii.gz").symlink_to(outside / "secret.nii.gz")
    assert main(["convert-msd", str(task), "-o", str(output), "-j", "1"]) == 1
    error = capsys.readouterr().err.strip()
    assert f"is a symbolic link to {outside / 'secret.nii.gz'}, outside the task folder" in error
    assert "\n" not in error and not output.exists()
    # links that stay inside the task are followed, and the task folder itself may be a link
    (task / "imagesTr" / "test_001.nii.gz").unlink()
    shutil.copy(task / "imagesTr" / "test_000.nii.gz", task / "imagesTr" / "copy.nii.gz")
    (task / "imagesTr" / "test_001.nii.gz").symlink_to(task / "imagesTr" / "copy.nii.gz")
    (tmp_path / "linked").symlink_to(task)
    assert main(["convert-msd", str(tmp_path / "linked"), "-o", str(output), "-j", "1"]) == 0


def test_an_output_holding_the_task_is_refused_even_with_overwrite(tmp_path, capsys):
    task, _ = make_msd_task(tmp_path / "msd")
    for output in (task, task.parent):
        assert main(["convert-msd", str(task), "-o", str(output), "--overwrite"]) == 1
        assert "holds the MSD task" in capsys.readouterr().err
    assert (task / "dataset.json").is_file() and any((task / "imagesTr").iterdir())  # nothing replaced
