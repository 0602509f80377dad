"""Tokenizers: text <-> token ids. Each one round-trips through a plain dict (JSON), which
is stored in every checkpoint so that sampling needs only the checkpoint."""

from __future__ import annotations

import base64
import binascii
import functools
import heapq
import json
import os
from collections import Counter, defaultdict
from collections.abc import Iterable
from itertools import islice, pairwise
from pathlib import Path

import regex

UNKNOWN_CHAR = "\ufffd"  # what a held-out character that train lacks becomes


class CharTokenizer:
    """One token per character; the vocabulary is the sorted set of characters of a corpus
    (in training, of its train split: `for_splits`)."""

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

    @classmethod
    def for_splits(cls, train_chars: set[str], held_out_chars: set[str]) -> CharTokenizer:
        """The train split's characters, and UNKNOWN_CHAR when val or test hold characters
        that train lacks (they become it: `replace_unknown`), so that nothing of the held-out
        text shapes the vocabulary."""
        extra = {UNKNOWN_CHAR} if held_out_chars - train_chars else set()
        return cls(sorted(train_chars | extra))

    def replace_unknown(self, text: str) -> str:
        """text with every character outside the vocabulary replaced by UNKNOWN_CHAR, when
        the vocabulary has it (else text as it is: encode names what it cannot encode)."""
        if UNKNOWN_CHAR not in self.stoi:
            return text
        unknown = set(text) - self.stoi.keys()
        return text.translate({ord(c): UNKNOWN_CHAR for c in unknown}) if unknown else text

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    @property
    def eot_id(self) -> None:
        """Characters have no end-of-text token."""
        return None

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


