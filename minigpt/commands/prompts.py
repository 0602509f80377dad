"""The prompt a command was given: as text with escapes, or from a file, and encoded for
the model (sample.py and explain.py)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

from omegaconf import DictConfig

from minigpt.core.tokenizers import CharTokenizer

ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


def unescape(text: str) -> str:
    """`\\n`, `\\t`, `\\r` and `\\\\` as the characters they name: a command line cannot
    hold a line break, and Hydra keeps a backslash and the letter after it as they are.
    Any other backslash stays."""
    return re.sub(r"\\([ntr\\])", lambda m: ESCAPES[m.group(1)], text)


def read_prompt(cfg: DictConfig) -> str:
    if cfg.prompt_file:
        path = Path(cfg.prompt_file)
        if path.is_dir():
            raise ValueError(f"prompt_file={path} is a directory, not a text file")
        if not path.is_file():
            raise FileNotFoundError(f"prompt_file={path} does not exist")
        try:
            return path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise ValueError(f"prompt_file={path} is not UTF-8 text") from None
    return unescape(str(cfg.prompt))


def trailing_space_warning(prompt: str, ids: list[int], tokenizer) -> str | None:
    """Why a subword model is likely to double a space the prompt ends with: GPT-2's split
    makes spaces at the end of a text a token of their own, while in the training text a
    space begins the next word's token (" foo"); a lone space token is seen only before
    more space (indentation), so the model goes on with a token that starts with one."""
    if isinstance(tokenizer, CharTokenizer):
        return None
    last = tokenizer.decode(ids[-1:])
    if not last or last.strip(" \t"):
        return None
    return (
        f"the prompt ends in {last!r}, a token of its own; in training a space begins the "
        f"next word's token, so the model will likely begin with another space: leave the "
        f"trailing space off (prompt={prompt.rstrip(' ')!r})"
    )


def encode_prompt(prompt: str, tokenizer, block_size: int) -> list[int]:
    """The prompt's ids. An empty prompt starts from the end-of-text token (BPE) or after a
    line break (characters); neither is printed. A prompt longer than the context is kept
    whole, with a warning: the model sees its end."""
    eot = tokenizer.eot_id
    if prompt:
        ids = tokenizer.encode(prompt)
        if warning := trailing_space_warning(prompt, ids, tokenizer):
            print(f"warning: {warning}", file=sys.stderr)
    else:
        ids = [eot] if eot is not None else tokenizer.encode("\n")
    if len(ids) > block_size:
        print(
            f"warning: the prompt has {len(ids)} tokens, more than the model's context "
            f"(block_size={block_size}): the model sees its last {block_size}",
            file=sys.stderr,
        )
    return ids
