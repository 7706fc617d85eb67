"""End-to-end prediction of folders: geometry, ensembles of folds, cascade, bad inputs, skipping."""

from __future__ import annotations

import shutil

import numpy as np
import pytest
from helpers import add_cascade, make_tiny_work_dir, on_grid_of, turned_copy, write_volume

from autoseg.cli import main
from autoseg.commands.train import train_and_validate
from autoseg.errors import AutosegInputError
from autoseg.inference.predict_folder import InferenceChoice, choose_models, predict_folder
from autoseg.io.images import read_image, read_label
from autoseg.planning.training_cost import TrainingLength
from autoseg.plans.training import IterationPlan
from autoseg.training.trainer import Trainer, TrainingOptions

pytestmark = pytest.mark.slow


def quick(work, configuration, fold):
    options = TrainingOptions(num_workers=0, progress=False)
    Trainer(work, configuration, fold, options, iteration_plan=IterationPlan(1, 2, 1)).run()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    dataset, work = make_tiny_work_dir(tmp_path_factory.mktemp("predict"), num_training=6, num_test=3)
    for fold in (0, 1):
        quick(work, "3d_fullres", fold)
    quick(work, "2d", 0)
    return dataset, work


def test_outputs_overlay_the_input_exactly(trained, tmp_path):
    dataset, work = trained
    report = predict_folder(work, dataset / "imagesTs", tmp_path / "out", InferenceChoice(["3d_fullres"]),
                            progress=False)
    assert len(report.predicted) == 3 and not report.failed
    assert set(report.seconds_per_case) == set(report.predicted) and report.peak_rss_bytes > 2**20
    assert "s per case" in report.summary() and "peak RAM" in report.summary()
    for image_path in sorted((dataset / "imagesTs").iterdir()):
        case_id = image_path.name.replace("_0000.nii.gz", "")
        _, image_geometry = read_image(image_path)
        segmentation, geometry = read_label(tmp_path / "out" / f"{case_id}.nii.gz")
        assert geometry == image_geometry  # shape, spacing, origin and direction
        assert set(np.unique(segmentation)) <= {0, 1, 2}


def test_folds_and_configurations_are_averaged(trained, tmp_path):
    dataset, work = trained
    choice = InferenceChoice(["3d_fullres", "2d"], folds=[0])
    report = predict_folder(work, dataset / "imagesTs", tmp_path / "out", choice, save_probabilities_too=True,
                            progress=False)
    assert len(report.predicted) == 3
    probabilities = np.load(tmp_path / "out" / "case_006.npz")["probabilities"].astype(np.float32)
    np.testing.assert_allclose(probabilities.sum(0), 1, atol=5e-3)
    assert (tmp_path / "out" / "case_006.json").is_file()


def test_rerun_skips_done_cases_unless_overwrite(trained, tmp_path):
    dataset, work = trained
    choice = InferenceChoice(["3d_fullres"], folds=[0])
    predict_folder(work, dataset / "imagesTs", tmp_path / "out", choice, progress=False)
    again = predict_folder(work, dataset / "imagesTs", tmp_path / "out", choice, progress=False)
    assert len(again.skipped) == 3 and not again.predicted
    forced = predict_folder(work, dataset / "imagesTs", tmp_path / "out", choice, overwrite=True, progress=False)
    assert len(forced.predicted) == 3


