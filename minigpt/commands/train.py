"""Train a GPT: `python train.py [overrides]` (Hydra; see conf/train.yaml and the README).

Checks the config and the run directory, builds the data, model and Trainer, fits (resuming
from `ckpt_path=<file>|last` if given) and reports: checkpoints, logs and metrics.json under
the run's output directory, a sample from the best checkpoint, and the optimized metric as
the return value (for sweepers).
"""

from __future__ import annotations

import logging
import math
import os
import sys
import warnings
from pathlib import Path

import hydra
import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from lightning.pytorch.callbacks import LearningRateMonitor
from omegaconf import DictConfig, ListConfig, OmegaConf

from minigpt.commands import CONFIG_DIR, STARTED, run_command
from minigpt.commands.console import (
    JobFailed,
    exit_on_user_error,
    in_multirun,
    quiet_lightning,
    user_error,
)
from minigpt.commands.option_types import OPEN_SECTIONS, check_option_types, compose_checked
from minigpt.core.checkpoint import LATEST_SWEEP, load_checkpoint
from minigpt.core.cpu_load import oversubscription
from minigpt.core.model import GPT, GPTConfig
from minigpt.core.options import is_integer
from minigpt.core.sampling import sample_texts, unencodable
from minigpt.core.threads import set_cpu_threads
from minigpt.core.tokenizers import tokenizer_from_dict
from minigpt.tools.convert import load_pretrained
from minigpt.training import run
from minigpt.training.callbacks.progress_bar import LoggingStepProgressBar
from minigpt.training.callbacks.stop_at_val_loss import StopAtValLoss
from minigpt.training.config_checks import check_config
from minigpt.training.module import GPTLightningModule
from minigpt.training.precision import auto_precision, cpu_precision
from minigpt.training.run import (
    AtomicCheckpointIO,
    GracefulStop,
    RunInterrupted,
    RunReport,
    ScheduleContinues,
)
from minigpt.training.summary import run_header, summary

log = logging.getLogger(__name__)
OmegaConf.register_new_resolver("auto_precision", auto_precision, replace=True)
OmegaConf.register_new_resolver("cpu_precision", cpu_precision, replace=True)
run.register_run_subdir()
quiet_lightning()
# a resumed run writes into its own checkpoint directory
warnings.filterwarnings("ignore", ".*Checkpoint directory .* exists and is not empty.*")
# expected here: debug=overfit_batch's data is a stream; a run started from another run's
# checkpoint writes into its own directory
warnings.filterwarnings("ignore", ".*overfit but enabled train dataloader shuffling")
warnings.filterwarnings("ignore", ".*The dirpath has changed from")
warnings.filterwarnings("ignore", ".*is smaller than the logging interval")
# a diverged run's NaN val/loss, which MeanMetric warns about (the run reports its
# divergence itself)
warnings.filterwarnings("ignore", "Encountered `nan` values in tensor")


class TrainingFailed(RuntimeError):
    """An error raised once training steps had begun: reported with its traceback, never
    as a one-line bad-input error."""


def plain(cfg: DictConfig) -> dict:
    return OmegaConf.to_container(cfg, resolve=True)


def processes(trainer: DictConfig) -> int:
    """The processes a trainer config starts: devices (a count, a list, or auto: every GPU
    there is, else one) times nodes."""
    devices, nodes = trainer.get("devices", "auto"), trainer.get("num_nodes", 1) or 1
    if is_integer(devices) and devices > 0:
        count = devices
    elif isinstance(devices, str) and devices.isdigit():
        count = int(devices)
    elif isinstance(devices, ListConfig | list):
        count = len(devices)
    else:  # auto or -1
        on_gpu = trainer.get("accelerator", "auto") in ("auto", "gpu", "cuda")
        count = torch.cuda.device_count() if on_gpu and torch.cuda.is_available() else 1
    return count * nodes


def accumulation(cfg: DictConfig) -> int:
    """Batches each process accumulates per optimizer step: trainer.accumulate_grad_batches,
    or, with global_batch_tokens set, what makes an optimizer step see that many tokens on
    all processes together (nanoGPT's total_batch_size)."""
    tokens = cfg.get("global_batch_tokens")
    if tokens is None:
        if cfg.trainer.accumulate_grad_batches is None:
            raise ValueError(
                "trainer.accumulate_grad_batches=null is set from global_batch_tokens: "
                "give one of them"
            )
        return cfg.trainer.accumulate_grad_batches
    per_batch = cfg.data.batch_size * cfg.model.block_size * processes(cfg.trainer)
    if not is_integer(tokens) or tokens <= 0 or tokens % per_batch:
        raise ValueError(
            f"global_batch_tokens={tokens!r} is not a multiple of data.batch_size x "
            f"model.block_size x processes = {cfg.data.batch_size} x {cfg.model.block_size} "
            f"x {processes(cfg.trainer)} = {per_batch:,}: choose a multiple, or null"
        )
    return tokens // per_batch


