"""What a run reports: its config and metrics to the loggers, and `metrics.json`.

`RunReport` is the callback that owns the run's record: the composed config, the val/loss
of every validation, the training time so far and how the run ended. It saves that record
in every checkpoint, so a resumed run reports the whole run (curve, steps, tokens, time) as
if it had never stopped.
"""

from __future__ import annotations

import json
import math
import os
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.loggers import TensorBoardLogger

from minigpt.callbacks import StepTimer
from minigpt.checkpoint import flatten
from minigpt.checkpoint_callbacks import BestCheckpoint, LastCheckpoint
from minigpt.lightning_module import bits_per_byte

HPARAM_METRICS = ("best_val_loss", "best_val_bpb", "final_val_loss", "steps", "wall_time_s")


def finite_or_none(value: Any) -> Any:
    """JSON has no NaN or infinity: strict parsers reject the bare `NaN` Python writes."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite_or_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [finite_or_none(v) for v in value]
    return value


def write_json_atomically(path: Path, data: dict) -> None:
    tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(finite_or_none(data), indent=2, allow_nan=False))
    os.replace(tmp, path)


def declare_hparam_metrics(logger: TensorBoardLogger, config: dict) -> None:
    """Writes TensorBoard's HPARAMS session: the config's values and the names of the
    metrics that finish() writes beside them. (Lightning would also write each metric as
    a scalar at step 0, a NaN point on every hp/* curve.)"""
    from torch.utils.tensorboard.summary import hparams

    values = {
        key: value if isinstance(value, int | float | str | bool) else str(value)
        for key, value in flatten(config).items()
    }
    metrics = {f"hp/{name}": 0.0 for name in HPARAM_METRICS}  # only the names are written
    writer = logger.experiment._get_file_writer()
    for summary in hparams(values, metrics):
        writer.add_summary(summary)


def compiled_graphs() -> int:
    """Graphs torch.compile has compiled in this process so far (a recompile adds one)."""
    return torch._dynamo.utils.counters["stats"]["unique_graphs"]


def find_callback(trainer: L.Trainer, kind: type):
    return next((c for c in trainer.callbacks if isinstance(c, kind)), None)


class RunReport(L.Callback):
    """Records the run and writes `<output_dir>/metrics.json` (rank 0) when fitting ends,
    logging the headline metrics beside the hyperparameters (TensorBoard's HPARAMS tab).

    config: the composed config (plain data), logged as the hyperparameters. source: the same
    before interpolations are resolved, saved in the checkpoints so a resumed run can be
    checked against it (a value that follows another, like scheduler.decay_steps following
    trainer.max_steps, changes with it). tokens_per_step: tokens one optimizer step trains
    on, summed over ranks and accumulated batches."""

    def __init__(
        self,
        config: dict,
        source: dict,
        output_dir: str,
        tokens_per_step: int,
        stop_at_val_loss: float | None = None,
    ):
        self.config, self.source, self.output_dir = config, source, Path(output_dir)
        self.tokens_per_step, self.stop_at_val_loss = tokens_per_step, stop_at_val_loss
        self.val_curve: list[list] = []  # [step, val/loss] of each validation
        self.train_seconds = 0.0  # in earlier sessions of this run (resumed runs)
        self.resumed_at: list[int] = []  # steps this run was resumed from
        self.interrupted: str | None = None  # the signal that stopped the run, if any
        self.metrics: dict | None = None
        self._start = time.perf_counter()  # of this session's fit
        self._graphs_before = 0

    @property
    def state_key(self) -> str:
        return "RunReport"

    @property
    def seconds_so_far(self) -> float:
        """Training time of the whole run: earlier sessions and this one."""
        return self.train_seconds + time.perf_counter() - self._start

    def state_dict(self) -> dict:
        return {
            "config": self.source,
            "val_curve": self.val_curve,
            "train_seconds": self.seconds_so_far,
            "resumed_at": self.resumed_at,
        }

    def load_state_dict(self, state: dict) -> None:
        self.val_curve = [list(v) for v in state["val_curve"]]
        self.train_seconds = state["train_seconds"]
        self.resumed_at = list(state["resumed_at"])

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._start = time.perf_counter()
        self._graphs_before = compiled_graphs()
        for logger in trainer.loggers:
            logger.log_hyperparams(self.config)
            if isinstance(logger, TensorBoardLogger) and trainer.is_global_zero:
                declare_hparam_metrics(logger, self.config)

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.global_step > 0:  # restored from a checkpoint
            self.resumed_at.append(trainer.global_step)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        loss = trainer.callback_metrics.get("val/loss")
        if trainer.sanity_checking or loss is None:
            return
        step = trainer.global_step
        self.val_curve = [v for v in self.val_curve if v[0] < step] + [[step, float(loss)]]

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.finish(trainer, pl_module)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception) -> None:
        if self.interrupted:  # stopped by a signal (minigpt.interruption): report so far
            self.finish(trainer, pl_module)

    def finish(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.metrics = self.collect(trainer, pl_module)
        values = {
            f"hp/{k}": float(self.metrics[k]) for k in HPARAM_METRICS if self.metrics[k] is not None
        }
        for logger in trainer.loggers:  # while the loggers are open: one event file
            if isinstance(logger, TensorBoardLogger):
                logger.log_metrics(values, step=trainer.global_step)
                logger.save()
        if trainer.is_global_zero:
            self.output_dir.mkdir(parents=True, exist_ok=True)
            write_json_atomically(self.output_dir / "metrics.json", self.metrics)

    def collect(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict:
        curve = self.val_curve
        logged = trainer.callback_metrics.get("train/loss")
        train_loss = float(logged) if logged is not None else None
        diverged = getattr(pl_module, "diverged", False) or any(
            not math.isfinite(v) for _, v in curve
        )
        best = min(curve, key=lambda h: h[1]) if curve and not diverged else None
        tokens_per_byte = getattr(pl_module, "val_tokens_per_byte", 0.0)
        timer = find_callback(trainer, StepTimer)
        best_checkpoint = find_callback(trainer, BestCheckpoint)
        last_checkpoint = find_callback(trainer, LastCheckpoint)
        best_path = best_checkpoint.best_model_path if best_checkpoint else ""
        last_path = last_checkpoint.last_model_path if last_checkpoint else ""
        target = self.stop_at_val_loss
        status = "diverged" if diverged else "interrupted" if self.interrupted else "done"
        return {
            "status": status,
            "diverged": diverged,
            "interrupted": self.interrupted,
            "best_val_loss": best[1] if best else None,
            "best_val_step": best[0] if best else None,
            "final_val_loss": curve[-1][1] if curve else None,
            "final_val_step": curve[-1][0] if curve else None,
            "best_val_bpb": bits_per_byte(best[1], tokens_per_byte) if best else None,
            "final_val_bpb": bits_per_byte(curve[-1][1], tokens_per_byte) if curve else None,
            "val_curve": curve,
            "train_loss": train_loss,
            "steps": trainer.global_step,
            "tokens_seen": trainer.global_step * self.tokens_per_step,
            "wall_time_s": round(self.seconds_so_far, 2),
            "median_step_ms": timer.median_ms if timer else None,
            "parameters": pl_module.model.num_parameters(),
            "non_embedding_parameters": pl_module.model.num_parameters(embeddings=False),
            # training compute: (6 N + the attention term) per token, times the tokens seen
            "training_flops": pl_module.model.flops_per_token()
            * trainer.global_step
            * self.tokens_per_step,
            "stop_at_val_loss": target,
            # the first validation below stop_at_val_loss
            "target_step": next((s for s, v in curve if target is not None and v < target), None),
            "best_checkpoint": (best_path or None) if not diverged else None,
            "last_checkpoint": last_path if last_path and Path(last_path).is_file() else None,
            "resumed_at": self.resumed_at,
            # 1 with compile=true: the training step, compiled once and never again
            "compiled_graphs": compiled_graphs() - self._graphs_before,
        }


def summary(metrics: dict, output_dir: Path) -> str:
    """The end of a run in a few aligned lines: steps and time, val/loss, train/loss, and
    where the files are."""
    steps = (
        f"{metrics['steps']} ({metrics['tokens_seen']:,} tokens) in {metrics['wall_time_s']:.0f} s"
    )
    if metrics["median_step_ms"]:
        steps += f", {metrics['median_step_ms']:.1f} ms/step"
    rows = [("steps", steps)]
    if metrics["best_val_loss"] is not None:
        rows.append(
            (
                "val/loss",
                f"{metrics['best_val_loss']:.4f} best (step {metrics['best_val_step']}), "
                f"{metrics['final_val_loss']:.4f} final (step {metrics['final_val_step']}), "
                f"{metrics['final_val_bpb']:.3f} bits/byte",
            )
        )
    if metrics["train_loss"] is not None:
        rows.append(("train/loss", f"{metrics['train_loss']:.4f} (last logged)"))
    if metrics["target_step"] is not None:
        rows.append(
            (
                "target",
                f"val/loss below {metrics['stop_at_val_loss']} at step {metrics['target_step']}",
            )
        )
    rows.append(("metrics", str(output_dir / "metrics.json")))
    if metrics["best_checkpoint"] or metrics["last_checkpoint"]:
        rows.append(("checkpoint", metrics["best_checkpoint"] or metrics["last_checkpoint"]))
    return aligned(f"run {metrics['status']}", rows)


def aligned(title: str, rows: list[tuple[str, str]]) -> str:
    width = max(len(name) for name, _ in rows)
    return "\n".join([title] + [f"  {name:<{width}}  {value}" for name, value in rows])


def run_header(cfg, datamodule, module: L.LightningModule, trainer: L.Trainer, threads: int) -> str:
    """What a run is about to do, in a few aligned lines: the model, the data, the steps,
    the device and where it writes."""
    model = module.model
    c = model.config
    tokens = {split: len(datamodule.tokens.get(split, ())) for split in ("train", "val")}
    kind = datamodule.tokenizer.to_dict()["kind"]
    accumulate = trainer.accumulate_grad_batches
    batch = f"{cfg.data.batch_size} × {c.block_size}"
    if accumulate > 1:
        batch += f" × {accumulate} accumulated"
    if trainer.world_size > 1:
        batch += f" × {trainer.world_size} processes"
    interval = trainer.val_check_interval  # in batches, as train.py set it
    if isinstance(interval, int):
        interval //= accumulate  # optimizer steps
    if not trainer.limit_val_batches:
        validation = "no validation"
    elif trainer.fast_dev_run:
        validation = "one validation batch (fast_dev_run)"
    else:
        limit = trainer.limit_val_batches
        amount = f"{limit:.0%} of the split" if isinstance(limit, float) else f"{limit} batches"
        validation = f"validation every {interval} steps on {amount}"
    device = trainer.strategy.root_device.type
    rows = [
        (
            "model",
            f"{c.n_layer} layers, {c.n_head} heads, {c.n_embd} wide, context {c.block_size}: "
            f"{model.num_parameters() / 1e6:.2f}M parameters, "
            f"{model.flops_per_token() / 1e6:.1f} MFLOPs per token trained",
        ),
        (
            "data",
            f"{cfg.data.corpus}, {kind} tokens (vocabulary {datamodule.vocab_size:,}): "
            f"{tokens['train']:,} train, {tokens['val']:,} val",
        ),
        ("steps", f"{trainer.max_steps:,} of {batch} tokens; {validation}"),
        (
            "device",
            f"{device} × {trainer.num_devices}, precision {trainer.precision}, "
            f"{threads} CPU thread{'s' if threads > 1 else ''} per process",
        ),
        ("output", str(cfg.paths.output_dir)),
    ]
    return aligned("minigpt", rows)
