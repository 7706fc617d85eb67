"""Training records: per-epoch curves, the log file and ``progress.png``."""

from __future__ import annotations

import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from autoseg.utils.files import atomic_path


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


def plot_progress(curves: TrainingCurves, path: str | os.PathLike, title: str = "") -> None:
    """Write ``progress.png``: losses and pseudo-Dice (top), learning rate and epoch time (bottom)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = list(range(1, curves.epochs + 1))
    figure, (top, middle, bottom) = plt.subplots(3, 1, figsize=(10, 11), sharex=True)
    top.plot(epochs, curves.train_loss, color="tab:blue", label="train loss")
    top.plot(epochs, curves.val_loss, color="tab:red", label="validation loss")
    top.set_ylabel("loss")
    top.legend(loc="upper left")
    dice_axis = top.twinx()
    if curves.pseudo_dice:
        dice_axis.plot(epochs, [sum(d) / max(len(d), 1) for d in curves.pseudo_dice], color="tab:green",
                       linestyle=":", label="pseudo Dice (mean)")
    dice_axis.plot(epochs, curves.ema_pseudo_dice, color="tab:green", label="pseudo Dice (EMA)")
    dice_axis.set_ylabel("pseudo Dice")
    dice_axis.set_ylim(0, 1)
    dice_axis.legend(loc="upper right")
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
            from tqdm import tqdm

            tqdm.write(message)
