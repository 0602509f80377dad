"""Per-rank memory and step time of one process, DDP and FSDP, with AdamW and with Muon.

Two gloo processes on the CPU (one thread each), one GPT, the optimizer groups and the
DistributedMuon that train.py uses, clipping by the global norm. Memory is what each rank
holds of weights + gradients + optimizer state, counted from the tensors themselves (the
bytes of every local piece), so it does not depend on the allocator; step time is the
median over the timed steps. One process runs the same steps on the batch both ranks share
(it holds everything; its step does twice a rank's work).

    python benchmarks/distributed.py [--layers 4 --width 256 --steps 10]
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
import torch.distributed as dist

from minigpt.core.model import GPT, GPTConfig
from minigpt.training.optimizers import MuonWithAdamW
from minigpt.training.sharding import local_tensor, shard_model, spawn_on_cpu

RANKS = 2
# muon: the Newton-Schulz iteration in bfloat16 (torch's); muon-fp32: in float32
KINDS = ("adamw", "muon", "muon-fp32")


def make_optimizer(kind: str, model: GPT, group_names: dict):
    groups = model.param_groups(model.named_parameters(), group_names)
    if kind == "adamw":
        return torch.optim.AdamW(groups, lr=1e-3, weight_decay=0.1, foreach=True)
    ns_dtype = "float32" if kind == "muon-fp32" else "bfloat16"
    return MuonWithAdamW(groups, lr=0.02, adamw_lr=3e-3, weight_decay=0.1, ns_dtype=ns_dtype)


def held_bytes(model: GPT, optimizer) -> dict[str, int]:
    def size(tensors):
        return sum(local_tensor(t).numel() * t.element_size() for t in tensors)

    state = [v for s in optimizer.state.values() for v in s.values() if torch.is_tensor(v)]
    params = list(model.parameters())
    return {
        "weights": size(params),
        "gradients": size([p.grad for p in params if p.grad is not None]),
        "optimizer": size([t for t in state if t.dim() > 0]),
    }


def measure(config: GPTConfig, kind: str, strategy: str, args, rank: int, mesh) -> dict:
    torch.manual_seed(0)
    model = GPT(config)
    group_names = model.param_group_names()
    wrapped = model
    if strategy == "fsdp":
        shard_model(model, mesh)
    elif strategy == "ddp":
        wrapped = torch.nn.parallel.DistributedDataParallel(model)
    optimizer = make_optimizer(kind, model, group_names)
    batch = args.batch * (RANKS if strategy == "single" else 1)
    generator = torch.Generator().manual_seed(rank)
    times = []
    for step in range(args.steps + 2):  # two warm-up steps
        idx = torch.randint(
            0, config.vocab_size, (batch, config.block_size + 1), generator=generator
        )
        start = time.perf_counter()
        _, loss = wrapped(idx[:, :-1], idx[:, 1:])
        optimizer.zero_grad(set_to_none=False)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        if strategy != "single":
            dist.barrier()
        if step >= 2:
            times.append(time.perf_counter() - start)
    return {"step_ms": 1e3 * statistics.median(times), **held_bytes(model, optimizer)}


def model_config(args) -> GPTConfig:
    return GPTConfig(
        vocab_size=args.vocab,
        block_size=args.block,
        n_layer=args.layers,
        n_head=args.width // 64,
        n_embd=args.width,
    )


def worker(rank: int, mesh, args, out: str) -> None:
    config = model_config(args)
    results = {}
    for kind in args.kinds:
        for strategy in ("ddp", "fsdp"):
            results[(kind, strategy)] = measure(config, kind, strategy, args, rank, mesh)
    if rank == 0:
        torch.save({"results": results, "parameters": GPT(config).num_parameters()}, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--width", type=int, default=256)
    parser.add_argument("--block", type=int, default=256)
    parser.add_argument("--vocab", type=int, default=2048)
    parser.add_argument("--batch", type=int, default=4, help="per rank")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--kinds", nargs="+", default=list(KINDS), choices=KINDS)
    args = parser.parse_args()
    out = f"/tmp/minigpt-distributed-{os.getpid()}.pt"
    spawn_on_cpu(worker, RANKS, args, out)
    saved = torch.load(out, weights_only=False)
    os.remove(out)
    results = saved["results"]
    config = model_config(args)
    torch.set_num_threads(1)  # as each rank: the one process's step is twice a rank's work
    for kind in args.kinds:
        results[(kind, "single")] = measure(config, kind, "single", args, 0, None)
    print(
        f"GPT {args.layers} x {args.width}, {saved['parameters'] / 1e6:.1f}M parameters, "
        f"block {args.block}, batch {args.batch} per rank, {RANKS} gloo processes x 1 thread, "
        f"torch {torch.__version__}"
    )
    print("optimizer strategy  step ms  weights MB  grads MB  optimizer MB  total MB  vs DDP")
    for kind in args.kinds:
        ddp_total = sum(v for k, v in results[(kind, "ddp")].items() if k != "step_ms")
        for strategy in ("single", "ddp", "fsdp"):
            r = results[(kind, strategy)]
            total = r["weights"] + r["gradients"] + r["optimizer"]
            print(
                f"{kind:9} {strategy:8} {r['step_ms']:8.1f} {r['weights'] / 1e6:11.1f} "
                f"{r['gradients'] / 1e6:9.1f} {r['optimizer'] / 1e6:13.1f} {total / 1e6:9.1f} "
                f"{total / ddp_total:7.2f}"
            )
    for kind in [k for k in args.kinds if k != "adamw"]:
        for strategy in ("single", "ddp", "fsdp"):
            ratio = results[(kind, strategy)]["step_ms"] / results[("adamw", strategy)]["step_ms"]
            print(f"{kind} step / AdamW step, {strategy}: {ratio:.2f}")


if __name__ == "__main__":
    main()
