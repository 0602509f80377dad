"""Writing checkpoints during training, so that a run can always be resumed.

- `AtomicCheckpointIO` writes every checkpoint to a temporary file beside its target,
  fsyncs it and renames it over the target: a kill or a full disk at any moment leaves the
  previous checkpoint whole.
- `BestCheckpoint` and `LastCheckpoint` are Lightning's ModelCheckpoint for the two files a
  run keeps: `best.ckpt` (lowest val/loss) and `last.ckpt` (the latest state: every N steps
  and/or M minutes, and when training ends or is interrupted). Neither writes weights that
  are not finite.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities import rank_zero_only

from minigpt.cli import is_integer, is_number

log = logging.getLogger(__name__)


class AtomicCheckpointIO(TorchCheckpointIO):
    """torch.save into `<name>.tmp-<pid>` in the target's directory, fsync, rename over the
    target, fsync the directory. On any error the temporary file is removed and the error
    raised; the target is untouched."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path, storage_options=None) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        directory = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(directory)  # the rename itself survives a power cut
        finally:
            os.close(directory)


def weights_are_finite(module: torch.nn.Module) -> bool:
    return bool(torch.stack([torch.isfinite(p).all() for p in module.parameters()]).all())


class _FiniteCheckpoint(ModelCheckpoint):
    """Writes nothing once the run has diverged or its weights are not finite, so the last
    good checkpoint stays as it was."""

    def _save_checkpoint(self, trainer: L.Trainer, filepath: str) -> None:
        module = trainer.lightning_module
        if getattr(module, "diverged", False) or not weights_are_finite(module):
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
        if self.every_n_minutes is not None and not due:
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
        self._last_global_step_saved = trainer.global_step
        self._last_time = time.monotonic()