def budget_steps(cfg: DictConfig, model_config: dict) -> tuple[int, int]:
    """The optimizer steps that cfg.flops_budget buys the model model_config describes (the
    budget over the FLOPs of a step, rounded down), and the FLOPs of a step (its training
    FLOPs per token x the tokens of an optimizer step on all processes)."""
    with torch.device("meta"):  # counted, never allocated
        per_token = GPT(GPTConfig(**model_config)).flops_per_token()
    tokens = cfg.data.batch_size * cfg.model.block_size * processes(cfg.trainer) * accumulation(cfg)
    steps = int(cfg.flops_budget // (per_token * tokens))
    if steps < 1:
        raise ValueError(
            f"flops_budget={cfg.flops_budget:g} buys no optimizer step: one costs "
            f"{per_token * tokens:.3g} FLOPs ({per_token:,} a token x {tokens:,} tokens); raise "
            "the budget or make the model or the batch smaller"
        )
    return steps, per_token * tokens


def build(
    cfg: DictConfig, datamodule: L.LightningDataModule | None = None
) -> tuple[L.LightningDataModule, GPTLightningModule, L.Trainer]:
    """Data module, LightningModule and Trainer from a composed config (the data module
    from cfg.data unless one is given: it needs vocab_size, tokenizer, tokens_per_byte)."""
    pretrained, model_config = None, plain(cfg.model)
    if cfg.get("init_from"):  # fine-tuning: the directory's architecture and vocabulary
        pretrained, tokenizer_dict = load_pretrained(cfg.init_from, cfg.model.vocab_multiple)
        if cfg.model.block_size > pretrained.config.block_size:
            raise ValueError(
                f"model.block_size={cfg.model.block_size} exceeds the context of "
                f"init_from={cfg.init_from} ({pretrained.config.block_size}): set "
                f"model.block_size={pretrained.config.block_size} or less"
            )
        # how it trains, not what
        kept = ("dropout", "attention", "activation_checkpointing", "vocab_multiple")
        model_config = pretrained.config.to_dict() | {k: model_config[k] for k in kept}
        if datamodule is None:
            datamodule = instantiate(cfg.data, tokenizer=tokenizer_dict, _convert_="all")
    if datamodule is None:
        datamodule = instantiate(cfg.data)
    datamodule.setup()
    tokenizer = datamodule.tokenizer
    if cfg.get("flops_budget") is not None:  # before anything reads max_steps (the schedule)
        cfg.trainer.max_steps, _ = budget_steps(
            cfg, model_config | {"vocab_size": datamodule.vocab_size}
        )
    batch_tokens = cfg.data.batch_size * cfg.model.block_size
    module = GPTLightningModule(
        model=model_config | {"vocab_size": datamodule.vocab_size},
        optimizer=plain(cfg.optimizer),
        scheduler=plain(cfg.scheduler),
        tokenizer=tokenizer.to_dict() if tokenizer is not None else None,
        compile=cfg.compile,
        compile_mode=cfg.compile_mode,
        seed=cfg.seed,
        val_tokens_per_byte=datamodule.tokens_per_byte("val"),
        tokens_per_batch=batch_tokens,
    )
    if pretrained is not None:
        module.model.load_state_dict(pretrained.state_dict())
    loggers = [instantiate(c) for c in cfg.logger.values()]
    callbacks = [instantiate(c) for c in cfg.callbacks.values() if c is not None]
    if not loggers:  # nothing to write learning rates to (LearningRateMonitor would refuse)
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    if cfg.stop_at_val_loss is not None:
        callbacks.append(StopAtValLoss(cfg.stop_at_val_loss))
    accumulate = accumulation(cfg)
    if cfg.trainer.enable_progress_bar:
        # redrawn (and so reading values from the device) on logging steps only
        callbacks.append(
            LoggingStepProgressBar(cfg.trainer.log_every_n_steps * accumulate, accumulate)
        )
    callbacks += [GracefulStop(), ScheduleContinues()]
    interval = cfg.trainer.val_check_interval
    if isinstance(interval, int):
        # a run shorter than the interval still ends with a validation (and a val/loss)
        interval = min(interval, cfg.trainer.max_steps)
    trainer = instantiate(
        cfg.trainer,
        callbacks=callbacks,
        logger=loggers or False,
        # Lightning counts batches; the config counts optimizer steps
        val_check_interval=interval * accumulate if isinstance(interval, int) else interval,
        accumulate_grad_batches=accumulate,
        plugins=[AtomicCheckpointIO()],
    )
    if cfg.get("global_batch_tokens") and trainer.world_size != processes(cfg.trainer):
        raise ValueError(
            f"global_batch_tokens assumed {processes(cfg.trainer)} processes and the trainer "
            f"has {trainer.world_size}: set trainer.devices (and trainer.num_nodes) to numbers"
        )
    if cfg.trainer.get("overfit_batches"):
        # Lightning's overfit_batches also limits validation to that many batches; keep the
        # config's limit (debug=overfit_batch: 0, no validation of a memorized batch)
        trainer.limit_val_batches = cfg.trainer.limit_val_batches
    share = cfg.trainer.limit_val_batches
    if isinstance(share, float) and 0.0 < share < 1.0 and not trainer.fast_dev_run:
        # one cut, not two: as batches of the whole split, which the data module keeps and
        # deals out to the ranks (Lightning would take the share again of each rank's part)
        windows = len(datamodule.dataset("val"))
        trainer.limit_val_batches = max(1, math.ceil(windows * share / cfg.data.batch_size))
    tokens_per_step = trainer.world_size * accumulate * batch_tokens
    source = OmegaConf.to_container(cfg, resolve=False)
    report = RunReport(
        plain(cfg), source, cfg.paths.output_dir, tokens_per_step, cfg.stop_at_val_loss
    )
    trainer.callbacks.insert(0, report)  # records a validation before it is checkpointed
    return datamodule, module, trainer


def print_samples(
    cfg: DictConfig,
    module: GPTLightningModule,
    best_checkpoint: str | None,
    final_model: GPT | None = None,
):
    """The end-of-run sample, from the best checkpoint (else the final model): on the
    terminal for a single run; into the job's samples.txt in a sweep, where one sample per
    job would bury the sweep's log."""
    sample = cfg.sample
    if sample.num_samples <= 0:
        return
    if best_checkpoint:
        model, tokenizer = load_checkpoint(best_checkpoint)
    else:
        model = (final_model or module.model).cpu().eval()
        tokenizer = tokenizer_from_dict(module.hparams.tokenizer)
    if problem := unencodable(tokenizer, sample.prompt):
        log.warning(f"no sample: sample.prompt={sample.prompt!r}: {problem}")
        return
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
    heading = f"--- sample ({'best checkpoint' if best_checkpoint else 'final model'}) ---"
    text = "".join(f"{heading}\n{t}\n" for t in texts)
    if in_multirun():
        (Path(cfg.paths.output_dir) / "samples.txt").write_text(text, encoding="utf-8")
    else:
        print(text, end="")


def train(cfg: DictConfig) -> float | None:
    """Fits the model described by cfg (resuming from cfg.ckpt_path if set); returns
    cfg.optimized_metric."""
    check_config(cfg)
    if in_multirun():  # a job's values, which the sweeper chose (a single run's: in cli)
        choices = HydraConfig.get().runtime.choices
        groups = [f"{g}={c}" for g, c in choices.items() if c and not g.startswith("hydra")]
        check_option_types(cfg, hydra.compose("train", overrides=groups), OPEN_SECTIONS)
    output_dir = Path(cfg.paths.output_dir)
    ckpt_path = run.resolve_ckpt_path(cfg.ckpt_path, output_dir)
    if conflict := run.run_dir_conflict(output_dir, ckpt_path):
        raise ValueError(conflict)
    run.check_writable(output_dir, "paths.output_dir")
    run.hold_run_dir(output_dir)  # one process per run directory
    run.check_writable(Path(cfg.paths.cache_dir), "paths.cache_dir")
    if ckpt_path is not None:
        run.check_resume(ckpt_path, OmegaConf.to_container(cfg, resolve=False))
        log.info(f"resuming from {ckpt_path}")
    if os.environ.get("LOCAL_RANK", "0") == "0":  # one process per machine tends the directory
        for path in run.remove_stale_temporaries(output_dir):
            log.info(f"removed {path}, left by a process killed while writing it")
        run.record_start(output_dir)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    if torch.cuda.is_available():  # how float32 matmuls run on a GPU (32-true runs)
        torch.set_float32_matmul_precision(cfg.float32_matmul_precision)
    datamodule, module, trainer = build(cfg)
    threads = set_cpu_threads(cfg.threads, processes=trainer.num_devices)
    if trainer.is_global_zero:
        log.info(run_header(cfg, datamodule, module, trainer, threads))
        on_cpu = trainer.strategy.root_device.type == "cpu"
        if on_cpu and (notice := oversubscription(threads, trainer.num_devices, STARTED)):
            log.warning(notice)
        log_dir = Path(cfg.paths.log_dir)
        if in_multirun():
            run.point_latest(output_dir.parent, log_dir, LATEST_SWEEP)
        elif not cfg.trainer.get("fast_dev_run") and cfg.callbacks.get("last_checkpoint"):
            run.point_latest(output_dir, log_dir)
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    except run.CheckpointNotWritten as failed:
        if not trainer.is_global_zero:
            raise
        last = output_dir / "checkpoints" / "last.ckpt"
        step = run.checkpoint_step(last)
        intact = f"{last} (step {step}) is intact" if step is not None else "no checkpoint is whole"
        message = f"{failed} at step {trainer.global_step}; {intact}"
        report = run.find_callback(trainer, RunReport)
        try:
            metrics = report.collect(trainer, module) | {"status": "failed", "error": message}
            run.write_json_atomically(output_dir / "metrics.json", metrics)
        except OSError as err:
            message += f"; metrics.json could not be written either ({err.strerror or err})"
        then = f"resume with: {run.resume_command(output_dir)}" if step is not None else "rerun"
        log.error(f"{message}: make space, then {then}")
        sys.exit(1)
    except RunInterrupted as stop:
        if trainer.is_global_zero:
            log.info(
                f"{stop} at step {trainer.global_step}, saved in {output_dir}/checkpoints/"
                f"last.ckpt; resume with:\n  {run.resume_command(output_dir)}"
            )
        sys.exit(stop.exit_code)
    except Exception as err:
        if run.find_callback(trainer, RunReport).steps_started and user_error(err):
            # bad input is found before the first step; an error after it is a failure,
            # and its traceback is what tells where
            raise TrainingFailed(
                f"training failed at step {trainer.global_step}: {type(err).__name__}: {err}"
            ) from err
        raise
    metrics = run.find_callback(trainer, RunReport).metrics
    final_model = None
    if cfg.sample.num_samples > 0 and not metrics["best_checkpoint"]:
        final_model = module.whole_model()  # sharded: gathered onto rank 0 (all ranks call)
    if not trainer.is_global_zero:
        return None
    if metrics["diverged"]:
        # +inf: the worst value for a minimizing sweeper, which records it and goes on
        # (Optuna 2.10 refuses NaN and would stop the sweep); metrics.json says diverged
        log.error(
            f"run diverged (loss not finite by step {metrics['steps']}): failed, reported as inf"
        )
        return float("inf")
    log.info(summary(metrics, output_dir))
    print_samples(cfg, module, metrics["best_checkpoint"], final_model)
    if cfg.optimized_metric == "val/loss":
        return metrics["best_val_loss"]
    value = trainer.callback_metrics.get(cfg.optimized_metric)
    return float(value) if value is not None else None


@hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name="train")
def main(cfg: DictConfig) -> float | None:
    output_dir = Path(cfg.paths.output_dir)
    try:
        return exit_on_user_error(train)(cfg)
    except JobFailed as failed:  # a multirun job: its directory records why
        if not (output_dir / "metrics.json").exists():
            run.write_json_atomically(
                output_dir / "metrics.json", {"status": "failed", "error": str(failed)}
            )
        raise
    except BaseException:
        if not in_multirun():
            run.remove_if_unused(output_dir, Path(cfg.paths.log_dir))
        raise
    finally:
        run.release_run_dir(output_dir)


def cli() -> None:
    """`python train.py [overrides]`: the checks Hydra would otherwise meet first (the run
    directory; the arguments composed and every value checked against its option's default,
    before Hydra creates a directory), then the Hydra application (which reads sys.argv)."""
    sys.argv[1:] = argv = run.check_run_dir_before_hydra(sys.argv[1:])
    if argv and not any(arg.startswith("-") for arg in argv):  # -m, --cfg: Hydra's
        exit_on_user_error(compose_checked)(CONFIG_DIR, "train", argv)
    main()


if __name__ == "__main__":
    run_command(cli)
