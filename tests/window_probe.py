"""A callback for the DDP test: each rank writes down which training windows it drew."""

import json
from pathlib import Path

import lightning as L


class RecordWindows(L.Callback):
    """Writes `windows-rank<r>.json`: the rank's sampler, the dataset indices it yields this
    epoch, and the input tokens of every batch the rank trained on."""

    def __init__(self, out_dir: str):
        self.out_dir = Path(out_dir)
        self.inputs: list[list[list[int]]] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.inputs.append(batch[0].tolist())

    def on_train_end(self, trainer, pl_module):
        sampler = trainer.train_dataloader.sampler
        record = {
            "rank": trainer.global_rank,
            "sampler": type(sampler).__name__,
            "num_replicas": getattr(sampler, "num_replicas", None),
            "indices": list(sampler),  # the same epoch's order: set_epoch fixed its seed
            "inputs": self.inputs,
        }
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / f"windows-rank{trainer.global_rank}.json"
        path.write_text(json.dumps(record))
