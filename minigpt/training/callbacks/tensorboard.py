"""What TensorBoard shows beyond Lightning's scalars: the HPARAMS session (the config beside
the run's headline metrics), and after each validation a text sample (TEXT) and every head's
attention weights (IMAGES)."""

from __future__ import annotations

import logging

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from minigpt.core.inspection import attention_maps, plot_attention, token_label
from minigpt.core.options import flatten
from minigpt.core.sampling import sample_texts, unencodable
from minigpt.core.tokenizers import tokenizer_from_dict

log = logging.getLogger(__name__)

# the headline metrics of a run, shown beside its hyperparameters in the HPARAMS tab
HPARAM_METRICS = ("best_val_loss", "best_val_bpb", "final_val_loss", "steps", "wall_time_s")


class StepTensorBoardLogger(TensorBoardLogger):
    """Lightning's TensorBoard logger without the `epoch` scalar Lightning adds to every
    write (always 0 here, where a run is one endless pass, and written twice a step): the
    training step is the axis."""

    def log_metrics(self, metrics: dict, step: int | None = None) -> None:
        super().log_metrics({k: v for k, v in metrics.items() if k != "epoch"}, step)


def declare_hparams(trainer: L.Trainer, config: dict) -> None:
    """Logs the run's config as its hyperparameters and writes TensorBoard's HPARAMS session:
    the config's values and the names of the metrics that log_hparam_metrics writes beside
    them at the end. (Lightning would also write each metric as a scalar at step 0, a NaN
    point on every hp/* curve.)"""
    from torch.utils.tensorboard.summary import hparams

    values = {
        key: value if isinstance(value, int | float | str | bool) else str(value)
        for key, value in flatten(config).items()
    }
    for logger in trainer.loggers:
        logger.log_hyperparams(config)
        if isinstance(logger, TensorBoardLogger) and trainer.is_global_zero:
            metrics = {f"hp/{name}": 0.0 for name in HPARAM_METRICS}  # only names are written
            writer = logger.experiment._get_file_writer()
            for summary in hparams(values, metrics):
                writer.add_summary(summary)


def log_hparam_metrics(trainer: L.Trainer, metrics: dict) -> None:
    """Writes the run's headline metrics (hp/*) at its last step, beside its
    hyperparameters."""
    values = {f"hp/{k}": float(metrics[k]) for k in HPARAM_METRICS if metrics[k] is not None}
    for logger in tensorboard_loggers(trainer):  # while the loggers are open: one event file
        logger.log_metrics(values, step=trainer.global_step)
        logger.save()


def tensorboard_loggers(trainer: L.Trainer) -> list[TensorBoardLogger]:
    return [logger for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)]


def tensorboard_writers(trainer: L.Trainer) -> list:
    """The SummaryWriters of the run's TensorBoard loggers (none without one)."""
    return [logger.experiment for logger in tensorboard_loggers(trainer)]


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
        writers = tensorboard_writers(trainer)
        loss = trainer.callback_metrics.get("val/loss")
        diverged = loss is not None and not torch.isfinite(loss)
        # the same on every rank (a logger, the synced val/loss): all or none gather a model
        if trainer.sanity_checking or not writers or diverged:
            return
        tokenizer = tokenizer_from_dict(pl_module.hparams.tokenizer)
        if problem := unencodable(tokenizer, self.prompt):
            if trainer.is_global_zero:
                log.warning(f"no text sample: prompt {self.prompt!r}: {problem}")
            return
        model = pl_module.whole_model()  # sharded: gathered onto rank 0
        if not trainer.is_global_zero:
            return
        (text,) = sample_texts(
            model,
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


class AttentionMaps(L.Callback):
    """After every validation, draws the attention weights of every layer and head over a
    fixed prompt (`minigpt.core.inspection`) into TensorBoard's IMAGES tab (`attention`).
    Off: `callbacks.attention_maps=null`."""

    def __init__(self, prompt: str = "ROMEO:\nWhat light?\n", max_tokens: int = 32):
        self.prompt, self.max_tokens = prompt, max_tokens

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        writers = tensorboard_writers(trainer)
        if trainer.sanity_checking or not writers:
            return
        tokenizer = tokenizer_from_dict(pl_module.hparams.tokenizer)
        if problem := unencodable(tokenizer, self.prompt):
            if trainer.is_global_zero:
                log.warning(f"no attention maps: prompt {self.prompt!r}: {problem}")
            return
        ids = tokenizer.encode(self.prompt)[: self.max_tokens]
        if len(ids) < 2:
            return
        model = pl_module.whole_model()  # sharded: gathered onto rank 0 (every rank calls)
        if not trainer.is_global_zero:
            return
        labels = [token_label(tokenizer.decode([i])) for i in ids]
        was_training = model.training
        model.eval()
        try:
            maps = attention_maps(model, ids)
        finally:
            model.train(was_training)
        figure = plot_attention(maps, labels, title=f"step {trainer.global_step}")
        for writer in writers:
            writer.add_figure("attention", figure, global_step=trainer.global_step)
