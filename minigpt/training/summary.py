"""What a run says on the terminal: the header before training and the summary after."""

from __future__ import annotations

from pathlib import Path

import lightning as L


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
        share, limit = cfg.trainer.limit_val_batches, trainer.limit_val_batches
        amount = f"{limit} batches" if isinstance(limit, int) else "the whole split"
        if isinstance(share, float) and share < 1.0:
            amount = f"{share:.0%} of the split ({amount})"
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
