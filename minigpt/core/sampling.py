"""Autoregressive decoding: greedy, temperature, top-k and top-p (nucleus), combinable."""

from __future__ import annotations

from collections.abc import Iterator

import torch
import torch.nn.functional as F

from minigpt.core.model import GPT
from minigpt.core.options import is_integer, is_number


def check_sampling_args(temperature: float, top_k: int | None, top_p: float | None) -> None:
    if not is_number(temperature):
        raise ValueError(f"temperature={temperature!r} must be a number >= 0")
    if top_k is not None and not is_integer(top_k):
        raise ValueError(f"top_k={top_k!r} must be a positive integer or null")
    if top_p is not None and not is_number(top_p):
        raise ValueError(f"top_p={top_p!r} must be in (0, 1] or null")
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


def generate_tokens(
    model: GPT,
    idx: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    use_kv_cache: bool = True,
    keep: int | None = None,
    first_temperature: float | None = None,
) -> Iterator[torch.Tensor]:
    """Yields the next token of every sequence, (B, 1), max_new_tokens times.
    first_temperature, if given, is the first new token's temperature (greedy decoding
    after a prompt with no text draws its first token, or it would repeat one token).

    Context: the model sees at most block_size tokens, at positions 0..block_size-1. The
    context is the prompt's last block_size tokens; when a new token would make it longer
    than block_size, it restarts from its last `keep` tokens (default block_size // 2).
    The rule is the same with and without the KV cache, so both give the same tokens.

    With the cache (default), the context is fed through the model once (prefill); then
    each step feeds only the newest token, whose query attends to the cached keys and values.
    A restart refills the cache from the kept tokens in one pass."""
    check_sampling_args(temperature, top_k, top_p)
    if first_temperature is not None:
        check_sampling_args(first_temperature, top_k, top_p)
    block_size = model.config.block_size
    keep = block_size // 2 if keep is None else keep
    if not 0 < keep < block_size:
        raise ValueError(f"keep={keep} must be in [1, block_size={block_size})")
    if idx.size(1) == 0:
        raise ValueError("generation needs at least one context token")
    was_training = model.training
    model.eval()
    tokens = idx[:, -block_size:]  # the context so far, (B, T) with T <= block_size
    if use_kv_cache:
        model.enable_kv_cache(idx.size(0))
    try:
        with torch.no_grad():
            for step in range(max_new_tokens):
                if not use_kv_cache:
                    logits, _ = model(tokens)  # recompute the whole context
                elif model.cache_length == 0:
                    logits, _ = model(tokens)  # prefill: the whole context in one pass
                else:
                    logits, _ = model(tokens[:, -1:])  # the newest token only
                heat = temperature if step or first_temperature is None else first_temperature
                token = next_token(logits[:, -1, :], heat, top_k, top_p, generator)
                yield token
                tokens = torch.cat((tokens, token), dim=1)
                if tokens.size(1) > block_size:  # restart from the last `keep` tokens
                    tokens = tokens[:, -keep:]
                    if use_kv_cache:
                        model.enable_kv_cache(idx.size(0))  # empty, refilled from them
    finally:
        if use_kv_cache:
            model.disable_kv_cache()
        model.train(was_training)


def unencodable(tokenizer, prompt: str) -> str | None:
    """Why the tokenizer cannot encode the prompt (characters outside a character
    vocabulary), or None: a run's text samples are skipped then, not the run failed."""
    try:
        tokenizer.encode(prompt)
    except ValueError as err:
        return str(err)
    return None


def sample_texts(
    model: GPT,
    tokenizer,
    prompt: str,
    max_new_tokens: int,
    num_samples: int = 1,
    seed: int = 0,
    **kwargs,
) -> list[str]:
    """num_samples continuations of prompt (prompt included), as text, generated as one batch
    on the model's device with a generator seeded by seed; kwargs as for generate_tokens."""
    device = model.wte.weight.device
    idx = torch.tensor([tokenizer.encode(prompt)] * num_samples, device=device)
    generator = torch.Generator(device=device).manual_seed(seed)
    out = generate(model, idx, max_new_tokens, generator=generator, **kwargs)
    return [tokenizer.decode(row) for row in out.tolist()]


def generate(model: GPT, idx: torch.Tensor, max_new_tokens: int, **kwargs) -> torch.Tensor:
    """idx (B, T) extended by max_new_tokens tokens (see generate_tokens for the options)."""
    new = list(generate_tokens(model, idx, max_new_tokens, **kwargs))
    return torch.cat([idx, *new], dim=1)
