"""Learning-rate schedules, as `LambdaLR` factories: the lambda gives the factor applied to
each parameter group's base learning rate at optimizer step `step` (0-based)."""

from __future__ import annotations

import logging
import math

from lightning_utilities.core.rank_zero import rank_zero_only
from torch.optim import Optimizer
from torch.optim.lr_scheduler import LambdaLR

log = logging.getLogger(__name__)
# the share of decay_steps a warm-up that does not fit before them is cut to
SHORT_RUN_WARMUP_SHARE = 0.1


def fitted_warmup(warmup_steps: int, decay_start: float, decay_steps: int) -> int:
    """warmup_steps, or a tenth of the steps before the decay starts when the warm-up would
    not end before it (a run shorter than its warm-up: `trainer.max_steps=50` with the
    default 100 warm-up steps), with a one-line notice. decay_start: the step where the
    learning rate starts to fall (decay_steps for the cosine, whose fall is the decay)."""
    if warmup_steps == 0 or warmup_steps < decay_start:
        return warmup_steps
    fitted = int(decay_start * SHORT_RUN_WARMUP_SHARE)
    if getattr(rank_zero_only, "rank", 0) == 0:  # set once Lightning starts
        log.warning(
            f"scheduler.warmup_steps={warmup_steps} does not end before the decay starts at "
            f"step {decay_start:g} of decay_steps={decay_steps} (which follows "
            f"trainer.max_steps): warming up over {fitted} steps instead"
        )
    return fitted


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
    """Linear warm-up, then cosine decay from each group's lr down to `min_lr` (a warm-up
    as long as the decay is cut to a tenth of it: `fitted_warmup`)."""
    if warmup_steps < 0:
        raise ValueError(f"scheduler.warmup_steps={warmup_steps} must be >= 0")
    if decay_steps < 1:
        raise ValueError(f"scheduler.decay_steps={decay_steps} must be >= 1")
    warmup_steps = fitted_warmup(warmup_steps, decay_steps, decay_steps)
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


def warmup_stable_decay_factor(
    step: int, warmup_steps: int, decay_steps: int, cooldown: float, final_ratio: float
) -> float:
    """The factor of each group's lr: linear warm-up over `warmup_steps`, then 1, then over
    the last `cooldown` share of `decay_steps` linearly down to `final_ratio` (reached at
    decay_steps and kept after)."""
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    decay_start = decay_steps * (1.0 - cooldown)
    if step < decay_start:
        return 1.0
    progress = min(1.0, (step - decay_start) / max(1.0, decay_steps - decay_start))
    return 1.0 - (1.0 - final_ratio) * progress


def warmup_stable_decay(
    optimizer: Optimizer,
    warmup_steps: int,
    decay_steps: int,
    cooldown: float = 0.5,
    final_ratio: float = 0.0,
) -> LambdaLR:
    """Warm-up, stable, decay ("WSD", the modded-nanogpt speedrun's shape): every group's
    lr is held until the last `cooldown` share of decay_steps, then falls linearly to
    `final_ratio` of itself. Scales each group from its own lr, so it suits optimizers
    whose groups differ by orders of magnitude (minigpt.training.optimizers.MuonWithAdamW)."""
    if warmup_steps < 0:
        raise ValueError(f"scheduler.warmup_steps={warmup_steps} must be >= 0")
    if decay_steps < 1:
        raise ValueError(f"scheduler.decay_steps={decay_steps} must be >= 1")
    if not 0.0 < cooldown <= 1.0:
        raise ValueError(f"scheduler.cooldown={cooldown} must be in (0, 1]: a share of steps")
    if not 0.0 <= final_ratio <= 1.0:
        raise ValueError(f"scheduler.final_ratio={final_ratio} must be in [0, 1]")
    decay_start = decay_steps * (1.0 - cooldown)
    warmup_steps = fitted_warmup(warmup_steps, decay_start, decay_steps)

    def factor(step: int) -> float:
        return warmup_stable_decay_factor(step, warmup_steps, decay_steps, cooldown, final_ratio)

    # the last step of the stable phase: checkpointed as decay_start.ckpt, the state a longer
    # run continues from (minigpt.training.run.LastCheckpoint). On the function, not the
    # scheduler: a scheduler's attributes are in its state dict, and a resumed run would
    # take the old schedule's step from the checkpoint
    factor.stable_until = math.floor(decay_start)
    return LambdaLR(optimizer, factor)
