"""Peak memory and step time of training with and without activation checkpointing, on CPU.

    python benchmarks/activation_memory.py [--layers 6] [--block-size 256] [--batch-size 32]

Each setting runs in its own process (peak resident memory only grows within a process):
build the model (nanoGPT's shakespeare_char shape by default: 6 layers, 6 heads, 384 wide),
take 3 training steps, and report the growth of peak resident memory over the process's
state before the first step (ru_maxrss), and the median step time.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def measure(layers: int, block_size: int, batch_size: int, checkpointing: bool) -> dict:
    sys.path.insert(0, str(ROOT))
    import torch

    from minigpt.core.model import GPT, GPTConfig

    torch.manual_seed(0)
    config = GPTConfig(
        vocab_size=65,
        block_size=block_size,
        n_layer=layers,
        n_head=6,
        n_embd=384,
        activation_checkpointing=checkpointing,
    )
    model = GPT(config).train()
    optimizer = torch.optim.AdamW(model.param_groups(), lr=1e-3, fused=True)
    idx = torch.randint(0, 65, (batch_size, block_size + 1))
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    times = []
    for _ in range(3):
        start = time.perf_counter()
        _, loss = model(idx[:, :-1], idx[:, 1:])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {"peak_growth_MiB": (peak - before) / 1024, "median_step_s": statistics.median(times)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--block-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--child", choices=["on", "off"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        result = measure(args.layers, args.block_size, args.batch_size, args.child == "on")
        print(json.dumps(result))
        return
    results = {}
    for setting in ("off", "on"):
        command = [
            sys.executable,
            __file__,
            "--child",
            setting,
            "--layers",
            str(args.layers),
            "--block-size",
            str(args.block_size),
            "--batch-size",
            str(args.batch_size),
        ]
        out = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        results[setting] = json.loads(out.strip().splitlines()[-1])
    print(f"{args.layers} layers x 384, block {args.block_size}, batch {args.batch_size}, CPU")
    for setting, r in results.items():
        print(
            f"  checkpointing {setting:3}: peak memory +{r['peak_growth_MiB']:.0f} MiB, "
            f"{r['median_step_s']:.2f} s/step"
        )
    saved = 1 - results["on"]["peak_growth_MiB"] / results["off"]["peak_growth_MiB"]
    slower = results["on"]["median_step_s"] / results["off"]["median_step_s"]
    print(f"  memory saved {saved:.0%}, step time x{slower:.2f}")


if __name__ == "__main__":
    main()
