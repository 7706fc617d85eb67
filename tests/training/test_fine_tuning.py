"""Fine-tuning from a trained model: which tensors load, the input-layer mapping, the schedule, plans taken
from a model, and the whole flow (bundle -> plan --plans-from -> train --init-from -> resume, time budget)."""

from __future__ import annotations

import json
import re
import shutil
import zipfile

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from helpers import make_tiny_work_dir, planner_fingerprint

from autoseg.cli import main
from autoseg.errors import AutosegInputError
from autoseg.model.builders import build_network
from autoseg.plans.network import NetworkConfig
from autoseg.training.fine_tuning import (
    LOADED,
    NEW,
    InputLayout,
    NetworkFacts,
    WeightTransfer,
    adapted_input_weight,
    choose_fine_tuning_schedule,
    describe_transfer,
    transfer_weights,
)
from autoseg.workdir import WorkDir

LABELS = {"background": 0, "organ": 1, "lesion": 2}
MERGED = {"background": 0, "foreground": 1}


def tiny_network(dimension: int, in_channels: int, num_classes: int, features=(4, 8, 8)):
    kernel = [3] * dimension
    config = NetworkConfig(architecture="unet", dimension=dimension, features_per_stage=list(features),
                           kernel_sizes=[kernel] * len(features),
                           strides=[[1] * dimension] + [[2] * dimension] * (len(features) - 1),
                           n_blocks_per_stage_encoder=[2] * len(features),
                           n_conv_per_stage_decoder=[2] * (len(features) - 1))
    return build_network(config, in_channels, num_classes)


def facts(dimension=3, channels=1, slices=1, classes=3, labels=None, extra=0) -> NetworkFacts:
    return NetworkFacts(dimension, InputLayout(channels, slices, extra), classes, dict(labels or LABELS))


# -- which tensors load ---------------------------------------------------------------------------------------


def test_a_network_of_the_same_task_loads_every_tensor():
    source, target = tiny_network(3, 1, 3), tiny_network(3, 1, 3)
    transfer = transfer_weights(source.state_dict(), target.state_dict(), facts(), facts())
    assert len(transfer.loaded) == len(transfer.state) and not transfer.reinitialised
    for name, value in source.state_dict().items():
        assert torch.equal(transfer.state[name], value)
    assert describe_transfer(transfer, "model.zip fold 0").endswith(
        f"{len(transfer.state)} of {len(transfer.state)} tensors loaded")


def test_other_labels_reinitialise_the_output_layers_only():
    source, target = tiny_network(3, 1, 3), tiny_network(3, 1, 2)
    fresh = target.state_dict()
    transfer = transfer_weights(source.state_dict(), fresh, facts(), facts(classes=2, labels=MERGED))
    assert transfer.reinitialised and all(name.startswith("heads.") for name in transfer.reinitialised)
    assert len(transfer.loaded) + len(transfer.reinitialised) == len(fresh)
    for name in transfer.reinitialised:
        assert torch.equal(transfer.state[name], fresh[name])
    line = describe_transfer(transfer, "model.zip fold 0")
    assert line.startswith(f"initialised from model.zip fold 0: {len(transfer.loaded)} of {len(fresh)} tensors")
    assert line.endswith("re-initialised: the output layers (3 -> 2 outputs)")


def test_labels_renamed_with_the_same_count_still_reinitialise_the_output_layers():
    network = tiny_network(3, 1, 3)
    renamed = {"background": 0, "liver": 1, "tumour": 2}
    transfer = transfer_weights(network.state_dict(), network.state_dict(), facts(), facts(labels=renamed))
    assert transfer.reinitialised and "other labels" in describe_transfer(transfer, "m")


def test_other_image_channels_reinitialise_the_first_convolution():
    source, target = tiny_network(3, 1, 3), tiny_network(3, 2, 3)
    transfer = transfer_weights(source.state_dict(), target.state_dict(), facts(), facts(channels=2))
    assert transfer.reinitialised and not any(name.startswith("heads.") for name in transfer.reinitialised)
    assert "the first convolution (1 -> 2 image channels)" in describe_transfer(transfer, "m")


def test_2d_weights_into_a_3d_network_are_one_line():
    with pytest.raises(AutosegInputError, match=r"^model.zip fold 0 holds a 2D network and this configuration "
                                                r"trains a 3D one"):
        transfer_weights(tiny_network(2, 1, 3).state_dict(), tiny_network(3, 1, 3).state_dict(), facts(2), facts(3),
                         "model.zip fold 0")


