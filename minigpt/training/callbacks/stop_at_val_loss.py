"""StopAtValLoss: ends a run at the first validation below a target val/loss."""

from __future__ import annotations

import logging
import sys

import lightning as L
from lightning.pytorch.callbacks import EarlyStopping
from lightning.pytorch.utilities import rank_zero_only

from minigpt.core.options import is_number

log = logging.getLogger(__name__)


class StopAtValLoss(EarlyStopping):
    """Lightning's EarlyStopping, used for its threshold only: stops training after the
    first validation whose val/loss is below target (`stop_at_val_loss`), and says so."""

    def __init__(self, target: float):
        if not is_number(target) or not target > 0:
            raise ValueError(f"stop_at_val_loss={target!r} must be a positive number or null")
        super().__init__(
            monitor="val/loss",
            mode="min",
            stopping_threshold=float(target),
            patience=sys.maxsize,  # never for lack of progress
            check_finite=False,  # a diverged run has its own handling
            strict=False,  # a run without validation just never stops early
        )

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        loss = trainer.callback_metrics.get("val/loss")
        if trainer.sanity_checking or loss is None or not loss < self.stopping_threshold:
            return
        rank_zero_only(log.info)(
            f"val/loss {float(loss):.4f} is below stop_at_val_loss={self.stopping_threshold} "
            f"at step {trainer.global_step}: stopping"
        )
