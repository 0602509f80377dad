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

`task=hellaswag` scores HellaSwag instead (minigpt.tools.hellaswag): acc and acc_norm of
the checkpoint, or of `pretrained=gpt2` (GPT-2's released weights, the yardstick), written to
hellaswag_<checkpoint>.json.
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
from tqdm import tqdm

from minigpt.commands import run_command
from minigpt.commands.console import command, quiet_lightning, use_cpu_threads
from minigpt.core.checkpoint import model_from_checkpoint, open_checkpoint
from minigpt.core.measures import bits_per_byte
from minigpt.core.options import is_integer
from minigpt.core.tokenizers import tokenizer_from_dict
from minigpt.data.corpus import SPLITS
from minigpt.tools.convert import load_pretrained
from minigpt.tools.hellaswag import read_items, score
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


def write_figures(out: Path, figures: dict) -> None:
    """figures as JSON at out, whole or not at all (written aside, then renamed)."""
    staging = out.with_suffix(f".{os.getpid()}.tmp")
    staging.write_text(json.dumps(figures, indent=1) + "\n")
    os.replace(staging, out)


def evaluate_hellaswag(cfg: DictConfig) -> dict:
    """task=hellaswag: acc and acc_norm of a checkpoint (or of `pretrained`: a transformers
    directory, or one of GPT-2's released models by name) on HellaSwag's validation items;
    written beside the checkpoint (or into the working directory for a pretrained model)."""
    device = "cuda" if cfg.accelerator != "cpu" and torch.cuda.is_available() else "cpu"
    use_cpu_threads(cfg.threads, on_cpu=device == "cpu")
    settings = cfg.hellaswag
    if settings.limit is not None and (not is_integer(settings.limit) or settings.limit <= 0):
        raise ValueError(f"hellaswag.limit={settings.limit} must be a positive number of items")
    if cfg.get("pretrained"):
        model, tokenizer_dict = load_pretrained(cfg.pretrained)
        tokenizer = tokenizer_from_dict(tokenizer_dict)
        name = str(cfg.pretrained).rstrip("/").replace("/", "_")
        out = Path(f"hellaswag_{name}.json")
    else:
        path, checkpoint = open_checkpoint(cfg.ckpt_path, cfg.runs_dir)
        model, tokenizer = model_from_checkpoint(checkpoint, path)
        out = path.parent / f"hellaswag_{path.stem}.json"
        name = str(path)
    if settings.limit is not None:
        out = out.with_name(f"{out.stem}_limit{settings.limit}.json")
    items = read_items(settings.file, settings.limit)
    bar = tqdm(total=len(items), desc="hellaswag", unit="item")
    figures = score(model.to(device), tokenizer, items, device, lambda done, _: bar.update(1))
    bar.close()
    figures = {"model": name, **figures}
    write_figures(out, figures)
    skipped = f", {figures['skipped']} skipped: characters outside the vocabulary"
    print(
        f"hellaswag: acc {figures['acc']:.4f}, acc_norm {figures['acc_norm']:.4f} "
        f"({figures['items']:,} items{skipped if figures['skipped'] else ''}) -> {out}"
    )
    return figures


def evaluate(cfg: DictConfig) -> dict:
    """Scores the checkpoint; returns the figures it writes (result_path)."""
    if cfg.task == "hellaswag":
        return evaluate_hellaswag(cfg)
    if cfg.task != "loss":
        raise ValueError(f"task={cfg.task!r} is not one of loss, hellaswag")
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
    write_figures(out, figures)
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
