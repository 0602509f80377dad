"""Pretraining shards: a corpus of any size (a web corpus streamed from the Hugging Face hub,
or local parquet/JSON-lines files) encoded by every core into fixed-size token files in the
format of llm.c and modded-nanogpt, so that shards they prepared are read here as they are,
and ours by them.

A shard is a header of 256 int32 (magic 20240520, version 1, token count) followed by the
tokens as uint16. Documents are joined as those scripts join them, each preceded by the
end-of-text token, and the stream is cut into shards of `shard_tokens` tokens (a document
continues in the next shard). Shard 0 is the validation split, as in their scripts; the
others train. Names follow theirs: `<name>_val_000000.bin`, `<name>_train_000001.bin`, ...

Preparation is resumable: each shard is written under a temporary name and renamed when
whole, then `progress.json` records where the next shard starts (the document and how many
of its tokens are already in shards). A killed preparation continues from its last whole
shard; a half-written one is never read (readers wait for `progress.json` to say
complete, or read a folder of shards that has no progress file: someone else's).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator
from itertools import chain
from pathlib import Path

import numpy as np

from minigpt.data.cache import TokenFile
from minigpt.data.encode import map_pieces

MAGIC, VERSION = 20240520, 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
SHARD_TOKENS = 100_000_000  # llm.c's and modded-nanogpt's size
BATCH_BYTES = 1 << 20  # text a worker encodes at a time
PROGRESS = "progress.json"

log = logging.getLogger(__name__)


def shard_name(name: str, index: int) -> str:
    return f"{name}_{'val' if index == 0 else 'train'}_{index:06d}.bin"


def write_shard(path: Path, tokens: np.ndarray) -> None:
    """tokens (uint16) under llm.c's header, written to a temporary name and renamed whole."""
    if tokens.dtype != np.uint16:
        raise ValueError(f"shard tokens must be uint16, not {tokens.dtype}")
    header = np.zeros(HEADER_INTS, dtype=np.int32)
    header[:3] = MAGIC, VERSION, len(tokens)
    staging = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(staging, "wb") as out:
        out.write(header.tobytes())
        out.write(tokens.tobytes())
    os.replace(staging, path)


def shard_tokens(path: Path) -> int:
    """The token count of a shard, after checking its header and size."""
    header = np.fromfile(path, dtype=np.int32, count=HEADER_INTS)
    if len(header) < HEADER_INTS or header[0] != MAGIC:
        raise ValueError(f"{path} is not a token shard (no magic number {MAGIC} in its header)")
    if header[1] != VERSION:
        raise ValueError(f"{path} is a version {header[1]} shard; version {VERSION} is read")
    size = path.stat().st_size
    if size != HEADER_BYTES + 2 * int(header[2]):
        raise ValueError(
            f"{path} has {size} bytes, not the {HEADER_BYTES + 2 * int(header[2])} its header "
            "announces: a shard cut short (prepare it again)"
        )
    return int(header[2])


class ShardTokens:
    """Shards read as one flat token array: each shard a `TokenFile` after its header (read
    window by window with pread, memory flat); a window may span two shards."""

    dtype = np.dtype(np.uint16)

    def __init__(self, paths: list[Path]):
        if not paths:
            raise ValueError("no shards to read")
        self.paths = [Path(p) for p in paths]
        for path in self.paths:
            shard_tokens(path)  # checks the header and the size
        self.files = [TokenFile(p, "uint16", HEADER_BYTES) for p in self.paths]
        self.starts = np.cumsum([0, *(len(f) for f in self.files)]).astype(np.int64)
        self.length = int(self.starts[-1])

    def __len__(self) -> int:
        return self.length

    @property
    def shape(self) -> tuple[int]:
        return (self.length,)

    def _read(self, start: int, stop: int) -> np.ndarray:
        parts = []
        shard = int(np.searchsorted(self.starts, start, side="right")) - 1
        while start < stop:
            first = int(self.starts[shard])
            end = min(stop, int(self.starts[shard + 1]))
            parts.append(self.files[shard][start - first : end - first])
            start, shard = end, shard + 1
        if len(parts) == 1:
            return parts[0]
        return np.concatenate(parts) if parts else np.zeros(0, self.dtype)

    def __getitem__(self, key):
        if isinstance(key, slice):
            start, stop, step = key.indices(self.length)
            data = self._read(start, max(start, stop))
            return data[:: step if step > 0 else 1]
        index = int(key) + (self.length if int(key) < 0 else 0)
        if not 0 <= index < self.length:
            raise IndexError(f"token {key} of {self.length}")
        return self._read(index, index + 1)[0]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        whole = self[:]
        return whole if dtype is None else whole.astype(dtype)


def find_shards(folder: Path) -> dict[str, list[Path]]:
    """The val and train shards of a folder, by llm.c's names (`*_val_*.bin`,
    `*_train_*.bin`), in order."""
    return {
        "val": sorted(folder.glob("*_val_*.bin")),
        "train": sorted(folder.glob("*_train_*.bin")),
    }


def read_progress(folder: Path) -> dict | None:
    path = folder / PROGRESS
    return json.loads(path.read_text()) if path.is_file() else None


