"""The life of a run, in one place: its directory, resuming it, its checkpoint files, the
signals that stop it and its record (metrics.json). Every guarantee a run makes is kept here:

- **Directory.** A run writes into `outputs/<date>/<time>-<pid>/` (`slurm-<job id>` in a SLURM
  batch job, so that a requeued job finds its checkpoint); a directory that holds a run is only
  entered to resume it; a run that stopped on bad input leaves no directory behind.
- **Resuming.** `ckpt_path=last|<file>` continues a run bit-identically: the config must equal
  the checkpoint's but for RESUME_MAY_CHANGE; every callback's state (the record, the step
  timer, the checkpoints' bookkeeping) travels in the checkpoint; the learning rate continues
  where it was (ScheduleContinues). The rest of the guarantee lives with what it is about:
  training batch i of rank r is drawn from (seed, r, i) (minigpt.data.StepBatches), and
  dropout in that batch is seeded the same way (GPTLightningModule.on_train_batch_start).
- **Checkpoint files.** `best.ckpt`, `last.ckpt` and (WSD) `decay_start.ckpt` are written
  atomically (a kill at any moment leaves the previous file whole; temporary files a kill
  left are removed at the next start), at optimizer-step ends only, never with weights that
  are not finite.
- **Signals.** Ctrl-C, SIGTERM and SLURM's requeue signal stop the run at the end of the next
  optimizer step, after writing last.ckpt; the process exits 128 + the signal number with the
  command that resumes it.
- **Record.** `RunReport` keeps the config, the val curve, the training time and how the run
  ended, saves them in every checkpoint and writes `metrics.json` when fitting ends.
"""

from __future__ import annotations

import fcntl
import json
import logging
import math
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import OmegaConf

from minigpt.core.checkpoint import LATEST, latest_run, read_checkpoint
from minigpt.core.measures import bits_per_byte
from minigpt.core.options import flatten, is_integer, is_number
from minigpt.training.callbacks.step_timer import StepTimer
from minigpt.training.callbacks.tensorboard import declare_hparams, log_hparam_metrics
from minigpt.training.sharding import is_sharded, local_tensor

log = logging.getLogger(__name__)
# every validation: into train.log alone (conf/hydra/default.yaml; the bar shows them)
validations = logging.getLogger("minigpt.validations")


# ------------------------------------------------------------------------------- directory


def slurm_job_id() -> str:
    """The id `scontrol requeue` takes: <array job>_<task> for an element of an array."""
    array_job = os.environ.get("SLURM_ARRAY_JOB_ID")
    if array_job is not None:
        return f"{array_job}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    return os.environ["SLURM_JOB_ID"]


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


LOCK = ".lock"
_held_locks: dict[Path, int] = {}  # run directory -> the open lock file this process holds


def is_first_process() -> bool:
    """Whether this process is the run's first: not a DDP worker that Lightning, torchrun
    or SLURM started beside it (those share the first one's directory)."""
    ranks = ("RANK", "LOCAL_RANK", "NODE_RANK", "GROUP_RANK", "SLURM_PROCID")
    return all(os.environ.get(name, "0") == "0" for name in ranks)


