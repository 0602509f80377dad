"""The token cache: a corpus tokenized once into flat token arrays on disk, one per split,
under a directory keyed by a fingerprint of the text and the tokenizer, with the sizes and
checksums that find a damaged entry."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from minigpt.data.corpus import SPLITS, Document

CACHE_FORMAT = 2  # bump when the layout of the cache changes
# entries up to this size are checksummed whenever they are opened; larger ones (a corpus
# of GBs, whose hashing would take seconds at every start) are checked by size
FULL_CHECK_BYTES = 256 << 20


def corpus_fingerprint(splits: dict[str, list[Document]], settings: dict) -> str:
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for split in SPLITS:
        for doc in splits[split]:
            for part in (split, doc.title, doc.text):
                digest.update(part.encode("utf-8"))
                digest.update(b"\0")
    return digest.hexdigest()[:16]


def fingerprint(key: str, settings: dict) -> str:
    """A cache key from a key of the data and the settings that shape its tokens."""
    digest = hashlib.sha256(key.encode())
    digest.update(json.dumps(settings, sort_keys=True).encode())
    return digest.hexdigest()[:16]


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def cache_damage(path: Path) -> str | None:
    """What is wrong with a cache entry (missing, truncated or garbled files), or None when
    every file has the size (and, up to FULL_CHECK_BYTES in all, the checksum) meta.json
    recorded for it."""
    try:
        meta = json.loads((path / "meta.json").read_text())
        if meta.get("format") != CACHE_FORMAT:
            return f"meta.json has format {meta.get('format')!r}, not {CACHE_FORMAT}"
        itemsize = np.dtype(meta["dtype"]).itemsize
        total = sum(meta["splits"][split]["tokens"] * itemsize for split in SPLITS)
        for split in SPLITS:
            info, file = meta["splits"][split], path / f"{split}.bin"
            if file.stat().st_size != info["tokens"] * itemsize:
                return (
                    f"{file.name} has {file.stat().st_size} bytes, not {info['tokens'] * itemsize}"
                )
            if total <= FULL_CHECK_BYTES and file_sha256(file) != info["sha256"]:
                return f"{file.name} does not match its checksum"
            np.load(path / f"{split}.docs.npy")
        if file_sha256(path / "tokenizer.json") != meta["tokenizer_sha256"]:
            return "tokenizer.json does not match its checksum"
    except FileNotFoundError as err:
        return f"{Path(err.filename).name} is missing"
    except (ValueError, KeyError, TypeError, AttributeError, OSError) as err:
        return f"unreadable ({err!r})"
    return None


class TokenFile:
    """A split's flat token array on disk, read window by window with pread. A memory map
    would count every page it touches as the process's memory, and the kernel maps large
    blocks around each touch: training that draws windows all over a corpus of GBs grew
    toward the corpus's size. Slices are numpy arrays; `np.asarray` reads it whole.
    offset: bytes before the tokens (a token shard's header, `minigpt.data.shards`)."""

    def __init__(self, path: Path, dtype: str, offset: int = 0):
        self.path, self.dtype, self.offset = Path(path), np.dtype(dtype), offset
        self.length = (self.path.stat().st_size - offset) // self.dtype.itemsize
        self._fd, self._pid = None, None

    def __len__(self) -> int:
        return self.length

    @property
    def shape(self) -> tuple[int]:
        return (self.length,)

    def _descriptor(self) -> int:
        if self._pid != os.getpid():  # opened per process (DataLoader workers)
            self._fd, self._pid = os.open(self.path, os.O_RDONLY), os.getpid()
        return self._fd

    def __getitem__(self, key):
        if isinstance(key, slice):
            start, stop, step = key.indices(self.length)
            size = max(0, stop - start) * self.dtype.itemsize
            data = os.pread(self._descriptor(), size, self.offset + start * self.dtype.itemsize)
            return np.frombuffer(data, dtype=self.dtype)[:: step if step > 0 else 1]
        index = int(key) + (self.length if int(key) < 0 else 0)
        if not 0 <= index < self.length:
            raise IndexError(f"token {key} of {self.length}")
        return self[index : index + 1][0]

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        whole = self[:]
        return whole if dtype is None else whole.astype(dtype)

    def __getstate__(self) -> dict:
        return {
            "path": self.path,
            "dtype": self.dtype,
            "offset": self.offset,
            "length": self.length,
        }

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._fd, self._pid = None, None
