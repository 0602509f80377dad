"""The composed config checked before a run starts, so that bad input is one clear line:
numeric options of the wrong type or range, and a GPU asked for where there is none."""

from __future__ import annotations

import math

import torch
from omegaconf import DictConfig, OmegaConf

from minigpt.core.options import is_integer, is_number

# option -> the smallest value it takes
INTEGERS = {
    "seed": 0,
    "trainer.max_steps": 1,
    "trainer.val_check_interval": 1,
    "trainer.log_every_n_steps": 1,
    "trainer.accumulate_grad_batches": 1,
    "trainer.num_sanity_val_steps": 0,
    "data.batch_size": 1,
    "data.block_size": 1,
    "data.seed": 0,
    "data.num_workers": 0,
    "callbacks.throughput.window_size": 1,
}
# option -> the smallest value it takes, or null
OPTIONAL_INTEGERS = {"trainer.check_val_every_n_epoch": 1, "trainer.max_epochs": -1}
NUMBERS = {"optimizer.lr": 0.0, "trainer.gradient_clip_val": 0.0}  # null allowed for clipping


_ABSENT = object()


def option(cfg: DictConfig, key: str):
    return OmegaConf.select(cfg, key, default=_ABSENT)


def check_config(cfg: DictConfig) -> None:
    """Raises a ValueError naming the first option whose value has the wrong type or range."""
    derived = {"trainer.accumulate_grad_batches"} if option(cfg, "global_batch_tokens") else set()
    for key, low in INTEGERS.items():
        value = option(cfg, key)
        if value is None and key in derived:
            continue  # set from global_batch_tokens
        if value is not _ABSENT and (not is_integer(value) or value < low):
            raise ValueError(f"{key}={value!r} must be an integer >= {low}")
    for key, low in OPTIONAL_INTEGERS.items():
        value = option(cfg, key)
        if value not in (None, _ABSENT) and (not is_integer(value) or value < low):
            raise ValueError(f"{key}={value!r} must be an integer >= {low}, or null")
    for key, low in NUMBERS.items():
        value = option(cfg, key)
        if value is _ABSENT or (value is None and key == "trainer.gradient_clip_val"):
            continue
        if not is_number(value) or value < low:
            raise ValueError(f"{key}={value!r} must be a number >= {low}")
    budget = option(cfg, "flops_budget")
    if budget not in (None, _ABSENT) and not (is_number(budget) and 0 < budget < math.inf):
        raise ValueError(f"flops_budget={budget!r} must be a positive number of FLOPs, or null")
    limit = option(cfg, "trainer.limit_val_batches")
    if not is_number(limit) or limit < 0:
        raise ValueError(
            f"trainer.limit_val_batches={limit!r} must be a batch count or a fraction in [0, 1]"
        )
    threads = option(cfg, "threads")
    if threads not in ("auto", _ABSENT) and (not is_integer(threads) or threads < 1):
        raise ValueError(f"threads={threads!r} must be auto or an integer >= 1")
    strategy = option(cfg, "trainer.strategy")
    sharded = isinstance(strategy, DictConfig) and "FullySharded" in str(strategy.get("_target_"))
    if sharded and option(cfg, "compile") is True:
        raise ValueError(
            "compile=true with trainer=fsdp is not supported: the compiled forward would skip "
            "FSDP's gathering of the whole model's own weights; use compile=false"
        )
    accelerator = str(option(cfg, "trainer.accelerator"))
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"trainer.accelerator={accelerator} but this machine has no CUDA GPU: "
            "use trainer=cpu (or trainer.accelerator=auto)"
        )