def hold_run_dir(run_dir: Path) -> None:
    """Takes the run directory's lock (an flock on <run_dir>/.lock, which the kernel
    releases when the process ends, however it ends) for the rest of this process's run,
    or raises a ValueError naming the process that holds it: two processes writing the
    same checkpoints would each overwrite the other's. Taken again, it is kept."""
    key = run_dir.resolve()
    if key in _held_locks or not is_first_process():
        return
    run_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(run_dir / LOCK, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "another process"
        os.close(fd)
        raise ValueError(
            f"{run_dir} is in use by process {holder}, which is running this run: wait for "
            f"it to end (or stop it: kill {holder}), then resume; nothing was changed"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, str(os.getpid()).encode(), 0)
    _held_locks[key] = fd


def release_run_dir(run_dir: Path) -> None:
    """Gives the run directory's lock back (the next job of a sweep, or a test, may take
    it)."""
    fd = _held_locks.pop(run_dir.resolve(), None)
    if fd is not None:
        os.close(fd)


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


def expand_latest(argv: list[str]) -> list[str]:
    """`ckpt_path=latest` resumes the run <paths.log_dir>/latest points to: the arguments
    with it replaced by `ckpt_path=last hydra.run.dir=<that run>`."""
    if "ckpt_path=latest" not in argv:
        return argv
    named = [a for a in argv if a.startswith("hydra.run.dir=")]
    if named or "-m" in argv or "--multirun" in argv:
        raise ValueError(
            f"ckpt_path=latest names the run to resume itself: drop {(named or ['-m'])[0]}, "
            "or resume a run of your choice with ckpt_path=last hydra.run.dir=<its directory>"
        )
    args = dict(a.split("=", 1) for a in argv if "=" in a and not a.startswith("-"))
    run_dir = latest_run(args.get("paths.log_dir", "outputs"))
    rest = [a for a in argv if a != "ckpt_path=latest"]
    return [*rest, "ckpt_path=last", f"hydra.run.dir={run_dir}"]


def point_latest(output_dir: Path, log_dir: Path, name: str = LATEST) -> None:
    """Points <log_dir>/<name> at output_dir (relative, so that the outputs can move),
    replacing the link in one step; a run outside log_dir leaves it."""
    try:
        target = output_dir.resolve().relative_to(log_dir.resolve())
    except ValueError:
        return
    link, staging = log_dir / name, log_dir / f".{name}.{os.getpid()}.tmp"
    try:
        staging.unlink(missing_ok=True)
        staging.symlink_to(target, target_is_directory=True)
        os.replace(staging, link)
    except OSError as err:  # a file system without links, or a directory named so
        staging.unlink(missing_ok=True)
        log.warning(f"could not point {link} at this run ({err.strerror or err})")


def check_run_dir_before_hydra(argv: list[str]) -> list[str]:
    """What Hydra would otherwise meet first, with a traceback or by overwriting: a run
    directory (or outputs/) that cannot be written, or `hydra.run.dir=<a run's directory>`
    without ckpt_path (refused before Hydra writes its config files there; a requeued SLURM
    job resumes there instead). Returns the arguments, `ckpt_path=latest` expanded."""
    try:
        argv = expand_latest(argv)
    except (ValueError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    args = dict(a.split("=", 1) for a in argv if "=" in a and not a.startswith("-"))
    run_dir = args.get("hydra.run.dir")
    try:
        if run_dir is None or "-m" in argv or "--multirun" in argv:
            check_writable(Path(args.get("paths.log_dir", "outputs")), "paths.log_dir")
            return argv
        check_writable(Path(run_dir), "hydra.run.dir")
        hold_run_dir(Path(run_dir))  # before Hydra rewrites its .hydra/ files
        if args.get("ckpt_path", "null") == "null":
            run_dir = Path(run_dir)
            if conflict := run_dir_conflict(run_dir, resolve_ckpt_path(None, run_dir)):
                raise ValueError(conflict)
    except ValueError as err:
        if run_dir is not None:
            release_run_dir(Path(run_dir))
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
    return argv


def remove_if_unused(run_dir: Path, log_dir: Path) -> None:
    """Removes a failed run's directory when it holds nothing but what was written at the
    start (.hydra/, train.log, starts.jsonl): an empty outputs/<date>/<time>-<pid>/ per
    mistyped command helps no one. A directory with checkpoints, logs or metrics.json stays."""
    if not run_dir.is_dir() or os.environ.get("LOCAL_RANK", "0") != "0":
        return
    if {p.name for p in run_dir.iterdir()} <= {".hydra", "train.log", "starts.jsonl", LOCK}:
        shutil.rmtree(run_dir, ignore_errors=True)
        latest = log_dir / LATEST
        if latest.is_symlink() and latest.resolve() == run_dir.resolve():
            latest.unlink()
        day = run_dir.parent  # outputs/<date>/, if this was its only run
        if day.parent.resolve() == log_dir.resolve() and not any(day.iterdir()):
            day.rmdir()


# -------------------------------------------------------------------------------- resuming


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


RESUME_MAY_CHANGE = (
    "ckpt_path",
    "trainer.max_steps",
    "scheduler.decay_steps",  # as long as the learning rate continues (ScheduleContinues)
    "stop_at_val_loss",
    "sample",
    "paths",
    "logger",
    "callbacks",
    "compile",
    "compile_mode",
    "threads",
    "trainer.devices",
    "trainer.num_nodes",
    "trainer.accelerator",
    "trainer.strategy",
    "trainer.enable_progress_bar",
    "data.num_workers",
    "data.cache_dir",
    "hparams_search",
)


# options added after runs were saved with the project: a checkpoint whose config lacks one
# ran as that value does
ADDED_OPTIONS = {
    "data.split_batches": False,
    "optimizer.ns_dtype": "bfloat16",
    "global_batch_tokens": None,
    "model.vocab_multiple": 1,
    "flops_budget": None,
    "optimizer.ns_method": "jordan",
    "optimizer.ns_gram": False,
    "optimizer.momentum_warmup_steps": 0,
    "optimizer.momentum_start": 0.85,
    "model.value_embeddings": False,
    "model.smear": False,
    "model.x0_skip": False,
}


def check_resume_config(saved: dict, current: dict, path: Path) -> None:
    """Raises a ValueError naming the first field that differs between the config a run
    was started with (saved in its checkpoint) and the resumed run's, unless it may change."""
    old, new = flatten(saved), flatten(current)
    for key in sorted(old.keys() | new.keys()):
        if any(key == k or key.startswith(f"{k}.") for k in RESUME_MAY_CHANGE):
            continue
        if key not in old and key in ADDED_OPTIONS and new.get(key) == ADDED_OPTIONS[key]:
            continue  # saved before the option existed, and run as its value does
        if old.get(key, "<unset>") != new.get(key, "<unset>"):
            what = "the model's shape" if key.startswith("model.") else "the run"
            raise ValueError(
                f"cannot resume from {path}: {key}={new.get(key, '<unset>')!r} changes {what} "
                f"(the checkpoint has {old.get(key, '<unset>')!r}); drop the override, or start "
                f"a new run. A resumed run may change: {', '.join(RESUME_MAY_CHANGE)}"
            )


def check_resume(ckpt_path: Path, source: dict) -> None:
    """Raises a ValueError unless the run in ckpt_path can be resumed with the config source
    (unresolved): the checkpoint must hold a run record whose config equals it, but for what
    RESUME_MAY_CHANGE."""
    saved = read_checkpoint(ckpt_path).get("callbacks", {}).get("RunReport")
    if saved is None:
        raise ValueError(f"{ckpt_path} holds no run record: it cannot be resumed")
    check_resume_config(saved["config"], source, ckpt_path)
    steps = [flatten(c).get("trainer.max_steps") for c in (saved["config"], source)]
    if steps[0] != steps[1] and source.get("flops_budget") is None:  # else: the budget's
        log.info(
            f"extending the run from trainer.max_steps={steps[0]} to {steps[1]}: the learning "
            "rate must continue where it is (a decayed one is not warmed up again)"
        )


def task_overrides() -> list[str]:
    """The arguments this run was started with (none when Hydra's command line did not
    start it)."""
    try:
        return list(HydraConfig.get().overrides.task)
    except ValueError:
        return []


def resume_command(output_dir: Path) -> str:
    """The command line that continues this run, as this run was started: through `make
    train` (the Makefile's environment), as the `minigpt` command, or with the interpreter
    that runs it (which may be a virtual environment's that is not on PATH)."""
    overrides = [o for o in task_overrides() if not o.startswith(("ckpt_path=", "hydra.run.dir="))]
    args = [*overrides, "ckpt_path=last", f"hydra.run.dir={output_dir}"]
    if os.environ.get("MAKELEVEL"):
        return f"make train ARGS={shlex.quote(shlex.join(args))}"
    script = Path(sys.argv[0])
    if script.name == "train.py" and script.parent.name == "commands":  # `minigpt train`
        return shlex.join([str(Path(sys.executable).parent / "minigpt"), "train", *args])
    return shlex.join([sys.executable, sys.argv[0], *args])


def record_start(output_dir: Path) -> None:
    """Appends this start's arguments to <run>/starts.jsonl: Hydra's .hydra/overrides.yaml
    holds only the latest start's, and a resume would lose the first's."""
    entry = {"time": datetime.now().isoformat(timespec="seconds"), "args": task_overrides()}
    with open(output_dir / "starts.jsonl", "a") as starts:
        starts.write(json.dumps(entry) + "\n")


DECAY_START = "decay_start.ckpt"


def stable_until(trainer: L.Trainer) -> int | None:
    """The last step before the learning rate starts to fall, for a schedule that holds it
    (the stable_until of WSD's factor), else None."""
    configs = trainer.lr_scheduler_configs
    lambdas = getattr(configs[0].scheduler, "lr_lambdas", []) if configs else []
    step = getattr(lambdas[0], "stable_until", None) if lambdas else None
    return step if step else None


class ScheduleContinues(L.Callback):
    """A resumed run continues the learning rate it stopped at. The schedule follows
    trainer.max_steps, so extending a run (`ckpt_path=last trainer.max_steps=<more>`) would
    re-warm a decayed learning rate (WSD at step 5000 of 8000: from 0 to 0.75 of its peak).
    Such a resume is refused, saying how to extend instead: from `decay_start.ckpt`, the
    state at the end of WSD's stable phase, in a new run directory (the longer run is then
    the run that had been planned longer), or with the schedule the run had
    (`scheduler.decay_steps=<its max_steps>`: the learning rate stays where it ended)."""

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        step = trainer.global_step
        if step == 0:
            return
        for config in trainer.lr_scheduler_configs:
            scheduler = config.scheduler
            lambdas = getattr(scheduler, "lr_lambdas", None)
            if lambdas is None:
                continue
            for group, base_lr, factor in zip(
                scheduler.optimizer.param_groups, scheduler.base_lrs, lambdas, strict=True
            ):
                was, now = group["lr"], base_lr * factor(scheduler.last_epoch)
                if not math.isclose(was, now, rel_tol=1e-6, abs_tol=1e-12):
                    raise ValueError(
                        f"cannot resume at step {step} with trainer.max_steps="
                        f"{trainer.max_steps}: the learning rate of {group.get('name', 'a group')} "
                        f"would jump from {was:.3g} to {now:.3g} (the schedule follows "
                        f"trainer.max_steps). To train longer, resume from {DECAY_START} (the "
                        f"end of WSD's stable phase) in a new run directory, or keep the "
                        f"schedule the run had: scheduler.decay_steps=<its max_steps>"
                    )


# ------------------------------------------------------------------------ checkpoint files


class CheckpointNotWritten(RuntimeError):
    """A checkpoint file the system would not let us write (a full disk, a quota, a
    directory gone): the file of that name, if any, is still the previous whole one."""

    def __init__(self, path: Path, err: OSError):
        super().__init__(f"could not write {path} ({err.strerror or err})")
        self.path = path


class _WriteErrors:
    """A file for torch.save that keeps the OSError of a failed write (ENOSPC, EDQUOT):
    torch's zip writer turns it into a RuntimeError that no longer says why."""

    def __init__(self, file):
        self.file, self.error = file, None

    def write(self, data) -> int:
        try:
            return self.file.write(data)
        except OSError as err:
            self.error = err
            raise

    def flush(self) -> None:
        self.file.flush()


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save into `<name>.tmp-<pid>` in the target's directory, fsync, rename over the
    target, fsync the directory. On any error the temporary file is removed and the error
    raised (CheckpointNotWritten for the system's: no space, no permission); the target is
    untouched."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        path = Path(path)
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        stream = None
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                stream = _WriteErrors(f)
                torch.save(checkpoint, stream)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException as err:
            tmp.unlink(missing_ok=True)
            # torch's writer reports a failed write as a RuntimeError of its own
            system_error = err if isinstance(err, OSError) else stream and stream.error
            if system_error:
                raise CheckpointNotWritten(path, system_error) from err
            raise
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself survives a power cut
        finally:
            os.close(directory)


def checkpoint_step(path: Path) -> int | None:
    """The optimizer step a checkpoint file holds (memory-mapped: only that is read), or
    None when there is no readable file."""
    try:
        return int(
            torch.load(path, map_location="cpu", weights_only=True, mmap=True)["global_step"]
        )
    except Exception:
        return None


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def remove_stale_temporaries(run_dir: Path) -> list[Path]:
    """Removes the `<name>.tmp-<pid>` files (checkpoints, metrics.json) that a writer killed
    mid-write left in the run directory, when their process is gone; returns them."""
    removed = []
    for path in [*run_dir.glob("*.tmp-*"), *run_dir.glob("checkpoints/*.tmp-*")]:
        pid = path.name.rpartition(".tmp-")[2]
        if pid.isdigit() and not pid_alive(int(pid)):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def weights_are_finite(trainer: L.Trainer, module: torch.nn.Module) -> bool:
    """Whether every weight is finite; sharded (FSDP), each rank looks at its own rows and
    all ranks agree on the answer."""
    finite = torch.stack([torch.isfinite(local_tensor(p)).all() for p in module.parameters()])
    if is_sharded(module):
        return trainer.strategy.reduce_boolean_decision(bool(finite.all()), all=True)
    return bool(finite.all())


class _FiniteCheckpoint(ModelCheckpoint):
    """Writes nothing once the run has diverged or its weights are not finite, so the last
    good checkpoint stays as it was."""

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        module = trainer.lightning_module
        if getattr(module, "diverged", False) or not weights_are_finite(trainer, module):
            rank_zero_only(log.warning)(
                f"weights are not finite at step {trainer.global_step}: not saving"
            )
            return
        super()._save_checkpoint(trainer, filepath)


class BestCheckpoint(_FiniteCheckpoint):
    """`<dirpath>/best.ckpt`: the state with the lowest `monitor` so far (val/loss, after
    validations)."""

    def __init__(self, dirpath: str, filename: str = "best", monitor: str = "val/loss"):
        super().__init__(
            dirpath=dirpath,
            filename=filename,
            monitor=monitor,
            mode="min",
            save_top_k=1,
            save_last=False,
            auto_insert_metric_name=False,
            enable_version_counter=False,
        )


def ends_optimizer_step(trainer: L.Trainer, batch_idx: int) -> bool:
    """Whether this training batch is the last of its optimizer step (gradient accumulation
    done): the only place a checkpoint holds a whole step."""
    return (batch_idx + 1) % trainer.accumulate_grad_batches == 0


def validates_after(trainer: L.Trainer, batch_idx: int) -> bool:
    """Whether Lightning validates right after this training batch (every
    `val_check_batch` batches, counted over the whole run)."""
    every = trainer.val_check_batch
    if not trainer.enable_validation or not isinstance(every, int) or every <= 0:
        return False
    return (batch_idx + 1) % every == 0


def ranks_agree_now(trainer: L.Trainer) -> bool:
    """Whether the ranks exchange decisions (stop on a signal, a timed checkpoint) after this
    optimizer step: every step in one process, where deciding costs nothing; on the logging
    steps (every trainer.log_every_n_steps, and the last) under DDP or FSDP, where agreeing
    waits for the device, as the logging of those steps does anyway."""
    if trainer.world_size == 1:
        return True
    step = trainer.global_step
    return step % trainer.log_every_n_steps == 0 or step >= trainer.max_steps


class LastCheckpoint(_FiniteCheckpoint):
    """`<dirpath>/last.ckpt`: the state after the latest optimizer step it saw fit to keep,
    every `every_n_steps` optimizer steps and/or every `every_n_minutes` minutes of
    training (null: never on that count), and when training ends. `save_now` writes it at
    once (an interrupted run). Always at an optimizer step's end, never mid-accumulation,
    and after the step's validation if it has one: a resumed run does not validate the step
    it resumes from, so the checkpoint must already hold that validation."""

    def __init__(
        self, dirpath: str, every_n_steps: int | None = 100, every_n_minutes: float | None = None
    ):
        if every_n_steps is not None and (not is_integer(every_n_steps) or every_n_steps <= 0):
            raise ValueError(
                f"callbacks.last_checkpoint.every_n_steps={every_n_steps!r} must be a positive "
                "integer or null"
            )
        if every_n_minutes is not None and (not is_number(every_n_minutes) or every_n_minutes <= 0):
            raise ValueError(
                f"callbacks.last_checkpoint.every_n_minutes={every_n_minutes!r} must be a "
                "positive number or null"
            )
        super().__init__(
            dirpath=dirpath,
            monitor=None,
            save_top_k=0,
            save_last=True,
            enable_version_counter=False,
        )
        self.every_n_steps, self.every_n_minutes = every_n_steps, every_n_minutes
        self._last_time = time.monotonic()
        self._after_validation = False  # due at a step that validates: save after it

    @property
    def state_key(self) -> str:
        return "LastCheckpoint"

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last_time = time.monotonic()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not ends_optimizer_step(trainer, batch_idx):
            return  # inside gradient accumulation: the state is not a whole step
        if self._last_global_step_saved == trainer.global_step:
            return  # saved already
        due = self.every_n_steps is not None and trainer.global_step % self.every_n_steps == 0
        due = due or trainer.global_step == stable_until(trainer)
        if self.every_n_minutes is not None and not due and ranks_agree_now(trainer):
            late = time.monotonic() - self._last_time >= 60 * self.every_n_minutes
            due = trainer.strategy.broadcast(late)  # rank 0's clock decides for all
        if due and validates_after(trainer, batch_idx):
            self._after_validation = True
        elif due:
            self.save_now(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._after_validation and not trainer.sanity_checking:
            self._after_validation = False
            self.save_now(trainer)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._last_global_step_saved != trainer.global_step and not trainer.fast_dev_run:
            self.save_now(trainer)

    def save_now(self, trainer: L.Trainer) -> None:
        self._save_last_checkpoint(trainer, self._monitor_candidates(trainer))
        if trainer.global_step == stable_until(trainer):
            # the state a longer run continues from (see ScheduleContinues)
            trainer.save_checkpoint(Path(self.dirpath) / DECAY_START, weights_only=False)
        self._last_global_step_saved = trainer.global_step
        self._last_time = time.monotonic()


# --------------------------------------------------------------------------------- signals


def slurm_requeue_environment(trainer: L.Trainer) -> SLURMEnvironment | None:
    environment = trainer._accelerator_connector.cluster_environment
    if isinstance(environment, SLURMEnvironment) and environment.auto_requeue:
        return environment
    return None


class RunInterrupted(BaseException):
    """Raised at the step boundary where a signalled run stops (after saving last.ckpt)."""

    def __init__(self, signum: signal.Signals):
        super().__init__(f"interrupted by {signum.name}")
        self.signum = signum

    @property
    def exit_code(self) -> int:
        """The shell's convention for a process stopped by a signal: 128 + its number."""
        return 128 + int(self.signum)


class GracefulStop(L.Callback):
    """Turns SIGINT, SIGTERM (and SLURM's requeue signal) into a checkpointed stop at the
    end of the next optimizer step (under DDP or FSDP: the next logging step, where the
    ranks agree on it). A second Ctrl-C stops at once, as usual."""

    def __init__(self):
        self.received: signal.Signals | None = None
        self._stop_after_validation = False
        self._previous: dict[signal.Signals, object] = {}
        self._requeue_signal: signal.Signals | None = None

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # after Lightning's own handlers (set up when fitting starts), which would stop
        # mid-accumulation (SIGTERM) or save while a step is half done (SLURM requeue)
        signals = [signal.SIGINT, signal.SIGTERM]
        environment = slurm_requeue_environment(trainer)
        if environment is not None:
            self._requeue_signal = environment.requeue_signal
            signals.append(environment.requeue_signal)
        for signum in signals:
            self._previous[signum] = signal.signal(signum, self._handle)
        # Lightning broadcasts its own SIGTERM flag from rank 0 before every training batch
        # under DDP/FSDP and reads it back (a wait for the device each step); with its
        # handler replaced by this one, that flag never rises: skip the exchange
        loop = trainer.fit_loop.epoch_loop
        if hasattr(loop, "_broadcast_sigterm_tensor"):
            loop._broadcast_sigterm_tensor = lambda: None

    def _handle(self, signum: int, frame) -> None:
        if self.received == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt  # pressed twice: stop now
        self.received = signal.Signals(signum)
        log.warning(f"{self.received.name}: saving last.ckpt after this step, then stopping")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not ends_optimizer_step(trainer, batch_idx):
            return  # inside gradient accumulation: the state is not a whole step
        if not ranks_agree_now(trainer):
            return  # a signal waits for the next logging step (all ranks stop at the same)
        flag = self.received is not None
        if trainer.world_size > 1:
            flag = trainer.strategy.reduce_boolean_decision(flag, all=False)
        if not flag:
            return
        if validates_after(trainer, batch_idx):
            self._stop_after_validation = True
        else:
            self.stop(trainer)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self._stop_after_validation and not trainer.sanity_checking:
            self.stop(trainer)

    def stop(self, trainer: L.Trainer) -> None:
        signum = self.received or signal.SIGTERM  # or another rank's signal
        report = find_callback(trainer, RunReport)
        if report is not None:
            report.interrupted = signum.name
        checkpoint = find_callback(trainer, LastCheckpoint)
        if checkpoint is not None:
            checkpoint.save_now(trainer)
        if signum == self._requeue_signal and trainer.is_global_zero:
            job = slurm_job_id()
            result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
            if result.returncode == 0:
                log.warning(f"requeued SLURM job {job}: it resumes from last.ckpt")
            else:
                log.error(f"could not requeue SLURM job {job}: {result.stderr.strip()}")
        raise RunInterrupted(signum)

    def teardown(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
        self._previous = {}


# ---------------------------------------------------------------------------------- record


def finite_or_none(value: Any) -> Any:
    """JSON has no NaN or infinity: strict parsers reject the bare `NaN` Python writes."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_none(v) for v in value]
    return value


def write_json_atomically(path: Path, data: dict) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(finite_or_none(data), indent=2, allow_nan=False))
    os.replace(tmp, path)


def compiled_graphs() -> int:
    """Graphs torch.compile has compiled in this process so far (a recompile adds one)."""
    return torch._dynamo.utils.counters["stats"]["unique_graphs"]


def find_callback(trainer: L.Trainer, kind: type):
    return next((c for c in trainer.callbacks if isinstance(c, kind)), None)


class RunReport(L.Callback):
    """Records the run and writes `<output_dir>/metrics.json` (rank 0) when fitting ends,
    logging the headline metrics beside the hyperparameters (TensorBoard's HPARAMS tab).

    config: the composed config (plain data), logged as the hyperparameters. source: the same
    before interpolations are resolved, saved in the checkpoints so a resumed run can be
    checked against it (a value that follows another, like scheduler.decay_steps following
    trainer.max_steps, changes with it). tokens_per_step: tokens one optimizer step trains
    on, summed over ranks and accumulated batches."""

    def __init__(
        self,
        config: dict,
        source: dict,
        output_dir: str,
        tokens_per_step: int,
        stop_at_val_loss: float | None = None,
    ):
        self.config, self.source, self.output_dir = config, source, Path(output_dir)
        self.tokens_per_step, self.stop_at_val_loss = tokens_per_step, stop_at_val_loss
        self.val_curve: list[list] = []  # [step, val/loss] of each validation
        self.train_seconds = 0.0  # in earlier sessions of this run (resumed runs)
        self.resumed_at: list[int] = []  # steps this run was resumed from
        self.interrupted: str | None = None  # the signal that stopped the run, if any
        self.steps_started = False  # in this process: errors from now on are failures
        self.metrics: dict | None = None
        self._start = time.perf_counter()  # of this session's fit
        self._graphs_before = 0
        # (step, tokens seen by then) where this session started: a run resumed on another
        # number of devices trains on another number of tokens per step from there on
        self._tokens_from = (0, 0)
        self._trainer: L.Trainer | None = None

    @property
    def state_key(self) -> str:
        return "RunReport"

    @property
    def seconds_so_far(self) -> float:
        """Training time of the whole run: earlier sessions and this one."""
        return self.train_seconds + time.perf_counter() - self._start

    def tokens_seen(self, step: int) -> int:
        """Tokens trained on by optimizer step `step` (of this session), over all sessions."""
        start, tokens = self._tokens_from
        return tokens + (step - start) * self.tokens_per_step

    def state_dict(self) -> dict:
        step = self._trainer.global_step if self._trainer else 0
        return {
            "config": self.source,
            "val_curve": self.val_curve,
            "train_seconds": self.seconds_so_far,
            "resumed_at": self.resumed_at,
            "tokens_seen": [step, self.tokens_seen(step)],
        }

    def load_state_dict(self, state: dict) -> None:
        self.val_curve = [list(v) for v in state["val_curve"]]
        self.train_seconds = state["train_seconds"]
        self.resumed_at = list(state["resumed_at"])
        if "tokens_seen" in state:  # else: the same tokens per step throughout
            self._tokens_from = tuple(state["tokens_seen"])

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        self._trainer = trainer

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()
        self._graphs_before = compiled_graphs()
        declare_hparams(trainer, self.config)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step > 0:  # restored from a checkpoint
            self.resumed_at.append(trainer.global_step)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.steps_started = True

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loss = trainer.callback_metrics.get("val/loss")
        if trainer.sanity_checking or loss is None:
            return
        step = trainer.global_step
        self.val_curve = [v for v in self.val_curve if v[0] < step] + [[step, float(loss)]]
        if trainer.is_global_zero:
            tokens_per_byte = getattr(pl_module, "val_tokens_per_byte", 0.0)
            bpb = f", {bits_per_byte(float(loss), tokens_per_byte):.3f} bits/byte"
            validations.info(
                f"validation at step {step}: val/loss {float(loss):.4f}"
                f"{bpb if tokens_per_byte else ''}, {self.seconds_so_far:.0f} s of training"
            )

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.finish(trainer, pl_module)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception) -> None:
        if self.interrupted:  # stopped by a signal (GracefulStop): report so far
            self.finish(trainer, pl_module)

    def finish(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.metrics = self.collect(trainer, pl_module)
        if not self.interrupted:  # one hp/* point, when the run ends (not at each stop)
            log_hparam_metrics(trainer, self.metrics)
        if trainer.is_global_zero:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            write_json_atomically(self.output_dir / "metrics.json", self.metrics)

    def collect(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
        curve = self.val_curve
        logged = trainer.callback_metrics.get("train/loss")
        train_loss = float(logged) if logged is not None else None
        diverged = getattr(pl_module, "diverged", False) or any(
            not math.isfinite(v) for _, v in curve
        )
        best = min(curve, key=lambda h: h[1]) if curve and not diverged else None
        tokens_per_byte = getattr(pl_module, "val_tokens_per_byte", 0.0)
        timer = find_callback(trainer, StepTimer)
        best_checkpoint = find_callback(trainer, BestCheckpoint)
        last_checkpoint = find_callback(trainer, LastCheckpoint)
        best_path = best_checkpoint.best_model_path if best_checkpoint else ""
        last_path = last_checkpoint.last_model_path if last_checkpoint else ""
        target = self.stop_at_val_loss
        status = "diverged" if diverged else "interrupted" if self.interrupted else "done"
        return {
            "status": status,
            "diverged": diverged,
            "interrupted": self.interrupted,
            "best_val_loss": best[1] if best else None,
            "best_val_step": best[0] if best else None,
            "final_val_loss": curve[-1][1] if curve else None,
            "final_val_step": curve[-1][0] if curve else None,
            "best_val_bpb": bits_per_byte(best[1], tokens_per_byte) if best else None,
            "final_val_bpb": bits_per_byte(curve[-1][1], tokens_per_byte) if curve else None,
            "val_curve": curve,
            "train_loss": train_loss,
            "steps": trainer.global_step,
            "tokens_seen": self.tokens_seen(trainer.global_step),
            "wall_time_s": round(self.seconds_so_far, 2),
            "median_step_ms": timer.median_ms if timer else None,
            "parameters": pl_module.model.num_parameters(),
            "non_embedding_parameters": pl_module.model.num_parameters(embeddings=False),
            # training compute: (6 N + the attention term) per token, times the tokens seen
            "training_flops": pl_module.model.flops_per_token()
            * self.tokens_seen(trainer.global_step),
            "stop_at_val_loss": target,
            # the first validation below stop_at_val_loss
            "target_step": next((s for s, v in curve if target is not None and v < target), None),
            "best_checkpoint": (best_path or None) if not diverged else None,
            "last_checkpoint": last_path if last_path and Path(last_path).is_file() else None,
            "resumed_at": self.resumed_at,
            # 1 with compile=true: the training step, compiled once and never again
            "compiled_graphs": compiled_graphs() - self._graphs_before,
        }
