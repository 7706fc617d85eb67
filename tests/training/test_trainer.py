"""End-to-end training on tiny synthetic data: outputs, checkpoints, resume, interruption."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import make_tiny_work_dir

from autoseg.commands.train import train_and_validate
from autoseg.errors import AutosegInputError
from autoseg.io.images import read_image, read_label
from autoseg.model.checkpoints import load_checkpoint
from autoseg.planning.training_cost import TrainingLength
from autoseg.plans.training import IterationPlan
from autoseg.training.trainer import Trainer, TrainingOptions, pseudo_dice_counts

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_work_dir(tmp_path_factory.mktemp("tiny"))


OPTIONS = TrainingOptions(num_workers=0, progress=False)


def plan(epochs: int, iterations_per_epoch: int = 2) -> IterationPlan:
    return IterationPlan(epochs, iterations_per_epoch, 1)


def train_and_score(work, configuration, fold, epochs=2, iterations_per_epoch=2):
    return train_and_validate(work, configuration, fold, OPTIONS, TrainingLength(epochs, iterations_per_epoch))


def test_pseudo_dice_counts():
    import torch

    logits = torch.zeros(1, 3, 2, 2)
    logits[0, 1, 0, :] = 5  # predicts class 1 in the top row
    target = torch.tensor([[[[1, 0], [2, 2]]]])
    counts = pseudo_dice_counts(logits, target, [1, 2])
    np.testing.assert_array_equal(counts, [[1, 0], [1, 0], [0, 2]])


def test_training_writes_checkpoints_plot_log_and_validation(tiny):
    dataset, work = tiny
    trainer, summary = train_and_score(work, "3d_fullres", 0)
    output = trainer.output_dir
    for name in ("checkpoint_latest.pt", "checkpoint_best.pt", "checkpoint_final.pt", "progress.png",
                 "training_log.txt"):
        assert (output / name).is_file(), name
    content = load_checkpoint(output / "checkpoint_final.pt")
    assert content["epoch"] == 2 and len(content["curves"]["train_loss"]) == 2
    assert "pseudo Dice" in (output / "training_log.txt").read_text()
    assert set(summary["per_class"]) == {1, 2} or set(summary["per_class"]) == {"1", "2"}
    for case_id in trainer.val_cases:
        segmentation, geometry = read_label(output / "validation" / f"{case_id}.nii.gz")
        _, raw_geometry = read_image(dataset / "imagesTr" / f"{case_id}_0000.nii.gz")
        assert geometry == raw_geometry
        probabilities = np.load(output / "validation" / f"{case_id}.npz")["probabilities"]
        assert probabilities.shape == (3,) + geometry.shape
        np.testing.assert_allclose(probabilities.astype(np.float32).sum(0), 1, atol=5e-3)
    saved = json.loads((output / "validation" / "summary.json").read_text())
    assert saved["summary"]["num_cases"] == len(trainer.val_cases)
    mirroring = saved["summary"]["mirroring"]  # validated with mirroring: its gain is measured too
    assert mirroring["dice_with"] == saved["summary"]["foreground_mean"]["dice"]
    assert mirroring["gain"] == mirroring["dice_with"] - mirroring["dice_without"]
    per_setting = mirroring["dice_per_setting"]  # each single axis too, from the same network passes
    assert set(per_setting) == {"all", "none", "z", "y", "x"}
    assert per_setting["all"] == pytest.approx(mirroring["dice_with"])  # Dice-only scoring agrees with the summary
    assert per_setting["none"] == mirroring["dice_without"]


def test_existing_checkpoints_need_resume_or_overwrite(tiny):
    _, work = tiny
    Trainer(work, "3d_fullres", 1, OPTIONS, iteration_plan=plan(1)).run()
    with pytest.raises(AutosegInputError, match="--resume"):
        Trainer(work, "3d_fullres", 1, OPTIONS, iteration_plan=plan(1)).run()
    Trainer(work, "3d_fullres", 1, OPTIONS, iteration_plan=plan(1)).run(overwrite=True)


def test_resume_continues_where_it_stopped(tiny):
    _, work = tiny
    first = Trainer(work, "3d_fullres", 2, OPTIONS, iteration_plan=plan(3))
    calls = {"count": 0}
    original_step = first.train_step

    def interrupt_in_second_epoch(batch):
        calls["count"] += 1
        if calls["count"] == 3:
            raise KeyboardInterrupt
        return original_step(batch)

    first.train_step = interrupt_in_second_epoch
    with pytest.raises(KeyboardInterrupt):
        first.run()
    saved = load_checkpoint(first.output_dir / "checkpoint_latest.pt")
    assert saved["epoch"] == 1
    first_epoch_loss = saved["curves"]["train_loss"][0]

    resumed = Trainer(work, "3d_fullres", 2, OPTIONS)  # the interrupted run's length comes from its checkpoint
    resumed.run(resume=True)
    assert resumed.epoch == 3
    assert resumed.curves.train_loss[0] == first_epoch_loss
    assert len(resumed.curves.learning_rate) == 3
    assert resumed.curves.learning_rate == sorted(resumed.curves.learning_rate, reverse=True)
    # optimizer state was restored too: momentum buffers exist from the start of the resumed run
    final = load_checkpoint(resumed.output_dir / "checkpoint_final.pt")
    assert final["optimizer"]["state"]


def test_checkpoints_of_the_previous_layout_resume_with_their_length(tiny):
    from autoseg.model.checkpoints import save_checkpoint

    _, work = tiny
    trainer = Trainer(work, "3d_fullres", 3, OPTIONS, iteration_plan=plan(1))
    trainer.save("latest")
    old = load_checkpoint(trainer.output_dir / "checkpoint_latest.pt")
    del old["iteration_plan"], old["trainer"]  # written before the Trainer took an IterationPlan
    old["training_config"].update(epochs=7, iterations_per_epoch=3)
    save_checkpoint(trainer.output_dir / "checkpoint_latest.pt", old)
    resumed = Trainer(work, "3d_fullres", 3, OPTIONS)
    assert resumed.load_resume_point()
    assert (resumed.epochs, resumed.iterations_per_epoch) == (7, 3)


def test_2d_configuration_trains_and_validates(tiny):
    _, work = tiny
    _, summary = train_and_score(work, "2d", 0, epochs=1)
    assert summary["num_cases"] >= 1


def test_short_training_on_an_easy_task_learns(tmp_path):
    from helpers import make_easy_dataset, shrink_networks

    from autoseg.commands.plan import run_planning

    dataset = make_easy_dataset(tmp_path / "Easy")
    work = tmp_path / "work"
    run_planning(dataset, work, num_workers=1, progress=False)
    shrink_networks(work, base_features=8, cap=32)
    _, summary = train_and_score(work, "3d_fullres", 0, epochs=10, iterations_per_epoch=10)
    # chance level for a ~15%-of-volume organ is a Dice of about 0.15
    assert summary["per_class"][1]["dice"]["mean"] > 0.7


def test_a_log_gets_one_line_per_epoch_and_no_bar_frames(tiny, capsys, monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)  # progress output on; captured streams are not terminals
    _, work = tiny
    Trainer(work, "3d_fullres", 4, TrainingOptions(num_workers=0, progress=True), iteration_plan=plan(2, 3)).run()
    captured = capsys.readouterr()
    assert "\r" not in captured.err + captured.out
    assert "epoch 1/2" not in captured.err  # no per-iteration output: the epoch lines below are the progress
    epoch_lines = [line for line in captured.out.splitlines() if line.startswith("epoch ")]
    assert [line.split(":")[0] for line in epoch_lines] == ["epoch 1/2", "epoch 2/2"]
