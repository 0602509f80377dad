"""Training callbacks of our own (Lightning's built-ins cover checkpoints and lr logging)."""

from __future__ import annotations

import statistics
import time

import lightning as L


class StepTimer(L.Callback):
    """Wall time of each optimizer step (data, forward, backward, update), leaving out steps
    that include a validation run. `median_ms` is the figure to compare runs by."""

    def __init__(self):
        self.step_ms: list[float] = []
        self._last_time: float | None = None
        self._last_step = -1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        now = time.perf_counter()
        if trainer.global_step == self._last_step:  # inside gradient accumulation
            return
        if self._last_time is not None:
            self.step_ms.append((now - self._last_time) * 1000.0)
        self._last_time, self._last_step = now, trainer.global_step

    def on_validation_end(self, trainer, pl_module) -> None:
        self._last_time = None  # the next step's time would include validation

    @property
    def median_ms(self) -> float | None:
        return statistics.median(self.step_ms) if self.step_ms else None
