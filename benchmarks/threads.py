"""Training speed by CPU threads, alone and beside another busy process.

Times the default model's training step (4 layers, 128 wide, block 128, batch 32: forward,
backward, AdamW) with torch using 1 thread and with torch's default, first alone, then
while a second process runs a loop of matrix products with torch's default threads, as a
second training run or a test suite would. Prints the median ms per step of each and the
ratios. `python benchmarks/threads.py [--steps 30]`; run it with nothing else running.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from minigpt.core.model import GPT, GPTConfig  # noqa: E402

DEFAULT_THREADS = torch.get_num_threads()
LOAD = "import torch\na = torch.randn(1024, 1024)\nwhile True:\n    a = (a @ a).tanh()\n"


def step_times(steps: int, threads: int) -> list[float]:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=84, block_size=128, n_layer=4, n_head=4, n_embd=128))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch = torch.randint(0, 84, (32, 129))
    times = []
    for _ in range(steps + 3):  # 3 warm-up steps
        start = time.perf_counter()
        _, loss = model(batch[:, :-1], batch[:, 1:])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append((time.perf_counter() - start) * 1000)
    return times[3:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, default threads {DEFAULT_THREADS}, {args.steps} steps")
    results = {}
    for load in (False, True):
        busy = subprocess.Popen([sys.executable, "-c", LOAD]) if load else None
        try:
            if busy:
                time.sleep(2)  # let the other process get going
            for threads in (DEFAULT_THREADS, 1):
                median = statistics.median(step_times(args.steps, threads))
                results[load, threads] = median
                where = "beside a busy process" if load else "alone"
                print(f"{where:>22}, {threads} thread(s): {median:8.1f} ms/step (median)")
        finally:
            if busy:
                busy.kill()
                busy.wait()
    for load in (False, True):
        ratio = results[load, DEFAULT_THREADS] / results[load, 1]
        where = "beside a busy process" if load else "alone"
        print(f"{where}: {DEFAULT_THREADS} threads / 1 thread = {ratio:.2f}")


if __name__ == "__main__":
    main()