def test_a_damaged_output_is_predicted_again_and_temporaries_of_a_killed_run_removed(trained, tmp_path):
    import subprocess
    import sys

    from autoseg.utils.processes import this_host

    dataset, work = trained
    choice = InferenceChoice(["3d_fullres"], folds=[0])
    out = tmp_path / "out"
    predict_folder(work, dataset / "imagesTs", out, choice, progress=False)
    whole = (out / "case_007.nii.gz").read_bytes()
    (out / "case_007.nii.gz").write_bytes(whole[: len(whole) // 2])  # as a crash of another tool would leave it
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    temporary = out / f".case_008.tmp-{this_host()}-{ended.pid}-0123abcd.nii.gz"
    temporary.write_bytes(b"half")
    again = predict_folder(work, dataset / "imagesTs", out, choice, progress=False)
    assert again.predicted == ["case_007"] and sorted(again.skipped) == ["case_006", "case_008"]
    assert "case_007.nii.gz: file is truncated" in again.redone["case_007"]
    assert again.removed_temporaries == [temporary] and not temporary.exists()
    assert (out / "case_007.nii.gz").read_bytes() == whole


def test_an_output_that_is_a_file_or_unwritable_is_one_line(trained, tmp_path, capsys):
    import os

    dataset, work = trained
    (tmp_path / "taken").write_text("a file")
    arguments = ["predict", "-i", str(dataset / "imagesTs"), "-m", str(work), "-c", "3d_fullres", "-f", "0"]
    assert main([*arguments, "-o", str(tmp_path / "taken")]) == 1
    assert capsys.readouterr().err.strip().endswith("taken: exists and is a file, not a folder; give -o a folder")
    if os.geteuid() != 0:  # root writes anywhere
        (tmp_path / "readonly").mkdir(mode=0o555)
        assert main([*arguments, "-o", str(tmp_path / "readonly")]) == 1
        assert "the output folder is not writable" in capsys.readouterr().err


def test_nan_voxels_fail_the_case_and_the_command(trained, tmp_path, capsys):
    import SimpleITK as sitk

    dataset, work = trained
    inputs = tmp_path / "in"
    inputs.mkdir()
    image = sitk.ReadImage(str(dataset / "imagesTs" / "case_006_0000.nii.gz"), sitk.sitkFloat32)
    array = sitk.GetArrayFromImage(image)
    array[0, 0, 0] = np.nan
    damaged = sitk.GetImageFromArray(array)
    damaged.CopyInformation(image)
    sitk.WriteImage(damaged, str(inputs / "case_006_0000.nii.gz"))
    code = main(["predict", "-i", str(inputs), "-o", str(tmp_path / "out"), "-m", str(work), "-c", "3d_fullres",
                 "-f", "0", "--no-tta"])
    assert code == 1 and "case_006_0000.nii.gz: contains 1 NaN/Inf voxels" in capsys.readouterr().err
    assert not list((tmp_path / "out").iterdir())


def test_bad_cases_are_reported_and_the_others_predicted(trained, tmp_path):
    dataset, work = trained
    inputs = tmp_path / "in"
    shutil.copytree(dataset / "imagesTs", inputs)
    (inputs / "case_007_0000.nii.gz").write_bytes(b"not an image")  # unreadable
    shutil.copy(inputs / "case_006_0000.nii.gz", inputs / "case_006_0001.nii.gz")  # extra channel
    write_volume(inputs / "flat_0000.nii.gz", np.zeros((4, 4), np.float32), (1.0, 1.0))  # 2D image, 3D model
    shutil.copy(inputs / "case_008_0000.nii.gz", inputs / "nochannel.nii.gz")
    out = tmp_path / "out"
    code = main(["predict", "-i", str(inputs), "-o", str(out), "-m", str(work), "-c", "3d_fullres", "-f", "0",
                 "--no-tta"])
    assert code == 1
    report = predict_folder(work, inputs, tmp_path / "out2", InferenceChoice(["3d_fullres"], folds=[0]),
                            progress=False)
    assert report.predicted == ["case_008"]
    assert "cannot be read" in report.failed["case_007"]
    assert "channel 1" in report.failed["case_006"]
    assert "2D image" in report.failed["flat"]
    assert "_XXXX" in report.failed["nochannel"]
    written = sorted(p.name for p in (tmp_path / "out2").iterdir())
    assert written == ["case_008.nii.gz", "report.csv", "report.json"]  # nothing partial of the failed cases


def test_without_inference_plan_a_configuration_is_required(trained):
    _, work = trained
    with pytest.raises(AutosegInputError, match="-c"):
        choose_models(work, None, None, None)


def test_cascade_runs_end_to_end(tmp_path):
    dataset, work = make_tiny_work_dir(tmp_path, num_training=5, num_test=1)
    add_cascade(work)
    options = TrainingOptions(num_workers=0, progress=False)
    with pytest.raises(AutosegInputError, match="-f all"):
        Trainer(work, "3d_cascade_fullres", 0, options)
    for fold in range(5):  # the validation outputs of every fold feed the cascade
        train_and_validate(work, "3d_lowres", fold, options, TrainingLength(epochs=1, iterations_per_epoch=1))
    train_and_validate(work, "3d_cascade_fullres", 0, options, TrainingLength(epochs=1, iterations_per_epoch=1))
    assert (work / "preprocessed" / "3d_fullres__from_3d_lowres" / "case_000.npy").is_file()
    report = predict_folder(work, dataset / "imagesTs", tmp_path / "out", InferenceChoice(["3d_cascade_fullres"]),
                            progress=False)
    assert report.predicted == ["case_005"]
    _, geometry = read_label(tmp_path / "out" / "case_005.nii.gz")
    assert geometry == read_image(dataset / "imagesTs" / "case_005_0000.nii.gz")[1]


def test_channels_last_wrapper_gives_the_same_probabilities():
    import torch

    from autoseg.inference.predictor import ChannelsLastNetwork

    torch.manual_seed(0)
    network = torch.nn.Sequential(torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.GroupNorm(4, 4),
                                  torch.nn.LeakyReLU(), torch.nn.Conv3d(4, 3, 1)).eval()
    x = torch.randn(2, 1, 6, 8, 5)
    with torch.no_grad():
        expected = network(x)
        wrapped = ChannelsLastNetwork(network)
        result = wrapped(x)
    assert next(wrapped.parameters()).is_contiguous(memory_format=torch.channels_last_3d)
    torch.testing.assert_close(result, expected, rtol=1e-4, atol=1e-5)
    flat = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.LeakyReLU(), torch.nn.Conv2d(4, 3, 1))
    x = torch.randn(2, 1, 9, 7)
    with torch.no_grad():
        expected = flat(x)
        wrapped = ChannelsLastNetwork(flat.eval(), dimension=2)
        result = wrapped(x)
    assert next(wrapped.parameters()).is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(result, expected, rtol=1e-4, atol=1e-5)


def test_dicom_series_are_predicted_like_the_same_volume_in_nifti(trained, tmp_path):
    """A CT series (shuffled files, intercept -1024) beside a second series in one folder, a bad series
    in another: the two good ones are segmented in their own geometry exactly as their NIfTI copy."""
    pytest.importorskip("pydicom")
    from autoseg.synthetic.dicom_series import write_ct_series

    dataset, work = trained
    image_path = sorted((dataset / "imagesTs").iterdir())[0]
    volume, geometry = read_image(image_path)
    hu = np.clip(np.rint(volume), -1024, 3000).astype(np.int32)
    spacing, origin = geometry.spacing, geometry.sitk_origin
    rng = np.random.default_rng(0)
    patient = tmp_path / "dicom" / "patient1"
    write_ct_series(hu, patient, spacing, origin, series_number=2, file_prefix="a",
                    file_order=rng.permutation(hu.shape[0]))
    write_ct_series(hu[::-1].copy(), patient, spacing, origin, series_number=4, file_prefix="b")
    write_ct_series(hu, tmp_path / "dicom" / "broken", spacing, origin)
    sorted((tmp_path / "dicom" / "broken").glob("*.dcm"))[2].unlink()  # a missing slice
    report = predict_folder(work, tmp_path / "dicom", tmp_path / "out", InferenceChoice(["3d_fullres"]),
                            progress=False)
    assert sorted(report.predicted) == ["patient1_s2", "patient1_s4"]
    assert "missing slice" in report.failed["broken"] and "\n" not in report.failed["broken"]
    nifti = tmp_path / "nifti"
    nifti.mkdir()
    write_volume(nifti / "case_0000.nii.gz", hu.astype(np.float32), spacing, origin)
    predict_folder(work, nifti, tmp_path / "reference", InferenceChoice(["3d_fullres"]), progress=False)
    reference, reference_geometry = read_label(tmp_path / "reference" / "case.nii.gz")
    segmentation, segmentation_geometry = read_label(tmp_path / "out" / "patient1_s2.nii.gz")
    assert segmentation_geometry == reference_geometry
    np.testing.assert_array_equal(segmentation, reference)


def test_dicom_seg_output_references_the_series_and_reads_back_with_the_same_masks(trained, tmp_path, capsys):
    pytest.importorskip("highdicom")
    import highdicom
    import pydicom

    from autoseg.io.dicom import checked_slices, series_at
    from autoseg.synthetic.dicom_series import write_ct_series

    dataset, work = trained
    volume, geometry = read_image(sorted((dataset / "imagesTs").iterdir())[0])
    hu = np.clip(np.rint(volume), -1024, 3000).astype(np.int32)
    series = tmp_path / "in" / "patient7"
    write_ct_series(hu, series, geometry.spacing, geometry.sitk_origin,
                    file_order=np.random.default_rng(1).permutation(hu.shape[0]))
    shutil.copy(sorted((dataset / "imagesTs").iterdir())[1], tmp_path / "in" / "nifti_0000.nii.gz")
    concepts = tmp_path / "concepts.json"
    concepts.write_text('{"organ": {"category": ["91723000", "SCT", "Anatomical structure"], '
                        '"type": ["10200004", "SCT", "Liver"]}}')
    arguments = ["predict", "-i", str(tmp_path / "in"), "-m", str(work), "-c", "3d_fullres", "--no-tta"]
    assert main([*arguments, "-o", str(tmp_path / "seg"), "--output-format", "dicom-seg",
                 "--seg-concepts", str(concepts)]) == 1  # the NIfTI case cannot become a DICOM-SEG
    assert "nifti_0000.nii.gz: not a DICOM series" in capsys.readouterr().err
    assert main([*arguments, "-o", str(tmp_path / "nifti")]) == 0
    expected, _ = read_label(tmp_path / "nifti" / "patient7.nii.gz")
    seg = highdicom.seg.segread(tmp_path / "seg" / "patient7.dcm")
    sources = [pydicom.dcmread(path) for path in checked_slices(series_at(series))]
    pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=[s.SOPInstanceUID for s in sources],
                                               segment_numbers=[1, 2])
    np.testing.assert_array_equal(pixels[..., 0], expected == 1)
    np.testing.assert_array_equal(pixels[..., 1], expected == 2)
    assert seg.StudyInstanceUID == sources[0].StudyInstanceUID
    assert seg.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    first = seg.SegmentSequence[0]
    assert first.SegmentLabel == "organ" and first.SegmentedPropertyTypeCodeSequence[0].CodeMeaning == "Liver"
    assert first.SegmentAlgorithmName == "autoseg" and seg.SoftwareVersions == autoseg_version()
    capsys.readouterr()
    main([*arguments, "-o", str(tmp_path / "seg"), "--output-format", "dicom-seg"])  # done cases are kept
    assert "0 predicted, 1 already done" in capsys.readouterr().out


