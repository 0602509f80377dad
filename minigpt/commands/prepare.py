"""Tokenize a run's corpus ahead of training: `python prepare.py [the run's overrides]`
(e.g. `data=fineweb`: the token shards; any other corpus: the token cache). Training
prepares the same on its first start; this does it alone, on every core, resumable."""

from __future__ import annotations

import logging
import sys

from hydra.utils import instantiate
from omegaconf import DictConfig

from minigpt.commands import run_command
from minigpt.commands.console import command


def prepare(cfg: DictConfig):
    """The data module of cfg.data, its corpus prepared (and checked: setup reads it)."""
    handler = logging.StreamHandler(sys.stderr)  # the preparation's progress lines
    log = logging.getLogger("minigpt.data")
    log.addHandler(handler)
    level, log.level = log.level, logging.INFO
    try:
        datamodule = instantiate(cfg.data, _convert_="all")
        datamodule.setup()
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
    sizes = ", ".join(f"{split} {len(tokens):,}" for split, tokens in datamodule.tokens.items())
    print(f"{cfg.data.corpus}: {sizes} tokens in {datamodule.cache_path}")
    return datamodule


@command("train")
def main(cfg: DictConfig) -> None:
    prepare(cfg)


if __name__ == "__main__":
    run_command(main)