def write_progress(folder: Path, progress: dict) -> None:
    staging = folder / f".{PROGRESS}.{os.getpid()}.tmp"
    staging.write_text(json.dumps(progress, indent=1))
    os.replace(staging, folder / PROGRESS)


# ---------------------------------------------------------------- preparation


def encode_batch(texts: list[str], tokenizer, eot: int) -> tuple[np.ndarray, np.ndarray]:
    """Each text's tokens preceded by end-of-text, joined; and each text's token count."""
    encoded = [tokenizer.encode_ordinary(t) for t in texts]
    lengths = np.fromiter((len(ids) + 1 for ids in encoded), np.int64, len(encoded))
    tokens = np.empty(int(lengths.sum()), dtype=np.uint16)
    starts = np.cumsum(lengths) - lengths
    tokens[starts] = eot
    text = np.ones(len(tokens), dtype=bool)
    text[starts] = False
    tokens[text] = np.fromiter(chain.from_iterable(encoded), np.uint16, len(tokens) - len(starts))
    return tokens, lengths


def text_batches(documents: Iterable[str]) -> Iterator[list[str]]:
    """Documents in lists of about BATCH_BYTES of text (one task of a worker)."""
    batch, size = [], 0
    for text in documents:
        batch.append(text)
        size += len(text)
        if size >= BATCH_BYTES:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def text_token_counts(tokens: np.ndarray, tokenizer) -> tuple[int, int]:
    """(tokens of text, bytes of text) of a token array: end-of-text tokens stand for none."""
    lengths = np.array([len(t) for t in tokenizer.token_bytes()], dtype=np.int64)
    lengths[tokenizer.eot_id] = 0
    counts = np.bincount(tokens, minlength=len(lengths))
    return int(counts.sum() - counts[tokenizer.eot_id]), int(counts @ lengths)


def prepare_shards(
    documents_from: Callable[[int], Iterable[str]],
    tokenizer,
    folder: Path,
    name: str,
    shard_size: int = SHARD_TOKENS,
    max_tokens: int | None = None,
    workers: int = 1,
) -> dict:
    """Encodes the documents `documents_from(n)` yields (from the n-th on) into shards in
    folder, on `workers` processes, continuing a preparation that stopped (see the
    module's docstring). max_tokens: stop at the first whole shard that reaches it.
    Returns the progress record, complete."""
    if tokenizer.vocab_size > 2**16 or tokenizer.eot_id is None:
        raise ValueError(
            "shards hold uint16 tokens between end-of-text tokens: the tokenizer needs an "
            f"end-of-text token and at most 65,536 tokens (it has {tokenizer.vocab_size:,})"
        )
    folder.mkdir(parents=True, exist_ok=True)
    progress = read_progress(folder) or {
        "name": name,
        "shard_tokens": shard_size,
        "shards": 0,
        "documents": 0,  # where the next shard starts: this document,
        "offset": 0,  # after this many of its tokens
        "tokens": [],
        "complete": False,
    }
    if progress["complete"]:
        return progress
    if progress["shard_tokens"] != shard_size or progress["name"] != name:
        raise ValueError(
            f"{folder} holds a preparation of {progress['name']!r} in shards of "
            f"{progress['shard_tokens']:,} tokens: finish it with the same settings, or "
            "prepare into another folder"
        )
    if progress["shards"]:
        log.info(
            f"continuing the preparation in {folder} after {progress['shards']} whole shards "
            f"(at document {progress['documents']:,})"
        )
    buffer = np.empty(shard_size, dtype=np.uint16)
    filled, started = 0, time.perf_counter()

    def finish_shard(next_document: int, next_offset: int) -> None:
        write_shard(folder / shard_name(name, progress["shards"]), buffer[:filled])
        progress["shards"] += 1
        progress.update(documents=next_document, offset=next_offset)
        progress["tokens"].append(filled)
        write_progress(folder, progress)
        total, seconds = sum(progress["tokens"]), time.perf_counter() - started
        log.info(
            f"shard {progress['shards'] - 1}: {filled:,} tokens ({total:,} in all, {seconds:.0f} s)"
        )

    document, position = progress["documents"], progress["offset"]
    batches = text_batches(documents_from(document))
    reached = False
    for tokens, lengths in map_pieces(
        encode_batch, batches, workers, tokenizer=tokenizer, eot=tokenizer.eot_id
    ):
        ends = np.cumsum(lengths)  # `document` is the first of this batch
        while position < len(tokens) and not reached:
            take = min(shard_size - filled, len(tokens) - position)
            buffer[filled : filled + take] = tokens[position : position + take]
            filled, position = filled + take, position + take
            if filled == shard_size:
                done = int(np.searchsorted(ends, position, side="right"))  # whole documents
                finish_shard(document + done, position - (int(ends[done - 1]) if done else 0))
                filled = 0
                reached = max_tokens is not None and sum(progress["tokens"]) >= max_tokens
        if reached:
            break
        document, position = document + len(lengths), 0
    if filled:  # the end of the documents: a last, shorter shard
        finish_shard(document, 0)
    progress["complete"] = True
    write_progress(folder, progress)
    return progress
