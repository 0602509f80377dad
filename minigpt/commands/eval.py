"""Score a checkpoint on a split: `python eval.py [ckpt_path=...] split=test [limit=N]`.

Without ckpt_path it uses the newest run's best checkpoint, as `sample.py` does. The data
is the checkpoint's own: its run's data config (corpus, splits, tokenizer settings, read
from the checkpoint) with the checkpoint's tokenizer; `data=text_files data.paths=[...]`
(any data config) scores other text with that tokenizer instead. Every non-overlapping
window of the split is scored (or the first `limit` of their fixed, spread-out order)
through Lightning's `trainer.test`, with a progress bar. Prints the loss (nats per token),
perplexity and bits per byte (of the split's UTF-8 text), and writes them beside the
checkpoint in a file named by what was measured, which a different measurement never
overwrites: `eval_<split>_<checkpoint>[_limit<N>][_<corpus>-<hash of its config>].json`
(e.g. eval_test_best.json, eval_val_best_limit500.json).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import lightning as L
import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from minigpt.commands import run_command
from minigpt.commands.console import command, quiet_lightning, use_cpu_threads
from minigpt.core.checkpoint import open_checkpoint
from minigpt.core.measures import bits_per_byte
from minigpt.data.corpus import SPLITS
from minigpt.training.callbacks.progress_bar import ScoringProgressBar
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


def result_path(path: Path, split: str, limit: int | None, override: dict | None) -> Path:
    """Where the figures of one measurement go: one file per checkpoint, split, window limit
    and data (the run's own, or other text, told apart by a hash of its config)."""
    name = f"eval_{split}_{path.stem}"
    if limit is not None:
        name += f"_limit{limit}"
    if override is not None:
        digest = hashlib.sha1(json.dumps(override, sort_keys=True).encode()).hexdigest()
        name += f"_{override.get('corpus', 'data')}-{digest[:8]}"
    return path.parent / f"{name}.json"


def evaluate(cfg: DictConfig) -> dict:
    """Scores the checkpoint; returns the figures it writes (result_path)."""
    if cfg.split not in SPLITS:
        raise ValueError(f"split={cfg.split!r} is not one of {', '.join(SPLITS)}")
    if cfg.limit is not None and (not isinstance(cfg.limit, int) or cfg.limit <= 0):
        raise ValueError(f"limit={cfg.limit} must be a positive number of windows, or null")
    use_cpu_threads(cfg.threads, on_cpu=cfg.accelerator == "cpu" or not torch.cuda.is_available())
    path, checkpoint = open_checkpoint(cfg.ckpt_path, cfg.runs_dir)
    hparams = checkpoint["hyper_parameters"]  # read_checkpoint checked it is minigpt's
    override = cfg.get("data")
    data = data_config(checkpoint, path, override)
    other_text = None if override is None else dict(data)  # what names the result
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
        splits = [s for s in SPLITS if s in datamodule.tokens]
        raise ValueError(
            f"data.corpus={datamodule.corpus!r} has no {cfg.split} split (it has "
            f"{' and '.join(splits)}): pass split={'val' if 'val' in splits else splits[0]}"
        )
    module = GPTLightningModule.load_from_checkpoint(path, map_location="cpu", weights_only=True)
    trainer = L.Trainer(
        accelerator=cfg.accelerator,
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_model_summary=False,
        callbacks=[ScoringProgressBar(cfg.split)],  # tqdm, as training's (not Rich)
    )
    (scores,) = trainer.test(module, datamodule=datamodule, verbose=False)
    loss = scores["test/loss"]
    figures = {
        "checkpoint": str(path),
        "split": cfg.split,
        "corpus": datamodule.corpus,
        "loss": loss,
        "perplexity": math.exp(loss) if loss < 700 else math.inf,
        "bpb": bits_per_byte(scores["test/text_loss"], datamodule.tokens_per_byte(cfg.split)),
        "windows": int(scores["test/windows"]),
        "tokens": int(scores["test/tokens"]),
        "split_tokens": len(datamodule.tokens[cfg.split]),
    }
    out = result_path(path, cfg.split, cfg.limit, other_text)
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