def test_another_topology_is_refused_not_loaded_in_part():
    source, target = tiny_network(3, 1, 3, (4, 8, 8)), tiny_network(3, 1, 3, (8, 16, 16))
    with pytest.raises(AutosegInputError, match=r"its network does not fit .*--plans-from MODEL"):
        transfer_weights(source.state_dict(), target.state_dict(), facts(), facts(), "model.zip fold 0")
    deeper = tiny_network(3, 1, 3, (4, 8, 8, 8))
    with pytest.raises(AutosegInputError, match="tensors differ"):
        transfer_weights(source.state_dict(), deeper.state_dict(), facts(), facts())


# -- the input layer between 2d, 2.5d and a cascade --------------------------------------------------------------


def test_2d_weights_widened_to_2p5d_give_the_2d_output_where_neighbours_equal_the_slice():
    torch.manual_seed(0)
    source, target = tiny_network(2, 1, 3), tiny_network(2, 5, 3)
    transfer = transfer_weights(source.state_dict(), target.state_dict(), facts(2), facts(2, slices=5))
    assert transfer.adapted and not transfer.reinitialised
    target.load_state_dict(transfer.state)
    for network in (source, target):
        network.eval()
        network.deep_supervision = False
    slice_ = torch.randn(1, 1, 16, 16)
    with torch.no_grad():
        assert torch.allclose(target(slice_.repeat(1, 5, 1, 1)), source(slice_), atol=1e-5)


def test_input_weights_map_slices_on_the_centre_and_keep_extra_channels():
    weight = torch.arange(2 * 5 + 1, dtype=torch.float32).reshape(1, 11, 1, 1)  # 2 channels x 5 slices + 1 extra
    narrowed = adapted_input_weight(weight, InputLayout(2, 5, 1), InputLayout(2, 3, 1))
    # channel 0 slices 0..4 hold 0..4: centre 3 keeps 1, 2, 3 and takes the cut ends (0 and 4) on it
    assert narrowed.flatten().tolist() == [1, 2 + 0 + 4, 3, 6, 7 + 5 + 9, 8, 10]
    widened = adapted_input_weight(torch.ones(1, 2, 1, 1), InputLayout(2), InputLayout(2, 3, 1))
    assert widened.flatten().tolist() == [0, 1, 0, 0, 1, 0, 0]  # an extra channel the model lacked: zero
    with pytest.raises(ValueError):
        adapted_input_weight(weight, InputLayout(2, 5, 1), InputLayout(3, 5, 1))


# -- the schedule -------------------------------------------------------------------------------------------------


def test_the_schedule_freezes_loaded_layers_only_after_a_reinitialisation():
    reinitialised = choose_fine_tuning_schedule(WeightTransfer({}, loaded=["a"], reinitialised=["heads.0.weight"]))
    assert reinitialised.frozen(LOADED, 0.05) and not reinitialised.frozen(NEW, 0.05)
    assert reinitialised.factor(LOADED, 0.05) == 0 and reinitialised.factor(NEW, 0.05) == 1
    assert reinitialised.factor(LOADED, 0.15) == pytest.approx(0.5 * 0.5)  # half-way through the warm-up
    assert reinitialised.factor(LOADED, 0.5) == pytest.approx(0.5) and "frozen" in reinitialised.reason
    everything = choose_fine_tuning_schedule(WeightTransfer({}, loaded=["a"]))
    assert everything.frozen_fraction == 0 and not everything.frozen(LOADED, 0.0)
    assert everything.factor(LOADED, 0.05) == pytest.approx(0.5 * 0.5) and everything.factor(LOADED, 0.3) == 0.5


# -- plans taken from a model ---------------------------------------------------------------------------------------


def planned(shape, spacing, labels=None):
    from autoseg.planning.hardware import cpu_budget
    from autoseg.planning.planner import plan_experiment

    fingerprint = planner_fingerprint(shape, spacing)
    if labels is not None:
        fingerprint["labels"] = labels
    return plan_experiment(fingerprint, "/data", cpu_budget(24 * 2**30)), fingerprint


def test_plans_from_a_model_keep_its_networks_and_say_what_differs():
    from autoseg.planning.transfer import plans_from_model

    model, _ = planned((36, 50, 35), (1.0, 1.0, 1.0))
    own, fingerprint = planned((60, 90, 80), (1.5, 0.8, 0.8), labels=MERGED)
    transferred = plans_from_model(own, model, "model.zip sha256 ab12", fingerprint)
    plans = transferred.plans
    assert plans.labels == MERGED and set(plans.configurations) == set(model.configurations)
    for name, configuration in plans.configurations.items():
        theirs = model.configurations[name]
        assert configuration.network == theirs.network and configuration.patch_size == theirs.patch_size
        assert configuration.target_spacing == theirs.target_spacing and configuration.measured_speed is None
        assert "model.zip sha256 ab12" in configuration.reasons["transferred"]
    fullres = plans.configurations["3d_fullres"]
    assert fullres.median_image_shape != model.configurations["3d_fullres"].median_image_shape
    assert "model.zip sha256 ab12" in plans.reasons["plans_from"]
    assert any(line.startswith("3d_fullres: spacing (1, 1, 1) mm instead of") for line in transferred.differences)
    assert any(line.startswith("labels: ") and "re-initialises the output layers" in line
               for line in transferred.differences)


