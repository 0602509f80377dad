"""The default numeric precision for a run."""

from __future__ import annotations

import functools
from pathlib import Path

import torch

# CPU instructions that multiply bfloat16 natively; without them torch emulates bfloat16
# products in float32 and rounds, 25x slower than float32 (128 x 128 matmul, AVX2 EPYC)
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@functools.cache
def cpu_has_bf16() -> bool:
    """Whether this CPU has bfloat16 instructions (Linux's /proc/cpuinfo; False elsewhere)."""
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return any(flag in flags.split() for flag in BF16_FLAGS)


def cpu_precision() -> str:
    """The faster precision for training on this CPU: bf16-mixed where it has bfloat16
    instructions, 32-true where bfloat16 would be emulated."""
    return "bf16-mixed" if cpu_has_bf16() else "32-true"


def newton_schulz_dtype(device: torch.device) -> torch.dtype:
    """Muon's iteration dtype for optimizer.ns_dtype=auto: bfloat16 on a GPU and on a CPU
    with bfloat16 instructions (torch's choice), float32 on other CPUs."""
    return torch.bfloat16 if device.type != "cpu" or cpu_has_bf16() else torch.float32


def auto_precision(accelerator: str = "auto") -> str:
    """bf16-mixed where a CUDA GPU that supports bfloat16 will be used, 32-true otherwise."""
    wants_gpu = accelerator in ("auto", "gpu", "cuda")
    if wants_gpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"
