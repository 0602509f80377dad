"""Measures of a language model's loss that compare across tokenizers."""

from __future__ import annotations

import math


def bits_per_byte(loss: float, tokens_per_byte: float) -> float:
    """Bits per byte of text from a loss in nats per token: compares models whose
    tokenizers differ."""
    return loss * tokens_per_byte / math.log(2)