# -- the whole flow -----------------------------------------------------------------------------------------------


TRAIN = ["--epochs", "2", "--iterations-per-epoch", "3", "--num-workers", "0"]


def merged_copy(dataset, target):
    """``dataset`` with every foreground label as one (nnU-Net raw layout)."""
    shutil.copytree(dataset / "imagesTr", target / "imagesTr")
    (target / "labelsTr").mkdir(parents=True)
    for path in sorted((dataset / "labelsTr").glob("*.nii.gz")):
        image = sitk.ReadImage(str(path))
        merged = sitk.GetImageFromArray((sitk.GetArrayFromImage(image) > 0).astype(np.uint8))
        merged.CopyInformation(image)
        sitk.WriteImage(merged, str(target / "labelsTr" / path.name))
    description = json.loads((dataset / "dataset.json").read_text())
    description["labels"] = MERGED
    (target / "dataset.json").write_text(json.dumps(description))
    return target


@pytest.fixture
def model(tmp_path, monkeypatch):
    """A bundle of a tiny trained 3d_fullres and 2d, and the dataset it was trained on."""
    monkeypatch.setenv("AUTOSEG_CACHE", str(tmp_path / "cache"))
    dataset, work = make_tiny_work_dir(tmp_path / "source", num_training=5)
    for configuration in ("3d_fullres", "2d"):
        assert main(["train", str(work), "-c", configuration, "-f", "0", "--no-validation", *TRAIN]) == 0
    bundle = tmp_path / "model.zip"
    assert main(["export", str(work), "-o", str(bundle), "-c", "3d_fullres", "2d"]) == 0
    return bundle, dataset


@pytest.mark.slow
def test_fine_tuning_from_a_bundle_to_merged_labels_records_and_resumes(model, tmp_path, capsys):
    bundle, dataset = model
    target = merged_copy(dataset, tmp_path / "Dataset902_Merged")
    work = tmp_path / "work"
    capsys.readouterr()
    assert main(["plan", str(target), "-o", str(work), "-j", "1", "--plans-from", str(bundle)]) == 0
    printed = capsys.readouterr().out
    assert "from the model: labels:" in printed
    plans = WorkDir(work).load_plans()
    source_plans = json.loads(zipfile.ZipFile(bundle).read("plans.json"))
    assert plans.configurations["3d_fullres"].network.features_per_stage == \
        source_plans["configurations"]["3d_fullres"]["network"]["features_per_stage"]
    assert str(bundle) in plans.reasons["plans_from"]

    assert main(["train", str(work), "-c", "3d_fullres", "-f", "0", "--init-from", str(bundle), *TRAIN]) == 0
    printed = capsys.readouterr().out
    assert "initialised from model.zip fold 0 (3d_fullres):" in printed
    assert "re-initialised: the output layers (3 -> 2 outputs)" in printed
    record = WorkDir(work).read_run_record("3d_fullres", 0)
    initialisation = record["initialisation"]
    assert initialisation["loaded"] == initialisation["tensors"] - len(initialisation["reinitialised"])
    assert initialisation["schedule"]["frozen_fraction"] > 0
    checkpoint = torch.load(WorkDir(work).checkpoint_path("3d_fullres", 0, "final"), weights_only=True)
    assert checkpoint["initialisation"]["summary"] == initialisation["summary"]
    assert [group["name"] for group in checkpoint["optimizer"]["param_groups"]] == [LOADED, NEW]

    # a resumed fine-tuning keeps its groups and does not load the model again
    assert main(["train", str(work), "-c", "3d_fullres", "-f", "0", "--init-from", str(bundle), "--resume",
                 "--epochs", "3", "--iterations-per-epoch", "3", "--num-workers", "0", "--no-validation"]) == 0
    assert "initialised from" not in capsys.readouterr().out

    # a time budget works as from scratch; the model's network is kept
    assert main(["train", str(work), "-c", "auto", "-f", "1", "--init-from", str(bundle), "--init-fold", "0",
                 "--time-budget", "20s", "--num-workers", "0", "--no-validation"]) == 0
    printed = capsys.readouterr().out
    assert "--init-from: training 3d_fullres" in printed and "initialised from model.zip fold 0" in printed
    record = WorkDir(work).read_run_record("3d_fullres", 1)
    assert record["initialisation"]["fold"] == 0
    # the iterations rule is measured from random weights: no warning that a fine-tuned class stays unlearned
    assert not any("stay unlearned" in line or "but the network is kept" in line for line in record["decisions"])


