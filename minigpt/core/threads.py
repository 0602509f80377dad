"""How many CPU threads torch uses in this process."""

from __future__ import annotations

import torch

# torch's own choice in this process (physical cores, or $OMP_NUM_THREADS), before any run
# sets it
DEFAULT_THREADS = torch.get_num_threads()


def set_cpu_threads(threads: int | str, processes: int) -> int:
    """Sets torch's intra-op threads for this process and returns the number: `threads`, or
    for `auto` torch's default (the physical cores, or $OMP_NUM_THREADS) shared among the
    `processes` the run starts on this machine (DDP), at least 1. More threads than cores
    slow every process down many times over."""
    whole = isinstance(threads, int) and not isinstance(threads, bool)
    if threads != "auto" and (not whole or threads < 1):
        raise ValueError(f"threads={threads!r} must be auto or an integer >= 1")
    if threads == "auto":
        threads = max(1, DEFAULT_THREADS // max(1, processes))
    torch.set_num_threads(threads)
    return threads
