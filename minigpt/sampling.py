"""Autoregressive decoding: greedy, temperature, top-k and top-p (nucleus), combinable."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from minigpt.model import GPT


def check_sampling_args(temperature: float, top_k: int | None, top_p: float | None) -> None:
    if temperature < 0:
        raise ValueError(f"temperature={temperature} must be >= 0 (0 means greedy)")
    if top_k is not None and top_k < 1:
        raise ValueError(f"top_k={top_k} must be a positive integer or null")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p={top_p} must be in (0, 1] or null")


def filter_top_k(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keeps the k largest logits of each row, sets the rest to -inf."""
    k = min(k, logits.size(-1))
    kth = torch.topk(logits, k, dim=-1).values[..., -1:]  # (B, 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def filter_top_p(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Keeps the smallest set of most likely tokens whose probabilities sum to >= p."""
    sorted_logits, order = torch.sort(logits, descending=True, dim=-1)
    cumulative = F.softmax(sorted_logits, dim=-1).cumsum(dim=-1)  # (B, V)
    # drop a token when the tokens ranked before it already reach p; the first always stays
    drop_sorted = (cumulative - F.softmax(sorted_logits, dim=-1)) >= p
    drop = drop_sorted.scatter(-1, order, drop_sorted)
    return logits.masked_fill(drop, float("-inf"))


def next_token(
    logits: torch.Tensor,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Picks one token per row of logits (B, V) -> (B, 1). temperature 0 is greedy."""
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    logits = logits / temperature
    if top_k is not None:
        logits = filter_top_k(logits, top_k)
    if top_p is not None:
        logits = filter_top_p(logits, top_p)
    probs = F.softmax(logits.float(), dim=-1)
    return torch.multinomial(probs, num_samples=1, generator=generator)


@torch.no_grad()
def generate(
    model: GPT,
    idx: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Extends idx (B, T) by max_new_tokens tokens. The context fed to the model is the last
    block_size tokens, so generation can run past the model's context length."""
    check_sampling_args(temperature, top_k, top_p)
    if idx.size(1) == 0:
        raise ValueError("generation needs at least one context token")
    was_training = model.training
    model.eval()
    block_size = model.config.block_size
    for _ in range(max_new_tokens):
        logits, _ = model(idx[:, -block_size:])  # (B, T, V)
        token = next_token(logits[:, -1, :], temperature, top_k, top_p, generator)
        idx = torch.cat((idx, token), dim=1)
    model.train(was_training)
    return idx
