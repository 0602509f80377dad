"""Tokenizing a corpus into the cache in pieces, across worker processes, with memory that
does not grow with the corpus.

A corpus reaches this module as pieces (`minigpt.data.stream.FilePiece`: a byte range of a
text file; `minigpt.data.rows.RowsPiece`: rows of an HF dataset; `DocumentsPiece`:
documents already in memory). A piece's `read()` returns its texts, each marked with whether
it starts and ends a document. Workers read and encode pieces; this process writes their
tokens in order into each split's flat array (`<split>.bin`, with `<split>.docs.npy` and
`meta.json`, the layout of `minigpt.data.cache`), keeping at most two pieces per worker in
flight. The same path collects a character vocabulary and the chunk counts that train BPE.

Workers are forked (they inherit the tokenizer and open datasets, nothing is pickled but
pieces and results). HF `datasets.map` is not used for this: it stores every document's
token list in an Arrow table (a second copy of the corpus on disk) before the flat array is
written, and its fingerprint hashes the data, which the cache key here avoids.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import multiprocessing
import os
import signal
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import regex
from tqdm import tqdm

from minigpt.core.tokenizers import UNKNOWN_CHAR, BPETokenizer, CharTokenizer
from minigpt.data.cache import CACHE_FORMAT, file_sha256
from minigpt.data.corpus import SPLITS, Document

Text = str | bytes  # bytes: an all-ASCII text (each byte is its code point: the fast path)


def _str(text: Text) -> str:
    return text.decode("ascii") if isinstance(text, bytes) else text


def text_bytes(text: Text) -> int:
    """The size of a text in UTF-8 bytes."""
    return len(text) if isinstance(text, bytes) else len(text.encode("utf-8"))


@dataclass(frozen=True)
class DocumentsPiece:
    """Whole documents held in memory (the embedded corpus)."""

    documents: tuple[Document, ...]

    @property
    def nbytes(self) -> int:
        return sum(text_bytes(d.text) for d in self.documents)

    def read(self) -> list[tuple[Text, bool, bool]]:
        return [(d.text, True, True) for d in self.documents]


def documents_pieces(documents: list[Document], piece_bytes: int) -> list[DocumentsPiece]:
    """Documents grouped into pieces of about piece_bytes (a document is never split)."""
    pieces, group, size = [], [], 0
    for doc in documents:
        group.append(doc)
        size += len(doc.text)
        if size >= piece_bytes:
            pieces.append(DocumentsPiece(tuple(group)))
            group, size = [], 0
    return pieces + ([DocumentsPiece(tuple(group))] if group else [])


def default_workers() -> int:
    """The cores this process may use."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()


_job: dict = {}  # what forked workers inherit: the function's arguments beyond the piece


def _run(function: Callable, piece):
    return function(piece, **_job)


