"""The LightningModule around the GPT: loss, metrics, optimizer and schedule."""

from __future__ import annotations

import math

import lightning as L
import torch
from hydra.utils import instantiate
from torchmetrics import MeanMetric
from torchmetrics.text import Perplexity

from minigpt.model import GPT, IGNORE_INDEX, GPTConfig


class GPTLightningModule(L.LightningModule):
    """Trains a `GPT`.

    Every argument is plain data (dicts of numbers and strings), so the hyperparameters saved
    in a checkpoint load with `torch.load(weights_only=True)`:
    - model: the GPTConfig fields.
    - optimizer / scheduler: Hydra `_partial_` configs; the optimizer is called with the
      model's parameter groups (weight decay on matrices only), the scheduler with the
      optimizer, and the schedule steps once per optimizer step.
    - tokenizer: the tokenizer's dict, so a checkpoint alone can encode and decode.
    - compile: run the training steps through `torch.compile(model.forward)` (GPU);
      `compile_mode` is torch.compile's mode (None: default, "max-autotune", ...).
      Validation and sampling use the plain module: a training step is compiled once, and
      neither eval mode, a short last validation batch nor the KV cache's one-token steps
      recompile it. Parameters and checkpoints are those of the plain module.
    """

    def __init__(
        self,
        model: dict,
        optimizer: dict,
        scheduler: dict,
        tokenizer: dict | None = None,
        compile: bool = False,
        compile_mode: str | None = None,
    ):
        super().__init__()
        self.save_hyperparameters(logger=False)  # train.py logs the whole config instead
        self.model = GPT(GPTConfig(**model))
        # a compiled function, not a module, so it adds nothing to the state dict
        self._compiled_forward = (
            torch.compile(self.model.forward, mode=compile_mode) if compile else None
        )
        self.val_loss = MeanMetric()
        self.val_ppl = Perplexity(ignore_index=IGNORE_INDEX)
        self.val_history: list[tuple[int, float]] = []  # (step, val/loss) of each validation
        self.val_tokens_per_byte = 0.0  # set from the data to log val/bpb
        self._grad_norm: torch.Tensor | None = None  # this step's, when logged

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        return self.model(idx, targets)

    def _train_forward(self, inputs: torch.Tensor, targets: torch.Tensor):
        return (self._compiled_forward or self.model)(inputs, targets)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        inputs, targets = batch
        _, loss = self._train_forward(inputs, targets)
        if self._is_logging_step():
            # not prog_bar: Lightning would read it back after every batch, which on a GPU
            # waits for the device (the bar shows it all the same, minigpt.callbacks)
            self.log("train/loss", loss)
            if not torch.isfinite(loss):  # diverged: stop rather than train on NaNs
                self.trainer.should_stop = True
        return loss

    def _is_logging_step(self) -> bool:
        """Whether Lightning writes step metrics at this step (every log_every_n_steps, and
        the last). Each `self.log` call costs ~0.7 ms on CPU (a few % of a small model's
        step), so training metrics are logged only on the steps that are written."""
        step = self.trainer.global_step + 1
        return step % self.trainer.log_every_n_steps == 0 or step >= self.trainer.max_steps

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        inputs, targets = batch
        logits, loss = self.model(inputs, targets)
        # token-weighted mean, so that batches with padding count by their real tokens
        self.val_loss.update(loss, weight=(targets != IGNORE_INDEX).sum())
        self.val_ppl.update(logits.float(), targets)
        self.log("val/loss", self.val_loss, prog_bar=True)
        self.log("val/ppl", self.val_ppl)

    def on_validation_epoch_end(self) -> None:
        loss = float(self.val_loss.compute())
        if not math.isfinite(loss):
            self.trainer.should_stop = True
        if self.val_tokens_per_byte:
            # bits per byte: nats per token * tokens per byte / ln 2
            # the same on every rank (val_loss.compute() is already synced)
            self.log("val/bpb", loss * self.val_tokens_per_byte / math.log(2), sync_dist=True)
        if not self.trainer.sanity_checking:
            self.val_history.append((self.global_step, loss))

    def on_before_optimizer_step(self, optimizer) -> None:
        scaler = getattr(self.trainer.precision_plugin, "scaler", None)
        if scaler is not None and getattr(optimizer, "_step_supports_amp_scaling", False):
            # 16-mixed with a fused optimizer: Lightning leaves the gradients scaled for the
            # fused step to unscale; unscale them now so that the norm and the clipping see
            # the true gradients (the scaler's step then knows they are unscaled)
            scaler.unscale_(optimizer)
        self._grad_norm = None
        if self._is_logging_step():  # the gradient norm before clipping
            grads = [p.grad for p in self.parameters() if p.grad is not None]
            self._grad_norm = torch.nn.utils.get_total_norm(grads)
            self.log("train/grad_norm", self._grad_norm)

    def configure_gradient_clipping(
        self, optimizer, gradient_clip_val=None, gradient_clip_algorithm=None
    ) -> None:
        """Clips here: Lightning's mixed-precision plugin refuses to clip for optimizers that
        unscale gradients inside their step (fused AdamW); on_before_optimizer_step has
        already unscaled them. Reuses the norm logged this step, if any."""
        if not gradient_clip_val:
            return
        if gradient_clip_algorithm == "value":
            torch.nn.utils.clip_grad_value_(self.parameters(), gradient_clip_val)
            return
        parameters = [p for p in self.parameters() if p.grad is not None]
        if self._grad_norm is None:
            torch.nn.utils.clip_grad_norm_(parameters, gradient_clip_val)
        else:
            torch.nn.utils.clip_grads_with_norm_(parameters, gradient_clip_val, self._grad_norm)

    def configure_optimizers(self):
        optimizer = instantiate(self.hparams.optimizer, _convert_="all")(self.model.param_groups())
        scheduler = instantiate(self.hparams.scheduler, _convert_="all")(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "name": "lr"},
        }
