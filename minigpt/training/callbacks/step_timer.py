"""StepTimer: the wall time of each optimizer step, and its median for the run."""

from __future__ import annotations

import itertools
import statistics
import time

import lightning as L
import torch


class StepTimer(L.Callback):
    """Wall time of each optimizer step (data, forward, backward, update), leaving out steps
    that include a validation run. `median_ms` is the figure to compare runs by.

    On a GPU the host runs ahead of the device between synchronizations, so host clocks
    would time how fast work is queued. There each step's end is a CUDA event recorded in
    the stream, read only at validation and at the end (no synchronization per step)."""

    def __init__(self):
        self.step_ms: list[float] = []
        self._marks: list = []  # step ends since the last validation: events or host times
        self._last_step = -1

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self._last_step:  # inside gradient accumulation
            return
        self._last_step = trainer.global_step
        if trainer.strategy.root_device.type == "cuda":
            event = torch.cuda.Event(enable_timing=True)
            event.record()
            self._marks.append(event)
        else:
            self._marks.append(time.perf_counter())

    def _collect(self) -> None:
        marks, self._marks = self._marks, []
        if len(marks) < 2:
            return
        if isinstance(marks[0], torch.cuda.Event):
            marks[-1].synchronize()
            self.step_ms += [a.elapsed_time(b) for a, b in itertools.pairwise(marks)]
        else:
            self.step_ms += [(b - a) * 1000.0 for a, b in itertools.pairwise(marks)]

    def on_validation_start(self, trainer, pl_module) -> None:
        self._collect()  # the next step's time would include validation

    def on_train_end(self, trainer, pl_module) -> None:
        self._collect()

    def state_dict(self) -> dict:  # a resumed run's median counts the earlier steps too
        self._collect()
        return {"step_ms": torch.tensor(self.step_ms, dtype=torch.float64)}

    def load_state_dict(self, state: dict) -> None:
        self.step_ms = state["step_ms"].tolist()

    @property
    def median_ms(self) -> float | None:
        self._collect()
        return statistics.median(self.step_ms) if self.step_ms else None
