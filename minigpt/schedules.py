"""Learning-rate schedules, as `LambdaLR` factories: the lambda gives the factor applied to
each parameter group's base learning rate at optimizer step `step` (0-based)."""

from __future__ import annotations

import math

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR


def warmup_cosine_factor(
    step: int, base_lr: float, warmup_steps: int, decay_steps: int, min_lr: float
) -> float:
    """nanoGPT's schedule, as a factor of base_lr: linear warm-up to base_lr over
    `warmup_steps`, cosine decay to `min_lr` at `decay_steps`, then `min_lr`."""
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    if step >= decay_steps:
        return min_lr / base_lr
    progress = (step - warmup_steps) / max(1, decay_steps - warmup_steps)
    cosine = 0.5 * (1.0 + math.cos(math.pi * progress))  # 1 -> 0
    return (min_lr + cosine * (base_lr - min_lr)) / base_lr


def warmup_cosine(
    optimizer: Optimizer, warmup_steps: int, decay_steps: int, min_lr: float
) -> LambdaLR:
    """Linear warm-up, then cosine decay from each group's lr down to `min_lr`."""
    if warmup_steps < 0 or decay_steps <= warmup_steps:
        raise ValueError(
            f"scheduler needs 0 <= warmup_steps < decay_steps, got warmup_steps={warmup_steps}, "
            f"decay_steps={decay_steps}: lower scheduler.warmup_steps or raise "
            "scheduler.decay_steps (it follows trainer.max_steps by default)"
        )
    lambdas = []
    for group in optimizer.param_groups:
        base_lr = group["lr"]
        if not 0.0 <= min_lr <= base_lr:
            raise ValueError(f"scheduler.min_lr={min_lr} must be in [0, lr={base_lr}]")
        lambdas.append(
            lambda step, base_lr=base_lr: warmup_cosine_factor(
                step, base_lr, warmup_steps, decay_steps, min_lr
            )
        )
    return LambdaLR(optimizer, lambdas)


def constant(optimizer: Optimizer, warmup_steps: int = 0) -> LambdaLR:
    """The optimizer's lr throughout, after an optional linear warm-up."""
    if warmup_steps < 0:
        raise ValueError(f"scheduler.warmup_steps={warmup_steps} must be >= 0")
    return LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / (warmup_steps + 1)))