@pytest.mark.slow
def test_2d_weights_fine_tune_a_2p5d_configuration(model, tmp_path, capsys):
    bundle, dataset = model
    work = tmp_path / "work"
    assert main(["plan", str(dataset), "-o", str(work), "-j", "1", "--plans-from", str(bundle)]) == 0
    plans = json.loads((work / "plans.json").read_text())
    plans["configurations"]["2.5d"]["network"] = plans["configurations"]["2d"]["network"]
    (work / "plans.json").write_text(json.dumps(plans))
    capsys.readouterr()
    # the bundle holds no 2.5d: it starts from the model's 2d, the slices aligned on the centre
    assert main(["train", str(work), "-c", "2.5d", "-f", "0", "--init-from", str(bundle), "--no-validation",
                 *TRAIN]) == 0
    printed = capsys.readouterr().out
    assert "initialised from model.zip fold 0 (2d):" in printed and "the first convolution adapted (1 -> " in printed
    assert WorkDir(work).checkpoint_path("2.5d", 0, "final").is_file()


@pytest.mark.slow
def test_a_region_dataset_with_ignored_voxels_fine_tunes_from_a_class_model(model, tmp_path, capsys):
    from test_regions_end_to_end import declare_regions
    from test_sparse_labels import ignore_half_of_the_slices

    bundle, dataset = model
    target = tmp_path / "Dataset903_Regions"
    shutil.copytree(dataset, target)
    ignore_half_of_the_slices(target)
    declare_regions(target, {"background": 0, "foreground": [1, 2], "lesion": [2]}, [1, 2])
    work = tmp_path / "work"
    assert main(["plan", str(target), "-o", str(work), "-j", "1", "--plans-from", str(bundle)]) == 0
    plans = WorkDir(work).load_plans()
    assert plans.is_region_based and plans.ignore_label == 3
    capsys.readouterr()
    assert main(["train", str(work), "-c", "3d_fullres", "-f", "0", "--init-from", str(bundle), *TRAIN]) == 0
    assert "re-initialised: the output layers (3 -> 2 outputs)" in capsys.readouterr().out
    assert (WorkDir(work).validation_dir("3d_fullres", 0) / "summary.json").is_file()


def refused(arguments: list[str], match: str, capsys) -> None:
    """The command exits 1 with one error line matching ``match``."""
    capsys.readouterr()
    assert main(arguments) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert re.search(match, lines[-1]) and lines[-1].startswith("error: "), lines[-1]


@pytest.mark.slow
def test_models_that_cannot_start_a_run_are_one_line(model, tmp_path, capsys):
    bundle, dataset = model
    work = tmp_path / "work"
    assert main(["plan", str(dataset), "-o", str(work), "-j", "1"]) == 0
    train = ["train", str(work), "-f", "0", *TRAIN]
    refused([*train, "-c", "3d_lowres", "--init-from", str(bundle)], "no trained 3d_lowres in the model", capsys)
    refused([*train, "-c", "3d_fullres", "--init-from", str(bundle)],
            "its network does not fit this configuration's .*--plans-from", capsys)
    assert not WorkDir(work).fold_dir("3d_fullres", 0).exists()  # refused before anything was written
    damaged = tmp_path / "damaged.zip"
    damaged.write_bytes(bundle.read_bytes()[: bundle.stat().st_size // 2])
    refused([*train, "-c", "3d_fullres", "--init-from", str(damaged)], "damaged.zip: not an autoseg model bundle",
            capsys)
    manifest = json.loads(zipfile.ZipFile(bundle).read("manifest.json"))
    older = tmp_path / "older.zip"
    with zipfile.ZipFile(bundle) as source, zipfile.ZipFile(older, "w") as copy:
        for name in source.namelist():
            data = source.read(name)
            copy.writestr(name, json.dumps({**manifest, "plans_version": 0}) if name == "manifest.json" else data)
    refused([*train, "-c", "3d_fullres", "--init-from", str(older)], "older.zip: bundle format 1 / plans version 0",
            capsys)
    refused([*train, "-c", "3d_fullres", "--init-fold", "0"], "--init-fold needs --init-from", capsys)
    refused([*train, "-c", "3d_fullres", "--init-from", str(bundle), "--init-fold", "3"],
            r"--init-fold 3: the model's 3d_fullres has folds \[0\]", capsys)
    refused(["plan", str(dataset), "-o", str(tmp_path / "w2"), "--plans-from", str(tmp_path / "missing.zip")],
            "missing.zip: --plans-from: no such bundle", capsys)
