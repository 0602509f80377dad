"""The progress bars: training's optimizer steps out of max_steps, redrawn on logging steps
only; eval.py's batches of a split."""

from __future__ import annotations

import sys

import lightning as L
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm, convert_inf


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


class ScoringProgressBar(TQDMProgressBar):
    """eval.py's bar: the batches of one split scored, named by the split ("test: 12/55"),
    in the style of the training bar."""

    def __init__(self, split: str):
        super().__init__()
        self.split = split

    def init_test_tqdm(self) -> Tqdm:
        return Tqdm(
            desc=self.split,
            position=2 * self.process_position,
            disable=self.is_disabled,
            leave=True,
            dynamic_ncols=True,
            file=sys.stdout,
            bar_format=self.BAR_FORMAT,
        )

    def on_test_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0) -> None:
        if self.has_dataloader_changed(dataloader_idx):  # not "Testing DataLoader 0"
            self.test_progress_bar.reset(convert_inf(self.total_test_batches_current_dataloader))
