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


class CountScalarReads(L.Callback):
    """Writes `reads-rank<r>.json`: {step: reads of a tensor's value by the host} for every
    training step of the rank (`.item()`, `float()`, `bool()`: on a GPU each waits for the
    device). Its step marker runs before every other callback."""

    def __init__(self, out_dir: str):
        from torch.utils._python_dispatch import TorchDispatchMode

        class Reads(TorchDispatchMode):
            def __init__(self):
                super().__init__()
                self.step, self.per_step = None, {}

            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                if func is torch.ops.aten._local_scalar_dense.default and self.step is not None:
                    self.per_step[self.step] = self.per_step.get(self.step, 0) + 1
                return func(*args, **(kwargs or {}))

        self.out_dir, self.reads, self.marker = Path(out_dir), Reads(), None

    def setup(self, trainer, pl_module, stage):
        if self.marker is None:
            reads = self.reads

            class MarkSteps(L.Callback):
                def on_train_batch_start(self, trainer, *args):
                    reads.step = trainer.global_step + 1  # the step this batch makes

                def on_validation_start(self, trainer, *args):
                    reads.step = None

            self.marker = MarkSteps()
            trainer.callbacks.insert(0, self.marker)

    def on_train_start(self, trainer, pl_module):
        self.reads.__enter__()

    def on_train_end(self, trainer, pl_module):
        self.reads.__exit__(None, None, None)
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / f"reads-rank{trainer.global_rank}.json"
        path.write_text(json.dumps(self.reads.per_step))