# GPT-2's pre-tokenization: contractions, letter runs, digit runs and punctuation runs (each
# with one leading space), and whitespace. Merges never cross these chunks.
GPT2_PATTERN = r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"""
END_OF_TEXT = "<|endoftext|>"


def gpt2_byte_alphabet() -> dict[int, str]:
    """GPT-2's table from bytes to printable characters (printable Latin-1 bytes map to
    themselves, the others to characters from U+0100 on), which byte-level BPE libraries use
    to write bytes as text."""
    printable = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAD), *range(0xAE, 0x100)]
    extra = (b for b in range(256) if b not in printable)
    table = {b: chr(b) for b in printable}
    table.update({b: chr(256 + i) for i, b in enumerate(extra)})
    return table


def merges_to_learn(text: str, vocab_size: int, special_tokens) -> int:
    """How many merges a vocabulary of vocab_size leaves room for; checks the inputs."""
    n_merges = vocab_size - 256 - len(special_tokens)
    if n_merges < 0:
        raise ValueError(
            f"vocab_size={vocab_size} is below 256 bytes + {len(special_tokens)} special "
            f"tokens: use at least {256 + len(special_tokens)}"
        )
    if not text:
        raise ValueError("cannot train a BPE tokenizer on empty text")
    return n_merges


def train_hf_tokenizer(text: str | Iterable[str], n_merges: int, pattern: str = GPT2_PATTERN):
    """A byte-level BPE `tokenizers.Tokenizer` with up to n_merges merges, trained by HF
    `tokenizers` on text (a string, or pieces of text) with the given pre-tokenization."""
    from tokenizers import Regex, Tokenizer, models, pre_tokenizers, trainers

    hf = Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(pattern), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    trainer = trainers.BpeTrainer(
        vocab_size=256 + n_merges,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    hf.train_from_iterator([text] if isinstance(text, str) else text, trainer)
    return hf


def merge_pair(ids: list[int], pair: tuple[int, int], new_id: int) -> list[int]:
    """ids with every non-overlapping occurrence of pair, left to right, replaced by new_id."""
    out, i = [], 0
    while i < len(ids):
        if i + 1 < len(ids) and ids[i] == pair[0] and ids[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(ids[i])
            i += 1
    return out


class BPETokenizer:
    """Byte-level byte-pair encoding. Tokens 0-255 are the bytes, so any string encodes;
    token 256 + i is merge i (two earlier tokens joined); special tokens come last.

    Text is first split into chunks by a regex (GPT-2's by default); merges apply inside a
    chunk only. Special tokens (an end-of-text marker between documents) are never split or
    merged, and `encode` produces them only when asked (`allowed_special=True`)."""

    kind = "bpe"
    CACHE_LIMIT = 200_000  # encoded chunks kept in memory

    def __init__(
        self,
        merges: list[tuple[int, int]],
        pattern: str = GPT2_PATTERN,
        special_tokens: list[str] | tuple[str, ...] = (END_OF_TEXT,),
    ):
        self.merges = [(int(a), int(b)) for a, b in merges]
        self.vocab = [bytes([i]) for i in range(256)]
        for i, (a, b) in enumerate(self.merges):
            if not (0 <= a < 256 + i and 0 <= b < 256 + i):
                raise ValueError(f"merge {i} ({a}, {b}) uses a token that does not exist yet")
            self.vocab.append(self.vocab[a] + self.vocab[b])
        self.ranks = {pair: i for i, pair in enumerate(self.merges)}
        self.special_tokens = {s: len(self.vocab) + i for i, s in enumerate(special_tokens)}
        self.pattern = pattern
        self._chunks = regex.compile(pattern)
        self._specials = (
            regex.compile("(" + "|".join(regex.escape(s) for s in special_tokens) + ")")
            if special_tokens
            else None
        )
        self._cache: dict[str, list[int]] = {}

    @property
    def vocab_size(self) -> int:
        return len(self.vocab) + len(self.special_tokens)

    @property
    def eot_id(self) -> int | None:
        return self.special_tokens.get(END_OF_TEXT)

    # ------------------------------------------------------------------ training

    @classmethod
    def train(
        cls,
        text: str,
        vocab_size: int,
        pattern: str = GPT2_PATTERN,
        special_tokens: list[str] | tuple[str, ...] = (END_OF_TEXT,),
    ) -> BPETokenizer:
        """Learns vocab_size - 256 - len(special_tokens) merges from text (`train_on_counts`
        of its chunks)."""
        merges_to_learn(text, vocab_size, special_tokens)
        counts = Counter(regex.findall(pattern, text))
        return cls.train_on_counts(counts, vocab_size, pattern, special_tokens)

    @classmethod
    def train_on_counts(
        cls,
        chunk_counts: Counter[str],
        vocab_size: int,
        pattern: str = GPT2_PATTERN,
        special_tokens: list[str] | tuple[str, ...] = (END_OF_TEXT,),
    ) -> BPETokenizer:
        """Learns the merges from how often each chunk (a piece of pre-tokenized text) occurs:
        all that training needs, so counts gathered piece by piece (in parallel) train it.

        Each step merges the most frequent adjacent pair (ties: the smallest pair of ids).
        Pair counts are kept per unique chunk, weighted by the chunk's frequency, and updated
        only in the chunks a merge touches; a heap with lazy deletion finds the best pair."""
        n_merges = merges_to_learn("".join(islice(chunk_counts, 1)), vocab_size, special_tokens)
        words = [list(chunk.encode("utf-8")) for chunk in chunk_counts]
        freqs = list(chunk_counts.values())
        pair_counts: dict[tuple[int, int], int] = defaultdict(int)
        where: dict[tuple[int, int], set[int]] = defaultdict(set)  # pair -> chunks holding it
        for w, (word, freq) in enumerate(zip(words, freqs, strict=True)):
            for pair in pairwise(word):
                pair_counts[pair] += freq
                where[pair].add(w)
        heap = [(-count, pair) for pair, count in pair_counts.items()]
        heapq.heapify(heap)
        merges: list[tuple[int, int]] = []
        while len(merges) < n_merges and heap:
            negative, pair = heapq.heappop(heap)
            count = pair_counts.get(pair, 0)
            if count <= 0:
                continue
            if -negative != count:  # an outdated entry: queue the current count instead
                heapq.heappush(heap, (-count, pair))
                continue
            new_id = 256 + len(merges)
            merges.append(pair)
            changed = set()
            for w in where.pop(pair):
                word, freq = words[w], freqs[w]
                merged = merge_pair(word, pair, new_id)
                if len(merged) == len(word):  # the pair left this chunk in an earlier merge
                    continue
                for p in pairwise(word):
                    pair_counts[p] -= freq
                    changed.add(p)
                for p in pairwise(merged):
                    pair_counts[p] += freq
                    where[p].add(w)
                    changed.add(p)
                words[w] = merged
            pair_counts.pop(pair, None)
            for p in changed - {pair}:
                if pair_counts[p] > 0:
                    heapq.heappush(heap, (-pair_counts[p], p))
        return cls(merges, pattern, special_tokens)

    @classmethod
    def train_hf(
        cls,
        text: str | Iterable[str],
        vocab_size: int,
        pattern: str = GPT2_PATTERN,
        special_tokens: list[str] | tuple[str, ...] = (END_OF_TEXT,),
    ) -> BPETokenizer:
        """The same kind of tokenizer trained by HF `tokenizers` (compiled; for gigabytes of
        text) on a string or an iterable of pieces, and converted to this class."""
        if not isinstance(text, str):
            text = list(text)
        n_merges = merges_to_learn("".join(text[:1]), vocab_size, special_tokens)
        return cls.from_hf(train_hf_tokenizer(text, n_merges, pattern), pattern, special_tokens)

    @classmethod
    def from_hf(cls, hf, pattern: str, special_tokens=(END_OF_TEXT,)) -> BPETokenizer:
        """Converts a byte-level HF `tokenizers.Tokenizer`. HF writes bytes as printable
        characters (GPT-2's byte-to-unicode table); they are mapped back to bytes."""
        byte_of = {char: byte for byte, char in gpt2_byte_alphabet().items()}
        ids = {bytes([b]): b for b in range(256)}
        merges = []
        for merge in json.loads(hf.to_str())["model"]["merges"]:
            left, right = merge.split(" ") if isinstance(merge, str) else merge
            a, b = (bytes(byte_of[c] for c in part) for part in (left, right))
            ids[a + b] = 256 + len(merges)
            merges.append((ids[a], ids[b]))
        return cls(merges, pattern, special_tokens)

    # ------------------------------------------------------------------ encoding

    def _encode_chunk(self, chunk: str) -> list[int]:
        ids = list(chunk.encode("utf-8"))
        while len(ids) >= 2:  # apply the earliest-learned merge present, until none is
            pair = min(pairwise(ids), key=lambda p: self.ranks.get(p, len(self.ranks)))
            if pair not in self.ranks:
                break
            ids = merge_pair(ids, pair, 256 + self.ranks[pair])
        return ids

    def encode_ordinary(self, text: str) -> list[int]:
        """Token ids of text, special-token strings included, treated as ordinary text."""
        out: list[int] = []
        cache = self._cache
        for chunk in self._chunks.findall(text):
            ids = cache.get(chunk)
            if ids is None:
                if len(cache) >= self.CACHE_LIMIT:
                    cache.clear()
                ids = cache[chunk] = self._encode_chunk(chunk)
            out.extend(ids)
        return out

    def encode(self, text: str, allowed_special: bool = False) -> list[int]:
        """Token ids of text. With allowed_special, special-token strings in the text become
        their special ids; otherwise they are ordinary text."""
        if not allowed_special or self._specials is None:
            return self.encode_ordinary(text)
        out: list[int] = []
        for i, part in enumerate(self._specials.split(text)):
            out.extend([self.special_tokens[part]] if i % 2 else self.encode_ordinary(part))
        return out

    def decode(self, ids: list[int]) -> str:
        """The text of ids. Byte sequences that are not valid UTF-8 (a sequence cut inside a
        character) decode to U+FFFD."""
        specials = {i: s.encode("utf-8") for s, i in self.special_tokens.items()}
        try:
            data = b"".join(self.vocab[i] if i < len(self.vocab) else specials[i] for i in ids)
        except (IndexError, KeyError):
            bad = [i for i in ids if not 0 <= i < self.vocab_size]
            raise ValueError(f"token ids {bad[:10]} are outside the vocabulary") from None
        return data.decode("utf-8", errors="replace")

    # ------------------------------------------------------------------ files

    def to_dict(self) -> dict:
        """Plain data; `tokens` lists every merged token's text (for people; ignored on load)."""
        return {
            "kind": self.kind,
            "pattern": self.pattern,
            "special_tokens": list(self.special_tokens),
            "merges": [list(m) for m in self.merges],
            "tokens": [t.decode("utf-8", errors="backslashreplace") for t in self.vocab[256:]],
        }

    @classmethod
    def from_dict(cls, data: dict) -> BPETokenizer:
        merges = data["merges"]
        if not isinstance(merges, list) or not all(
            isinstance(m, list) and len(m) == 2 and all(isinstance(i, int) for i in m)
            for m in merges
        ):
            raise ValueError("BPE merges must be a list of [id, id] pairs")
        return cls(merges, data["pattern"], data["special_tokens"])

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), ensure_ascii=False, indent=0))

    @classmethod
    def load(cls, path: str | Path) -> BPETokenizer:
        tokenizer = load_tokenizer(path)
        if not isinstance(tokenizer, cls):
            raise ValueError(f"{path} holds a {tokenizer.kind} tokenizer, not a BPE one")
        return tokenizer

    def save_gpt2_files(self, folder: str | Path) -> None:
        """These merges in the files GPT-2 ships (what `TiktokenTokenizer.gpt2(folder)`,
        tiktoken's and transformers' GPT-2 readers take): vocab.json (token text -> id) and
        merges.txt, tokens written with GPT-2's byte-to-character table. GPT-2 numbers the
        256 bytes in the order of that table (printable ones first), so their ids differ
        from this tokenizer's; the merges keep theirs, end-of-text comes last."""
        alphabet = gpt2_byte_alphabet()
        order = sorted(range(256), key=lambda b: ord(alphabet[b]))
        names = ["".join(alphabet[b] for b in token) for token in self.vocab]
        vocab = {names[b]: i for i, b in enumerate(order)}
        vocab |= {names[256 + i]: 256 + i for i in range(len(self.merges))}
        vocab |= {s: len(vocab) + i for i, s in enumerate(self.special_tokens)}
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
        lines = [f"{names[a]} {names[b]}\n" for a, b in self.merges]
        (folder / "merges.txt").write_text("#version: 0.2\n" + "".join(lines))

    def token_bytes(self) -> list[bytes]:
        """Every id's bytes, special tokens' included, in id order."""
        return [*self.vocab, *(s.encode("utf-8") for s in self.special_tokens)]

    def tiktoken_ranks(self) -> dict[bytes, int]:
        """The vocabulary as tiktoken's mergeable ranks (token bytes -> id): the same ids."""
        ranks = {token: i for i, token in enumerate(self.vocab)}
        if len(ranks) != len(self.vocab):
            raise ValueError("two merges of this BPE tokenizer make the same bytes")
        return ranks


