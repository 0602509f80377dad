"""Text files of any size into the token cache, a chunk at a time: memory does not grow
with the corpus.

The files are concatenated in order; the first (1 - val_fraction) of the *bytes* (moved
forward to the next character boundary) train, the rest validate, a file straddling the cut
being split there (for ASCII text this is the character rule of the in-memory path). Each
part is read in CHUNK_BYTES pieces through an incremental UTF-8 decoder, so no piece splits
a character. Characters: one pass collects the vocabulary (the train split's code points, with
numpy; held-out characters that train lacks become UNKNOWN_CHAR), a second encodes each
piece by table lookup and appends it to the split's flat array; both
show a progress bar in MB/s. The cache entry is keyed by the files' paths, sizes and
modification times and the settings: a cached corpus is not read again.

HF `datasets` is not used here: it would store every piece's token list in an Arrow table
(a second copy of the corpus on disk) before the flat array is written, and its
fingerprint hashes the data, which is the re-reading this path avoids.
"""

from __future__ import annotations

import codecs
import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from minigpt.corpus import SPLITS, expand_paths
from minigpt.data.cache import CACHE_FORMAT, file_sha256
from minigpt.tokenizers import UNKNOWN_CHAR, CharTokenizer

CHUNK_BYTES = 16 << 20


@dataclass(frozen=True)
class Part:
    """Bytes [start, end) of a file, going to one split."""

    path: Path
    start: int
    end: int


def check_file(path: Path, min_bytes: int) -> int:
    """The file's size, or a one-line error for a path that is not a usable text file."""
    if path.is_dir():
        raise ValueError(f"data file {path} is a directory: name its files, e.g. '{path}/*.txt'")
    if not path.is_file():
        raise FileNotFoundError(f"data file {path} does not exist")
    size = path.stat().st_size
    if size == 0:
        raise ValueError(f"data file {path} is empty")
    if size < min_bytes:
        raise ValueError(
            f"data file {path} has {size} bytes, shorter than one block ({min_bytes}): "
            "use a longer file or a smaller model.block_size"
        )
    return size


def character_boundary(path: Path, offset: int) -> int:
    """The first offset at or after `offset` where a UTF-8 character starts."""
    with open(path, "rb") as f:
        f.seek(offset)
        tail = f.read(4)
    skip = 0
    while skip < len(tail) and tail[skip] & 0b1100_0000 == 0b1000_0000:  # continuation byte
        skip += 1
    return offset + skip


def plan_splits(patterns: list[str], val_fraction: float, min_bytes: int) -> dict[str, list[Part]]:
    """The byte ranges of each split (no test split for text files)."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"data.val_fraction={val_fraction} must be in (0, 1)")
    paths = expand_paths(patterns)
    sizes = [check_file(p, min_bytes) for p in paths]
    cut = int(sum(sizes) * (1.0 - val_fraction))
    parts: dict[str, list[Part]] = {split: [] for split in SPLITS}
    start = 0
    for path, size in zip(paths, sizes, strict=True):
        end = start + size
        if end <= cut:
            parts["train"].append(Part(path, 0, size))
        elif start >= cut:
            parts["val"].append(Part(path, 0, size))
        else:
            at = character_boundary(path, cut - start)
            parts["train"].append(Part(path, 0, at))
            if at < size:
                parts["val"].append(Part(path, at, size))
        start = end
    return parts


def files_fingerprint(parts: dict[str, list[Part]], settings: dict) -> str:
    """A key from what the files are (path, size, modification time) and the settings,
    without reading them."""
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for split in SPLITS:
        for part in parts[split]:
            stat = part.path.stat()
            entry = [split, str(part.path.resolve()), part.start, part.end]
            digest.update(json.dumps([*entry, stat.st_size, stat.st_mtime_ns]).encode())
    return digest.hexdigest()[:16]


def read_text(part: Part, bar: tqdm | None = None) -> Iterator[str | bytes]:
    """The part's text in pieces of about CHUNK_BYTES, never splitting a character: a piece
    that is all ASCII comes as bytes (each byte is its code point: the fast path), any
    other as str."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    with open(part.path, "rb") as f:
        f.seek(part.start)
        left, offset = part.end - part.start, part.start
        while left > 0:
            data = f.read(min(CHUNK_BYTES, left))
            left -= len(data)
            if bar is not None:
                bar.update(len(data))
            if data.isascii() and not decoder.getstate()[0]:
                offset += len(data)
                yield data
                continue
            try:
                text = decoder.decode(data, final=left == 0)
            except UnicodeDecodeError as err:
                raise ValueError(
                    f"data file {part.path} is not UTF-8 (byte {offset + err.start}: "
                    f"{err.reason}); convert it, e.g. with iconv -t UTF-8"
                ) from None
            offset += len(data)
            yield text


