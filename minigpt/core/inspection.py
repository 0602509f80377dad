"""Looking inside a trained model: where each attention head looks, and how surprised the
model is by each token of a text. The computations are here; `explain.py` and the
`AttentionMaps` callback draw them."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from minigpt.core.model import GPT

SHOWN = {"\n": "↵", " ": "·", "\t": "→", "\r": "␍"}


def token_label(text: str) -> str:
    """A token's text made visible: line breaks, spaces and tabs as ↵ · →, other control
    characters as their escape."""
    return "".join(SHOWN.get(c, c if c.isprintable() else repr(c)[1:-1]) for c in text)


@torch.no_grad()
def attention_maps(model: GPT, ids: list[int]) -> torch.Tensor:
    """The attention weights of every head for the tokens ids (the last block_size of
    them): (n_layer, n_head, T, T), row t being the softmax that position t used over
    positions 0..t. The model computes them itself (CausalSelfAttention.keep_weights)."""
    ids = ids[-model.config.block_size :]
    device = model.wte.weight.device
    layers = [block.attn for block in model.blocks]
    for attn in layers:
        attn.keep_weights = True
    try:
        model(torch.tensor([ids], device=device))
        return torch.stack([attn.weights[0].float().cpu() for attn in layers])
    finally:
        for attn in layers:
            attn.keep_weights, attn.weights = False, None


def plot_attention(maps: torch.Tensor, labels: list[str], title: str = ""):
    """A matplotlib figure that fits a screen (about 13 inches wide whatever the number of
    heads): one panel per layer (rows) and head (columns), query positions down, key
    positions across, the tokens as labels on the outer panels (every one, or every second
    or third when a panel is too small for them to be read), and a colour scale."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n_layer, n_head, T, _ = maps.shape
    size = max(2.0, min(12.0 / n_head, 4.5))  # inches per panel
    fig, axes = plt.subplots(
        n_layer,
        n_head,
        figsize=(size * n_head + 1.2, size * n_layer + 0.5),
        squeeze=False,
        layout="constrained",
    )
    step = max(1, math.ceil(0.12 * T / size))  # a 7-point label needs about 0.12 inch
    ticks = list(range(0, T, step))
    for layer in range(n_layer):
        for head in range(n_head):
            ax = axes[layer][head]
            image = ax.imshow(maps[layer, head].numpy(), cmap="viridis", vmin=0.0, vmax=1.0)
            ax.set_xticks(ticks, [labels[i] for i in ticks] if layer == n_layer - 1 else [])
            ax.set_yticks(ticks, [labels[i] for i in ticks] if head == 0 else [])
            ax.tick_params(axis="x", labelrotation=90, labelsize=7)
            ax.tick_params(axis="y", labelsize=7)
            ax.set_title(f"layer {layer} head {head}", fontsize=9)
    bar = fig.colorbar(image, ax=axes, shrink=min(1.0, 4.0 / n_layer), aspect=30)
    bar.set_label("attention weight (each row, a query, sums to 1)", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=9)
    return fig


@dataclass
class TokenSurprise:
    """One token of a text: its text, its loss (nats; None for the first, which nothing
    predicts), and the model's top candidates for that position with their probabilities."""

    text: str
    loss: float | None
    candidates: list[tuple[str, float]]


@torch.no_grad()
def token_surprise(model: GPT, tokenizer, ids: list[int], k: int = 5) -> list[TokenSurprise]:
    """Each token's loss given the tokens before it (the last block_size tokens at most)."""
    ids = ids[-model.config.block_size :]
    device = model.wte.weight.device
    logits, _ = model(torch.tensor([ids], device=device))
    log_probs = F.log_softmax(logits[0].float(), dim=-1)  # (T, V): position t predicts t+1
    top = log_probs.topk(min(k, log_probs.size(-1)), dim=-1)
    out = [TokenSurprise(tokenizer.decode(ids[:1]), None, [])]
    for t in range(1, len(ids)):
        candidates = [
            (tokenizer.decode([int(i)]), math.exp(float(p)))
            for p, i in zip(top.values[t - 1], top.indices[t - 1], strict=True)
        ]
        loss = -float(log_probs[t - 1, ids[t]])
        out.append(TokenSurprise(tokenizer.decode([ids[t]]), loss, candidates))
    return out


