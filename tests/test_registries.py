"""Plug-in points: what a user registers is used by the pipeline with no other change."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import make_raw_dataset

from autoseg.cli import main
from autoseg.errors import AutosegInputError
from autoseg.io.dataset import list_training_cases, load_dataset_description
from autoseg.io.formats import IMAGE_FORMATS, ImageFormat, format_for
from autoseg.io.geometry import ImageGeometry
from autoseg.io.images import read_case_images, read_image, write_image
from autoseg.io.verification import verify_case
from autoseg.model.builders import NETWORK_BUILDERS, build_network, count_module_parameters
from autoseg.model.unet import SegmentationNetwork, plain_encoder_stage
from autoseg.planning.planner import make_network_config
from autoseg.plans.architectures import ARCHITECTURES, PlainUNetSpec, count_parameters
from autoseg.plans.normalization import (
    NORMALIZATION_SCHEMES,
    ChannelNormalization,
    NormalizationScheme,
    normalize_image,
)
from autoseg.training.trainer import TRAINERS, Trainer
from autoseg.utils.registry import Registry, UnknownNameError


def test_registry_names_what_it_knows():
    registry: Registry[int] = Registry("colour")
    registry.add("red", 1)
    with pytest.raises(ValueError, match="already registered"):
        registry.add("red", 2)
    registry.add("red", 2, replace=True)
    assert registry.get("red") == 2 and "red" in registry and registry.names() == ["red"]
    with pytest.raises(UnknownNameError) as error:
        registry.get("blue")
    assert str(error.value) == "unknown colour 'blue' (known: red)"
    assert isinstance(error.value, AutosegInputError)  # the CLI prints it as one line
    registry.remove("red")
    assert len(registry) == 0


def test_every_architecture_spec_has_a_builder():
    assert ARCHITECTURES.names() == NETWORK_BUILDERS.names()


@pytest.fixture
def clip_unit_scheme():
    @NORMALIZATION_SCHEMES.register("clip_unit")
    class ClipToUnit(NormalizationScheme):
        """Clip to [clip_low, clip_high], map to [0, 1]."""

        def check(self, entry):
            return None if entry.clip_low is not None and entry.clip_high is not None else "needs clip_low, clip_high"

        def normalize(self, channel, entry, nonzero):
            np.clip(channel, entry.clip_low, entry.clip_high, out=channel)
            return (channel - entry.clip_low) / (entry.clip_high - entry.clip_low)

    yield "clip_unit"
    NORMALIZATION_SCHEMES.remove("clip_unit")


def test_a_registered_normalization_scheme_is_validated_and_applied(clip_unit_scheme):
    entry = ChannelNormalization(channel=0, channel_name="CT", scheme=clip_unit_scheme, clip_low=0.0, clip_high=10.0)
    entry.validate()
    image = np.array([[[[-5.0, 5.0, 20.0]]]], dtype=np.float32)
    np.testing.assert_allclose(normalize_image(image, [entry]), [[[[0.0, 0.5, 1.0]]]])
    with pytest.raises(ValueError, match="needs clip_low, clip_high"):
        ChannelNormalization(channel=0, channel_name="CT", scheme=clip_unit_scheme).validate()


class NumpyVolumeFormat(ImageFormat):
    """A test format: ``.vol.npz`` holding ``voxels`` (z, y, x) and ``spacing`` (z, y, x) mm."""

    file_endings = (".vol.npz",)

    def read(self, path):
        with np.load(path) as data:
            voxels, spacing = data["voxels"], tuple(float(v) for v in data["spacing"])
        return voxels, ImageGeometry(shape=tuple(voxels.shape), spacing=spacing, sitk_spacing=spacing[::-1],
                                     sitk_origin=(0.0, 0.0, 0.0), sitk_direction=(1, 0, 0, 0, 1, 0, 0, 0, 1),
                                     file_dimension=3)

    def write(self, array, geometry, path, compress=True):
        np.savez(path, voxels=array, spacing=np.asarray(geometry.spacing))


@pytest.fixture
def numpy_volume_format():
    IMAGE_FORMATS.add("numpy_volume", NumpyVolumeFormat())
    yield
    IMAGE_FORMATS.remove("numpy_volume")


def test_a_registered_image_format_reads_verifies_and_writes(tmp_path, numpy_volume_format):
    root = tmp_path / "Dataset002_Npz"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    (root / "dataset.json").write_text(json.dumps({"channel_names": {"0": "MRI"}, "labels": {"background": 0, "a": 1},
                                                   "numTraining": 1, "file_ending": ".vol.npz"}))
    voxels = np.arange(4 * 6 * 6, dtype=np.float32).reshape(4, 6, 6)
    label = (voxels > 80).astype(np.uint8)
    np.savez(root / "imagesTr" / "case_0000.vol.npz", voxels=voxels, spacing=np.array([3.0, 1.0, 1.0]))
    np.savez(root / "labelsTr" / "case.vol.npz", voxels=label, spacing=np.array([3.0, 1.0, 1.0]))
    assert isinstance(format_for(root / "imagesTr" / "case_0000.vol.npz"), NumpyVolumeFormat)
    description = load_dataset_description(root)
    problems, loaded = verify_case(list_training_cases(description)[0], description)
    assert problems == [] and loaded.geometry.spacing == (3.0, 1.0, 1.0)
    image, geometry = read_case_images([root / "imagesTr" / "case_0000.vol.npz"])
    np.testing.assert_array_equal(image[0], voxels)
    write_image(label, geometry, tmp_path / "out.vol.npz")
    np.testing.assert_array_equal(read_image(tmp_path / "out.vol.npz")[0], label)


def test_an_unknown_file_type_is_one_line(tmp_path):
    (tmp_path / "scan.xyz").write_bytes(b"")
    with pytest.raises(AutosegInputError, match="no image reader for this file type"):
        read_image(tmp_path / "scan.xyz")


@pytest.fixture
def single_block_unet():
    """A new architecture: plain U-Net with one conv block per encoder stage."""

    class SingleBlockSpec(PlainUNetSpec):
        name = "test_single_block_unet"

        def encoder_blocks(self, n_stages):
            return [1] * n_stages

    def build(config, in_channels, num_classes):
        return SegmentationNetwork(config, in_channels, num_classes, plain_encoder_stage)

    ARCHITECTURES.add(SingleBlockSpec.name, SingleBlockSpec())
    NETWORK_BUILDERS.add(SingleBlockSpec.name, build)
    yield SingleBlockSpec.name
    ARCHITECTURES.remove(SingleBlockSpec.name)
    NETWORK_BUILDERS.remove(SingleBlockSpec.name)


def test_a_registered_architecture_is_planned_counted_and_built(single_block_unet):
    network, patch = make_network_config((1.0, 1.0, 1.0), (32, 32, 32), 3, single_block_unet)
    assert network.architecture == single_block_unet and network.n_blocks_per_stage_encoder == [1] * network.n_stages
    module = build_network(network, 2, 3)
    assert count_parameters(network, 2, 3) == count_module_parameters(module)
    assert module(torch.zeros(1, 2, *patch))[0].shape == (1, 3, *patch)


@pytest.fixture
def adam_trainer():
    @TRAINERS.register("test_adam")
    class AdamTrainer(Trainer):
        def build_optimizer(self):
            return torch.optim.Adam(self.network.parameters(), lr=1e-3)

        def learning_rate(self, step):
            return 1e-3

    yield "test_adam"
    TRAINERS.remove("test_adam")


@pytest.mark.slow
def test_a_trainer_variant_is_chosen_by_name(tmp_path, adam_trainer, capsys):
    from autoseg.commands.plan import run_planning
    from autoseg.model.checkpoints import load_checkpoint
    from autoseg.workdir import WorkDir

    dataset = make_raw_dataset(tmp_path / "Dataset001_Tiny", num_cases=5)
    work = tmp_path / "work"
    run_planning(dataset, work, num_workers=1, progress=False)
    assert main(["train", str(work), "-c", "3d_fullres", "--trainer", "nope", "--epochs", "1"]) == 1
    assert "unknown trainer 'nope' (known: default, test_adam)" in capsys.readouterr().err
    assert main(["train", str(work), "-c", "3d_fullres", "--trainer", adam_trainer, "--epochs", "1",
                 "--iterations-per-epoch", "1", "--num-workers", "0", "--no-validation"]) == 0
    checkpoint = load_checkpoint(WorkDir(work).checkpoint_path("3d_fullres", 0, "final"))
    assert checkpoint["trainer"] == adam_trainer
    assert "betas" in checkpoint["optimizer"]["param_groups"][0]  # Adam's, not SGD's
    assert checkpoint["curves"]["learning_rate"] == [1e-3]
    # or by name in plans.json
    plans = WorkDir(work).load_plans()
    plans.configurations["2d"].training.trainer = adam_trainer
    WorkDir(work).save_plans(plans)
    assert main(["train", str(work), "-c", "2d", "--epochs", "1", "--iterations-per-epoch", "1",
                 "--num-workers", "0", "--no-validation"]) == 0
    assert load_checkpoint(WorkDir(work).checkpoint_path("2d", 0, "final"))["trainer"] == adam_trainer


def test_work_folder_paths_have_one_owner(tmp_path):
    from autoseg.workdir import NUM_FOLDS, WorkDir

    work = WorkDir(tmp_path)
    assert work.fold_dir("2d", 3) == tmp_path / "results" / "2d" / "fold_3"
    assert work.fold_dir("2d", 0, "spacing") == tmp_path / "results" / "2d__split_spacing" / "fold_0"
    assert work.checkpoint_path("2d", 1, "best") == tmp_path / "results" / "2d" / "fold_1" / "checkpoint_best.pt"
    assert work.trained_folds("2d") == []
    work.checkpoint_path("2d", 1, "final").parent.mkdir(parents=True)
    work.checkpoint_path("2d", 1, "final").write_bytes(b"")
    assert work.trained_folds("2d") == [1] and work.has_checkpoints("2d") and NUM_FOLDS == 5
    assert work.read_splits() is None and work.read_inference_plan() is None
    work.splits_path().write_text('{"folds": "not a list"}')
    with pytest.raises(AutosegInputError, match="splits.json: invalid splits"):
        work.read_splits()
    with pytest.raises(AutosegInputError, match="--split-by: unknown mode 'site'"):
        work.fold_dir("2d", 0, "site")
    assert Path(work) == tmp_path
