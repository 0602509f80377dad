"""A callback for benchmarks: when each validation of a `train.py` run starts and ends
(wall-clock seconds since the epoch) and its val/loss, one JSON line each.

    python train.py ... +callbacks.val_clock._target_=benchmarks.val_clock.ValClock \\
        +callbacks.val_clock.path=clock.jsonl
"""

from __future__ import annotations

import json
import time

import lightning as L


class ValClock(L.Callback):
    def __init__(self, path: str):
        self.path = path
        self._start = 0.0

    def on_validation_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.time()

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loss = trainer.callback_metrics.get("val/loss")
        if trainer.sanity_checking or loss is None:
            return
        record = {
            "step": trainer.global_step,
            "start": self._start,
            "end": time.time(),
            "val_loss": float(loss),
        }
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