def mean_loss(tokens: list[TokenSurprise]) -> float:
    losses = [t.loss for t in tokens if t.loss is not None]
    return sum(losses) / len(losses)


def surprise_html(tokens: list[TokenSurprise], title: str) -> str:
    """A page showing the text with each token's background red in proportion to its loss
    (full red at 8 nats and above); hovering a token shows its loss and the model's top
    candidates."""
    spans = []
    for token in tokens:
        text = html.escape(token.text).replace("\n", "↵<br>")
        if token.loss is None:
            spans.append(f'<span class="t">{text}</span>')
            continue
        alpha = min(token.loss / 8.0, 1.0)
        hover = f"loss {token.loss:.2f} nats; p {math.exp(-token.loss):.3f}\n" + "\n".join(
            f"{token_label(c)!s:>8}  {p:.3f}" for c, p in token.candidates
        )
        spans.append(
            f'<span class="t" style="background: rgba(220, 30, 30, {alpha:.2f})" '
            f'title="{html.escape(hover)}">{text}</span>'
        )
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>
body {{ font-family: sans-serif; margin: 2em; max-width: 60em; }}
.text {{ font-family: monospace; font-size: 15px; line-height: 1.7; white-space: pre-wrap; }}
.t {{ border-radius: 2px; }}
.scale span {{ display: inline-block; width: 3em; text-align: center; font-size: 12px; }}
</style></head><body>
<h3>{html.escape(title)}</h3>
<p>Each token's background: its loss given the text before it (hover for the loss and the
model's top {len(tokens[-1].candidates)} candidates). Mean loss {mean_loss(tokens):.3f} nats per
token.</p>
<p class="scale">{
        "".join(
            f'<span style="background: rgba(220, 30, 30, {n / 8:.2f})">{n}</span>' for n in range(9)
        )
    } nats</p>
<div class="text">{"".join(spans)}</div>
</body></html>
"""


def surprise_text(tokens: list[TokenSurprise], color: bool = True, worst: int = 8) -> str:
    """The terminal's version: the text with backgrounds in four shades of red (ANSI 256
    colours; none when color is false), then the most surprising tokens and what the
    model expected instead."""
    shades = (None, 224, 210, 196)  # < 1, < 2.5, < 5, >= 5 nats
    parts = []
    for token in tokens:
        loss = token.loss or 0.0
        shade = shades[sum(loss >= edge for edge in (1.0, 2.5, 5.0))]
        if color and shade is not None:
            lines = token.text.split("\n")
            parts.append("\n".join(f"\x1b[48;5;{shade}m\x1b[30m{line}\x1b[0m" for line in lines))
        else:
            parts.append(token.text)
    ranked = sorted(
        (i for i, t in enumerate(tokens) if t.loss is not None), key=lambda i: -tokens[i].loss
    )[:worst]
    rows = [
        f"  {i:>5}  {token_context(tokens, i):<28}  {tokens[i].loss:5.2f} nats   expected: "
        + ", ".join(f"{token_label(c)} {p:.2f}" for c, p in tokens[i].candidates[:3])
        for i in ranked
    ]
    summary = (
        f"mean loss {mean_loss(tokens):.3f} nats/token; most surprising (token number, the "
        "token [in brackets] among its neighbours):\n" + "\n".join(rows)
    )
    return "".join(parts) + "\n\n" + summary


def token_context(tokens: list[TokenSurprise], i: int, before: int = 12, after: int = 6) -> str:
    """Token i in brackets between the characters around it, made visible (token_label):
    `What li[g]ht thr`."""
    left = "".join(t.text for t in tokens[:i])[-before:]
    right = "".join(t.text for t in tokens[i + 1 :])[:after]
    return f"{token_label(left)}[{token_label(tokens[i].text)}]{token_label(right)}"