def _worker_signals() -> None:
    """Workers leave SIGINT to this process (which stops the pool), and die on SIGTERM: the
    handlers they inherit (a trainer's graceful stop) would keep a terminated worker alive."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


def pool_size(pieces: int, workers: int) -> int:
    """The processes `map_pieces` computes `pieces` pieces on: `workers` forked ones, or this
    one alone when there is one worker or one piece (a pool would compute nothing in
    parallel: forking a process that holds torch and Lightning, and the pool's start and
    end, cost 0.1-0.2 s each time)."""
    return workers if workers > 1 and pieces > 1 else 1


def map_pieces(function: Callable, pieces: Iterable, workers: int, **shared) -> Iterator:
    """function(piece, **shared) for each piece, in order, computed on `pool_size`
    processes, at most 2 × workers pieces in flight."""
    _job.clear()
    _job.update(shared)
    try:
        pieces = iter(pieces)
        first = list(itertools.islice(pieces, 2))  # enough to tell one piece from more
        pieces = itertools.chain(first, pieces)
        if pool_size(len(first), workers) == 1:
            yield from (function(piece, **shared) for piece in pieces)
            return
        with multiprocessing.get_context("fork").Pool(workers, _worker_signals) as pool:
            pending: deque = deque()
            for piece in pieces:
                pending.append(pool.apply_async(_run, (function, piece)))
                if len(pending) >= 2 * workers:
                    yield pending.popleft().get()
            while pending:
                yield pending.popleft().get()
            pool.close()  # the workers finish and exit; leaving the block terminates them
            pool.join()
    finally:
        _job.clear()


def progress(total: int | None, description: str) -> tqdm:
    """A progress bar in bytes of text, with the rate (MiB/s, shown as MB/s)."""
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=description)


# ---------------------------------------------------------------- characters


def code_points(text: Text) -> np.ndarray:
    if isinstance(text, bytes):
        return np.frombuffer(text, dtype=np.uint8)
    return np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)


def piece_characters(piece) -> tuple[np.ndarray, int]:
    """The code points a piece holds (sorted, distinct) and its size in bytes."""
    seen, nbytes = [], 0
    for text, _, _ in piece.read():
        points = code_points(text)
        if isinstance(text, bytes):  # ASCII: count the 128 byte values, no sort
            seen.append(np.flatnonzero(np.bincount(points, minlength=128)))
        else:
            seen.append(np.unique(points))
        nbytes += text_bytes(text)
    return (np.unique(np.concatenate(seen)) if seen else np.zeros(0, np.int64)), nbytes


def characters(pieces: dict[str, list], workers: int) -> dict[str, set[str]]:
    """The characters of each split: one parallel pass over the pieces."""
    seen = {split: np.zeros(0x110000, dtype=bool) for split in SPLITS}  # 1.1 MB each
    with progress(total_bytes(pieces), "reading characters") as bar:
        for split in SPLITS:
            for points, nbytes in map_pieces(piece_characters, pieces[split], workers):
                seen[split][points] = True
                bar.update(nbytes)
    return {split: {chr(c) for c in np.flatnonzero(seen[split]).tolist()} for split in SPLITS}


def char_vocabulary(pieces: dict[str, list], workers: int) -> CharTokenizer:
    """The train split's characters, and UNKNOWN_CHAR if val or test hold others
    (`CharTokenizer.for_splits`)."""
    seen = characters(pieces, workers)
    return CharTokenizer.for_splits(seen["train"], seen["val"] | seen["test"])


class CharEncoder:
    """Character ids by table lookup: code point -> id, a held-out character that train
    lacks -> UNKNOWN_CHAR's id. An ASCII text of vocabulary characters only goes through
    bytes.translate (the vocabulary is sorted by code point, so ASCII ids are below 128)."""

    def __init__(self, tokenizer: CharTokenizer):
        unknown = tokenizer.stoi.get(UNKNOWN_CHAR, 0)
        self.table = np.full(0x110000, unknown, dtype=np.uint32)
        self.table[[ord(c) for c in tokenizer.chars]] = np.arange(tokenizer.vocab_size)
        inside = [chr(c) in tokenizer.stoi for c in range(128)]
        self.ascii_ids = bytes(int(self.table[c]) if inside[c] else 0 for c in range(128))
        self.ascii_ids += bytes(128)
        self.outside = bytes(c for c in range(128) if not inside[c])

    def __call__(self, text: Text, dtype) -> np.ndarray:
        if isinstance(text, bytes) and len(text.translate(None, self.outside)) == len(text):
            return np.frombuffer(text.translate(self.ascii_ids), np.uint8).astype(dtype)
        return self.table[code_points(text)].astype(dtype)


class BPEEncoder:
    def __init__(self, tokenizer: BPETokenizer):
        self.tokenizer = tokenizer

    def __call__(self, text: Text, dtype) -> np.ndarray:
        return np.array(self.tokenizer.encode_ordinary(_str(text)), dtype=dtype)


# ---------------------------------------------------------------- BPE training


def piece_chunk_counts(piece, pattern: str) -> tuple[Counter, int]:
    """How often each pre-tokenized chunk occurs in a piece, and the piece's bytes."""
    counts: Counter = Counter()
    nbytes = 0
    for text, _, _ in piece.read():
        counts.update(regex.findall(pattern, _str(text)))
        nbytes += text_bytes(text)
    return counts, nbytes


