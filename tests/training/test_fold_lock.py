"""`autoseg train` holds a lock per configuration and fold: a second run stops, a stale lock is taken over."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from helpers import make_tiny_work_dir

from autoseg.cli import main
from autoseg.utils.processes import ProcessIdentity
from autoseg.workdir import WorkDir

TRAIN = ["-c", "2d", "-f", "0", "--epochs", "1", "--iterations-per-epoch", "2", "--num-workers", "0",
         "--no-validation"]


@pytest.mark.slow
def test_a_running_training_blocks_a_second_one_and_a_dead_ones_lock_and_temporaries_are_cleared(tmp_path, capsys):
    _, work = make_tiny_work_dir(tmp_path)
    lock = WorkDir(work).training_lock_path("2d", 0)
    lock.parent.mkdir(parents=True)
    me = ProcessIdentity.current()  # this test process stands for a training that is still running
    lock.write_text(json.dumps({"host": me.host, "pid": me.pid, "start_ticks": me.start_ticks,
                                "started": "2026-11-23 10:00:00", "command": "autoseg train W -c 2d -f 0"}))
    assert main(["train", str(work), *TRAIN]) == 1
    error = capsys.readouterr().err.strip()
    assert "fold_0.lock: training 2d fold 0 is already running" in error and len(error.splitlines()) == 1
    assert not WorkDir(work).fold_dir("2d", 0).exists()  # the running training's files are untouched

    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()
    lock.write_text(json.dumps({"host": me.host, "pid": ended.pid, "started": "2026-11-23 10:00:00"}))
    fold = WorkDir(work).fold_dir("2d", 0)
    fold.mkdir(parents=True)
    temporary = fold / f".checkpoint_latest.tmp-{me.host}-{ended.pid}-0123abcd.pt"
    temporary.write_bytes(b"half a checkpoint")
    assert main(["train", str(work), *TRAIN]) == 0
    printed = capsys.readouterr().out
    assert f"removed a stale lock of training 2d fold 0 left by pid {ended.pid}" in printed
    assert "removed 1 temporary file(s)" in printed and not temporary.exists()
    assert (fold / "checkpoint_final.pt").is_file() and not lock.exists()
    assert not [name for name in os.listdir(fold) if ".tmp-" in name]
