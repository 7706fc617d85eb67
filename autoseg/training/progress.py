"""Training records: per-epoch curves, the log file and ``progress.png``."""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from autoseg.utils.files import atomic_path
from autoseg.utils.progress_bars import write_line


@dataclass
class TrainingCurves:
    """One value per completed epoch (``pseudo_dice`` holds one list per foreground class)."""

    train_loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    pseudo_dice: list[list[float]] = field(default_factory=list)
    ema_pseudo_dice: list[float] = field(default_factory=list)
    learning_rate: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)

    @property
    def epochs(self) -> int:
        return len(self.train_loss)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> TrainingCurves:
        return cls(**{key: list(value) for key, value in data.items()})


def plot_progress(curves: TrainingCurves, path: str | os.PathLike, title: str = "",
                  class_names: Sequence[str] | None = None) -> None:
    """Write ``progress.png``: losses (top); the pseudo-Dice of each class, their mean and its EMA, so a
    class stuck at 0 shows at a glance; the learning rate; the epoch time. ``class_names`` label the
    classes of ``curves.pseudo_dice`` (default ``class 1``, ``class 2``, ...)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = list(range(1, curves.epochs + 1))
    figure, (top, dice_axis, middle, bottom) = plt.subplots(
        4, 1, figsize=(10, 13), sharex=True, gridspec_kw={"height_ratios": [2, 2, 1, 1]})
    top.plot(epochs, curves.train_loss, color="tab:blue", label="train loss")
    top.plot(epochs, curves.val_loss, color="tab:red", label="validation loss")
    top.set_ylabel("loss")
    top.legend(loc="upper right")
    num_classes = max((len(values) for values in curves.pseudo_dice), default=0)
    names = list(class_names or [])
    names += [f"class {index + 1}" for index in range(len(names), num_classes)]
    colours = plt.get_cmap("tab10")
    for index in range(num_classes):
        values = [row[index] if index < len(row) else float("nan") for row in curves.pseudo_dice]
        dice_axis.plot(epochs, values, color=colours(index % 10), linewidth=1.2, label=names[index])
    if curves.pseudo_dice:
        dice_axis.plot(epochs, [float(np.nanmean(row)) if row and not np.all(np.isnan(row)) else float("nan")
                                for row in curves.pseudo_dice],
                       color="black", linestyle=":", label="mean")
    dice_axis.plot(epochs, curves.ema_pseudo_dice, color="black", label="mean (EMA)")
    dice_axis.set_ylabel("validation pseudo Dice")
    dice_axis.set_ylim(0, 1)
    dice_axis.legend(loc="lower right", fontsize="small", ncol=min(4, num_classes + 2))
    middle.plot(epochs, curves.learning_rate, color="tab:purple")
    middle.set_ylabel("learning rate")
    bottom.plot(epochs, curves.epoch_seconds, color="tab:gray")
    bottom.set_ylabel("epoch time (s)")
    bottom.set_xlabel("epoch")
    if title:
        figure.suptitle(title)
    figure.tight_layout()
    with atomic_path(path) as temporary:
        figure.savefig(temporary, dpi=80)
    plt.close(figure)


class TrainingLog:
    """Appends timestamped lines to ``training_log.txt`` (and optionally echoes them)."""

    def __init__(self, path: str | os.PathLike, echo: bool = True):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.echo = echo

    def __call__(self, message: str) -> None:
        line = f"{time.strftime('%Y-%m-%d %H:%M:%S')} {message}"
        with open(self.path, "a", encoding="utf-8") as handle:
            handle.write(line + "\n")
        if self.echo:
            write_line(message)
