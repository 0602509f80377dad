"""Training callbacks of our own (Lightning's built-ins cover checkpoints and lr logging)."""

from __future__ import annotations

import itertools
import logging
import statistics
import sys
import time
import warnings

import lightning as L
import torch
from lightning.fabric.utilities.throughput import get_available_flops
from lightning.pytorch.callbacks import EarlyStopping, ThroughputMonitor, TQDMProgressBar
from lightning.pytorch.callbacks.throughput_monitor import _plugin_to_compute_dtype
from lightning.pytorch.loggers import TensorBoardLogger
from lightning.pytorch.trainer.states import RunningStage
from lightning.pytorch.utilities import rank_zero_only

from minigpt.cli import is_number
from minigpt.inspection import attention_maps, plot_attention, token_label
from minigpt.sampling import sample_texts, unencodable
from minigpt.tokenizers import tokenizer_from_dict

log = logging.getLogger(__name__)


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


class LoggingStepProgressBar(TQDMProgressBar):
    """Lightning's progress bar counting optimizer steps out of max_steps ("train 120/1200",
    not epochs of an endless stream), redrawn every `refresh_rate` batches (give it the
    logging interval), with the last logged train/loss. Reading a value from a GPU waits
    until the device has done all queued work, so values are read only when the bar is
    redrawn, and the steps in between can be queued while the device works."""

    def __init__(self, refresh_rate: int = 1, accumulate: int = 1):
        super().__init__(refresh_rate=refresh_rate)
        self.step_interval = max(1, refresh_rate // accumulate)  # in optimizer steps

    @property
    def train_description(self) -> str:
        return "train"

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        bar = self.train_progress_bar
        bar.reset(total=trainer.max_steps if trainer.max_steps > 0 else None)
        bar.n = bar.last_print_n = trainer.global_step  # a resumed run starts where it was
        bar.refresh()

    def on_train_epoch_start(self, trainer: L.Trainer, *_) -> None:
        pass  # one bar for the run, not one per pass over the data (debug=overfit_batch)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        step, bar = trainer.global_step, self.train_progress_bar
        due = step % self.step_interval == 0 or step == trainer.max_steps
        if self.is_enabled and bar is not None and step != bar.n and due:
            bar.n = step
            bar.set_postfix(self.get_metrics(trainer, pl_module))  # redraws

    def get_metrics(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
        metrics = super().get_metrics(trainer, pl_module)
        loss = trainer.callback_metrics.get("train/loss")
        if loss is not None:
            metrics["train/loss"] = f"{loss.item():.3f}"
        return metrics


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


def batch_size(batch) -> int:
    """Sequences in an (inputs, targets) batch, for Lightning's ThroughputMonitor."""
    return batch[0].size(0)


def batch_tokens(batch) -> int:
    """Input tokens in an (inputs, targets) batch, for Lightning's ThroughputMonitor."""
    return batch[0].numel()


# Dense peak FLOP/s (no 2:4 sparsity) from NVIDIA's datasheets, for the GPUs this project is
# measured on. Lightning's table covers the others; its lookup misses "NVIDIA H200" and its
# H200 entries count sparsity.
BF16, FP16, FP32 = torch.bfloat16, torch.float16, torch.float32
DENSE_PEAK_FLOPS = {
    "h200": {BF16: 989e12, FP16: 989e12, "tf32": 494.5e12, FP32: 67e12},  # SXM
    "h100 sxm": {BF16: 989.4e12, FP16: 989.4e12, "tf32": 494.7e12, FP32: 66.9e12},
    "h100 pcie": {BF16: 756e12, FP16: 756e12, "tf32": 378e12, FP32: 51.2e12},
    "a100": {BF16: 312e12, FP16: 312e12, "tf32": 156e12, FP32: 19.5e12},
}


def gpu_model(device_name: str) -> str | None:
    """The DENSE_PEAK_FLOPS key of a CUDA device name, e.g. 'NVIDIA H100 80GB HBM3'."""
    name = device_name.lower()
    if "h200" in name and "nvl" not in name:
        return "h200"
    if "h100" in name and ("hbm3" in name or "sxm" in name):
        return "h100 sxm"
    if "h100" in name and "pcie" in name:
        return "h100 pcie"
    if "a100" in name:
        return "a100"
    return None


def peak_flops(device: torch.device, dtype: torch.dtype) -> float | None:
    """The device's peak FLOP/s for matmuls in dtype (float32 counts as TF32 when torch
    allows it), from DENSE_PEAK_FLOPS or else Lightning's table; None when unknown."""
    if device.type == "cuda" and (model := gpu_model(torch.cuda.get_device_name(device))):
        if dtype == torch.float32 and torch.get_float32_matmul_precision() != "highest":
            dtype = "tf32"
        return DENSE_PEAK_FLOPS[model].get(dtype)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "FLOPs not found")
        return get_available_flops(device, dtype)


class PeakThroughputMonitor(ThroughputMonitor):
    """Lightning's ThroughputMonitor (tokens/s, FLOP/s and MFU) with MFU measured against
    `peak_flops`, reading the clock only on the steps whose metrics are written.

    Lightning's monitor synchronizes with the GPU after every training batch to read the
    clock, which stops the host from queuing the next step while the device works. Here the
    batches between logging steps are only counted; the clock (and the synchronization)
    comes on logging steps, and the rolling figures span the steps since earlier ones."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._timed_batches: dict[RunningStage, int] = {}  # batches counted at the last clock

    def _start(self, trainer: L.Trainer) -> None:
        super()._start(trainer)
        stage = trainer.state.stage
        self._timed_batches[stage] = self._batches[stage]

    @torch.inference_mode()
    def _update(self, trainer, pl_module, batch, iter_num: int) -> None:
        stage = trainer.state.stage
        if self.length_fn is not None:
            self._lengths[stage] += self.length_fn(batch)
        self._samples[stage] += self.batch_size_fn(batch)
        self._batches[stage] += 1
        if stage == RunningStage.TRAINING and not trainer._logger_connector.should_update_logs:
            return  # counted now, timed at the next logging step
        if trainer.strategy.root_device.type == "cuda":
            torch.cuda.synchronize()  # the clock must see the device's work done
        elapsed = time.perf_counter() - self._t0s[stage]
        new_batches = self._batches[stage] - self._timed_batches[stage]
        self._timed_batches[stage] = self._batches[stage]
        flops = getattr(pl_module, "flops_per_batch", None)
        self._throughputs[stage].update(
            time=elapsed,
            batches=self._batches[stage],
            samples=self._samples[stage],
            lengths=self._lengths[stage] if self.length_fn is not None else None,
            flops=flops * new_batches if flops is not None else None,  # since the last update
        )

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "FLOPs not found")
            super().setup(trainer, pl_module, stage)
        dtype = _plugin_to_compute_dtype(trainer.precision_plugin)
        self.available_flops = peak_flops(trainer.strategy.root_device, dtype)
        for throughput in self._throughputs.values():
            throughput.available_flops = self.available_flops


def tensorboard_writers(trainer: L.Trainer) -> list:
    """The SummaryWriters of the run's TensorBoard loggers (none without one)."""
    return [
        logger.experiment for logger in trainer.loggers if isinstance(logger, TensorBoardLogger)
    ]


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
        if trainer.sanity_checking or not writers or not trainer.is_global_zero or diverged:
            return
        tokenizer = tokenizer_from_dict(pl_module.hparams.tokenizer)
        if problem := unencodable(tokenizer, self.prompt):
            log.warning(f"no text sample: prompt {self.prompt!r}: {problem}")
            return
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


class AttentionMaps(L.Callback):
    """After every validation, draws the attention weights of every layer and head over a
    fixed prompt (`minigpt.inspection`) into TensorBoard's IMAGES tab (`attention`).
    Off: `callbacks.attention_maps=null`."""

    def __init__(self, prompt: str = "ROMEO:\nWhat light?\n", max_tokens: int = 32):
        self.prompt, self.max_tokens = prompt, max_tokens

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        writers = tensorboard_writers(trainer)
        if trainer.sanity_checking or not writers or not trainer.is_global_zero:
            return
        tokenizer = tokenizer_from_dict(pl_module.hparams.tokenizer)
        if problem := unencodable(tokenizer, self.prompt):
            log.warning(f"no attention maps: prompt {self.prompt!r}: {problem}")
            return
        ids = tokenizer.encode(self.prompt)[: self.max_tokens]
        if len(ids) < 2:
            return
        labels = [token_label(tokenizer.decode([i])) for i in ids]
        was_training = pl_module.model.training
        pl_module.model.eval()
        try:
            maps = attention_maps(pl_module.model, ids)
        finally:
            pl_module.model.train(was_training)
        figure = plot_attention(maps, labels, title=f"step {trainer.global_step}")
        for writer in writers:
            writer.add_figure("attention", figure, global_step=trainer.global_step)
