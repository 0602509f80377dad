"""Tokenizers: text <-> token ids. Each one round-trips through a plain dict (JSON), which
is stored in every checkpoint so that sampling needs only the checkpoint."""

from __future__ import annotations

import json
from pathlib import Path


class CharTokenizer:
    """One token per character; the vocabulary is the sorted set of characters of a corpus."""

    kind = "char"

    def __init__(self, chars: list[str]):
        if not chars:
            raise ValueError("a CharTokenizer needs at least one character")
        if len(set(chars)) != len(chars) or any(len(c) != 1 for c in chars):
            raise ValueError("chars must be distinct single characters")
        self.chars = list(chars)
        self.stoi = {c: i for i, c in enumerate(self.chars)}

    @classmethod
    def from_text(cls, text: str) -> CharTokenizer:
        return cls(sorted(set(text)))

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def encode(self, text: str) -> list[int]:
        try:
            return [self.stoi[c] for c in text]
        except KeyError:
            unknown = sorted(set(text) - set(self.stoi))
            shown = ", ".join(repr(c) for c in unknown[:10])
            more = f" and {len(unknown) - 10} more" if len(unknown) > 10 else ""
            raise ValueError(
                f"text has {len(unknown)} character(s) outside the vocabulary: {shown}{more}; "
                "remove them or train on a corpus that contains them"
            ) from None

    def decode(self, ids: list[int]) -> str:
        return "".join(self.chars[i] for i in ids)

    def to_dict(self) -> dict:
        return {"kind": self.kind, "chars": self.chars}

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), ensure_ascii=False, indent=1))


def tokenizer_from_dict(data: dict) -> CharTokenizer:
    """Rebuild a tokenizer from what `to_dict` returned (e.g. from a checkpoint)."""
    kind = data.get("kind") if isinstance(data, dict) else None
    if kind == "char":
        return CharTokenizer(data["chars"])
    raise ValueError(f"unknown tokenizer kind {kind!r}: expected one of 'char'")


def load_tokenizer(path: str | Path) -> CharTokenizer:
    try:
        return tokenizer_from_dict(json.loads(Path(path).read_text()))
    except (json.JSONDecodeError, KeyError) as err:
        raise ValueError(f"{path} is not a tokenizer file: {err}") from None