def autoseg_version() -> str:
    from autoseg import __version__

    return __version__


def test_a_permuted_and_flipped_copy_is_segmented_exactly_like_the_original(trained, tmp_path):
    dataset, work = trained
    source = sorted((dataset / "imagesTs").iterdir())[0]
    (tmp_path / "in").mkdir()
    shutil.copy(source, tmp_path / "in" / "original_0000.nii.gz")
    turned_copy(source, tmp_path / "in" / "turned_0000.nii.gz")
    report = predict_folder(work, tmp_path / "in", tmp_path / "out", InferenceChoice(["3d_fullres", "2d"]),
                            progress=False)
    assert sorted(report.predicted) == ["original", "turned"]
    original, original_geometry = read_label(tmp_path / "out" / "original.nii.gz")
    turned, turned_geometry = read_label(tmp_path / "out" / "turned.nii.gz")
    assert turned_geometry == read_image(tmp_path / "in" / "turned_0000.nii.gz")[1]  # written in its own geometry
    assert turned.shape != original.shape
    np.testing.assert_array_equal(on_grid_of(tmp_path / "out" / "turned.nii.gz",
                                             tmp_path / "out" / "original.nii.gz"), original)


def test_every_run_writes_a_case_report_and_previews_on_request(trained, tmp_path, capsys):
    import json

    dataset, work = trained
    arguments = ["predict", "-i", str(dataset / "imagesTs"), "-m", str(work), "-c", "3d_fullres", "--no-tta"]
    assert main([*arguments, "-o", str(tmp_path / "out"), "-f", "0", "1", "--preview"]) == 0
    assert "report.csv / report.json" in capsys.readouterr().out
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert len(report["cases"]) == 3 and report["agreement_threshold"] == 0.8
    for case, entry in report["cases"].items():
        assert 0 <= entry["agreement"] <= 1 and entry["flag"] in ("ok", "review")  # two folds compared
        assert set(entry["classes"]) == {"organ", "lesion"}
        assert (tmp_path / "out" / f"{case}_preview.png").stat().st_size > 1000
    assert main([*arguments, "-o", str(tmp_path / "single"), "-f", "0"]) == 0
    single = json.loads((tmp_path / "single" / "report.json").read_text())
    assert {entry["flag"] for entry in single["cases"].values()} == {"unknown"}  # one network: nothing to compare


