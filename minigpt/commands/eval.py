"""Score a checkpoint on a split: `python eval.py [ckpt_path=...] split=test [limit=N]`.

Without ckpt_path it uses the newest run's best checkpoint, as `sample.py` does. The data
is the checkpoint's own: its run's data config (corpus, splits, tokenizer settings, read
from the checkpoint) with the checkpoint's tokenizer; `data=text_files data.paths=[...]`
(any data config) scores other text with that tokenizer instead. Every non-overlapping
window of the split is scored (or the first `limit` of their fixed, spread-out order)
through Lightning's `trainer.test`, with a progress bar. Prints the loss (nats per token),
perplexity and bits per byte (of the split's UTF-8 text), and writes `eval_<split>.json`
beside the checkpoint.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import lightning as L
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from minigpt.commands import run_command
from minigpt.commands.console import command, quiet_lightning
from minigpt.core.checkpoint import open_checkpoint
from minigpt.core.measures import bits_per_byte
from minigpt.data.corpus import SPLITS
from minigpt.training.module import GPTLightningModule

quiet_lightning()


def data_config(checkpoint: dict, path: Path, override: DictConfig | None) -> dict:
    """The data config to score on: the override if given, else the checkpoint's run's,
    resolved against that run's config (block size, cache directory, seed)."""
    report = checkpoint.get("callbacks", {}).get("RunReport")
    if report is None:
        raise ValueError(f"{path} holds no run record (RunReport): it is not a minigpt checkpoint")
    run = OmegaConf.create(report["config"])
    if override is not None:
        run.data = override
    return OmegaConf.to_container(run.data, resolve=True)


def evaluate(cfg: DictConfig) -> dict:
    """Scores the checkpoint; returns the figures written to eval_<split>.json."""
    if cfg.split not in SPLITS:
        raise ValueError(f"split={cfg.split!r} is not one of {', '.join(SPLITS)}")
    if cfg.limit is not None and (not isinstance(cfg.limit, int) or cfg.limit <= 0):
        raise ValueError(f"limit={cfg.limit} must be a positive number of windows, or null")
    path, checkpoint = open_checkpoint(cfg.ckpt_path, cfg.runs_dir)
    hparams = checkpoint["hyper_parameters"]  # read_checkpoint checked it is minigpt's
    override = cfg.get("data")
    data = data_config(checkpoint, path, override)
    data.update(batch_size=cfg.batch_size, eval_split=cfg.split, eval_windows=cfg.limit)
    if override is not None:
        data["tokenizer"] = hparams["tokenizer"]  # other text, in the model's vocabulary
    datamodule = instantiate(data, _convert_="all")
    datamodule.setup()
    if override is None and datamodule.tokenizer.to_dict() != hparams["tokenizer"]:
        raise ValueError(
            f"the data {path} was trained on now gives another vocabulary than the "
            "checkpoint's (its text or settings changed since): score it with "
            "data=... overrides that name the text"
        )
    if cfg.split not in datamodule.tokens:
        raise ValueError(f"data.corpus={datamodule.corpus!r} has no {cfg.split} split")
    module = GPTLightningModule.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    trainer = L.Trainer(
        accelerator=cfg.accelerator,
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
    )
    (scores,) = trainer.test(module, datamodule=datamodule, verbose=False)
    loss = scores["test/loss"]
    figures = {
        "checkpoint": str(path),
        "split": cfg.split,
        "corpus": datamodule.corpus,
        "loss": loss,
        "perplexity": math.exp(loss) if loss < 700 else math.inf,
        "bpb": bits_per_byte(loss, datamodule.tokens_per_byte(cfg.split)),
        "windows": int(scores["test/windows"]),
        "tokens": int(scores["test/tokens"]),
        "split_tokens": len(datamodule.tokens[cfg.split]),
    }
    out = path.parent / f"eval_{cfg.split}.json"
    staging = out.with_suffix(f".{os.getpid()}.tmp")
    staging.write_text(json.dumps(figures, indent=1) + "\n")
    os.replace(staging, out)
    print(
        f"{cfg.split}: loss {loss:.4f}, perplexity {figures['perplexity']:.3f}, "
        f"{figures['bpb']:.4f} bits per byte ({figures['windows']:,} windows, "
        f"{figures['tokens']:,} tokens) -> {out}"
    )
    return figures


@command("eval")
def main(cfg: DictConfig) -> None:
    evaluate(cfg)


if __name__ == "__main__":
    run_command(main)
