"""The LightningDataModule: prepare (tokenize the corpus into the cache once) → setup
(memory-map the cached arrays) → loaders (training batches from `StepBatches`, evaluation
windows in a fixed order).

Two ways to cut the token stream into training examples of `block_size` tokens:
- packing (default): windows of `block_size + 1` tokens anywhere in the concatenated
  stream, drawn at random as nanoGPT does; evaluation uses fixed non-overlapping windows.
- no packing: each document is cut into chunks that never cross a document boundary; the last
  chunk of a document is right-padded, and padded targets are IGNORE_INDEX (no loss).
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from minigpt.core.tokenizers import (
    GPT2_PATTERN,
    BPETokenizer,
    CharTokenizer,
    TiktokenTokenizer,
    load_tokenizer,
    tokenizer_from_dict,
)
from minigpt.data import stream as data_stream
from minigpt.data.cache import (
    CACHE_FORMAT,
    TokenFile,
    cache_damage,
    corpus_fingerprint,
    fingerprint,
)
from minigpt.data.corpus import (
    LEAK_LIMIT,
    SHAKESPEARE_DROPPED,
    SHAKESPEARE_TEST,
    SHAKESPEARE_VAL,
    SPLITS,
    Document,
    leak_report,
    shakespeare_splits,
    verbatim_overlap,
)
from minigpt.data.encode import (
    char_vocabulary,
    characters,
    default_workers,
    documents_pieces,
    pool_size,
    train_bpe,
    write_cache,
)
from minigpt.data.rows import row_pieces, streamed_documents
from minigpt.data.shards import (
    SHARD_TOKENS,
    ShardTokens,
    find_shards,
    prepare_shards,
    read_progress,
    text_token_counts,
)
from minigpt.data.stream import file_pieces, files_fingerprint, plan_splits
from minigpt.data.windows import FixedWindows, PaddedDocuments, RandomWindows, StepBatches

PIECE_BYTES = 2 << 20  # documents in memory are encoded in groups of about this size
# data.tokenizer.kind: char, bpe (trained here), gpt2 (GPT-2's, through tiktoken); a
# trained model's tokenizer (eval.py, init_from) also comes as tiktoken
TOKENIZER_KINDS = ("char", "bpe", "gpt2", "tiktoken")
CORPORA = ("shakespeare", "text_files", "hf_dataset", "shards")


@dataclass
class Source:
    """A corpus as pieces per split, the documents' titles (where they have them), keys of
    the whole corpus and of its train split, and its documents when they are in memory."""

    pieces: dict[str, list]
    titles: dict[str, list[str]] | None
    key: str
    train_key: str
    documents: dict[str, list[Document]] | None = None


log = logging.getLogger(__name__)


def report_leaks(splits: dict[str, list[Document]]) -> None:
    """Logs how much held-out text also occurs in train, and warns about held-out works
    over LEAK_LIMIT (run when a corpus split by works is prepared)."""
    if not splits["val"] and not splits["test"]:
        return
    report, leaky = leak_report(verbatim_overlap(splits))
    log.info(f"held-out text also in train: {report}")
    if leaky:
        log.warning(
            f"held-out works sharing over {LEAK_LIMIT:.0%} of their lines with train: "
            f"{', '.join(leaky)}; consider data.dropped_works or other val/test works"
        )


class TokenDataModule(L.LightningDataModule):
    """Serves a tokenized corpus as (inputs, targets) batches of shape (B, block_size).

    corpus: "shakespeare" (the embedded corpus, split by works) or "text_files" (`paths`,
    split contiguously). The tokenizer is built from the train split alone.
    Training batches come from `StepBatches` seeded with `seed`: batch i of rank r is the
    same in every run with that seed, resumed or not. split_batches: each of W ranks trains
    on its part of the batch one process with batch_size x W would draw (the tests compare
    strategies step for step with it).
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
        dropped_works: list[str] | tuple[str, ...] = SHAKESPEARE_DROPPED,
        tokenizer: dict | None = None,
        hf: dict | None = None,
        shards: dict | None = None,
        cache_dir: str = ".cache/minigpt",
        num_workers: int = 0,
        num_proc: int | None = None,
        eval_split: str = "test",
        eval_windows: int | None = None,
        eval_seed: int = 0,
        seed: int = 0,
        split_batches: bool = False,
    ):
        super().__init__()
        if corpus not in CORPORA:
            raise ValueError(f"data.corpus={corpus!r} is not one of {', '.join(CORPORA)}")
        if corpus == "shards" and not packing:
            raise ValueError(
                "data.packing=false needs where documents start, which token shards do not "
                "record: train on shards with data.packing=true"
            )
        if batch_size <= 0:
            raise ValueError(f"data.batch_size={batch_size} must be a positive integer")
        self.corpus, self.paths = corpus, list(paths or [])
        self.block_size, self.batch_size, self.packing = block_size, batch_size, packing
        self.val_fraction, self.clean = val_fraction, clean
        self.val_works, self.test_works = list(val_works), list(test_works)
        self.include_folio, self.dropped_works = include_folio, list(dropped_works)
        self.hf, self.shards = dict(hf or {}), dict(shards or {})
        self.tokenizer_config = dict(tokenizer or {"kind": "char"})
        if self.tokenizer_config.get("kind") not in TOKENIZER_KINDS:
            raise ValueError(
                f"data.tokenizer.kind={self.tokenizer_config.get('kind')!r} is not one of "
                f"{', '.join(TOKENIZER_KINDS[:3])}"
            )
        kind = self.tokenizer_config["kind"]
        if corpus == "shards" and kind != "gpt2" and not self.vocabulary_given:
            raise ValueError(
                f"data.corpus=shards encodes with GPT-2's tokenizer, not "
                f"data.tokenizer.kind={kind!r}: set data.tokenizer.kind=gpt2 (data=fineweb does)"
            )
        self.cache_root, self.num_workers, self.eval_seed = Path(cache_dir), num_workers, eval_seed
        self.seed, self.num_proc, self.split_batches = seed, num_proc, split_batches
        self.eval_split, self.eval_windows = eval_split, eval_windows
        self.cache_path: Path | None = None
        self.tokenizer: CharTokenizer | BPETokenizer | None = None
        self.tokens: dict[str, TokenFile] = {}
        self.doc_starts: dict[str, np.ndarray] = {}

    def source(self) -> Source:
        """The corpus as pieces for `minigpt.data.encode`. Text files stream from disk
        (`stream`), HF datasets from their Arrow cache (`rows`); the embedded corpus (5 MB)
        is read into memory first."""
        bpe = self.tokenizer_config["kind"] != "char"
        if self.corpus == "hf_dataset":
            pieces, key = row_pieces(
                self.hf.get("builder", "json"),
                self.hf.get("data_files"),
                self.hf.get("text_column", "text"),
                self.val_fraction,
                cache_dir=str(self.cache_root / "hf"),
            )
            return Source(pieces, None, key, key)
        if self.corpus == "text_files":
            parts = plan_splits(self.paths, self.val_fraction, min_bytes=self.block_size + 1)
            titles = {split: [str(part.path) for part in parts[split]] for split in SPLITS}
            train = {"train": parts["train"], "val": [], "test": []}
            keys = (
                files_fingerprint(parts, {"clean": self.clean}),
                files_fingerprint(train, {"clean": self.clean}),
            )
            self.check_cut_rule(parts, bpe)
            return Source(file_pieces(parts, bpe, self.clean), titles, *keys)
        splits = shakespeare_splits(
            self.val_works, self.test_works, self.include_folio, self.dropped_works
        )
        pieces = {split: documents_pieces(splits[split], PIECE_BYTES) for split in SPLITS}
        titles = {split: [d.title for d in splits[split]] for split in SPLITS}
        train = {"train": splits["train"], "val": [], "test": []}
        keys = corpus_fingerprint(splits, {}), corpus_fingerprint(train, {})
        return Source(pieces, titles, *keys, documents=splits)

    def check_cut_rule(self, parts: dict, bpe: bool) -> None:
        """Text files are encoded in pieces cut where GPT-2's pre-tokenization starts a
        chunk whatever precedes it (minigpt.data.stream); another pattern may join text
        across such a cut, so with one, a file is encoded whole or not at all."""
        pattern = self.tokenizer_config.get("pattern") or GPT2_PATTERN
        if not bpe or pattern == GPT2_PATTERN:
            return
        for part in (part for split in SPLITS for part in parts[split]):
            if part.end - part.start > data_stream.BPE_CHUNK_BYTES:
                raise ValueError(
                    f"data.tokenizer.pattern={pattern!r} is not GPT-2's, and {part.path} "
                    f"({part.end - part.start:,} bytes of a split) would be encoded in pieces "
                    "cut where GPT-2's pattern starts a chunk, which this pattern may join: "
                    f"split the text into files of at most {data_stream.BPE_CHUNK_BYTES:,} "
                    "bytes, or use GPT-2's pattern (data.tokenizer.pattern=null)"
                )

    def prepare_data(self) -> None:
        """Tokenize the corpus into the cache unless an identical corpus is there already.
        Processes that prepare the same entry at once (the ranks of a run, on one machine or
        on a shared file system) take turns: the first builds it, the rest find it built."""
        if self.cache_path is not None:
            return
        if self.corpus == "shards":
            self.cache_path = self.prepare_shards()
            return
        source = self.source()
        settings = {"format": CACHE_FORMAT, "tokenizer": self.tokenizer_config}
        key = fingerprint(source.key, settings)
        path = self.cache_root / f"{self.corpus}-{key}"
        self.cache_root.mkdir(parents=True, exist_ok=True)
        with open(self.cache_root / f".{path.name}.lock", "w") as lock:
            # one process builds, whatever started them (torchrun, srun, a sweep's jobs);
            # the others wait for it and then find the entry whole
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info(f"waiting for another process to prepare the token cache {path}")
                fcntl.flock(lock, fcntl.LOCK_EX)
            if path.exists() and (damage := cache_damage(path)):
                log.warning(f"token cache {path} is damaged ({damage}): rebuilding it")
                shutil.rmtree(path, ignore_errors=True)
            if not path.exists():
                staging = self.cache_root / f".{path.name}.{os.getpid()}.tmp"
                shutil.rmtree(staging, ignore_errors=True)
                staging.mkdir()
                start = time.perf_counter()
                try:
                    if self.corpus == "shakespeare":  # split by works
                        report_leaks(source.documents)
                    tokenizer = self.build_tokenizer(source)
                    write_cache(source.pieces, tokenizer, staging, self.workers, source.titles)
                except BaseException:
                    shutil.rmtree(staging, ignore_errors=True)  # no half-written entry stays
                    raise
                seconds = time.perf_counter() - start
                meta = json.loads((staging / "meta.json").read_text())
                text_mb = sum(meta["splits"][split]["bytes"] for split in SPLITS) / 1e6
                processes = max(pool_size(len(source.pieces[s]), self.workers) for s in SPLITS)
                log.info(
                    f"token cache: {text_mb:,.1f} MB of text prepared in {seconds:.1f} s "
                    f"({text_mb / seconds:,.1f} MB/s, {processes} processes) into {path}"
                )
                try:
                    staging.rename(path)  # atomic: readers see a whole cache entry or none
                except OSError:  # another process finished the same entry first
                    shutil.rmtree(staging, ignore_errors=True)
        self.cache_path = path

    @property
    def workers(self) -> int:
        return int(self.num_proc) if self.num_proc else default_workers()

    def build_tokenizer(self, source: Source) -> CharTokenizer | BPETokenizer:
        """char: the characters of the train split (CharTokenizer.for_splits). bpe: trained
        on (a sample of, `data.tokenizer.sample_mb`) the train split only
        (`data.tokenizer.impl`: minigpt's trainer, or HF `tokenizers` with `hf`), cached on
        disk by a key of that split and the settings."""
        config = self.tokenizer_config
        if self.vocabulary_given:
            return self.given_tokenizer(source)
        if config["kind"] == "char":
            return char_vocabulary(source.pieces, self.workers)
        if config["kind"] == "gpt2":
            return TiktokenTokenizer.gpt2(config.get("files"))
        impl = config.get("impl", "minigpt")
        if impl not in ("minigpt", "hf"):
            raise ValueError(f"data.tokenizer.impl={impl!r} is not one of minigpt, hf")
        key = fingerprint(source.train_key, config | {"format": CACHE_FORMAT})
        path = self.cache_root / f"bpe-{key}.json"
        if path.exists():
            try:
                return load_tokenizer(path)
            except (ValueError, OSError, UnicodeDecodeError) as err:
                log.warning(f"cached tokenizer {path} is damaged ({err}): training it again")
        pattern = config.get("pattern") or GPT2_PATTERN
        tokenizer = train_bpe(source.pieces["train"], config, pattern, self.workers)
        self.cache_root.mkdir(parents=True, exist_ok=True)
        staging = path.with_suffix(f".{os.getpid()}.tmp")
        tokenizer.save(staging)
        os.replace(staging, path)
        return tokenizer

    @property
    def vocabulary_given(self) -> bool:
        """Whether data.tokenizer spells out a trained model's vocabulary (eval.py,
        init_from) instead of saying how to build one."""
        return bool({"chars", "merges", "tokens"} & self.tokenizer_config.keys())

    def given_tokenizer(self, source: Source) -> CharTokenizer | BPETokenizer:
        """The tokenizer the config spells out (a trained model's), after checking that a
        character vocabulary holds every character of the text."""
        tokenizer = tokenizer_from_dict(self.tokenizer_config)
        if isinstance(tokenizer, CharTokenizer):
            seen = characters(source.pieces, self.workers)
            unknown = sorted(set().union(*seen.values()) - set(tokenizer.chars))
            if unknown:
                shown = ", ".join(repr(c) for c in unknown[:10])
                raise ValueError(
                    f"the text holds {len(unknown)} character(s) the model's vocabulary "
                    f"lacks: {shown}{' ...' if len(unknown) > 10 else ''}; a character-level "
                    "model scores only text made of the characters it was trained on"
                )
        return tokenizer

    def tokens_per_byte(self, split: str) -> float:
        """Tokens of text per byte of UTF-8 text in a split: converts a loss per token of
        text into bits per byte, which compares models with different tokenizers. The
        end-of-text token after each document stands for no bytes and is not counted."""
        self.setup()
        if self.corpus == "shards":
            tokens, nbytes = 0, 0
            for shard in self.tokens[split].files:
                counts = text_token_counts(shard[:], self.tokenizer)
                tokens, nbytes = tokens + counts[0], nbytes + counts[1]
            return tokens / nbytes
        meta = json.loads((self.cache_path / "meta.json").read_text())["splits"][split]
        end_of_text = meta["documents"] if self.tokenizer.eot_id is not None else 0
        return (meta["tokens"] - end_of_text) / meta["bytes"]

    def prepare_shards(self) -> Path:
        """data.corpus=shards: the folder of token shards, prepared when it holds none
        (one process prepares, the others wait, as for the cache); a folder of shards
        without our progress file (prepared by llm.c or modded-nanogpt) is read as it is."""
        settings = self.shards
        folder = Path(settings["dir"])
        folder.parent.mkdir(parents=True, exist_ok=True)
        with open(folder.parent / f".{folder.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            progress = read_progress(folder)
            if progress is None and find_shards(folder)["val"]:
                return folder  # someone else's shards
            if progress is None or not progress["complete"]:
                tokenizer = self.build_tokenizer(None)
                saved = folder / "tokenizer.json"
                began = load_tokenizer(saved).to_dict() if progress and saved.is_file() else None
                if began is not None and began != tokenizer.to_dict():
                    raise ValueError(
                        f"{folder} holds shards begun with another tokenizer than "
                        "data.tokenizer gives: prepare into another data.shards.dir, "
                        "or finish it with the tokenizer it began with"
                    )
                folder.mkdir(exist_ok=True)
                tokenizer.save(saved)
                prepare_shards(
                    streamed_documents(settings),
                    tokenizer,
                    folder,
                    settings.get("name", folder.name),
                    int(settings.get("shard_tokens", SHARD_TOKENS)),
                    settings.get("max_tokens"),
                    self.workers,
                )
        return folder

    def setup_shards(self) -> None:
        folder = self.cache_path
        if (folder / "tokenizer.json").is_file():
            self.tokenizer = load_tokenizer(folder / "tokenizer.json")
        else:
            self.tokenizer = self.build_tokenizer(None)
        found = find_shards(folder)
        if not found["val"] or not found["train"]:
            raise ValueError(
                f"{folder} has {len(found['val'])} val and {len(found['train'])} train shards: "
                "training needs both (shard 0 validates); with little text, lower "
                "data.shards.shard_tokens"
            )
        self.tokens = {split: ShardTokens(paths) for split, paths in found.items()}

    def setup(self, stage: str | None = None) -> None:
        if self.tokens:
            return
        self.prepare_data()
        if self.corpus == "shards":
            return self.setup_shards()
        meta = json.loads((self.cache_path / "meta.json").read_text())
        self.tokenizer = load_tokenizer(self.cache_path / "tokenizer.json")
        for split in SPLITS:
            if meta["splits"][split]["tokens"] == 0:
                continue
            self.tokens[split] = TokenFile(self.cache_path / f"{split}.bin", meta["dtype"])
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
        split_of = trainer.world_size if trainer and self.split_batches else None
        return StepBatches(
            self.dataset("train", train=True), self.batch_size, self.seed, rank, start, split_of
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

    def evaluation_share(self, dataset: Dataset, limit: int | float | None) -> Dataset:
        """This rank's share of the windows an evaluation reads: the first `limit` batches'
        worth (as one process would read them), dealt out to the ranks in turn, without the
        repeats a DistributedSampler adds. The ranks together read exactly the windows one
        process reads, and val/loss (a token-weighted mean synced across ranks) is the same
        on 1 and on N processes. (The trainer runs with use_distributed_sampler=false.)"""
        count = len(dataset)
        if isinstance(limit, int) and not isinstance(limit, bool):
            count = min(count, limit * self.batch_size)
        elif isinstance(limit, float) and limit < 1.0:
            count = int(count * limit)
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        return Subset(dataset, range(rank, count, world))

    def val_dataloader(self) -> DataLoader:
        limit = self.trainer.limit_val_batches if self.trainer else None
        return self._loader(self.evaluation_share(self.dataset("val"), limit), self.batch_size)

    def test_dataloader(self) -> DataLoader:
        """The windows of `eval_split` (default test) that `eval.py` scores: every one, or
        the first `eval_windows` of their fixed order."""
        if self.eval_split not in self.tokens:
            raise ValueError(f"data.corpus={self.corpus!r} has no {self.eval_split} split")
        dataset = self.dataset(self.eval_split)
        if self.eval_windows is not None:
            dataset = Subset(dataset, range(min(self.eval_windows, len(dataset))))
        limit = self.trainer.limit_test_batches if self.trainer else None
        return self._loader(self.evaluation_share(dataset, limit), self.batch_size)