# ---------------------------------------------------------------------------- tiktoken


def _token_text(token: bytes) -> str:
    return base64.b64encode(token).decode("ascii")


class TiktokenTokenizer:
    """A byte-level BPE run by `tiktoken` (compiled; GPT-2's own tokenizer is its `gpt2`
    encoding: 50,257 tokens, `<|endoftext|>` = 50256). Its ranks are the token ids, and a
    pair merges when the joined bytes are a token, lowest rank first: for a vocabulary
    trained by BPE that is `BPETokenizer`'s rule (tests: the same ids for our merges).

    The whole vocabulary travels in `to_dict` (about 0.7 MB for GPT-2's), so a checkpoint
    samples with no tiktoken cache and no network."""

    kind = "tiktoken"

    def __init__(
        self,
        ranks: dict[bytes, int],
        pattern: str = GPT2_PATTERN,
        special_tokens: dict[str, int] | None = None,
        name: str = "bpe",
    ):
        import tiktoken

        self.ranks, self.pattern, self.name = ranks, pattern, name
        self.special_tokens = dict(special_tokens or {})
        self.encoding = tiktoken.Encoding(
            name=name,
            pat_str=pattern,
            mergeable_ranks=ranks,
            special_tokens=self.special_tokens,
        )

    @classmethod
    def gpt2(cls, files: str | Path | None = None) -> TiktokenTokenizer:
        """GPT-2's tokenizer: tiktoken's `gpt2` encoding (downloaded once into tiktoken's
        cache, `TIKTOKEN_CACHE_DIR`), or, offline, read from a directory holding GPT-2's
        `vocab.json` and `merges.txt` (a Hugging Face `gpt2` download has them)."""
        import tiktoken
        from tiktoken.load import data_gym_to_mergeable_bpe_ranks

        if files is None:
            try:
                encoding = tiktoken.get_encoding("gpt2")
            except Exception as err:
                raise ValueError(
                    f"tiktoken could not load GPT-2's encoding ({type(err).__name__}: {err}); "
                    "without a network, set data.tokenizer.files to a directory with GPT-2's "
                    "vocab.json and merges.txt, or TIKTOKEN_CACHE_DIR to a tiktoken cache"
                ) from None
            ranks = encoding._mergeable_ranks
            return cls(ranks, encoding._pat_str, encoding._special_tokens, "gpt2")
        folder = Path(files)
        vocab, merges = folder / "vocab.json", folder / "merges.txt"
        for path in (vocab, merges):
            if not path.is_file():
                raise FileNotFoundError(
                    f"data.tokenizer.files={files}: {path.name} is missing (GPT-2's vocab.json "
                    "and merges.txt are needed)"
                )
        previous = os.environ.get("TIKTOKEN_CACHE_DIR")
        os.environ["TIKTOKEN_CACHE_DIR"] = ""  # tiktoken would cache local files by path
        try:
            ranks = data_gym_to_mergeable_bpe_ranks(str(merges), str(vocab))
        except (AssertionError, KeyError, ValueError) as err:
            raise ValueError(
                f"data.tokenizer.files={files}: vocab.json and merges.txt are not GPT-2's "
                f"byte-level BPE files that agree ({type(err).__name__})"
            ) from None
        finally:
            if previous is None:
                del os.environ["TIKTOKEN_CACHE_DIR"]
            else:
                os.environ["TIKTOKEN_CACHE_DIR"] = previous
        specials = {END_OF_TEXT: len(ranks)}
        return cls(ranks, GPT2_PATTERN, specials, "gpt2")

    @classmethod
    def from_bpe(cls, tokenizer: BPETokenizer) -> TiktokenTokenizer:
        """tiktoken running a `BPETokenizer`'s vocabulary, with its ids."""
        return cls(tokenizer.tiktoken_ranks(), tokenizer.pattern, tokenizer.special_tokens)

    @property
    def vocab_size(self) -> int:
        return self.encoding.n_vocab

    @property
    def eot_id(self) -> int | None:
        return self.special_tokens.get(END_OF_TEXT)

    def encode_ordinary(self, text: str) -> list[int]:
        return self.encoding.encode_ordinary(text)

    def encode(self, text: str, allowed_special: bool = False) -> list[int]:
        if allowed_special:
            return self.encoding.encode(text, allowed_special="all")
        return self.encoding.encode_ordinary(text)

    def decode(self, ids: list[int]) -> str:
        bad = [i for i in ids if not 0 <= i < self.vocab_size]
        if bad:
            raise ValueError(f"token ids {bad[:10]} are outside the vocabulary")
        return self.encoding.decode(ids, errors="replace")

    def token_bytes(self) -> list[bytes]:
        """Every id's bytes, special tokens' included, in id order."""
        tokens = [b""] * self.vocab_size
        for token, i in self.ranks.items():
            tokens[i] = token
        for text, i in self.special_tokens.items():
            tokens[i] = text.encode("utf-8")
        return tokens

    @functools.cached_property
    def merges(self) -> list[tuple[int, int]]:
        """The merge that makes each multi-byte token (the two tokens BPE joins into it,
        found by running BPE on its bytes with the lower ranks only), in rank order: what
        a Hugging Face BPE tokenizer needs."""
        out = []
        for token, rank in sorted(self.ranks.items(), key=lambda item: item[1]):
            if len(token) < 2:
                continue
            parts = [token[i : i + 1] for i in range(len(token))]
            while len(parts) > 2:
                joined = [
                    (self.ranks.get(a + b, rank), i) for i, (a, b) in enumerate(pairwise(parts))
                ]
                best, i = min(joined)
                if best >= rank:
                    break
                parts[i : i + 2] = [parts[i] + parts[i + 1]]
            if len(parts) != 2:
                raise ValueError(f"token {token!r} (rank {rank}) is not one merge of two")
            out.append((self.ranks[parts[0]], self.ranks[parts[1]]))
        return out

    def to_dict(self) -> dict:
        by_rank = sorted(self.ranks.items(), key=lambda item: item[1])
        if [rank for _, rank in by_rank] != list(range(len(by_rank))):
            raise ValueError("tiktoken ranks must be 0, 1, ... without gaps")
        return {
            "kind": self.kind,
            "name": self.name,
            "pattern": self.pattern,
            "special_tokens": self.special_tokens,
            "tokens": [_token_text(token) for token, _ in by_rank],  # base64, in id order
        }

    @classmethod
    def from_dict(cls, data: dict) -> TiktokenTokenizer:
        try:
            tokens = [base64.b64decode(t, validate=True) for t in data["tokens"]]
        except (binascii.Error, TypeError) as err:
            raise ValueError(f"tiktoken tokens must be base64 strings: {err}") from None
        ranks = {token: i for i, token in enumerate(tokens)}
        special = {str(k): int(v) for k, v in data["special_tokens"].items()}
        return cls(ranks, data["pattern"], special, data.get("name", "bpe"))

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict()))


Tokenizer = CharTokenizer | BPETokenizer | TiktokenTokenizer


def tokenizer_from_dict(data: dict) -> Tokenizer:
    """Rebuild a tokenizer from what `to_dict` returned (e.g. from a checkpoint)."""
    kind = data.get("kind") if isinstance(data, dict) else None
    if kind == "char":
        return CharTokenizer(data["chars"])
    if kind == "bpe":
        return BPETokenizer.from_dict(data)
    if kind == "tiktoken":
        return TiktokenTokenizer.from_dict(data)
    raise ValueError(f"unknown tokenizer kind {kind!r}: expected one of 'char', 'bpe', 'tiktoken'")


def load_tokenizer(path: str | Path) -> Tokenizer:
    try:
        return tokenizer_from_dict(json.loads(Path(path).read_text()))
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{path} is not a tokenizer file: {err!r}") from None