def test_an_exported_bundle_predicts_exactly_like_its_work_folder(trained, tmp_path, monkeypatch, capsys):
    import json
    import zipfile

    dataset, work = trained
    monkeypatch.setenv("AUTOSEG_CACHE", str(tmp_path / "cache"))
    bundle = tmp_path / "model.zip"
    assert main(["export", str(work), "-o", str(bundle), "-c", "3d_fullres"]) == 0
    assert "folds [0, 1]" in capsys.readouterr().out
    with zipfile.ZipFile(bundle) as archive:
        manifest = json.loads(archive.read("manifest.json"))
        assert {"plans.json", "inference_plan.json", "dataset.json",
                "results/3d_fullres/fold_1/checkpoint_final.pt"} <= set(archive.namelist())
    assert set(manifest["members"]) == set(archive.namelist()) - {"manifest.json"}
    arguments = ["predict", "-i", str(dataset / "imagesTs"), "--no-tta"]
    assert main([*arguments, "-o", str(tmp_path / "from_work"), "-m", str(work), "-c", "3d_fullres"]) == 0
    assert main([*arguments, "-o", str(tmp_path / "from_bundle"), "-m", str(bundle)]) == 0
    for path in sorted((tmp_path / "from_work").glob("*.nii.gz")):
        np.testing.assert_array_equal(read_label(path)[0], read_label(tmp_path / "from_bundle" / path.name)[0])

    def rewritten(name, change):
        """A copy of the bundle with one member (or the manifest) changed."""
        target = tmp_path / name
        with zipfile.ZipFile(bundle) as source, zipfile.ZipFile(target, "w") as copy:
            for item in source.namelist():
                copy.writestr(item, change(item, source.read(item)))
        return target

    damaged = rewritten("damaged.zip", lambda item, data: data + b"x" if item == "plans.json" else data)
    old = rewritten("old.zip", lambda item, data: data.replace(b'"format_version": 1', b'"format_version": 99')
                    if item == "manifest.json" else data)
    for path, message in ((damaged, "plans.json does not match its checksum"),
                          (old, "bundle format 99 / plans version")):
        capsys.readouterr()
        assert main([*arguments, "-o", str(tmp_path / "x"), "-m", str(path)]) == 1
        error = capsys.readouterr().err.strip()
        assert message in error and "\n" not in error
    assert not (tmp_path / "cache" / "models").exists() or all(
        (entry / "manifest.json").is_file() for entry in (tmp_path / "cache" / "models").iterdir())


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino", "auto"])
def test_cpu_backends_segment_like_torch(trained, tmp_path, monkeypatch, backend):
    if backend != "auto":
        pytest.importorskip(backend)
    monkeypatch.setenv("AUTOSEG_CACHE", str(tmp_path / "cache"))
    dataset, work = trained
    choice = InferenceChoice(["3d_fullres", "2d"], folds=[0])
    predict_folder(work, dataset / "imagesTs", tmp_path / "torch", choice, progress=False)
    report = predict_folder(work, dataset / "imagesTs", tmp_path / backend, choice, progress=False, backend=backend)
    assert len(report.predicted) == 3 and all("backend" in line for line in report.backends)
    flipped = total = 0
    for path in sorted((tmp_path / "torch").glob("*.nii.gz")):
        reference, other = read_label(path)[0], read_label(tmp_path / backend / path.name)[0]
        flipped += int((reference != other).sum())
        total += reference.size
    assert flipped <= 1e-3 * total  # float differences may flip a rare boundary voxel


