"""Token datasets and the LightningDataModule that serves them.

The corpus is tokenized once (HF `datasets.map`) into flat token arrays on disk, one per
split, under a cache directory keyed by a fingerprint of the text and the tokenizer; later
runs memory-map those arrays and never re-tokenize.

Two ways to cut the token stream into training examples of `block_size` tokens:
- packing (default): windows of `block_size + 1` tokens anywhere in the concatenated
  stream, drawn at random as nanoGPT does; evaluation uses fixed non-overlapping windows.
- no packing: each document is cut into chunks that never cross a document boundary; the last
  chunk of a document is right-padded, and padded targets are IGNORE_INDEX (no loss). Padding
  sits to the right of every real token, so causal attention never lets it reach a real one.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset, get_worker_info

from minigpt.corpus import (
    SHAKESPEARE_TEST,
    SHAKESPEARE_VAL,
    SPLITS,
    Document,
    shakespeare_splits,
    text_file_splits,
)
from minigpt.model import IGNORE_INDEX
from minigpt.tokenizers import GPT2_PATTERN, BPETokenizer, CharTokenizer, load_tokenizer

log = logging.getLogger(__name__)
CACHE_FORMAT = 2  # bump when the layout of the cache changes
PAD_INPUT_ID = 0  # input id placed at padded positions; their targets are IGNORE_INDEX


# ---------------------------------------------------------------------------- datasets


def _window(tokens: np.ndarray, start: int, block_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    chunk = torch.from_numpy(tokens[start : start + block_size + 1].astype(np.int64))
    return chunk[:-1], chunk[1:]  # inputs, targets shifted by one


class RandomWindows(Dataset):
    """Every window of `block_size + 1` consecutive tokens: item i starts at token i.
    `StepBatches` draws from it at random, as nanoGPT does."""

    def __init__(self, tokens: np.ndarray, block_size: int):
        self.tokens, self.block_size = tokens, block_size

    def __len__(self) -> int:
        return len(self.tokens) - self.block_size

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return _window(self.tokens, i, self.block_size)


class FixedWindows(Dataset):
    """Non-overlapping windows covering the split, in a fixed shuffled order, so that
    evaluating on the first k batches samples the whole split, the same way every time."""

    def __init__(self, tokens: np.ndarray, block_size: int, seed: int = 0):
        self.tokens, self.block_size = tokens, block_size
        starts = np.arange(0, len(tokens) - block_size, block_size)
        self.starts = np.random.default_rng(seed).permutation(starts)

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        return _window(self.tokens, int(self.starts[i]), self.block_size)


class PaddedDocuments(Dataset):
    """Each document cut into chunks of up to `block_size + 1` tokens (consecutive chunks
    overlap by one token, so every token but a document's first is a target once); short
    chunks are right-padded: inputs with PAD_INPUT_ID, targets with IGNORE_INDEX."""

    def __init__(
        self, tokens: np.ndarray, doc_starts: np.ndarray, block_size: int, shuffle_seed=None
    ):
        self.tokens, self.block_size = tokens, block_size
        bounds = list(doc_starts) + [len(tokens)]
        chunks = [
            (s, min(s + block_size + 1, end))
            for start, end in zip(bounds[:-1], bounds[1:], strict=True)
            for s in range(start, end - 1, block_size)
        ]
        self.chunks = np.array(chunks, dtype=np.int64).reshape(-1, 2)
        if shuffle_seed is not None:
            self.chunks = np.random.default_rng(shuffle_seed).permutation(self.chunks)

    def __len__(self) -> int:
        return len(self.chunks)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        start, end = (int(v) for v in self.chunks[i])
        chunk = torch.from_numpy(self.tokens[start:end].astype(np.int64))
        x = torch.full((self.block_size,), PAD_INPUT_ID, dtype=torch.long)
        y = torch.full((self.block_size,), IGNORE_INDEX, dtype=torch.long)
        x[: len(chunk) - 1], y[: len(chunk) - 1] = chunk[:-1], chunk[1:]
        return x, y


class StepBatches(IterableDataset):
    """Training batches as a pure function of (seed, rank, batch index): batch i holds
    `batch_size` examples drawn uniformly at random (with replacement) by a generator seeded
    with (seed, rank, i). Iterating yields batches start, start + 1, ... without end.

    Nothing about the data order lives in a sampler or an iterator, so a run resumed at
    optimizer step s (start = s x accumulated batches) trains on exactly the batches an
    uninterrupted run would, every rank its own; each batch costs O(batch_size)."""

    def __init__(self, examples: Dataset, batch_size: int, seed: int, rank: int = 0, start=0):
        self.examples, self.batch_size = examples, batch_size
        self.seed, self.rank, self.start = seed, rank, start

    def batch(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng([self.seed, self.rank, index])
        picks = rng.integers(0, len(self.examples), self.batch_size)
        inputs, targets = zip(*(self.examples[int(i)] for i in picks), strict=True)
        return torch.stack(inputs), torch.stack(targets)

    def __iter__(self):
        worker = get_worker_info()  # loader workers take turns, so the order is kept
        step, index = (worker.num_workers, worker.id) if worker else (1, 0)
        index += self.start
        while True:
            yield self.batch(index)
            index += step


# ---------------------------------------------------------------------------- token cache


def corpus_fingerprint(splits: dict[str, list[Document]], settings: dict) -> str:
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
    for split in SPLITS:
        for doc in splits[split]:
            for part in (split, doc.title, doc.text):
                digest.update(part.encode("utf-8"))
                digest.update(b"\0")
    return digest.hexdigest()[:16]


def tokenize_splits(
    splits: dict[str, list[Document]], tokenizer: CharTokenizer | BPETokenizer, out_dir: Path
) -> None:
    """Writes `<split>.bin` (flat token ids), `<split>.docs.npy` (where each document starts)
    and `meta.json` into out_dir, tokenizing with `datasets.Dataset.map`. A tokenizer with an
    end-of-text token gets it after every document."""
    import datasets

    eot = [] if getattr(tokenizer, "eot_id", None) is None else [tokenizer.eot_id]

    dtype = np.uint16 if tokenizer.vocab_size <= 2**16 else np.uint32
    meta = {"format": CACHE_FORMAT, "dtype": np.dtype(dtype).name, "splits": {}}
    for split in SPLITS:
        docs = splits[split]
        table = datasets.Dataset.from_dict(
            {"title": [d.title for d in docs], "text": [d.text for d in docs]}
        )
        table = table.map(
            lambda batch: {"ids": [tokenizer.encode(t) + eot for t in batch["text"]]},
            batched=True,
            remove_columns=["text"],
            desc=f"tokenizing {split}",
        ).with_format("numpy")
        ids = [np.asarray(row, dtype=dtype) for row in table["ids"]] if len(table) else []
        lengths = np.array([len(a) for a in ids], dtype=np.int64)
        flat = np.concatenate(ids) if ids else np.zeros(0, dtype=dtype)
        flat.tofile(out_dir / f"{split}.bin")
        np.save(out_dir / f"{split}.docs.npy", np.concatenate([[0], np.cumsum(lengths)[:-1]]))
        meta["splits"][split] = {
            "tokens": int(flat.size),
            "sha256": file_sha256(out_dir / f"{split}.bin"),
            "bytes": sum(len(d.text.encode("utf-8")) for d in docs),
            "documents": [d.title for d in docs],
        }
    tokenizer.save(out_dir / "tokenizer.json")
    meta["tokenizer_sha256"] = file_sha256(out_dir / "tokenizer.json")
    (out_dir / "meta.json").write_text(json.dumps(meta, indent=1))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def cache_damage(path: Path) -> str | None:
    """What is wrong with a cache entry (missing, truncated or garbled files), or None when
    every file has the size and checksum meta.json recorded for it."""
    try:
        meta = json.loads((path / "meta.json").read_text())
        if meta.get("format") != CACHE_FORMAT:
            return f"meta.json has format {meta.get('format')!r}, not {CACHE_FORMAT}"
        itemsize = np.dtype(meta["dtype"]).itemsize
        for split in SPLITS:
            info, file = meta["splits"][split], path / f"{split}.bin"
            if file.stat().st_size != info["tokens"] * itemsize:
                return (
                    f"{file.name} has {file.stat().st_size} bytes, not {info['tokens'] * itemsize}"
                )
            if file_sha256(file) != info["sha256"]:
                return f"{file.name} does not match its checksum"
            np.load(path / f"{split}.docs.npy")
        if file_sha256(path / "tokenizer.json") != meta["tokenizer_sha256"]:
            return "tokenizer.json does not match its checksum"
    except FileNotFoundError as err:
        return f"{Path(err.filename).name} is missing"
    except (ValueError, KeyError, TypeError, AttributeError, OSError) as err:
        return f"unreadable ({err!r})"
    return None


# ---------------------------------------------------------------------------- data module


class TokenDataModule(L.LightningDataModule):
    """Serves a tokenized corpus as (inputs, targets) batches of shape (B, block_size).

    corpus: "shakespeare" (the embedded corpus, split by works) or "text_files" (`paths`,
    split contiguously). The tokenizer is built from the whole corpus's characters.
    Training batches come from `StepBatches` seeded with `seed`: batch i of rank r is the
    same in every run with that seed, resumed or not.
    """

    def __init__(
        self,
        corpus: str = "shakespeare",
        block_size: int = 128,
        batch_size: int = 32,
        packing: bool = True,
        paths: list[str] | None = None,
        val_fraction: float = 0.1,
        clean: bool = False,
        val_works: list[str] | tuple[str, ...] = SHAKESPEARE_VAL,
        test_works: list[str] | tuple[str, ...] = SHAKESPEARE_TEST,
        include_folio: bool = False,
        tokenizer: dict | None = None,
        cache_dir: str = ".cache/minigpt",
        num_workers: int = 0,
        eval_seed: int = 0,
        seed: int = 0,
    ):
        super().__init__()
        if corpus not in ("shakespeare", "text_files"):
            raise ValueError(f"data.corpus={corpus!r} is not one of shakespeare, text_files")
        if batch_size <= 0:
            raise ValueError(f"data.batch_size={batch_size} must be a positive integer")
        self.corpus, self.paths = corpus, list(paths or [])
        self.block_size, self.batch_size, self.packing = block_size, batch_size, packing
        self.val_fraction, self.clean = val_fraction, clean
        self.val_works, self.test_works = list(val_works), list(test_works)
        self.include_folio = include_folio
        self.tokenizer_config = dict(tokenizer or {"kind": "char"})
        if self.tokenizer_config.get("kind") not in ("char", "bpe"):
            raise ValueError(
                f"data.tokenizer.kind={self.tokenizer_config.get('kind')!r} is not one of char, bpe"
            )
        self.cache_root, self.num_workers, self.eval_seed = Path(cache_dir), num_workers, eval_seed
        self.seed = seed
        self.cache_path: Path | None = None
        self.tokenizer: CharTokenizer | BPETokenizer | None = None
        self.tokens: dict[str, np.ndarray] = {}
        self.doc_starts: dict[str, np.ndarray] = {}

    def load_splits(self) -> dict[str, list[Document]]:
        if self.corpus == "shakespeare":
            return shakespeare_splits(self.val_works, self.test_works, self.include_folio)
        return text_file_splits(
            self.paths, self.val_fraction, self.clean, min_chars=self.block_size + 1
        )

    def prepare_data(self) -> None:
        """Tokenize the corpus into the cache unless an identical corpus is there already."""
        if self.cache_path is not None:
            return
        splits = self.load_splits()
        tokenizer = self.build_tokenizer(splits)
        settings = {"format": CACHE_FORMAT, "tokenizer": tokenizer.to_dict()}
        key = corpus_fingerprint(splits, settings)
        path = self.cache_root / f"{self.corpus}-{key}"
        if path.exists() and (damage := cache_damage(path)):
            log.warning(f"token cache {path} is damaged ({damage}): rebuilding it")
            shutil.rmtree(path, ignore_errors=True)
        if not path.exists():
            self.cache_root.mkdir(parents=True, exist_ok=True)
            staging = self.cache_root / f".{path.name}.{os.getpid()}.tmp"
            shutil.rmtree(staging, ignore_errors=True)
            staging.mkdir()
            tokenize_splits(splits, tokenizer, staging)
            try:
                staging.rename(path)  # atomic: readers see a whole cache entry or none
            except OSError:  # another process finished the same entry first
                shutil.rmtree(staging, ignore_errors=True)
        self.cache_path = path

    def build_tokenizer(self, splits: dict[str, list[Document]]) -> CharTokenizer | BPETokenizer:
        """char: the characters of the whole corpus. bpe: trained on the train split only
        (`data.tokenizer.impl`: minigpt's trainer, or HF `tokenizers` with `hf`), cached on
        disk by a fingerprint of that text and the settings."""
        config = self.tokenizer_config
        if config["kind"] == "char":
            return CharTokenizer.from_text("".join(d.text for s in SPLITS for d in splits[s]))
        vocab_size, impl = int(config.get("vocab_size", 2048)), config.get("impl", "minigpt")
        if impl not in ("minigpt", "hf"):
            raise ValueError(f"data.tokenizer.impl={impl!r} is not one of minigpt, hf")
        train_text = "".join(d.text for d in splits["train"])
        settings = config | {"format": CACHE_FORMAT}
        key = corpus_fingerprint({"train": splits["train"], "val": [], "test": []}, settings)
        path = self.cache_root / f"bpe-{key}.json"
        if path.exists():
            try:
                return load_tokenizer(path)
            except (ValueError, OSError, UnicodeDecodeError) as err:
                log.warning(f"cached tokenizer {path} is damaged ({err}): training it again")
        train = BPETokenizer.train_hf if impl == "hf" else BPETokenizer.train
        tokenizer = train(train_text, vocab_size, config.get("pattern") or GPT2_PATTERN)
        self.cache_root.mkdir(parents=True, exist_ok=True)
        staging = path.with_suffix(f".{os.getpid()}.tmp")
        tokenizer.save(staging)
        os.replace(staging, path)
        return tokenizer

    def tokens_per_byte(self, split: str) -> float:
        """Tokens per byte of UTF-8 text in a split: converts a loss per token into bits
        per byte, which compares models with different tokenizers."""
        self.setup()
        meta = json.loads((self.cache_path / "meta.json").read_text())["splits"][split]
        return meta["tokens"] / meta["bytes"]

    def setup(self, stage: str | None = None) -> None:
        if self.tokens:
            return
        self.prepare_data()
        meta = json.loads((self.cache_path / "meta.json").read_text())
        self.tokenizer = load_tokenizer(self.cache_path / "tokenizer.json")
        for split in SPLITS:
            if meta["splits"][split]["tokens"] == 0:
                continue
            self.tokens[split] = np.memmap(
                self.cache_path / f"{split}.bin", dtype=meta["dtype"], mode="r"
            )
            self.doc_starts[split] = np.load(self.cache_path / f"{split}.docs.npy")
        for split in ("train", "val"):
            n = len(self.tokens.get(split, ()))
            if n < self.block_size + 1:
                raise ValueError(
                    f"the {split} split has {n} tokens, fewer than one block "
                    f"(model.block_size + 1 = {self.block_size + 1}): give more text or a "
                    "smaller model.block_size"
                )

    @property
    def vocab_size(self) -> int:
        self.setup()
        return self.tokenizer.vocab_size

    def dataset(self, split: str, train: bool = False) -> Dataset:
        """The split's examples: every window (packing) or document chunk; for evaluation
        (train=False), windows that do not overlap, in a fixed order."""
        tokens = self.tokens[split]
        if not self.packing:
            seed = None if train else self.eval_seed
            return PaddedDocuments(tokens, self.doc_starts[split], self.block_size, seed)
        if train:
            return RandomWindows(tokens, self.block_size)
        return FixedWindows(tokens, self.block_size, self.eval_seed)

    def train_batches(self) -> StepBatches:
        """This rank's training batches, from the one the trainer's next optimizer step
        takes (a resumed run continues where the checkpoint stopped)."""
        trainer = self.trainer
        rank = trainer.global_rank if trainer else 0
        start = trainer.global_step * trainer.accumulate_grad_batches if trainer else 0
        return StepBatches(
            self.dataset("train", train=True), self.batch_size, self.seed, rank, start
        )

    def _loader(self, dataset: Dataset, batch_size: int | None) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            pin_memory=torch.cuda.is_available(),
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_batches(), batch_size=None)  # already batched

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.dataset("val"), self.batch_size)

    def test_dataloader(self) -> DataLoader:
        if "test" not in self.tokens:
            raise ValueError(f"data.corpus={self.corpus!r} has no test split")
        return self._loader(self.dataset("test"), self.batch_size)
