"""Run by torchrun in tests/training/test_distributed.py (not collected: no test_ prefix).

Trains a fold of a tiny work folder with every rank checking after each step that all ranks hold
identical weights; rank 1 exits abruptly at epoch KILL_AT_EPOCH when that is set (a died rank).
Writes {output}/rank{R}.json with the checksums it saw. Mode ``finetune CHECKPOINT`` starts from that
checkpoint as a model of other labels (the output layers re-initialised, the rest frozen at first).
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import replace
from pathlib import Path

import torch
import torch.distributed as dist

from autoseg.plans.training import IterationPlan
from autoseg.training.fine_tuning import InitialisationSource, network_facts
from autoseg.training.trainer import Trainer, TrainingOptions
from autoseg.workdir import WorkDir


class CheckingTrainer(Trainer):
    checksums: list[float] = []

    def train_step(self, batch):
        loss = super().train_step(batch)
        checksum = torch.tensor([float(sum(p.detach().double().sum() for p in self.network.parameters()))])
        gathered = [torch.zeros(1, dtype=torch.float64) for _ in range(dist.get_world_size())]
        dist.all_gather(gathered, checksum.double())
        if len({float(value) for value in gathered}) != 1:
            raise AssertionError(f"ranks differ after a step: {gathered}")
        CheckingTrainer.checksums.append(float(checksum))
        kill_at = int(os.environ.get("KILL_AT_EPOCH", "0"))
        if kill_at and self.epoch + 1 == kill_at and dist.get_rank() == 1:
            os._exit(3)
        return loss


def fine_tuning_source(work: str, checkpoint: str) -> InitialisationSource:
    facts = network_facts(WorkDir(work).load_plans(), "3d_fullres")
    return InitialisationSource("probe model", Path(checkpoint), replace(facts, labels={"other": 0, "labels": 1}),
                                "3d_fullres", 0, "0" * 64)


def main() -> None:
    work, output, mode = sys.argv[1], sys.argv[2], sys.argv[3]
    resume = mode == "resume"
    source = fine_tuning_source(work, sys.argv[4]) if mode == "finetune" else None
    trainer = CheckingTrainer(work, "3d_fullres", 0, TrainingOptions(num_workers=0, progress=False,
                                                                      initialise_from=source),
                              iteration_plan=IterationPlan(4, 3, 1))
    trainer.run(resume=resume, overwrite=not resume)
    with open(os.path.join(output, f"rank{trainer.distributed.rank}.json"), "w") as handle:
        json.dump({"checksums": CheckingTrainer.checksums, "batch": trainer.configuration.batch_size,
                   "epoch": trainer.epoch}, handle)


if __name__ == "__main__":
    main()
