"""Train a GPT: `python train.py [overrides]` (Hydra; see conf/train.yaml and the README).

Writes checkpoints, logs and metrics.json under the run's output directory, prints a sample
from the best checkpoint and returns the optimized metric (for sweepers).
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
import warnings
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.loggers import TensorBoardLogger
from omegaconf import DictConfig, OmegaConf

from minigpt.callbacks import LoggingStepProgressBar, StepTimer, StopAtValLoss
from minigpt.checkpoint import load_checkpoint
from minigpt.cli import exit_on_user_error
from minigpt.lightning_module import GPTLightningModule
from minigpt.precision import auto_precision
from minigpt.sampling import sample_texts
from minigpt.tokenizers import tokenizer_from_dict

log = logging.getLogger(__name__)
OmegaConf.register_new_resolver("auto_precision", auto_precision, replace=True)
# single-process data loading is the right choice for in-memory token windows on few cores
warnings.filterwarnings("ignore", ".*does not have many workers.*")


def plain(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)


def build(
    cfg: DictConfig, datamodule: L.LightningDataModule | None = None
) -> tuple[L.LightningDataModule, GPTLightningModule, L.Trainer]:
    """Data module, LightningModule and Trainer from a composed config (the data module
    from cfg.data unless one is given: it needs vocab_size, tokenizer, tokens_per_byte)."""
    if datamodule is None:
        datamodule = instantiate(cfg.data)
    datamodule.setup()
    model_config = plain(cfg.model) | {"vocab_size": datamodule.vocab_size}
    tokenizer = datamodule.tokenizer
    module = GPTLightningModule(
        model=model_config,
        optimizer=plain(cfg.optimizer),
        scheduler=plain(cfg.scheduler),
        tokenizer=tokenizer.to_dict() if tokenizer is not None else None,
        compile=cfg.compile,
        compile_mode=cfg.compile_mode,
    )
    module.val_tokens_per_byte = datamodule.tokens_per_byte("val")
    # for the ThroughputMonitor's MFU: training FLOPs of one batch at full context
    module.flops_per_batch = (
        module.model.flops_per_token() * cfg.data.batch_size * cfg.model.block_size
    )
    loggers = [instantiate(c) for c in cfg.logger.values()]
    callbacks = [instantiate(c) for c in cfg.callbacks.values()]
    if not loggers:  # nothing to write learning rates to (LearningRateMonitor would refuse)
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    if cfg.stop_at_val_loss is not None:
        callbacks.append(StopAtValLoss(cfg.stop_at_val_loss))
    if cfg.trainer.enable_progress_bar:
        # redrawn (and so reading values from the device) on logging steps only
        batches = cfg.trainer.log_every_n_steps * cfg.trainer.accumulate_grad_batches
        callbacks.append(LoggingStepProgressBar(refresh_rate=batches))
    trainer = instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False)
    return datamodule, module, trainer


HPARAM_METRICS = ("best_val_loss", "best_val_bpb", "final_val_loss", "steps", "wall_time_s")


def log_hyperparameters(trainer: L.Trainer, cfg: DictConfig) -> None:
    """The composed config as the run's hyperparameters (loggers flatten it), with the
    metrics TensorBoard's HPARAMS tab shows beside them (filled in by log_final_metrics)."""
    placeholders = {f"hp/{name}": float("nan") for name in HPARAM_METRICS}
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.log_hyperparams(plain(cfg), placeholders)
        else:
            logger.log_hyperparams(plain(cfg))


def log_final_metrics(trainer: L.Trainer, metrics: dict) -> None:
    values = {f"hp/{k}": float(metrics[k]) for k in HPARAM_METRICS if metrics[k] is not None}
    for logger in trainer.loggers:
        if isinstance(logger, TensorBoardLogger):
            logger.log_metrics(values, step=trainer.global_step)
            logger.save()


def write_json_atomically(path: Path, data: dict) -> None:
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def compiled_graphs() -> int:
    """Graphs torch.compile has compiled in this process so far (a recompile adds one)."""
    return torch._dynamo.utils.counters["stats"]["unique_graphs"]


def run_metrics(trainer: L.Trainer, module: GPTLightningModule, cfg: DictConfig, wall_s: float):
    checkpoint = trainer.checkpoint_callback
    best_path = checkpoint.best_model_path if checkpoint else ""
    timer = next((c for c in trainer.callbacks if isinstance(c, StepTimer)), None)
    history = module.val_history
    logged = trainer.callback_metrics.get("train/loss")
    train_loss = float(logged) if logged is not None else float("nan")
    diverged = not all(math.isfinite(v) for _, v in history) or (
        logged is not None and not math.isfinite(train_loss)
    )
    best = min(history, key=lambda h: h[1]) if history and not diverged else None
    bits_per_nat_token = module.val_tokens_per_byte / math.log(2)  # val/loss -> val/bpb
    world = trainer.world_size * trainer.accumulate_grad_batches
    target = cfg.stop_at_val_loss
    first_below = next((step for step, v in history if target is not None and v < target), None)
    return {
        "diverged": diverged,
        "best_val_loss": best[1] if best else None,
        "best_val_step": best[0] if best else None,
        "final_val_loss": history[-1][1] if history else None,
        "final_val_step": history[-1][0] if history else None,
        "best_val_bpb": best[1] * bits_per_nat_token if best else None,
        "final_val_bpb": history[-1][1] * bits_per_nat_token if history else None,
        "val_curve": history,
        "train_loss": train_loss,
        "steps": trainer.global_step,
        "tokens_seen": trainer.global_step * world * cfg.data.batch_size * cfg.model.block_size,
        "wall_time_s": round(wall_s, 2),
        "median_step_ms": timer.median_ms if timer else None,
        "parameters": module.model.num_parameters(),
        "stop_at_val_loss": target,
        "target_step": first_below,  # the first validation below stop_at_val_loss
        "best_checkpoint": (best_path or None) if not diverged else None,
        "last_checkpoint": (checkpoint.last_model_path or None) if checkpoint else None,
    }


