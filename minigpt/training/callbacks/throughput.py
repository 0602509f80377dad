"""Throughput and MFU: Lightning's ThroughputMonitor against the GPU's datasheet peak,
timed on logging steps only."""

from __future__ import annotations

import time
import warnings

import lightning as L
import torch
from lightning.fabric.utilities.throughput import get_available_flops
from lightning.pytorch.callbacks import ThroughputMonitor
from lightning.pytorch.callbacks.throughput_monitor import _plugin_to_compute_dtype
from lightning.pytorch.trainer.states import RunningStage


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

    def _compute(self, trainer: L.Trainer, iter_num: int | None = None) -> None:
        """Writes the training figures (train/device/items_per_sec: tokens/s, FLOP/s, MFU)
        at the training step, as every other training scalar. Not Lightning's running counts
        (time, batches, samples, lengths), nor validation's figures, which it writes at
        validation-batch indices: validation is timed only to leave it out of training's."""
        stage = trainer.state.stage
        if stage != RunningStage.TRAINING or not trainer._logger_connector.should_update_logs:
            return
        metrics = {
            f"train{self._throughputs[stage].separator}{name}": value
            for name, value in self._throughputs[stage].compute().items()
            if name not in ("time", "batches", "samples", "lengths")
        }
        step = trainer.fit_loop.epoch_loop._batches_that_stepped
        trainer._logger_connector.log_metrics(metrics, step=step)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "FLOPs not found")
            super().setup(trainer, pl_module, stage)
        dtype = _plugin_to_compute_dtype(trainer.precision_plugin)
        self.available_flops = peak_flops(trainer.strategy.root_device, dtype)
        for throughput in self._throughputs.values():
            throughput.available_flops = self.available_flops
