"""Checkpoints hold plain values, load with weights_only=True, and are written atomically."""

import pytest
import torch

from autoseg.errors import AutosegInputError
from autoseg.model.checkpoints import load_checkpoint, save_checkpoint
from autoseg.training.progress import TrainingCurves, plot_progress
from autoseg.workdir import checkpoint_file


def test_round_trip_with_weights_only(tmp_path):
    network = torch.nn.Conv3d(1, 2, 3)
    optimizer = torch.optim.SGD(network.parameters(), lr=0.1, momentum=0.9)
    network(torch.randn(1, 1, 4, 4, 4)).sum().backward()
    optimizer.step()
    path = checkpoint_file(tmp_path, "latest")
    save_checkpoint(path, {"network": network.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 3,
                           "curves": TrainingCurves(train_loss=[1.0, 0.5]).to_dict()})
    content = load_checkpoint(path)
    assert content["epoch"] == 3
    torch.testing.assert_close(content["network"]["weight"], network.weight)
    assert content["curves"]["train_loss"] == [1.0, 0.5]
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint_latest.pt"]  # no temporary left


def test_failed_write_leaves_the_previous_checkpoint(tmp_path):
    path = checkpoint_file(tmp_path, "final")
    save_checkpoint(path, {"epoch": 1})

    class Unsaveable:
        def __reduce__(self):
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        save_checkpoint(path, {"epoch": 2, "bad": Unsaveable()})
    assert load_checkpoint(path)["epoch"] == 1
    assert len(list(tmp_path.iterdir())) == 1


def test_objects_that_need_unpickling_are_refused(tmp_path):
    path = tmp_path / "evil.pt"
    torch.save({"object": TrainingCurves()}, path)
    with pytest.raises(AutosegInputError, match="cannot be loaded"):
        load_checkpoint(path)


def test_missing_checkpoint_is_an_input_error(tmp_path):
    with pytest.raises(AutosegInputError, match="not found"):
        load_checkpoint(tmp_path / "nope.pt")


def test_progress_plot_is_written(tmp_path):
    curves = TrainingCurves(train_loss=[1.0, 0.8], val_loss=[1.1, 0.9], pseudo_dice=[[0.1, 0.2], [0.3, 0.4]],
                            ema_pseudo_dice=[0.15, 0.2], learning_rate=[0.01, 0.005], epoch_seconds=[3.0, 2.9])
    plot_progress(curves, tmp_path / "progress.png", "test")
    assert (tmp_path / "progress.png").read_bytes()[:4] == b"\x89PNG"


def test_progress_plot_draws_every_class(tmp_path, monkeypatch):
    import matplotlib.axes

    labels = []
    original = matplotlib.axes.Axes.plot

    def recording_plot(self, *args, **kwargs):
        labels.append(kwargs.get("label"))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(matplotlib.axes.Axes, "plot", recording_plot)
    curves = TrainingCurves(train_loss=[1.0, 0.8], val_loss=[1.1, 0.9], pseudo_dice=[[0.5, 0.0, 0.1], [0.7, 0.0, 0.2]],
                            ema_pseudo_dice=[0.2, 0.22], learning_rate=[0.01, 0.005], epoch_seconds=[3.0, 2.9])
    plot_progress(curves, tmp_path / "progress.png", "test", ["edema", "necrosis"])
    assert {"edema", "necrosis", "class 3", "mean", "mean (EMA)"} <= set(labels)
    assert (tmp_path / "progress.png").read_bytes()[:4] == b"\x89PNG"
