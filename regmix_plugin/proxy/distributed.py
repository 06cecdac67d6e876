"""Process-group setup for the proxy trainer: gloo on CPU, nccl on GPU, data parallel only.

Under ``torchrun`` the usual ``RANK``/``WORLD_SIZE``/``MASTER_*`` variables are used. A plain single process
gets a world of one through a file store in a temporary folder, so that concurrent runs on one machine never
compete for a TCP port.
"""

from __future__ import annotations

import datetime
import os
import tempfile
from dataclasses import dataclass

import torch
import torch.distributed as dist
from megatron.core import parallel_state

from regmix_plugin.errors import ConfigError
from regmix_plugin.proxy.cpu_shims import apply_cpu_shims

# A rank that dies leaves the others waiting in a collective; this bounds the wait.
COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=10)


@dataclass(frozen=True)
class DistEnv:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("train.device: cuda requested but no CUDA GPU is visible; use cpu or auto")
    return torch.device(name)


def setup(device_name: str) -> DistEnv:
    """Initialise torch.distributed and megatron-core's model-parallel state (TP = PP = 1)."""
    device = resolve_device(device_name)
    rank = int(os.environ.get("RANK", "0"))
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    backend = "nccl" if device.type == "cuda" else "gloo"
    if not dist.is_initialized():
        if "MASTER_ADDR" in os.environ:
            dist.init_process_group(backend, rank=rank, world_size=world, timeout=COLLECTIVE_TIMEOUT)
        elif world == 1:
            store_dir = tempfile.mkdtemp(prefix="regmix-pg-")
            dist.init_process_group(
                backend, init_method=f"file://{store_dir}/store", rank=0, world_size=1, timeout=COLLECTIVE_TIMEOUT
            )
        else:
            raise ConfigError("WORLD_SIZE > 1 but MASTER_ADDR is unset; launch data-parallel runs with torchrun")
    parallel_state.initialize_model_parallel()
    if device.type == "cpu":
        apply_cpu_shims()
    return DistEnv(rank=dist.get_rank(), world_size=dist.get_world_size(), device=device)


def teardown() -> None:
    if parallel_state.model_parallel_is_initialized():
        parallel_state.destroy_model_parallel()
    if dist.is_initialized():
        dist.destroy_process_group()


def all_reduce_sum(t: torch.Tensor) -> torch.Tensor:
    if dist.get_world_size() > 1:
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t


def all_reduce_grads(params: list[torch.nn.Parameter]) -> None:
    """Sum gradients over data-parallel ranks in one flat buffer (one collective per step)."""
    if dist.get_world_size() == 1:
        return
    grads = [p.grad for p in params if p.grad is not None]
    flat = torch._utils._flatten_dense_tensors(grads)
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    for g, synced in zip(grads, torch._utils._unflatten_dense_tensors(flat, grads)):
        g.copy_(synced)
