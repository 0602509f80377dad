"""The LightningModule around the GPT: loss, metrics, optimizer and schedule."""

from __future__ import annotations

import math

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from hydra.utils import instantiate
from torchmetrics import MeanMetric, SumMetric

from minigpt.core.measures import bits_per_byte
from minigpt.core.model import GPT, IGNORE_INDEX, GPTConfig
from minigpt.core.tokenizers import tokenizer_from_dict
from minigpt.training.sharding import full_tensor, gathered_state, is_sharded, shard_model

COMPILE_MODES = (None, "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


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
    - seed: dropout's random numbers in training batch i of rank r come from a generator
      seeded with (seed, r, i), so a resumed run draws the ones an uninterrupted run would.
    - val_tokens_per_byte: tokens per byte of the validation text, to log val/bpb.
    - tokens_per_batch: input tokens of one training batch; with the model's FLOPs per
      token they give `flops_per_batch`, for the throughput monitor's MFU.
    """

    def __init__(
        self,
        model: dict,
        optimizer: dict,
        scheduler: dict,
        tokenizer: dict | None = None,
        compile: bool = False,
        compile_mode: str | None = None,
        seed: int = 0,
        val_tokens_per_byte: float = 0.0,
        tokens_per_batch: int = 0,
    ):
        super().__init__()
        if compile_mode not in COMPILE_MODES:
            raise ValueError(
                f"compile_mode={compile_mode!r} is not one of "
                f"{', '.join(str(m) for m in COMPILE_MODES)}"
            )
        self.save_hyperparameters(logger=False)  # train.py logs the whole config instead
        self.model = GPT(GPTConfig(**model))
        # read before any wrapping (FSDP shards the parameters): every strategy gets these
        self.param_group_names = self.model.param_group_names()
        self._whole: tuple[int, GPT | None] | None = None  # (step, gathered copy)
        # a compiled function, not a module, so it adds nothing to the state dict
        self._compiled_forward = (
            torch.compile(self.model.forward, mode=compile_mode) if compile else None
        )
        self.val_loss = MeanMetric()  # token-weighted, synced across DDP ranks
        self.test_loss, self.test_tokens, self.test_windows = MeanMetric(), SumMetric(), SumMetric()
        # bits per byte count the loss on tokens of text: not on end-of-text tokens, which
        # stand for no bytes
        self.end_of_text = tokenizer_from_dict(tokenizer).eot_id if tokenizer else None
        self.val_text_loss, self.test_text_loss = MeanMetric(), MeanMetric()
        self.val_tokens_per_byte = val_tokens_per_byte
        self.flops_per_batch = self.model.flops_per_token() * tokens_per_batch or None
        self.diverged = False  # a loss stopped being finite (on any rank)
        self._grad_norm: torch.Tensor | None = None  # this step's, when logged

    def configure_model(self) -> None:
        """Under `trainer=fsdp` (ModelParallelStrategy): shards the model over the
        data-parallel ranks. Other strategies wrap the model themselves."""
        mesh = getattr(self, "_device_mesh", None)
        if mesh is not None and not is_sharded(self.model):
            shard_model(self.model, mesh["data_parallel"])

    def whole_model(self) -> GPT | None:
        """The GPT with all its weights, for sampling and drawing: the module's own, or,
        when the model is sharded, a copy gathered onto rank 0 (None on the other ranks).
        Sharded, this is a collective that every rank must call; the copy is kept until the
        next optimizer step."""
        if not is_sharded(self.model):
            return self.model
        step = self.trainer.global_step
        if self._whole is None or self._whole[0] != step:
            state = gathered_state(self.model)
            copy = None
            if state is not None:
                copy = GPT(GPTConfig(**self.hparams.model))
                copy.load_state_dict(state)
                copy.to(self.device).eval()
            self._whole = (step, copy)
        return self._whole[1]

    def forward(self, idx: torch.Tensor, targets: torch.Tensor | None = None):
        return self.model(idx, targets)

    def _train_forward(self, inputs: torch.Tensor, targets: torch.Tensor):
        return (self._compiled_forward or self.model)(inputs, targets)

    def on_train_batch_start(self, batch, batch_idx: int) -> None:
        accumulate = self.trainer.accumulate_grad_batches
        index = self.global_step * accumulate + batch_idx % accumulate
        sequence = np.random.SeedSequence([self.hparams.seed, self.global_rank, index])
        seed = int(sequence.generate_state(1)[0])
        # the CPU's generator and this device's: torch.manual_seed would also queue a seed
        # for every accelerator kind not yet started, recording the call stack each time
        # (~1 ms a step on a CPU)
        torch.default_generator.manual_seed(seed)
        if self.device.type != "cpu":
            torch.get_device_module(self.device).manual_seed(seed)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        inputs, targets = batch
        _, loss = self._train_forward(inputs, targets)
        if self._is_logging_step():
            # not prog_bar: Lightning would read it back after every batch, which on a GPU
            # waits for the device (the progress bar shows it all the same)
            self.log("train/loss", loss)
            self._stop_if_diverged(not torch.isfinite(loss))
        return loss

    def _stop_if_diverged(self, not_finite: bool) -> None:
        """Stops training when a loss is not finite on any rank: the decision is reduced
        across ranks, so that all stop at the same step (none is left waiting in an
        all-reduce). Checkpoints are not written from then on (minigpt.core.checkpoint)."""
        if self.trainer.strategy.reduce_boolean_decision(bool(not_finite), all=False):
            self.diverged = True
            self.trainer.should_stop = True

    def _is_logging_step(self) -> bool:
        """Whether Lightning writes step metrics at this step (every log_every_n_steps, and
        the last). Each `self.log` call costs ~0.7 ms on CPU (a few % of a small model's
        step), so training metrics are logged only on the steps that are written."""
        step = self.trainer.global_step + 1
        return step % self.trainer.log_every_n_steps == 0 or step >= self.trainer.max_steps

    def token_losses(self, batch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Each target's loss (B, T), which targets count (not padding), and which are
        text (not end-of-text either)."""
        inputs, targets = batch
        logits, _ = self.model(inputs)
        losses = F.cross_entropy(
            logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX, reduction="none"
        ).view_as(targets)
        counted = targets != IGNORE_INDEX
        text = counted if self.end_of_text is None else counted & (targets != self.end_of_text)
        return losses, counted, text

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        losses, counted, text = self.token_losses(batch)
        # token-weighted means, so that batches with padding count by their real tokens
        self.val_loss.update(losses, weight=counted)
        self.val_text_loss.update(losses, weight=text)
        self.log("val/loss", self.val_loss, prog_bar=True)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], batch_idx: int):
        """Scores a batch of the split `eval.py` evaluates: the token-weighted mean loss (and
        that of the text tokens, for bits per byte), and how many windows and tokens it
        covered."""
        inputs, _ = batch
        losses, counted, text = self.token_losses(batch)
        self.test_loss.update(losses, weight=counted)
        self.test_text_loss.update(losses, weight=text)
        tokens = counted.sum()
        self.test_tokens.update(tokens)
        self.test_windows.update(torch.tensor(float(len(inputs))))
        self.log("test/loss", self.test_loss, prog_bar=True)
        self.log("test/text_loss", self.test_text_loss)
        self.log("test/tokens", self.test_tokens)
        self.log("test/windows", self.test_windows)

    def on_validation_epoch_end(self) -> None:
        loss = float(self.val_loss.compute())  # the same on every rank (synced)
        if not self.trainer.sanity_checking:
            self._stop_if_diverged(not math.isfinite(loss))
        # perplexity is exp(mean loss): no second softmax over the logits
        self.log("val/ppl", math.exp(min(loss, 700.0)), sync_dist=True)
        if self.val_tokens_per_byte:
            text_loss = float(self.val_text_loss.compute())
            self.log("val/bpb", bits_per_byte(text_loss, self.val_tokens_per_byte), sync_dist=True)
        self.val_text_loss.reset()
        # the x of these points: the optimizer steps done, as in metrics.json (Lightning
        # would use the count before this step's increment, one less)
        self.log("step", float(self.global_step))

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
            # of all ranks' gradients: under DDP each rank holds them all (averaged); under
            # FSDP each holds rows of each, and the norm of the DTensors is reduced over ranks
            self._grad_norm = torch.nn.utils.get_total_norm(grads)
            self.log("train/grad_norm", full_tensor(self._grad_norm))

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
        groups = self.model.param_groups(self.model.named_parameters(), self.param_group_names)
        optimizer = instantiate(self.hparams.optimizer, _convert_="all")(groups)
        scheduler = instantiate(self.hparams.scheduler, _convert_="all")(optimizer)
        return {
            "optimizer": optimizer,
            "lr_scheduler": {"scheduler": scheduler, "interval": "step", "name": "lr"},
        }
