"""The process-group context for training under ``torchrun`` (gloo on CPU, nccl on GPU); a no-op alone."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from edge_runtime import _env


@dataclass(frozen=True)
class DistContext:
    """Rank, world size and device of this process; every collective is a no-op when alone."""

    rank: int = 0
    world_size: int = 1
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world_size > 1

    def broadcast_module(self, module: nn.Module) -> None:
        """Give every rank rank 0's parameters and buffers."""
        if self.active:
            for t in [*module.parameters(), *module.buffers()]:
                torch.distributed.broadcast(t.data, src=0)

    def average_gradients(self, module: nn.Module) -> None:
        """All-reduce and average the gradients of parameters that have one (one flat buffer)."""
        if not self.active:
            return
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        if not grads:
            return
        flat = torch.cat([g.reshape(-1) for g in grads])
        torch.distributed.all_reduce(flat)
        flat /= self.world_size
        offset = 0
        for g in grads:
            n = g.numel()
            g.copy_(flat[offset:offset + n].view_as(g))
            offset += n

    def average_buffers(self, module: nn.Module) -> None:
        """Average floating-point buffers (BatchNorm running statistics) across ranks."""
        if not self.active:
            return
        for b in module.buffers():
            if b.is_floating_point():
                torch.distributed.all_reduce(b.data)
                b.data /= self.world_size

    def sum_tensor(self, t: torch.Tensor) -> torch.Tensor:
        """Sum a small tensor over ranks (metrics)."""
        if self.active:
            t = t.to(self.device)
            torch.distributed.all_reduce(t)
        return t.cpu()

    def barrier(self) -> None:
        if self.active:
            torch.distributed.barrier()


def init_distributed(device: str = "auto") -> DistContext:
    """Join the process group ``torchrun`` set up (``RANK``/``WORLD_SIZE``, read in edge_runtime._env);
    a single-process context otherwise. ``device``: ``auto`` (CUDA when present), ``cpu`` or ``cuda``."""
    rank, world, local_rank = _env.torchrun_world()
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    dev = f"cuda:{local_rank}" if use_cuda else "cpu"
    if world > 1 and not torch.distributed.is_initialized():
        if use_cuda:
            torch.cuda.set_device(local_rank)
        torch.distributed.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistContext(rank=rank, world_size=world, device=dev)


def shutdown(ctx: DistContext) -> None:
    """Leave the process group (after the final barrier)."""
    if ctx.active and torch.distributed.is_initialized():
        torch.distributed.barrier()
        torch.distributed.destroy_process_group()
