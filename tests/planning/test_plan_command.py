"""End-to-end ``autoseg plan`` on a tiny dataset: files, reuse, edits, errors."""

from __future__ import annotations

import json

import numpy as np

from autoseg.cli import main
from autoseg.preprocessing.cache import load_cached_case
from autoseg.workdir import WorkDir


def run_plan(dataset, work, *extra):
    return main(["plan", str(dataset), "-o", str(work), "-j", "1", *extra])


def test_plan_writes_fingerprint_plans_and_cache(raw_dataset, tmp_path, capsys):
    work = tmp_path / "work"
    assert run_plan(raw_dataset, work) == 0
    fingerprint = json.loads((work / "dataset_fingerprint.json").read_text())
    assert fingerprint["num_cases"] == 3
    assert fingerprint["cases"]["case_000"]["spacing"] == [2.0, 1.0, 1.0]
    stats = fingerprint["channels"]["0"]
    assert stats["percentile_00_5"] < stats["median"] < stats["percentile_99_5"]
    assert fingerprint["classes"]["1"]["num_cases_present"] == 3
    plans = WorkDir(work).load_plans()
    assert plans.normalization[0].scheme == "ct"
    for name, configuration in plans.configurations.items():
        folder = WorkDir(work).cache_folder(configuration.data_identifier)
        image, label, properties = load_cached_case(folder, "case_001")
        assert isinstance(image, np.memmap) and image.dtype == np.float32
        assert image.shape[1:] == label.shape
        assert properties["geometry"]["shape"] == [8, 16, 16], name
    assert "3d_fullres" in capsys.readouterr().out


def test_rerun_skips_done_cases_and_keeps_edited_plans(raw_dataset, tmp_path, capsys):
    work = tmp_path / "work"
    assert run_plan(raw_dataset, work) == 0
    capsys.readouterr()
    data = json.loads((work / "plans.json").read_text())
    data["normalization"][0].update(scheme="ct_window", clip_low=-200.0, clip_high=500.0)
    (work / "plans.json").write_text(json.dumps(data))
    assert run_plan(raw_dataset, work) == 0
    output = capsys.readouterr().out
    assert "kept the existing" in output
    assert "3 preprocessed" in output  # the normalization changed, so the cache was redone
    assert run_plan(raw_dataset, work) == 0
    assert "0 preprocessed, 3 already done" in capsys.readouterr().out
    assert WorkDir(work).load_plans().normalization[0].scheme == "ct_window"


def test_ct_window_option(raw_dataset, tmp_path):
    work = tmp_path / "work"
    assert run_plan(raw_dataset, work, "--ct-window", "-200", "500", "--no-preprocess") == 0
    entry = WorkDir(work).load_plans().normalization[0]
    assert (entry.scheme, entry.clip_low, entry.clip_high) == ("ct_window", -200.0, 500.0)
    assert not (work / "preprocessed").exists()


def test_parallel_workers_give_the_same_cache(raw_dataset, tmp_path):
    assert main(["plan", str(raw_dataset), "-o", str(tmp_path / "a"), "-j", "1"]) == 0
    assert main(["plan", str(raw_dataset), "-o", str(tmp_path / "b"), "-j", "2"]) == 0
    for case in ("case_000", "case_002"):
        a = load_cached_case(tmp_path / "a" / "preprocessed" / "3d_fullres", case)
        b = load_cached_case(tmp_path / "b" / "preprocessed" / "3d_fullres", case)
        np.testing.assert_array_equal(a[0], b[0])
        np.testing.assert_array_equal(a[1], b[1])


def test_missing_dataset_is_a_one_line_error(tmp_path, capsys):
    assert run_plan(tmp_path / "nope", tmp_path / "work") == 1
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "nope" in error and "not found" in error


def test_unknown_configuration_is_an_error(raw_dataset, tmp_path, capsys):
    assert run_plan(raw_dataset, tmp_path / "work", "-c", "3d_verylowres") == 1
    assert "3d_verylowres" in capsys.readouterr().err


def test_plan_on_a_synthetic_anisotropic_ct_dataset(tmp_path):
    from autoseg.synthetic import SyntheticDatasetSpec, generate_synthetic_dataset

    dataset = generate_synthetic_dataset(tmp_path, SyntheticDatasetSpec(num_training=6, in_plane_shape=(32, 32)))
    work = tmp_path / "work"
    assert run_plan(dataset, work) == 0
    plans = WorkDir(work).load_plans()
    fullres = plans.configurations["3d_fullres"]
    assert fullres.target_spacing[0] > 2 * fullres.target_spacing[1]  # thick slices kept thick
    assert fullres.training.augmentation.rotate_in_plane_only
    assert plans.configurations["2d"].data_identifier == "2d"  # varying thickness: 2d keeps each case's slices
    image, label, properties = load_cached_case(work / "preprocessed" / "3d_fullres", "case_001")
    assert properties["thick_axis"] == 0
    assert abs(float(np.mean(image[0][label > 0]))) < 3  # CT z-scored with foreground statistics


def test_benchmark_stores_measured_speed(tmp_path, capsys):
    from helpers import make_tiny_work_dir

    dataset, work = make_tiny_work_dir(tmp_path)
    capsys.readouterr()
    assert main(["plan", str(dataset), "-o", str(work), "-j", "1", "--benchmark"]) == 0
    assert "iterations per hour" in capsys.readouterr().out
    for configuration in WorkDir(work).load_plans().configurations.values():
        speed = configuration.measured_speed
        assert speed["seconds_per_iteration"] > 0 and speed["threads"] >= 1 and speed["device"] == "cpu"