class FinalMetrics(L.Callback):
    """Collects the run's metrics when fitting ends and logs them while the loggers are still
    open (logged after fit, they would start a second TensorBoard event file)."""

    def __init__(self, cfg: DictConfig):
        self.cfg = cfg
        self.metrics: dict | None = None

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.start = time.perf_counter()
        self.graphs_before = compiled_graphs()

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.metrics = run_metrics(trainer, pl_module, self.cfg, time.perf_counter() - self.start)
        # 1 with compile=true: the training step, compiled once and never again
        self.metrics["compiled_graphs"] = compiled_graphs() - self.graphs_before
        log_final_metrics(trainer, self.metrics)


def summary_line(metrics: dict, metrics_path: Path) -> str:
    parts = [f"done: {metrics['steps']} steps, {metrics['tokens_seen']:,} tokens"]
    parts.append(f"{metrics['wall_time_s']:.0f} s")
    if metrics["median_step_ms"]:
        parts.append(f"{metrics['median_step_ms']:.1f} ms/step")
    line = ", ".join(parts)
    if metrics["best_val_loss"] is not None:
        line += f" | best val/loss {metrics['best_val_loss']:.4f} (step {metrics['best_val_step']})"
        line += f" | final val/loss {metrics['final_val_loss']:.4f}"
        line += f" | final val/bpb {metrics['final_val_bpb']:.4f}"
    if metrics["target_step"] is not None:
        line += f" | below {metrics['stop_at_val_loss']} at step {metrics['target_step']}"
    return f"{line} | {metrics_path}"


def print_samples(cfg: DictConfig, module: GPTLightningModule, best_checkpoint: str | None):
    sample = cfg.sample
    if sample.num_samples <= 0:
        return
    if best_checkpoint:
        model, tokenizer = load_checkpoint(best_checkpoint)
    else:
        model = module.model.cpu().eval()
        tokenizer = tokenizer_from_dict(module.hparams.tokenizer)
    texts = sample_texts(
        model,
        tokenizer,
        sample.prompt,
        sample.max_new_tokens,
        sample.num_samples,
        cfg.seed,
        temperature=sample.temperature,
        top_k=sample.top_k,
        top_p=sample.top_p,
    )
    for text in texts:
        print(f"--- sample ({'best checkpoint' if best_checkpoint else 'final model'}) ---")
        print(text)


def train(cfg: DictConfig) -> float | None:
    """Fits the model described by cfg; returns cfg.optimized_metric."""
    L.seed_everything(cfg.seed, workers=True)
    if torch.cuda.is_available():  # how float32 matmuls run on a GPU (32-true runs)
        torch.set_float32_matmul_precision(cfg.float32_matmul_precision)
    datamodule, module, trainer = build(cfg)
    log_hyperparameters(trainer, cfg)
    final = FinalMetrics(cfg)
    trainer.callbacks.append(final)
    trainer.fit(module, datamodule=datamodule)
    metrics = final.metrics
    if not trainer.is_global_zero:
        return None
    output_dir = Path(cfg.paths.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomically(output_dir / "metrics.json", metrics)
    if metrics["diverged"]:
        # +inf: the worst value for a minimizing sweeper, which records it and goes on
        # (Optuna 2.10 refuses NaN and would stop the sweep); metrics.json says diverged
        log.error(
            f"run diverged (loss not finite by step {metrics['steps']}): failed, reported as inf"
        )
        return float("inf")
    log.info(summary_line(metrics, output_dir / "metrics.json"))
    print_samples(cfg, module, metrics["best_checkpoint"])
    if cfg.optimized_metric == "val/loss":
        return metrics["best_val_loss"]
    value = trainer.callback_metrics.get(cfg.optimized_metric)
    return float(value) if value is not None else None


@hydra.main(version_base="1.3", config_path="conf", config_name="train")
@exit_on_user_error
def main(cfg: DictConfig) -> float | None:
    return train(cfg)


if __name__ == "__main__":
    # launchers that start jobs in fresh interpreters (submitit, locally or on SLURM) unpickle
    # the task there: let them import minigpt from this checkout, whatever their directory
    root = str(Path(__file__).resolve().parent)
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
    main()