def test_tta_over_named_axes_only(trained, tmp_path, capsys):
    dataset, work = trained
    assert main(["predict", "-i", str(dataset / "imagesTs"), "-o", str(tmp_path / "out"), "-m", str(work),
                 "-c", "3d_fullres", "--tta", "yx"]) == 0
    assert "test-time mirroring over axes yx (command line)" in capsys.readouterr().out
    assert len(list((tmp_path / "out").glob("*.nii.gz"))) == 3


def test_sharded_prediction_in_three_parts_gives_the_files_of_one_run(trained, tmp_path):
    import json

    from autoseg.inference.predict_folder import cases_of_part

    dataset, work = trained
    choice = InferenceChoice(["3d_fullres"], folds=[0])
    predict_folder(work, dataset / "imagesTs", tmp_path / "whole", choice, progress=False, use_mirroring=False)
    parts = [predict_folder(work, dataset / "imagesTs", tmp_path / "sharded", choice, progress=False,
                            use_mirroring=False, num_parts=3, part_id=part) for part in range(3)]
    assert sorted(case for report in parts for case in report.predicted) == ["case_006", "case_007", "case_008"]
    assert [len(report.predicted) for report in parts] == [1, 1, 1]
    whole = sorted(p.name for p in (tmp_path / "whole").iterdir())
    assert sorted(p.name for p in (tmp_path / "sharded").iterdir() if p.name != ".report.lock") == whole
    for path in (tmp_path / "whole").glob("*.nii.gz"):
        np.testing.assert_array_equal(read_label(path)[0], read_label(tmp_path / "sharded" / path.name)[0])
    assert len(json.loads((tmp_path / "sharded" / "report.json").read_text())["cases"]) == 3
    rerun = predict_folder(work, dataset / "imagesTs", tmp_path / "sharded", choice, progress=False, num_parts=3,
                           part_id=1)  # a re-run only fills gaps
    assert rerun.predicted == [] and len(rerun.skipped) == 1
    assert cases_of_part(["c", "a", "b", "d"], 3, 0) == ["a", "d"]
    with pytest.raises(AutosegInputError, match="--part-id must be in 0..2"):
        cases_of_part(["a"], 3, 3)


