"""Training callbacks of our own (Lightning's built-ins cover checkpoints and lr logging)."""

from __future__ import annotations

import statistics
import time
import warnings

import lightning as L
import torch
from lightning.fabric.utilities.throughput import _plugin_to_compute_dtype, get_available_flops
from lightning.pytorch.callbacks import ThroughputMonitor
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
    `peak_flops`."""

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "FLOPs not found")
            super().setup(trainer, pl_module, stage)
        dtype = _plugin_to_compute_dtype(trainer.precision_plugin)
        self.available_flops = peak_flops(trainer.strategy.root_device, dtype)
        for throughput in self._throughputs.values():
            throughput.available_flops = self.available_flops


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
