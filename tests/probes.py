"""Callbacks the tests add to runs of train.py (`+callbacks.<name>._target_=probes.<Class>`)."""

import json
from pathlib import Path

import lightning as L
import torch


class RecordBatches(L.Callback):
    """Writes `batches-rank<r>.json`: the input tokens of every batch the rank trained on."""

    def __init__(self, out_dir: str):
        self.out_dir = Path(out_dir)
        self.inputs: list[list[list[int]]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.inputs.append(batch[0].tolist())

    def on_train_end(self, trainer, pl_module):
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / f"batches-rank{trainer.global_rank}.json"
        path.write_text(json.dumps(self.inputs))


class PoisonWeights(L.Callback):
    """Makes one rank's weights NaN before training step `step`: that rank alone sees a
    loss that is not finite."""

    def __init__(self, step: int, rank: int = 0):
        self.step, self.rank = step, rank

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step and trainer.global_rank == self.rank:
            with torch.no_grad():
                for p in pl_module.parameters():
                    p.fill_(float("nan"))


class RaiseAtStep(L.Callback):
    """Raises a ValueError before training step `step`: an error in the middle of training."""

    def __init__(self, step: int):
        self.step = step

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == self.step:
            raise ValueError(f"a failure at step {self.step}")
