"""Text files of any size as pieces for `minigpt.data.encode`: memory does not grow with
the corpus.

The files are concatenated in order; the first (1 - val_fraction) of the *bytes* (moved
forward to the next character boundary) train, the rest validate, a file straddling the cut
being split there (for ASCII text this is the character rule of the in-memory path). Each
file's part of a split is one document, cut into pieces of about CHUNK_BYTES (characters) or
BPE_CHUNK_BYTES (BPE). A cut never splits a UTF-8 character, and for BPE it falls before a
space that follows a printable ASCII character and precedes an ASCII letter (`a| word`),
where GPT-2's pre-tokenization starts a chunk whatever comes before: encoding the pieces
gives the tokens of encoding the whole. (Text with no such place in BOUNDARY_SEARCH bytes,
such as a language written without spaces, is cut at a character boundary.) The cache entry
is keyed by the files' paths, sizes and modification times and the settings: a cached
corpus is not read again.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import regex

from minigpt.data.corpus import SPLITS, clean_lines, expand_paths

CHUNK_BYTES = 16 << 20  # a piece of text for character tokens
BPE_CHUNK_BYTES = 2 << 20  # for BPE: its chunk lists take ~60 bytes per token in the worker
BOUNDARY_SEARCH = 1 << 20
CHUNK_START = regex.compile(rb"[!-~](?= [A-Za-z])")  # a BPE cut falls after the match
# with cleaning, a cut falls after a line break between two characters that are not
# whitespace: cleaning changes nothing across it, and it is also a GPT-2 chunk boundary
LINE_START = regex.compile(rb"[^\r\n \t]\r?\n(?=[^\s])")  # LF or CRLF line ends
# with cleaning and characters, where no such line is near: between two characters that
# are not whitespace (cleaning changes whitespace only); a UTF-8 character is never split
BETWEEN_WORD_CHARS = regex.compile(rb"[^\s](?=[^\s\x80-\xbf])")


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


@dataclass(frozen=True)
class FilePiece:
    """Bytes [start, end) of a file: the text of one piece, which starts and/or ends a
    document (a file's part of a split)."""

    path: Path
    start: int
    end: int
    first: bool
    last: bool
    clean: bool = False
    file_end: bool = False  # the piece ends its file (cleaning ends the text there)

    @property
    def nbytes(self) -> int:
        return self.end - self.start

    def read(self) -> list[tuple[str | bytes, bool, bool]]:
        """The text: bytes when it is all ASCII (each byte is its code point), else str."""
        with open(self.path, "rb") as f:
            f.seek(self.start)
            data = f.read(self.end - self.start)
        try:
            text = data if data.isascii() and not self.clean else data.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(
                f"data file {self.path} is not UTF-8 (byte {self.start + err.start}: "
                f"{err.reason}); convert it, e.g. with iconv -t UTF-8"
            ) from None
        if self.clean:  # `clean_text` of the file, a piece at a time
            text = clean_lines(text)
            text = text.lstrip("\n") if self.start == 0 else text
            text = text.rstrip("\n") + "\n" if self.file_end else text
        return [(text, self.first, self.last)]


def chunk_boundary(path: Path, offset: int, end: int, patterns=(CHUNK_START,)) -> int:
    """The first place in [offset, end] where the first of `patterns` that occurs in the
    next BOUNDARY_SEARCH bytes allows a cut: GPT-2's pre-tokenization starts a chunk there
    whatever precedes it (CHUNK_START, see the module's docstring), or cleaning leaves the
    text around it as it is (LINE_START, BETWEEN_WORD_CHARS); end when the part ends
    before any; a character boundary when there is none."""
    origin = max(0, offset - 1)
    with open(path, "rb") as f:
        f.seek(origin)
        window = f.read(min(BOUNDARY_SEARCH, end - origin))
    for pattern in patterns:
        if match := pattern.search(window):
            return origin + match.end()
    return end if origin + len(window) >= end else character_boundary(path, offset)


def cut_patterns(bpe: bool, clean: bool) -> tuple:
    """Where pieces may be cut, in order of preference: after a line (cleaning), or before
    a word (BPE); with both, places that suit both (a cut before ` word` follows no
    trailing space, which is all cleaning could change there)."""
    if clean:
        return (LINE_START, CHUNK_START) if bpe else (LINE_START, BETWEEN_WORD_CHARS)
    return (CHUNK_START,)


def file_pieces(
    parts: dict[str, list[Part]], bpe: bool, clean: bool = False
) -> dict[str, list[FilePiece]]:
    """Each split's parts cut into pieces (of CHUNK_BYTES, or BPE_CHUNK_BYTES at chunk
    boundaries; with clean, at lines that cleaning leaves as they are)."""
    size = BPE_CHUNK_BYTES if bpe else CHUNK_BYTES
    pieces: dict[str, list[FilePiece]] = {split: [] for split in SPLITS}
    for split in SPLITS:
        for part in parts[split]:
            size_of_file = part.path.stat().st_size if clean else None
            start = part.start
            while start < part.end:
                end = part.end
                if start + size < part.end and (bpe or clean):
                    patterns = cut_patterns(bpe, clean)
                    end = min(part.end, chunk_boundary(part.path, start + size, part.end, patterns))
                elif start + size < part.end:
                    end = min(part.end, character_boundary(part.path, start + size))
                first, last = start == part.start, end == part.end
                file_end = end == size_of_file
                pieces[split].append(FilePiece(part.path, start, end, first, last, clean, file_end))
                start = end
    return pieces
