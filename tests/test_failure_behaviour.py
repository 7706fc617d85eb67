"""Fault injection: damaged and fuzzed inputs, full disks, and kill -9 at random points.

Every fault must end in one of two ways: handled correctly, or a one-line error naming the
file (exit 1, nothing half-written) -- never a traceback, never silently wrong data.
"""

from __future__ import annotations

import errno
import gzip
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from helpers import make_raw_dataset, make_tiny_work_dir, write_volume
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from autoseg.cli import main
from autoseg.errors import AutosegInputError
from autoseg.io.dataset import parse_dataset_json
from autoseg.io.images import read_image
from autoseg.plans.schema import Plans
from autoseg.workdir import WorkDir

FUZZ = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


def temporaries(folder: Path) -> list[Path]:
    return [path for path in folder.rglob("*") if ".tmp-" in path.name]


# --- fuzzed dataset.json ------------------------------------------------------------------------
json_values = st.recursive(st.none() | st.booleans() | st.integers(-3, 300) | st.floats(allow_nan=True)
                           | st.text(max_size=8),
                           lambda children: st.lists(children, max_size=3)
                           | st.dictionaries(st.text(max_size=6), children, max_size=3), max_leaves=8)
dataset_json = st.fixed_dictionaries({}, optional={
    "channel_names": st.dictionaries(st.sampled_from(["0", "1", "2", "x", "-1"]), json_values, max_size=3)
    | json_values,
    "labels": st.dictionaries(st.text(max_size=6), st.integers(-2, 6) | json_values, max_size=4) | json_values,
    "file_ending": st.sampled_from([".nii.gz", "nii", ".mha", ""]) | json_values,
    "numTraining": st.integers(-2, 5) | json_values,
    "name": json_values})


@FUZZ
@given(dataset_json)
def test_any_dataset_json_is_accepted_or_refused_in_one_line(data):
    try:
        description = parse_dataset_json(data, Path("/d"), "/d/dataset.json")
    except AutosegInputError as error:
        assert str(error).startswith("/d/dataset.json: ") and "\n" not in str(error)
        return
    assert description.label_values == list(range(len(description.label_values)))
    assert sorted(description.channel_names) == list(range(description.num_channels))


# --- fuzzed and truncated image files -----------------------------------------------------------
@pytest.fixture(scope="module")
def nifti_bytes(tmp_path_factory) -> bytes:
    path = write_volume(tmp_path_factory.mktemp("nifti") / "image.nii",
                        np.random.default_rng(0).normal(size=(5, 6, 7)).astype(np.float32), (2.0, 1.0, 0.5))
    return path.read_bytes()


@FUZZ
@given(st.lists(st.tuples(st.integers(0, 351), st.integers(0, 255)), min_size=1, max_size=6))
@example(edits=[(111, 95)])  # a voxel offset of ~1e19 bytes (the float's exponent byte): was an OverflowError
@example(edits=[(111, 81)])  # ~1e11 bytes: was a MemoryError (read in one piece)
def test_a_fuzzed_nifti_header_is_read_correctly_or_refused_in_one_line(tmp_path_factory, nifti_bytes, edits):
    data = bytearray(nifti_bytes)
    for offset, value in edits:
        data[offset] = value
    path = tmp_path_factory.mktemp("fuzz") / "image.nii.gz"
    path.write_bytes(gzip.compress(bytes(data)))
    try:
        array, geometry = read_image(path)
    except AutosegInputError as error:
        assert str(error).startswith(str(path)) and "\n" not in str(error)
        return
    assert np.isfinite(array).all() and all(spacing > 0 for spacing in geometry.spacing)
    assert array.shape == geometry.shape


@FUZZ
@given(st.floats(0.0, 0.999))
def test_a_nii_gz_cut_anywhere_is_refused(tmp_path_factory, nifti_bytes, fraction):
    compressed = gzip.compress(nifti_bytes)
    path = tmp_path_factory.mktemp("cut") / "image.nii.gz"
    path.write_bytes(compressed[: int(len(compressed) * fraction)])
    with pytest.raises(AutosegInputError, match=r"image\.nii\.gz: "):
        read_image(path)


