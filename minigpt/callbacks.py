"""Training callbacks of our own (Lightning's built-ins cover checkpoints and lr logging)."""

from __future__ import annotations

import statistics
import time

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from minigpt.sampling import sample_texts
from minigpt.tokenizers import tokenizer_from_dict


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


def batch_size(batch) -> int:
    """Sequences in an (inputs, targets) batch, for Lightning's ThroughputMonitor."""
    return batch[0].size(0)


def batch_tokens(batch) -> int:
    """Input tokens in an (inputs, targets) batch, for Lightning's ThroughputMonitor."""
    return batch[0].numel()


class TextSamples(L.Callback):
    """After every validation, generates text from a fixed prompt and seed and writes it to
    the TensorBoard TEXT tab (`samples`), so the model can be watched learning to write."""

    def __init__(
        self,
        prompt: str = "\n",
        max_new_tokens: int = 200,
        seed: int = 1337,
        temperature: float = 0.8,
        top_p: float | None = 0.95,
    ):
        self.prompt, self.max_new_tokens, self.seed = prompt, max_new_tokens, seed
        self.temperature, self.top_p = temperature, top_p

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        writers = [
            logger.experiment for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)
        ]
        loss = trainer.callback_metrics.get("val/loss")
        diverged = loss is not None and not torch.isfinite(loss)
        if trainer.sanity_checking or not writers or not trainer.is_global_zero or diverged:
            return
        tokenizer = tokenizer_from_dict(pl_module.hparams.tokenizer)
        (text,) = sample_texts(
            pl_module.model,
            tokenizer,
            self.prompt,
            self.max_new_tokens,
            seed=self.seed,
            temperature=self.temperature,
            top_p=self.top_p,
        )
        # TensorBoard renders Markdown: a code block keeps line breaks and spacing
        for writer in writers:
            writer.add_text("samples", f"```\n{text}\n```", global_step=trainer.global_step)
