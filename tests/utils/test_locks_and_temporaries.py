"""Locks that survive crashes, and temporary files a killed run leaves behind."""

from __future__ import annotations

import json
import multiprocessing
import os
import subprocess
import sys

import pytest

from autoseg.errors import AutosegInputError
from autoseg.utils.files import TEMPORARY_NAME, atomic_path, remove_stale_temporaries, temporary_name
from autoseg.utils.locks import FileLock
from autoseg.utils.processes import ProcessIdentity, this_host


def dead_pid() -> int:
    """The pid of a process that has ended."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_second_holder_is_refused_with_the_first_ones_pid(tmp_path):
    path = tmp_path / "fold_0.lock"
    with FileLock(path, "training 2d fold 0"):
        holder = json.loads(path.read_text())
        assert holder["pid"] == os.getpid() and holder["host"] == this_host()
        with pytest.raises(AutosegInputError, match=rf"fold_0.lock: training 2d fold 0 is already running "
                                                    rf"\(pid {os.getpid()}, since "):
            FileLock(path, "training 2d fold 0").acquire()
    assert not path.exists()  # released
    with FileLock(path, "training 2d fold 0"):
        pass


def test_a_lock_left_by_a_dead_process_is_reported_and_taken_over(tmp_path):
    path = tmp_path / "fold_0.lock"
    pid = dead_pid()
    path.write_text(json.dumps({"host": this_host(), "pid": pid, "started": "2026-01-01 00:00:00"}))
    with FileLock(path, "training 2d fold 0") as lock:
        assert f"stale lock of training 2d fold 0 left by pid {pid}" in lock.stale_message
        assert json.loads(path.read_text())["pid"] == os.getpid()


def test_a_reused_pid_does_not_keep_a_stale_lock(tmp_path):
    me = ProcessIdentity.current()
    if me.start_ticks is None:
        pytest.skip("no /proc: start times unknown")
    path = tmp_path / "fold_0.lock"  # our own pid, but a different start time: the holder has died
    path.write_text(json.dumps({"host": me.host, "pid": me.pid, "start_ticks": me.start_ticks - 1}))
    with FileLock(path, "x") as lock:
        assert "stale lock" in lock.stale_message


def test_a_lock_held_on_another_machine_is_never_taken(tmp_path):
    path = tmp_path / "fold_0.lock"
    path.write_text(json.dumps({"host": "other-node", "pid": 1, "started": "2026-01-01 00:00:00",
                                "started_at": 0}))
    with pytest.raises(AutosegInputError, match="held by pid 1 on other-node .* delete this file"):
        FileLock(path, "training 2d fold 0").acquire()
    path.write_text("{damaged")
    with pytest.raises(AutosegInputError, match="unreadable; delete it"):
        FileLock(path, "training 2d fold 0").acquire()


def _hold(path, started, release):
    with FileLock(path, "y"):
        started.set()
        release.wait(30)


def test_two_processes_cannot_hold_the_lock_at_once(tmp_path):
    context = multiprocessing.get_context("spawn")
    started, release = context.Event(), context.Event()
    holder = context.Process(target=_hold, args=(tmp_path / "l.lock", started, release))
    holder.start()
    try:
        assert started.wait(30)
        with pytest.raises(AutosegInputError, match="already running"):
            FileLock(tmp_path / "l.lock", "y").acquire()
    finally:
        release.set()
        holder.join(30)


def test_temporary_names_carry_the_process_and_the_ending(tmp_path):
    name = temporary_name(tmp_path / "case_001.nii.gz")
    match = TEMPORARY_NAME.match(name.name)
    assert match and int(match["pid"]) == os.getpid() and name.name.endswith(".nii.gz")


def test_only_temporaries_of_dead_processes_are_removed(tmp_path):
    (tmp_path / "sub").mkdir()
    dead = tmp_path / "sub" / f".checkpoint_latest.tmp-{this_host()}-{dead_pid()}-0123abcd.pt"
    alive = tmp_path / f".case.tmp-{this_host()}-{os.getpid()}-0123abcd.nii.gz"
    remote = tmp_path / f".case.tmp-elsewhere-{dead_pid()}-0123abcd.nii.gz"
    user_file = tmp_path / "notes.tmp-1-2.txt"
    for path in (dead, alive, remote, user_file):
        path.write_bytes(b"x")
    assert remove_stale_temporaries(tmp_path) == [dead]
    assert alive.exists() and remote.exists() and user_file.exists()


def test_a_failed_write_leaves_no_temporary(tmp_path):
    with pytest.raises(RuntimeError), atomic_path(tmp_path / "out.json") as temporary:
        temporary.write_text("half")
        raise RuntimeError("disk full")
    assert list(tmp_path.iterdir()) == []
