"""Stopping a run on a signal without losing it: Ctrl-C, SIGTERM, and SLURM's warning
before a job's time limit.

A signal only raises a flag. At the end of the next optimizer step (never inside gradient
accumulation, never halfway through an update; after the step's validation if it has one)
the run writes `last.ckpt` and raises `RunInterrupted`: metrics.json is written (marked
interrupted) and train.py exits non-zero with the command that resumes it. Under DDP the
flag is reduced across ranks at every step, so all ranks stop at the same step whichever
of them got the signal.

On SLURM with auto-requeue (Lightning's `SLURMEnvironment`, the default there), the
requeue signal (SIGUSR1: `#SBATCH --signal=USR1@90`) does the same and then asks SLURM to
requeue the job; the requeued job runs in the same run directory (`outputs/slurm-<job id>`)
and resumes from `last.ckpt` by itself.
"""

from __future__ import annotations

import logging
import signal
import subprocess

import lightning as L
from lightning.fabric.plugins.environments import SLURMEnvironment

from minigpt.checkpoint_callbacks import LastCheckpoint, ends_optimizer_step, validates_after
from minigpt.preflight import slurm_job_id
from minigpt.report import RunReport, find_callback

log = logging.getLogger(__name__)


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
    end of the next optimizer step. A second Ctrl-C stops at once, as usual."""

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

    def _handle(self, signum: int, frame) -> None:
        if self.received == signal.SIGINT and signum == signal.SIGINT:
            raise KeyboardInterrupt  # pressed twice: stop now
        self.received = signal.Signals(signum)
        log.warning(f"{self.received.name}: saving last.ckpt after this step, then stopping")

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if not ends_optimizer_step(trainer, batch_idx):
            return  # inside gradient accumulation: the state is not a whole step
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
