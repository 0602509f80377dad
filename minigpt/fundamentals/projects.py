"""The first small projects: counting characters and words, a character bigram model, and
a two-layer network on a toy problem."""

from __future__ import annotations

import re
from collections import Counter

import numpy as np

from minigpt.fundamentals.layers import CrossEntropy, Embedding, Layer, Linear, ReLU
from minigpt.fundamentals.optim import SGD, Adam


def char_counts(text: str) -> Counter:
    return Counter(text)


def word_counts(text: str) -> Counter:
    """Lower-cased words (letters and apostrophes) and how often each occurs."""
    return Counter(re.findall(r"[a-z']+", text.lower()))


def bigram_entropy(ids: np.ndarray, vocab_size: int) -> float:
    """H(next | current) of the text's own bigram counts, in nats: the lowest average loss a
    bigram model can reach on this text."""
    counts = np.zeros((vocab_size, vocab_size))
    np.add.at(counts, (ids[:-1], ids[1:]), 1)
    rows = counts.sum(axis=1, keepdims=True)
    probs = np.divide(counts, rows, out=np.zeros_like(counts), where=rows > 0)
    nonzero = counts > 0
    return float(-(counts[nonzero] * np.log(probs[nonzero])).sum() / counts.sum())


class BigramModel(Layer):
    """Next-character prediction from the current character alone: a (V, V) table of
    logits, one row per character, trained with cross-entropy."""

    def __init__(self, vocab_size: int, rng: np.random.Generator):
        super().__init__()
        self.table = Embedding(vocab_size, vocab_size, rng, std=0.0)
        self.loss_fn = CrossEntropy()

    def forward(self, current: np.ndarray, following: np.ndarray) -> float:
        return self.loss_fn.forward(self.table.forward(current), following)

    def backward(self) -> None:
        self.table.backward(self.loss_fn.backward())

    def fit(self, ids: np.ndarray, steps: int = 300, lr: float = 0.5) -> list[float]:
        """Full-batch Adam on every (current, next) pair of ids; the loss after each step."""
        optimizer, losses = Adam(self, lr=lr), []
        for _ in range(steps):
            self.zero_grad()
            losses.append(self.forward(ids[:-1], ids[1:]))
            self.backward()
            optimizer.step()
        return losses


def spirals(n_per_class: int, rng: np.random.Generator, classes: int = 2):
    """Points on interleaved spiral arms, one arm per class: not linearly separable."""
    points, labels = [], []
    for c in range(classes):
        r = np.linspace(0.1, 1.0, n_per_class)
        angle = np.linspace(c * 2 * np.pi / classes, c * 2 * np.pi / classes + 3.0, n_per_class)
        angle = angle + 0.1 * rng.standard_normal(n_per_class)
        points.append(np.stack([r * np.sin(angle), r * np.cos(angle)], axis=1))
        labels.append(np.full(n_per_class, c))
    return np.concatenate(points), np.concatenate(labels)


class TwoLayerNet(Layer):
    """Linear -> ReLU -> Linear classifier: scores (N, classes) for inputs (N, features)."""

    def __init__(self, features: int, hidden: int, classes: int, rng: np.random.Generator):
        super().__init__()
        self.fc1 = Linear(features, hidden, rng, std=1.0)
        self.relu = ReLU()
        self.fc2 = Linear(hidden, classes, rng, std=0.1)
        self.loss_fn = CrossEntropy()

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self.fc2.forward(self.relu.forward(self.fc1.forward(x)))

    def backward(self, dscores: np.ndarray) -> None:
        self.fc1.backward(self.relu.backward(self.fc2.backward(dscores)))

    def fit(self, x: np.ndarray, y: np.ndarray, steps: int = 2000, lr: float = 0.5) -> list[float]:
        """Full-batch gradient descent; the loss after each step."""
        optimizer, losses = SGD(self, lr=lr), []
        for _ in range(steps):
            self.zero_grad()
            losses.append(self.loss_fn.forward(self.forward(x), y))
            self.backward(self.loss_fn.backward())
            optimizer.step()
        return losses

    def accuracy(self, x: np.ndarray, y: np.ndarray) -> float:
        return float((self.forward(x).argmax(axis=1) == y).mean())


def train_language_model(
    ids: np.ndarray,
    vocab_size: int,
    steps: int = 150,
    block_size: int = 32,
    batch_size: int = 16,
    dim: int = 32,
    n_layer: int = 2,
    n_head: int = 2,
    lr: float = 3e-3,
    seed: int = 0,
) -> dict:
    """Trains the NumPy LanguageModel with Adam on random windows of the first 90% of ids;
    returns the training losses and the loss on the last 10% before and after."""
    from minigpt.fundamentals.transformer import LanguageModel

    rng = np.random.default_rng(seed)
    cut = int(len(ids) * 0.9)
    train, held_out = ids[:cut], ids[cut:]
    model = LanguageModel(vocab_size, block_size, n_layer, n_head, dim, rng)

    def batch(data: np.ndarray, starts: np.ndarray):
        x = np.stack([data[s : s + block_size] for s in starts])
        y = np.stack([data[s + 1 : s + 1 + block_size] for s in starts])
        return x, y

    eval_starts = np.arange(0, len(held_out) - block_size - 1, block_size)[:64]
    held_out_batch = batch(held_out, eval_starts)
    before = model.forward(*held_out_batch)[1]
    optimizer, losses = Adam(model, lr=lr), []
    for _ in range(steps):
        x, y = batch(train, rng.integers(0, len(train) - block_size - 1, size=batch_size))
        model.zero_grad()
        losses.append(model.forward(x, y)[1])
        model.backward()
        optimizer.step()
    return {
        "losses": losses,
        "held_out_before": before,
        "held_out_after": model.forward(*held_out_batch)[1],
    }