def sample_pieces(pieces: list, budget: int) -> list:
    """Evenly spaced pieces holding about `budget` bytes (all of them when they hold less)."""
    total = sum(p.nbytes for p in pieces)
    if total <= budget or not pieces:
        return list(pieces)
    count = max(1, round(len(pieces) * budget / total))
    return [pieces[i * len(pieces) // count] for i in range(count)]


def train_bpe(pieces: list, config: dict, pattern: str, workers: int) -> BPETokenizer:
    """A BPE tokenizer trained on a sample of the train split's pieces (`sample_mb` MiB,
    evenly spaced): minigpt's trainer on chunk counts gathered in parallel, or HF
    `tokenizers` (`impl: hf`) on the sample's text."""
    sample = sample_pieces(pieces, int(float(config.get("sample_mb", 64)) * (1 << 20)))
    vocab_size = int(config.get("vocab_size", 2048))
    if config.get("impl", "minigpt") == "hf":
        texts = (_str(t) for piece in sample for t, _, _ in piece.read())
        return BPETokenizer.train_hf(texts, vocab_size, pattern)
    counts: Counter = Counter()
    with progress(sum(p.nbytes for p in sample), "counting BPE chunks") as bar:
        for piece_counts, nbytes in map_pieces(
            piece_chunk_counts, sample, workers, pattern=pattern
        ):
            counts.update(piece_counts)
            bar.update(nbytes)
    return BPETokenizer.train_on_counts(counts, vocab_size, pattern)


# ---------------------------------------------------------------- the cache


def encode_piece(piece, encoder, eot: int | None, dtype) -> tuple[np.ndarray, list[int], int]:
    """A piece's token ids (end-of-text after each document end, when the tokenizer has
    one), where its documents start among them, and its size in bytes of text."""
    arrays, starts, position, nbytes = [], [], 0, 0
    for text, starts_document, ends_document in piece.read():
        if starts_document:
            starts.append(position)
        ids = encoder(text, dtype)
        if ends_document and eot is not None:
            ids = np.append(ids, np.array(eot, dtype=dtype))
        arrays.append(ids)
        position += len(ids)
        nbytes += text_bytes(text)
    return (np.concatenate(arrays) if arrays else np.zeros(0, dtype)), starts, nbytes


def total_bytes(pieces: dict[str, list]) -> int:
    return sum(p.nbytes for split in SPLITS for p in pieces[split])


def write_cache(
    pieces: dict[str, list],
    tokenizer: CharTokenizer | BPETokenizer,
    out_dir: Path,
    workers: int,
    titles: dict[str, list[str]] | None = None,
) -> None:
    """Writes `<split>.bin` (flat token ids; uint16 while the vocabulary fits, else uint32),
    `<split>.docs.npy` (where each document starts), `tokenizer.json` and `meta.json` (with
    the documents' titles when given) into out_dir, encoding the pieces in parallel."""
    encoder = CharEncoder(tokenizer) if tokenizer.kind == "char" else BPEEncoder(tokenizer)
    eot = tokenizer.eot_id
    dtype = np.uint16 if tokenizer.vocab_size <= 2**16 else np.uint32
    meta = {"format": CACHE_FORMAT, "dtype": np.dtype(dtype).name, "splits": {}}
    shared = {"encoder": encoder, "eot": eot, "dtype": dtype}
    with progress(total_bytes(pieces), "tokenizing") as bar:
        for split in SPLITS:
            digest, tokens, nbytes, starts = hashlib.sha256(), 0, 0, []
            with open(out_dir / f"{split}.bin", "wb") as out:
                for ids, piece_starts, piece_bytes in map_pieces(
                    encode_piece, pieces[split], workers, **shared
                ):
                    starts += [tokens + s for s in piece_starts]
                    out.write(ids.tobytes())
                    digest.update(ids.tobytes())
                    tokens, nbytes = tokens + len(ids), nbytes + piece_bytes
                    bar.update(piece_bytes)
            np.save(out_dir / f"{split}.docs.npy", np.array(starts, dtype=np.int64))
            meta["splits"][split] = {
                "tokens": tokens,
                "sha256": digest.hexdigest(),
                "bytes": nbytes,
                "documents": len(starts),
            }
            if titles is not None:
                meta["splits"][split]["titles"] = titles[split]
    tokenizer.save(out_dir / "tokenizer.json")
    meta["tokenizer_sha256"] = file_sha256(out_dir / "tokenizer.json")
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=1))
