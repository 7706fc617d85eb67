"""Data-parallel training of one fold with torch.distributed, as launched by ``torchrun``.

``torchrun --nproc-per-node N autoseg train WORKDIR -c C -f K`` (or multi-node with
``--nnodes``/``--rdzv-backend c10d``) starts N copies; each reads ``WORLD_SIZE``, ``RANK`` and
``LOCAL_RANK`` from its environment (:meth:`DistributedContext.from_environment`) and joins the
process group (NCCL on GPUs, each rank on ``cuda:LOCAL_RANK``; gloo on CPUs). The rules:

- the network is wrapped in DistributedDataParallel: gradients are averaged over ranks every
  step, so every rank holds identical weights;
- the planned batch is split across ranks (:func:`rank_batch_size`): each rank samples
  ``batch // world`` patches (``batch % world`` ranks one more is not done: every rank gets the
  same size, so the global batch is ``world x (batch // world)``, and at least one patch per
  rank: with batch < world the global batch grows to the world size);
- each rank samples with its own seed (the fold's seed + rank), initialisation is the same;
- losses and pseudo-Dice counts are summed over ranks, so the log and the best checkpoint are
  the same as with one process seeing the global batch; rank 0 alone writes checkpoints,
  logs, plots, the run record and the validation;
- a time budget is decided once, by rank 0 measuring alone while the others wait
  (:func:`autoseg.training.fold_training.decide_for_all_ranks`); the number of epochs it allows is then
  refitted by rank 0 from the data-parallel epoch times and broadcast every epoch, so all ranks
  stop together and the budget holds.
"""

from __future__ import annotations

import datetime
import os
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

#: A rank waiting longer than this for the others (one died) fails instead of hanging.
COLLECTIVE_TIMEOUT_SECONDS = 300


@dataclass(frozen=True)
class DistributedContext:
    """Where this process stands in a torchrun job (world size 1: not distributed)."""

    world_size: int = 1
    rank: int = 0
    local_rank: int = 0

    @classmethod
    def from_environment(cls) -> DistributedContext:
        """From torchrun's ``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK`` (absent: a single process)."""
        return cls(int(os.environ.get("WORLD_SIZE", "1")), int(os.environ.get("RANK", "0")),
                   int(os.environ.get("LOCAL_RANK", "0")))

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def device_name(self, requested: str | None) -> str | None:
        """The device of this rank: ``cuda:LOCAL_RANK`` when GPUs are used, else as requested."""
        if self.enabled and torch.cuda.is_available() and requested in (None, "cuda"):
            return f"cuda:{self.local_rank}"
        return requested

    def start(self, device: torch.device, timeout_seconds: float = COLLECTIVE_TIMEOUT_SECONDS) -> None:
        """Join the process group (once): NCCL for GPUs, gloo otherwise. A collective waits at most
        ``timeout_seconds`` (longer while rank 0 measures speeds for a time budget)."""
        if not self.enabled or dist.is_initialized():
            return
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                timeout=datetime.timedelta(seconds=timeout_seconds))

    def sum(self, values: np.ndarray) -> np.ndarray:
        """Element-wise sum of ``values`` over ranks (itself when not distributed)."""
        if not self.enabled:
            return values
        tensor = torch.as_tensor(np.asarray(values, dtype=np.float64))
        if dist.get_backend() == "nccl":
            tensor = tensor.cuda()
        dist.all_reduce(tensor)
        return tensor.cpu().numpy()

    def broadcast(self, value: Any) -> Any:
        """Rank 0's ``value`` on every rank."""
        if not self.enabled:
            return value
        holder = [value]
        dist.broadcast_object_list(holder, src=0)
        return holder[0]

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def finish(self) -> None:
        """Leave the process group (every rank at the same point: a rank destroying it while another
        still works can leave that one waiting); the next fold joins a new one."""
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()


def rank_batch_size(batch_size: int, world_size: int) -> int:
    """Patches each rank samples per step: the planned batch split evenly, at least one."""
    return max(1, batch_size // world_size)
