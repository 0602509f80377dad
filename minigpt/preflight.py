"""Checks made before a run starts, so that bad input is one clear line and nothing is
overwritten: numeric options of the wrong type, directories that cannot be written, a run
directory that holds another run, and which checkpoint a resumed run starts from; and how
many CPU threads the run's processes take."""

from __future__ import annotations

import os
import tempfile
from datetime import datetime
from pathlib import Path

import torch
from lightning.fabric.plugins.environments import SLURMEnvironment
from omegaconf import DictConfig, OmegaConf

from minigpt.cli import is_integer, is_number

# option -> the smallest value it takes
INTEGERS = {
    "seed": 0,
    "trainer.max_steps": 1,
    "trainer.val_check_interval": 1,
    "trainer.log_every_n_steps": 1,
    "trainer.accumulate_grad_batches": 1,
    "trainer.num_sanity_val_steps": 0,
    "data.batch_size": 1,
    "data.num_workers": 0,
}
NUMBERS = {"optimizer.lr": 0.0, "trainer.gradient_clip_val": 0.0}  # null allowed for clipping
# torch's own choice in this process (physical cores, or $OMP_NUM_THREADS), before any run
# sets it
DEFAULT_THREADS = torch.get_num_threads()


_ABSENT = object()


def option(cfg: DictConfig, key: str):
    return OmegaConf.select(cfg, key, default=_ABSENT)


def check_config(cfg: DictConfig) -> None:
    """Raises a ValueError naming the first option whose value has the wrong type or range."""
    for key, low in INTEGERS.items():
        value = option(cfg, key)
        if value is not _ABSENT and (not is_integer(value) or value < low):
            raise ValueError(f"{key}={value!r} must be an integer >= {low}")
    for key, low in NUMBERS.items():
        value = option(cfg, key)
        if value is _ABSENT or (value is None and key == "trainer.gradient_clip_val"):
            continue
        if not is_number(value) or value < low:
            raise ValueError(f"{key}={value!r} must be a number >= {low}")
    limit = option(cfg, "trainer.limit_val_batches")
    if not is_number(limit) or limit < 0:
        raise ValueError(
            f"trainer.limit_val_batches={limit!r} must be a batch count or a fraction in [0, 1]"
        )
    threads = option(cfg, "threads")
    if threads not in ("auto", _ABSENT) and (not is_integer(threads) or threads < 1):
        raise ValueError(f"threads={threads!r} must be auto or an integer >= 1")
    accelerator = str(option(cfg, "trainer.accelerator"))
    if accelerator in ("gpu", "cuda") and not torch.cuda.is_available():
        raise ValueError(
            f"trainer.accelerator={accelerator} but this machine has no CUDA GPU: "
            "use trainer=cpu (or trainer.accelerator=auto)"
        )


def check_writable(directory: Path, option_name: str) -> None:
    """Creates the directory if needed and writes a file into it, before any training."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=directory, prefix=".write-check-"):
            pass
    except OSError as err:
        raise ValueError(
            f"cannot write to {option_name}={directory} ({err.strerror or err}): "
            "choose a directory you can write to"
        ) from None


def run_dir_conflict(run_dir: Path, resume_from: Path | None) -> str | None:
    """Why a run may not start in run_dir, or None: a directory that already holds a run
    (metrics.json or checkpoints) is only entered to resume that run."""
    held = [p.name for p in (run_dir / "metrics.json", run_dir / "checkpoints") if p.exists()]
    if not held:
        return None
    if (
        resume_from is not None
        and resume_from.resolve().parent == (run_dir / "checkpoints").resolve()
    ):
        return None
    return (
        f"{run_dir} already holds a run ({', '.join(held)}): resume it with ckpt_path=last, "
        "or pick another hydra.run.dir (nothing was changed)"
    )


def resolve_ckpt_path(ckpt_path: str | None, run_dir: Path) -> Path | None:
    """The checkpoint to resume from: ckpt_path as given, `last` for the run directory's
    checkpoints/last.ckpt, or (None) none, except in a SLURM job that was requeued: it
    continues from its run directory's last.ckpt when there is one."""
    last = run_dir / "checkpoints" / "last.ckpt"
    if ckpt_path is None:
        requeued = int(os.environ.get("SLURM_RESTART_COUNT", "0") or 0) > 0
        return last if requeued and last.is_file() else None
    if str(ckpt_path) == "last":
        if not last.is_file():
            raise FileNotFoundError(
                f"ckpt_path=last: there is no {last}; pass the run's directory as "
                "hydra.run.dir=<outputs/date/time-id> or a file as ckpt_path=<a .ckpt file>"
            )
        return last
    path = Path(str(ckpt_path))
    if path.is_dir():
        raise ValueError(f"ckpt_path={path} is a directory: pass a .ckpt file, or `last`")
    if not path.is_file():
        raise FileNotFoundError(f"ckpt_path={path} does not exist: pass a .ckpt file, or `last`")
    return path


def slurm_job_id() -> str:
    """The id `scontrol requeue` takes: <array job>_<task> for an element of an array."""
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array_job is not None:
        return f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ["SLURM_JOB_ID"]


def run_subdir(kind: str = "run") -> str:
    """Where a run (or a sweep: kind="sweep") writes, under outputs/: `slurm-<job id>` for
    a run in a SLURM batch job (the same when the job is requeued, so that it finds its
    checkpoint), else `<date>/<time>-<process id>`: two runs started in the same second
    get directories of their own."""
    if kind == "run" and SLURMEnvironment.detect():
        return f"slurm-{slurm_job_id()}"
    return f"{datetime.now():%Y-%m-%d/%H-%M-%S}-{os.getpid()}"


def register_run_subdir() -> None:
    OmegaConf.register_new_resolver("run_subdir", run_subdir, use_cache=True, replace=True)


def set_cpu_threads(threads: int | str, processes: int) -> int:
    """Sets torch's intra-op threads for this process and returns the number: `threads`, or
    for `auto` torch's default (the physical cores, or $OMP_NUM_THREADS) shared among the
    `processes` the run starts on this machine (DDP), at least 1. More threads than cores
    slow every process down many times over."""
    if threads == "auto":
        threads = max(1, DEFAULT_THREADS // max(1, processes))
    torch.set_num_threads(threads)
    return threads
