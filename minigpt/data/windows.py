"""Training and evaluation examples cut from a flat token array (memory-mapped from the
cache): random windows (packing, as nanoGPT), fixed non-overlapping windows for evaluation,
document-bounded padded chunks, and `StepBatches`, the training batches as a pure function
of (seed, rank, batch index).

Padding sits to the right of every real token, so causal attention never lets it reach a
real one; padded targets are IGNORE_INDEX (no loss).
"""

from __future__ import annotations

import itertools

import numpy as np
import torch
from torch.utils.data import Dataset, IterableDataset, get_worker_info

from minigpt.core.model import IGNORE_INDEX

PAD_INPUT_ID = 0  # input id placed at padded positions; their targets are IGNORE_INDEX


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
        bounds = np.append(np.asarray(doc_starts, dtype=np.int64), len(tokens))
        starts = [np.arange(a, b - 1, block_size) for a, b in itertools.pairwise(bounds)]
        ends = [np.minimum(s + block_size + 1, b) for s, b in zip(starts, bounds[1:], strict=True)]
        # one row per chunk, built with numpy: a corpus of GBs has millions of chunks
        self.chunks = np.stack(
            [np.concatenate(starts or [[]]), np.concatenate(ends or [[]])], axis=1
        ).astype(np.int64)
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
    uninterrupted run would, every rank its own; each batch costs O(batch_size).

    split_of: a number of ranks W (the comparison mode of the tests): batch i is then the
    rank's part, rows [rank x batch_size, (rank + 1) x batch_size), of the batch of
    W x batch_size examples that one process (rank 0, batch_size x W) draws, so that W
    processes train on exactly what one process would."""

    def __init__(
        self,
        examples: Dataset,
        batch_size: int,
        seed: int,
        rank: int = 0,
        start=0,
        split_of: int | None = None,
    ):
        self.examples, self.batch_size = examples, batch_size
        self.seed, self.rank, self.start, self.split_of = seed, rank, start, split_of

    def batch(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        if self.split_of:
            rng = np.random.default_rng([self.seed, 0, index])
            picks = rng.integers(0, len(self.examples), self.batch_size * self.split_of)
            picks = picks[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
        else:
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
