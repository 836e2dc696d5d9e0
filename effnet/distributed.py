"""One process per device, as `torchrun` launches them: rank, world size and the process group.

Nothing here launches processes. A stage started by `torchrun --nproc-per-node=N` finds
`RANK`, `WORLD_SIZE` and `LOCAL_RANK` (and the rendezvous address) in its environment; a
stage started by plain `python` finds none of them and runs as a single process with no
process group. Multi-machine runs are the same script under torchrun's `--nnodes` and
`--rdzv-endpoint`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as torch_dist


@dataclass(frozen=True)
class Distributed:
    """Where this process stands among the training processes."""

    rank: int = 0  # over all machines
    world_size: int = 1
    local_rank: int = 0  # on this machine; picks the GPU
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that logs, prints and writes files."""
        return self.rank == 0


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {value!r}") from None


def init_distributed() -> Distributed:
    """Read torchrun's environment; join the process group when there is more than one process.

    The device is `cuda:LOCAL_RANK` when CUDA is available, else the CPU. The backend is
    NCCL on CUDA and Gloo on the CPU. With `WORLD_SIZE` unset or 1 no process group is made,
    so single-process runs need no rendezvous at all.
    """
    world_size = _env_int("WORLD_SIZE", 1)
    rank = _env_int("RANK", 0)
    local_rank = _env_int("LOCAL_RANK", 0)
    if not 0 <= rank < world_size:
        raise ValueError(f"RANK must lie in 0..{world_size - 1}, got {rank}")
    if torch.cuda.is_available():
        if local_rank >= torch.cuda.device_count():
            raise ValueError(
                f"LOCAL_RANK {local_rank} but only {torch.cuda.device_count()} GPU(s) are visible; "
                "start at most one process per GPU (torchrun --nproc-per-node)"
            )
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    if world_size > 1 and not torch_dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        # device_id binds NCCL to this GPU at once (and silences the "guessing device" warning).
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        torch_dist.init_process_group(backend=backend, rank=rank, world_size=world_size, **kwargs)
    return Distributed(rank=rank, world_size=world_size, local_rank=local_rank, device=device)


def cleanup() -> None:
    """Leave the process group, if one was joined (safe to call in any case)."""
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.destroy_process_group()


def _active(dist: Distributed | None) -> bool:
    return dist is not None and dist.world_size > 1


def all_reduce_sum(tensor: torch.Tensor, dist: Distributed | None) -> torch.Tensor:
    """Sum `tensor` over all ranks, in place; returns it. A no-op for a single process."""
    if _active(dist):
        torch_dist.all_reduce(tensor, op=torch_dist.ReduceOp.SUM)
    return tensor


def all_reduce_min(tensor: torch.Tensor, dist: Distributed | None) -> torch.Tensor:
    """Elementwise minimum of `tensor` over all ranks, in place; returns it."""
    if _active(dist):
        torch_dist.all_reduce(tensor, op=torch_dist.ReduceOp.MIN)
    return tensor


def broadcast_(tensors: list[torch.Tensor], dist: Distributed | None, src: int = 0) -> None:
    """Overwrite `tensors` on every rank with rank `src`'s values."""
    if _active(dist):
        for tensor in tensors:
            torch_dist.broadcast(tensor, src=src)
