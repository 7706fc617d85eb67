"""Data-parallel training with torchrun on the CPU (gloo): identical weights, rank 0 writes, a died rank."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import make_tiny_work_dir

from autoseg.model.checkpoints import load_checkpoint
from autoseg.training.distributed import rank_batch_size
from autoseg.workdir import WorkDir

PROBE = Path(__file__).with_name("ddp_probe.py")
TORCHRUN = Path(sys.executable).with_name("torchrun")


def torchrun(nproc: int, *arguments: str, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    environment = {**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1", **(env or {})}
    return subprocess.run([str(TORCHRUN), "--standalone", f"--nproc-per-node={nproc}", *arguments],
                          capture_output=True, text=True, timeout=timeout, env=environment)


def test_the_batch_is_split_across_ranks():
    assert rank_batch_size(8, 2) == 4 and rank_batch_size(2, 2) == 1
    assert rank_batch_size(3, 2) == 1 and rank_batch_size(1, 4) == 1  # batch < world size: one patch per rank


@pytest.mark.slow
def test_two_ranks_train_in_step_rank_0_writes_and_a_died_rank_resumes(tmp_path):
    if not TORCHRUN.is_file():
        pytest.skip("torchrun not installed beside this Python")
    _, work = make_tiny_work_dir(tmp_path / "data", num_training=6)
    plans = json.loads((work / "plans.json").read_text())
    plans["configurations"]["3d_fullres"]["batch_size"] = 4
    plans["configurations"]["3d_fullres"]["training"]["checkpoint_every_epochs"] = 1
    (work / "plans.json").write_text(json.dumps(plans))
    out = tmp_path / "out"
    out.mkdir()
    done = torchrun(2, str(PROBE), str(work), str(out), "fresh")
    assert done.returncode == 0, done.stderr[-2000:]
    ranks = [json.loads((out / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert ranks[0]["checksums"] == ranks[1]["checksums"] and len(ranks[0]["checksums"]) == 12  # every step
    assert ranks[0]["batch"] == 2  # the planned 4 split over 2 ranks
    fold = WorkDir(work).fold_dir("3d_fullres", 0)
    log = (fold / "training_log.txt").read_text()
    assert log.count("epoch 4/4") == 1 and "per rank x 2 ranks" in log  # one writer
    assert (fold / "checkpoint_final.pt").is_file() and not list(fold.glob(".*tmp*"))

    # fine-tuning under torchrun: every rank loads the model, the frozen start and the groups stay in step
    model = tmp_path / "model.pt"
    shutil.copyfile(fold / "checkpoint_final.pt", model)
    for path in out.iterdir():
        path.unlink()
    tuned = torchrun(2, str(PROBE), str(work), str(out), "finetune", str(model))
    assert tuned.returncode == 0, tuned.stderr[-2000:]
    ranks = [json.loads((out / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert ranks[0]["checksums"] == ranks[1]["checksums"]
    final = load_checkpoint(fold / "checkpoint_final.pt")
    assert final["initialisation"]["reinitialised"] and final["initialisation"]["source"] == "probe model"
    assert [group["name"] for group in final["optimizer"]["param_groups"]] == ["loaded", "new"]

    shutil.rmtree(fold)
    for path in out.iterdir():
        path.unlink()
    died = torchrun(2, str(PROBE), str(work), str(out), "fresh", env={"KILL_AT_EPOCH": "3"}, timeout=240)
    assert died.returncode != 0  # torchrun ends the job when a rank dies, no hang
    latest = load_checkpoint(fold / "checkpoint_latest.pt")
    assert latest["epoch"] == 2 and not (fold / "checkpoint_final.pt").is_file()
    resumed = subprocess.run([sys.executable, "-m", "autoseg.cli", "train", str(work), "-c", "3d_fullres", "-f", "0",
                              "--resume", "--epochs", "4", "--iterations-per-epoch", "3", "--num-workers", "0",
                              "--no-validation"], capture_output=True, text=True, timeout=300,
                             env={**os.environ, "TQDM_DISABLE": "1"})  # one process now: another world size
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert load_checkpoint(fold / "checkpoint_final.pt")["epoch"] == 4


@pytest.mark.slow
def test_a_time_budget_under_torchrun_is_decided_once_and_held(tmp_path):
    if not TORCHRUN.is_file():
        pytest.skip("torchrun not installed beside this Python")
    _, work = make_tiny_work_dir(tmp_path / "data", num_training=6)
    began = time.time()
    done = torchrun(2, "-m", "autoseg.cli", "train", str(work), "-c", "3d_fullres", "-f", "0", "--time-budget", "40s",
                    "--num-workers", "0")
    elapsed = time.time() - began
    assert done.returncode == 0, done.stderr[-2000:]
    assert elapsed < 40 + 45  # the budget, plus starting two Pythons and the process group
    work_dir = WorkDir(work)
    record = work_dir.read_run_record("3d_fullres", 0)
    assert record["time_budget_seconds"] == 40 and record["iterations"] > 0
    log = (work_dir.fold_dir("3d_fullres", 0) / "training_log.txt").read_text()
    assert "per rank x 2 ranks" in log and log.count("validation of 3d_fullres fold 0") == 1
    assert (work_dir.validation_dir("3d_fullres", 0) / "summary.json").is_file()


def test_an_elastic_restart_resumes(monkeypatch):
    from autoseg.commands.train import elastic_restart

    monkeypatch.delenv("TORCHELASTIC_RESTART_COUNT", raising=False)
    assert not elastic_restart()
    monkeypatch.setenv("TORCHELASTIC_RESTART_COUNT", "1")
    assert elastic_restart()