def test_jobs_lists_the_folds_still_to_train(tmp_path, capsys):
    dataset, work = make_tiny_work_dir(tmp_path, num_training=5)
    add_cascade(work)
    from autoseg.workdir import WorkDir

    done = WorkDir(work).validation_dir("3d_fullres", 2)
    done.mkdir(parents=True)
    (done / "summary.json").write_text("{}")
    assert main(["jobs", str(work), "--time-budget", "10m"]) == 0
    output = capsys.readouterr()
    lines = output.out.splitlines()
    assert f"autoseg train {work} -c 3d_fullres -f 0 --time-budget 10m" in lines
    assert not any("-c 3d_fullres -f 2 " in line + " " for line in lines)  # validated already
    assert sum("-c 3d_lowres" in line for line in lines) == 5 and not any("cascade" in line for line in lines)
    assert "3d_cascade_fullres waits for every fold of 3d_lowres" in output.err
    assert len(lines) == 5 + 5 + 4 + 5  # 2d, 2.5d, 3d_fullres (fold 2 done), 3d_lowres


def test_a_bundle_with_onnx_networks_spares_the_predicting_machine_the_export(trained, tmp_path, monkeypatch):
    pytest.importorskip("onnxruntime")
    dataset, work = trained
    monkeypatch.setenv("AUTOSEG_CACHE", str(tmp_path / "exporting"))
    assert main(["export", str(work), "-o", str(tmp_path / "model.zip"), "-c", "3d_fullres", "--onnx"]) == 0
    monkeypatch.setenv("AUTOSEG_CACHE", str(tmp_path / "predicting"))  # another machine
    assert main(["predict", "-i", str(dataset / "imagesTs"), "-o", str(tmp_path / "out"), "-m",
                 str(tmp_path / "model.zip"), "--backend", "onnxruntime", "--no-tta"]) == 0
    shipped = sorted(p.name for p in (tmp_path / "exporting" / "onnx").iterdir())
    assert len(shipped) == 2 and sorted(p.name for p in (tmp_path / "predicting" / "onnx").iterdir()) == shipped


def test_validate_only_scores_a_trained_fold_and_predict_follows_its_axis_measurement(trained, tmp_path, capsys):
    from autoseg.inference.mirroring import choose_mirroring
    from autoseg.utils.files import read_json
    from autoseg.workdir import WorkDir

    work = tmp_path / "work"
    shutil.copytree(trained[1], work)
    assert main(["train", str(work), "-c", "3d_fullres", "-f", "0", "--validate-only"]) == 0
    assert "fold 0 of 3d_fullres validated again: mean foreground Dice" in capsys.readouterr().out
    summary = read_json(WorkDir(work).validation_dir("3d_fullres", 0) / "summary.json")["summary"]
    assert set(summary["mirroring"]["dice_per_setting"]) == {"all", "none", "z", "y", "x"}
    settings, reason = choose_mirroring(work, ["3d_fullres"], [0])
    assert settings["3d_fullres"] in (True, False, "z", "y", "x") and "pass(es) per window" in reason
    assert main(["train", str(work), "-c", "3d_fullres", "-f", "3", "--validate-only"]) == 1
    assert "fold_3/checkpoint_final.pt: not found; train the fold" in capsys.readouterr().err
