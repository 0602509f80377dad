"""The progress bar: optimizer steps out of max_steps, redrawn on logging steps only."""

from __future__ import annotations

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar


class LoggingStepProgressBar(TQDMProgressBar):
    """Lightning's progress bar counting optimizer steps out of max_steps ("train 120/1200",
    not epochs of an endless stream), redrawn every `refresh_rate` batches (give it the
    logging interval), with the last logged train/loss. Reading a value from a GPU waits
    until the device has done all queued work, so values are read only when the bar is
    redrawn, and the steps in between can be queued while the device works."""

    def __init__(self, refresh_rate: int = 1, accumulate: int = 1):
        super().__init__(refresh_rate=refresh_rate)
        self.step_interval = max(1, refresh_rate // accumulate)  # in optimizer steps

    @property
    def train_description(self) -> str:
        return "train"

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        bar = self.train_progress_bar
        bar.reset(total=trainer.max_steps if trainer.max_steps > 0 else None)
        bar.n = bar.last_print_n = trainer.global_step  # a resumed run starts where it was
        bar.refresh()

    def on_train_epoch_start(self, trainer: L.Trainer, *_) -> None:
        pass  # one bar for the run, not one per pass over the data (debug=overfit_batch)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step, bar = trainer.global_step, self.train_progress_bar
        due = step % self.step_interval == 0 or step == trainer.max_steps
        if self.is_enabled and bar is not None and step != bar.n and due:
            bar.n = step
            bar.set_postfix(self.get_metrics(trainer, pl_module))  # redraws

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
        metrics = super().get_metrics(trainer, pl_module)
        loss = trainer.callback_metrics.get("train/loss")
        if loss is not None:
            metrics["train/loss"] = f"{loss.item():.3f}"
        return metrics
