"""Training on several GPUs (or CPU processes) with torch DistributedDataParallel.

Launch any training command under torchrun and the trainer joins the process group torchrun
describes in the environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``...):

    torchrun --nproc_per_node 2 -m swapd train --model original -A a -B b --model-dir m

``--batch-size`` stays the global batch per side: each process trains on its share
(``batch_size / world_size`` faces of each side, drawn from the same global draw, so together
they see exactly the faces one process would) and DDP averages the gradients, so the update is
the single-process one. NCCL on CUDA, gloo on the CPU. Only the first process writes the
checkpoint, previews, exports, backups and snapshots; the losses it reports are averaged over
all processes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from swapd.trainer.models import SwapModel


@dataclass(frozen=True)
class Distributed:
    rank: int
    world_size: int
    local_rank: int

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def all_mean(self, values: list[float], device: torch.device) -> list[float]:
        """The mean of ``values`` over all processes (element by element)."""
        tensor = torch.tensor(values, dtype=torch.float64, device=device)
        dist.all_reduce(tensor)
        return (tensor / self.world_size).tolist()

    def average_gradients(self, params: list[torch.Tensor]) -> None:
        """Average the gradients of ``params`` over all processes (for a module DDP does
        not wrap: the true face's code discriminator)."""
        for param in params:
            if param.grad is not None:
                dist.all_reduce(param.grad)
                param.grad /= self.world_size

    def any(self, flag: bool, device: torch.device) -> bool:
        """True on every process when ``flag`` is true on any."""
        tensor = torch.tensor([1.0 if flag else 0.0], device=device)
        dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
        return bool(tensor.item() > 0)

    def barrier(self) -> None:
        dist.barrier()

    def close(self) -> None:
        """Leave the process group. Left to the interpreter's exit, gloo's threads can be torn
        down while still joinable, which aborts the process ("terminate called without an
        active exception") after training succeeded."""
        if dist.is_initialized():
            dist.destroy_process_group()


def from_environment(device_type: str) -> Distributed | None:
    """Join the process group torchrun set up, or None when not launched by it (or alone)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return None
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_type == "cuda" else "gloo")
    return Distributed(rank=dist.get_rank(), world_size=dist.get_world_size(),
                       local_rank=int(os.environ.get("LOCAL_RANK", "0")))


class BothSides(nn.Module):
    """Both autoencoder paths in one forward call: DDP reduces gradients once per backward,
    so the A and B passes of a step must be one call (two would each expect their own)."""

    def __init__(self, model: SwapModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_a: torch.Tensor, input_b: torch.Tensor, codes: bool = False
                ) -> tuple[torch.Tensor, ...]:
        """(face A, face B) by the model's :meth:`~swapd.trainer.models.SwapModel.both_sides`
        (what both sides share, run once over both batches); with ``codes`` their codes too
        (true_face_power: models whose sides draw from one code), from one encoder pass."""
        model = self.model
        if not codes:
            return model.both_sides(input_a, input_b)
        code_a, code_b = model.encode_both(input_a, input_b)
        return model.decode(code_a, "a"), model.decode(code_b, "b"), code_a, code_b