def code_points(piece: str | bytes) -> np.ndarray:
    if isinstance(piece, bytes):  # ASCII
        return np.frombuffer(piece, dtype=np.uint8)
    return np.frombuffer(piece.encode("utf-32-le"), dtype=np.uint32)


def progress(total: int, description: str) -> tqdm:
    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1 << 20, desc=description)


def char_vocabulary(parts: dict[str, list[Part]], total: int) -> CharTokenizer:
    """The train split's characters, and UNKNOWN_CHAR if val or test hold others
    (`CharTokenizer.for_splits`)."""
    seen = {split: np.zeros(0x110000, dtype=bool) for split in SPLITS}  # 1.1 MB each
    with progress(total, "reading characters") as bar:
        for split in SPLITS:
            for part in parts[split]:
                for piece in read_text(part, bar):
                    if isinstance(piece, bytes):  # ASCII: count the 128 byte values
                        seen[split][:128] |= np.bincount(code_points(piece), minlength=128) > 0
                    else:
                        seen[split][code_points(piece)] = True  # O(n), no sort

    def chars(split: str) -> set[str]:
        return {chr(c) for c in np.flatnonzero(seen[split]).tolist()}

    return CharTokenizer.for_splits(chars("train"), chars("val") | chars("test"))


def write_char_cache(parts: dict[str, list[Part]], out_dir: Path) -> CharTokenizer:
    """Tokenizes the parts into out_dir as `tokenize_splits` does (`<split>.bin`,
    `<split>.docs.npy`, `meta.json`, `tokenizer.json`), a chunk at a time."""
    total = sum(p.end - p.start for split in SPLITS for p in parts[split])
    tokenizer = char_vocabulary(parts, total)
    # code point -> id; a held-out character that train lacks -> UNKNOWN_CHAR's id
    unknown = tokenizer.stoi.get(UNKNOWN_CHAR, 0)
    table = np.full(0x110000, unknown, dtype=np.uint32)
    table[[ord(c) for c in tokenizer.chars]] = np.arange(tokenizer.vocab_size, dtype=np.uint32)
    # the vocabulary is sorted by code point, so ASCII characters have ids below 128: an
    # ASCII piece of vocabulary characters only is encoded with bytes.translate
    ascii_ids = bytes(int(table[c]) if chr(c) in tokenizer.stoi else 0 for c in range(128))
    ascii_ids += bytes(128)
    outside = bytes(c for c in range(128) if chr(c) not in tokenizer.stoi)
    dtype = np.uint16 if tokenizer.vocab_size <= 2**16 else np.uint32
    meta = {"format": CACHE_FORMAT, "dtype": np.dtype(dtype).name, "splits": {}}
    with progress(total, "tokenizing") as bar:
        for split in SPLITS:
            digest, tokens, starts = hashlib.sha256(), 0, []
            with open(out_dir / f"{split}.bin", "wb") as out:
                for part in parts[split]:
                    starts.append(tokens)
                    for piece in read_text(part, bar):
                        fast = isinstance(piece, bytes)
                        if fast and len(piece.translate(None, outside)) == len(piece):
                            ids = np.frombuffer(piece.translate(ascii_ids), np.uint8).astype(dtype)
                        else:
                            ids = table[code_points(piece)].astype(dtype)
                        out.write(ids.tobytes())
                        digest.update(ids.tobytes())
                        tokens += len(ids)
            np.save(out_dir / f"{split}.docs.npy", np.array(starts, dtype=np.int64))
            meta["splits"][split] = {
                "tokens": tokens,
                "sha256": digest.hexdigest(),
                "bytes": sum(p.end - p.start for p in parts[split]),
                "documents": [str(p.path) for p in parts[split]],
            }
    tokenizer.save(out_dir / "tokenizer.json")
    meta["tokenizer_sha256"] = file_sha256(out_dir / "tokenizer.json")
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=1))
    return tokenizer
