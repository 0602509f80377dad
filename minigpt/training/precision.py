"""The default numeric precision for a run."""

from __future__ import annotations

import torch


def auto_precision(accelerator: str = "auto") -> str:
    """bf16-mixed where a CUDA GPU that supports bfloat16 will be used, 32-true otherwise."""
    wants_gpu = accelerator in ("auto", "gpu", "cuda")
    if wants_gpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"