# --- fuzzed plans.json --------------------------------------------------------------------------
@pytest.fixture(scope="module")
def planned(tmp_path_factory):
    return make_tiny_work_dir(tmp_path_factory.mktemp("planned"))


plan_fields = st.sampled_from(["batch_size", "patch_size", "target_spacing", "median_image_shape", "dimension",
                               "data_identifier"])
odd_values = st.none() | st.integers(-5, 100) | st.text(max_size=4) | st.floats(allow_nan=True) | \
    st.lists(st.integers(-4, 64), max_size=4) | st.lists(st.floats(allow_nan=True), max_size=3)


@FUZZ
@given(st.sampled_from(["2d", "3d_fullres"]), plan_fields, odd_values)
def test_a_hand_edited_plans_json_is_valid_or_refused_when_loaded(planned, name, field, value):
    _, work = planned
    data = json.loads(WorkDir(work).plans_path.read_text())
    data["configurations"][name][field] = value
    try:
        plans = Plans.from_dict(data)
    except (KeyError, TypeError, ValueError) as error:  # WorkDir.load_plans makes this one line naming the file
        assert "\n" not in str(error)
        return
    configuration = plans.configurations[name]
    assert isinstance(configuration.batch_size, int) and configuration.batch_size > 0
    assert all(isinstance(size, int) and size > 0 for size in configuration.patch_size)


# --- datasets with nothing to learn; damaged caches; full disks ----------------------------------
def relabel(root: Path, change) -> None:
    import SimpleITK as sitk

    for path in sorted((root / "labelsTr").iterdir()) + sorted((root / "imagesTr").iterdir()):
        image = sitk.ReadImage(str(path))
        changed = sitk.GetImageFromArray(change(path, sitk.GetArrayFromImage(image)))
        changed.CopyInformation(image)
        sitk.WriteImage(changed, str(path))


@pytest.mark.parametrize("fault, message", [
    ("background", "labelsTr: every label map is all background (0): there is nothing to learn"),
    ("constant", "imagesTr: every image of channel 0 ('CT') is constant"),
])
def test_a_dataset_with_nothing_to_learn_is_one_line_and_writes_nothing(tmp_path, capsys, fault, message):
    root = make_raw_dataset(tmp_path / "D")

    def is_label(path: Path) -> bool:
        return path.parent.name == "labelsTr"

    if fault == "background":
        relabel(root, lambda path, array: array * 0 if is_label(path) else array)
    else:
        relabel(root, lambda path, array: array if is_label(path) else np.full_like(array, 7))
    assert main(["plan", str(root), "-o", str(tmp_path / "work"), "-j", "1"]) == 1
    assert message in capsys.readouterr().err
    assert not (tmp_path / "work").exists()


@pytest.mark.slow
def test_a_damaged_cache_file_is_named_and_plan_rebuilds_it(planned, tmp_path, capsys):
    import shutil

    dataset, original = planned
    work = tmp_path / "work"
    shutil.copytree(original, work)
    cache = WorkDir(work).cache_folder(WorkDir(work).load_plans().configuration("2d").data_identifier)
    (cache / "case_000.npy").write_text("not an array")
    np.save(cache / "case_001_seg.npy", np.zeros((2, 2), np.float64))
    assert main(["train", str(work), "-c", "2d", "-f", "0", "--epochs", "1", "--iterations-per-epoch", "1",
                 "--num-workers", "0"]) == 1
    error = capsys.readouterr().err.strip()
    assert "case_00" in error and "run `autoseg plan` again" in error and len(error.splitlines()) == 1
    assert main(["plan", str(dataset), "-o", str(work), "-j", "1", "-c", "2d"]) == 0
    assert np.load(cache / "case_000.npy").ndim == 4 and np.load(cache / "case_001_seg.npy").dtype.kind in "iu"


def fail_when_full(monkeypatch, after: int = 0):
    """Make every atomic write after the first ``after`` fail as on a full disk."""
    import autoseg.utils.files as files

    calls = {"n": 0}
    real_replace = os.replace

    def replace(source, target):
        calls["n"] += 1
        if calls["n"] > after:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(source))
        real_replace(source, target)

    monkeypatch.setattr(files.os, "replace", replace)


