"""Fully sharded data parallel training (`trainer=fsdp`): FSDP2's `fully_shard` under
Lightning's `ModelParallelStrategy`.

Every rank keeps 1/N of each parameter, of its gradient and of its optimizer state (rows of
each matrix: `Shard(0)` DTensors). Before a block computes, its weights are gathered from all
ranks, and freed after; gradients are reduce-scattered, each rank receiving the mean of its
own rows. FSDP2 runs on gloo (CPU) as on NCCL, which Lightning's older `FSDPStrategy`
(FSDP1, flat parameters, GPU only) does not: so sharding is tested on every CPU run.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from lightning.pytorch.strategies import ModelParallelStrategy
from torch.distributed.tensor import DTensor

from minigpt.core.model import GPT


class FullyShardedStrategy(ModelParallelStrategy):
    """ModelParallelStrategy with every process in one data-parallel (sharding) dimension and
    no tensor parallelism. Checkpoints are whole: the full weights and optimizer state are
    gathered onto rank 0 and written as one file (through the trainer's CheckpointIO), which
    `sample.py`, `eval.py`, `export.py` and a resume on any strategy read as they read any
    other checkpoint. (A sharded folder per checkpoint saves the gathering for models of
    billions of parameters; none here needs it.)"""

    def __init__(self, **kwargs):
        kwargs.setdefault("save_distributed_checkpoint", False)
        super().__init__(data_parallel_size=1, tensor_parallel_size=1, **kwargs)

    def setup_environment(self) -> None:
        self._data_parallel_size = self.num_nodes * self.num_processes
        super().setup_environment()

    def load_checkpoint(self, checkpoint_path, weights_only: bool | None = None) -> dict:
        """Loads a whole checkpoint of any strategy: every rank reads the file (memory-
        mapped) and keeps its rows of each weight and optimizer state. Optimizer states are
        matched to parameters by their place in the optimizer's groups, as
        `Optimizer.load_state_dict` does (Lightning's loader would take the ids for places in
        `model.parameters()`, which holds for FSDP's own checkpoints only)."""
        from torch.distributed.checkpoint.state_dict import (
            StateDictOptions,
            set_model_state_dict,
            set_optimizer_state_dict,
        )

        path = Path(self.broadcast(str(checkpoint_path)))
        checkpoint = torch.load(path, map_location="cpu", mmap=True, weights_only=weights_only)
        options = StateDictOptions(
            full_state_dict=True, strict=self.lightning_module.strict_loading
        )
        set_model_state_dict(self.model, checkpoint.pop("state_dict"), options=options)
        names = {p: name for name, p in self.model.named_parameters()}
        for optimizer, saved in zip(self.optimizers, checkpoint["optimizer_states"], strict=True):
            state, groups = {}, []
            for saved_group, group in zip(
                saved["param_groups"], optimizer.param_groups, strict=True
            ):
                places = zip(saved_group["params"], group["params"], strict=True)
                state |= {names[p]: saved["state"][i] for i, p in places if i in saved["state"]}
                groups.append(saved_group | {"params": [names[p] for p in group["params"]]})
            state_dict = {"state": state, "param_groups": groups}
            set_optimizer_state_dict(self.model, optimizer, state_dict, options=options)
        return checkpoint


def shard_model(model: GPT, mesh) -> None:
    """`fully_shard` each block (its weights gathered just before it runs, freed after) and
    then the whole model (the embeddings, final norm and head, which stay gathered between
    the forward and backward passes)."""
    from torch.distributed.fsdp import fully_shard

    for block in model.blocks:
        fully_shard(block, mesh=mesh)
    fully_shard(model, mesh=mesh)


def is_sharded(module: torch.nn.Module) -> bool:
    return any(isinstance(p, DTensor) for p in module.parameters())


def gathered_state(module: torch.nn.Module) -> dict[str, torch.Tensor] | None:
    """The full state dict of a sharded module on rank 0 (CPU), None on the other ranks. A
    collective: every rank must call it."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    options = StateDictOptions(full_state_dict=True, cpu_offload=True)
    state = get_model_state_dict(module, options=options)
    return state or None


def full_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """A DTensor's whole value (a replicated norm's local copy, say); a tensor as it is."""
    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def local_tensor(tensor: torch.Tensor) -> torch.Tensor:
    """This rank's piece of a DTensor (its rows); a tensor as it is."""
    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def spawn_on_cpu(function, processes: int, *args) -> None:
    """function(rank, mesh, *args) in `processes` spawned CPU processes of one thread each,
    joined in one gloo group with a device mesh over them (how the tests and
    benchmarks/distributed.py run DDP and FSDP without GPUs). The ranks meet at a barrier
    before the group is torn down: a rank that destroyed it while another still used it
    aborted."""
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    mp.spawn(_cpu_process, args=(function, processes, port, args), nprocs=processes)


def _cpu_process(rank: int, function, processes: int, port: int, args: tuple) -> None:
    from torch.distributed.device_mesh import init_device_mesh

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=processes)
    try:
        function(rank, init_device_mesh("cpu", (processes,)), *args)
        dist.barrier()
    finally:
        dist.destroy_process_group()