@pytest.mark.slow
@pytest.mark.parametrize("command", ["plan", "train", "predict"])
def test_a_full_disk_is_one_line_naming_the_file_and_leaves_no_temporaries(planned, tmp_path, capsys, monkeypatch,
                                                                          command):
    import shutil

    dataset, original = planned
    work = tmp_path / "work"
    if command == "plan":
        arguments = ["plan", str(dataset), "-o", str(work), "-j", "1"]
        folder = work
    else:
        shutil.copytree(original, work)
        if command == "train":
            arguments = ["train", str(work), "-c", "2d", "-f", "0", "--epochs", "1", "--iterations-per-epoch", "1",
                         "--num-workers", "0"]
        else:
            assert main(["train", str(work), "-c", "2d", "-f", "0", "--epochs", "1", "--iterations-per-epoch", "1",
                         "--num-workers", "0", "--no-validation"]) == 0
            arguments = ["predict", "-i", str(dataset / "imagesTr"), "-o", str(tmp_path / "out"), "-m", str(work),
                         "-c", "2d", "-f", "0"]
        folder = tmp_path
    capsys.readouterr()
    fail_when_full(monkeypatch)
    assert main(arguments) == 1
    error = [line for line in capsys.readouterr().err.splitlines() if line.strip() and "%|" not in line]  # no bars
    assert len(error) == 1 and "disk full while writing it" in error[0] and " free" in error[0], error
    assert not temporaries(folder)


# --- kill -9 at random points, then the same command again ---------------------------------------
def run_and_kill(arguments: list[str], seconds: float) -> None:
    process = subprocess.Popen([sys.executable, "-m", "autoseg.cli", *arguments], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env={**os.environ, "TQDM_DISABLE": "1"})
    time.sleep(seconds)
    if process.poll() is None:
        os.kill(process.pid, signal.SIGKILL)
    process.wait()


@pytest.mark.slow
def test_train_killed_at_random_points_resumes_to_complete_outputs(planned, tmp_path):
    import shutil

    _, original = planned
    work = tmp_path / "work"
    shutil.copytree(original, work)
    arguments = ["train", str(work), "-c", "2d", "-f", "0", "--epochs", "4", "--iterations-per-epoch", "3",
                 "--num-workers", "0"]
    rng = random.Random(7)
    for _ in range(2):
        run_and_kill(arguments + ["--resume"], rng.uniform(3.0, 9.0))
    finished = subprocess.run([sys.executable, "-m", "autoseg.cli", *arguments, "--resume"], capture_output=True,
                              text=True, env={**os.environ, "TQDM_DISABLE": "1"})
    assert finished.returncode == 0, finished.stderr
    fold = WorkDir(work).fold_dir("2d", 0)
    assert (fold / "checkpoint_final.pt").is_file() and (fold / "validation" / "summary.json").is_file()
    assert not temporaries(work) and not WorkDir(work).training_lock_path("2d", 0).exists()


@pytest.mark.slow
def test_predict_killed_at_random_points_completes_on_the_next_run(planned, tmp_path):
    import shutil

    from autoseg.io.images import image_file_problem

    dataset, original = planned
    work = tmp_path / "work"
    shutil.copytree(original, work)
    assert main(["train", str(work), "-c", "2d", "-f", "0", "--epochs", "1", "--iterations-per-epoch", "2",
                 "--num-workers", "0", "--no-validation"]) == 0
    out = tmp_path / "out"
    arguments = ["predict", "-i", str(dataset / "imagesTr"), "-o", str(out), "-m", str(work), "-c", "2d", "-f", "0",
                 "--save-probabilities"]
    rng = random.Random(11)
    for _ in range(2):
        run_and_kill(arguments, rng.uniform(2.0, 6.0))
    assert main(arguments) == 0
    outputs = sorted(out.glob("*.nii.gz"))
    assert len(outputs) == 6 and all(image_file_problem(path) is None for path in outputs)
    assert len(list(out.glob("*.npz"))) == 6 and not temporaries(out)
