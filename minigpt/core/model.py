"""A decoder-only transformer language model (GPT), in reading order.

Positions -> attention -> feed-forward -> block -> config -> GPT. Every option of GPTConfig
has one home: a table of named parts (POSITIONS, ACTIVATIONS, FEED_FORWARDS, NORMS) or the
lines of the one module it changes. Torch only: no Lightning, no Hydra.
Shapes: B batch, T time, C channels (n_embd), nh heads, hs head size (C // nh), V vocabulary.
"""

from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

IGNORE_INDEX = -100  # targets with this value (padding) do not count in the loss


# ---------------------------------------------------------------------------- positions


class Positions(nn.Module):
    """Where position enters the model. `forward` adds it to the token embeddings
    (B, T, C) of positions start..start+T-1; `rotation` gives the (cos, sin) tables that
    rotate queries and keys inside attention, or None. This base adds and rotates nothing."""

    def forward(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:
        return x

    def rotation(self, start: int, T: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        return None


def sinusoidal_table(block_size: int, n_embd: int) -> torch.Tensor:
    """The fixed encoding of "Attention Is All You Need", in float64:
    PE[t, 2i] = sin(t / 10000^(2i/C)), PE[t, 2i+1] = cos(t / 10000^(2i/C))."""
    position = torch.arange(block_size, dtype=torch.float64).unsqueeze(1)  # (T, 1)
    inv_freq = 10000.0 ** (-torch.arange(0, n_embd, 2, dtype=torch.float64) / n_embd)  # (C/2,)
    table = torch.zeros(block_size, n_embd, dtype=torch.float64)
    table[:, 0::2] = torch.sin(position * inv_freq)
    table[:, 1::2] = torch.cos(position * inv_freq)
    return table


class SinusoidalPositions(Positions):
    """Adds the fixed sinusoidal table to the token embeddings (no parameters). As in the
    paper, the embeddings are first multiplied by sqrt(C): the table's entries are of size
    ~1 and would otherwise drown embeddings initialized at std 0.02."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.scale = math.sqrt(config.n_embd)
        self.register_buffer(
            "table", sinusoidal_table(config.block_size, config.n_embd), persistent=False
        )

    def forward(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:  # (B, T, C) -> same
        return x * self.scale + self.table[start : start + x.size(1)].to(x.dtype)


class LearnedPositions(Positions):
    """Adds a learned embedding per position (GPT-2)."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.wpe = nn.Embedding(config.block_size, config.n_embd)

    def forward(self, x: torch.Tensor, start: int = 0) -> torch.Tensor:  # (B, T, C) -> same
        positions = torch.arange(start, start + x.size(1), device=x.device)
        return x + self.wpe(positions)


class RotaryPositions(Positions):
    """Rotary position embedding (RoFormer): queries and keys are rotated, pairs of channels
    by an angle proportional to the position, so that q·k depends on the relative position
    only; the embeddings get nothing. Channel i is paired with channel i + hs/2 (the
    GPT-NeoX/LLaMA layout). One table serves every layer."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        hs = config.head_size
        inv_freq = config.rope_base ** (-torch.arange(0, hs, 2, dtype=torch.float64) / hs)
        angles = torch.outer(torch.arange(config.block_size, dtype=torch.float64), inv_freq)
        angles = torch.cat((angles, angles), dim=-1)  # (T, hs): pair i and i + hs/2 share one
        self.register_buffer("cos", angles.cos().float(), persistent=False)  # (T, hs)
        self.register_buffer("sin", angles.sin().float(), persistent=False)  # (T, hs)

    def rotation(self, start: int, T: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.cos[start : start + T], self.sin[start : start + T]  # (T, hs) each


def rotate(x: torch.Tensor, rotation: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """x (..., T, hs) rotated by RotaryPositions.rotation's (cos, sin) tables."""
    cos, sin = (table.to(x.dtype) for table in rotation)
    x1, x2 = x.chunk(2, dim=-1)  # (..., T, hs/2) each
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


POSITIONS = {
    "sinusoidal": SinusoidalPositions,
    "learned": LearnedPositions,
    "rope": RotaryPositions,
}


# ---------------------------------------------------------------------------- attention


class KVCache(nn.Module):
    """The keys and values of one attention layer for the `length` positions seen so far,
    preallocated for block_size positions. With it, generation feeds the model only the new
    token: its query attends to the cached keys and values of every earlier position."""

    def __init__(self, batch_size: int, config: GPTConfig, device, dtype):
        super().__init__()
        shape = (batch_size, config.n_head, config.block_size, config.head_size)
        self.register_buffer("k", torch.zeros(shape, device=device, dtype=dtype), persistent=False)
        self.register_buffer("v", torch.zeros(shape, device=device, dtype=dtype), persistent=False)
        self.length = 0

    def update(self, k: torch.Tensor, v: torch.Tensor):
        """Stores k, v (B, nh, T, hs) at the next T positions; returns the keys and values
        of every position so far: (B, nh, S, hs) each, S = length."""
        start, self.length = self.length, self.length + k.size(2)
        self.k[:, :, start : self.length] = k
        self.v[:, :, start : self.length] = v
        return self.k[:, :, : self.length], self.v[:, :, : self.length]


def causal_mask(T: int, S: int, device) -> torch.Tensor:
    """(T, S) True where query i (the last T of S positions) may attend to key j: j <= i."""
    return torch.ones(T, S, dtype=torch.bool, device=device).tril(diagonal=S - T)


@functools.lru_cache(maxsize=16)
def causal_bias(T: int, S: int, device, dtype) -> torch.Tensor:
    """(T, S) 0 where `causal_mask` allows, -inf elsewhere: added to the attention scores.
    Made once per shape, device and dtype (the written-out attention's mask costs nothing
    then: baddbmm starts its sum from it)."""
    bias = torch.zeros(T, S, dtype=dtype, device=device)
    return bias.masked_fill(~causal_mask(T, S, device), float("-inf"))


class CausalSelfAttention(nn.Module):
    """Masked multi-head self-attention: position t attends to positions <= t."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.n_head = config.n_head
        self.dropout = config.dropout
        self.explicit = config.attention == "explicit"
        self.qk_norm = config.qk_norm
        self.c_attn = nn.Linear(config.n_embd, 3 * config.n_embd, bias=config.bias)  # q, k, v
        if config.value_embeddings:  # the weights of v and of the layer's value embedding
            self.value_mix = nn.Parameter(torch.tensor([0.5, 0.5]))
        self.c_proj = nn.Linear(config.n_embd, config.n_embd, bias=config.bias)
        self.attn_dropout = nn.Dropout(config.dropout)
        self.resid_dropout = nn.Dropout(config.dropout)
        # a submodule slot from the start, so that enabling and disabling the cache leave
        # the module as it was (torch.compile's guards would otherwise see a change)
        self.kv_cache: KVCache | None
        self.register_module("kv_cache", None)
        # keep_weights: the next forward computes the softmax written out and keeps it in
        # `weights` (B, nh, T, S), for looking at (minigpt.core.inspection); off, it costs nothing
        self.keep_weights = False
        self.weights: torch.Tensor | None = None

    def forward(self, x: torch.Tensor, rotation=None, value_embedding=None) -> torch.Tensor:
        """x (B, T, C) -> same. rotation: the rotary (cos, sin) tables of x's positions, or
        None; value_embedding: (B, T, C), this layer's embedding of x's tokens, mixed into
        the values (`value_embeddings`), or None."""
        B, T, C = x.size()
        hs = C // self.n_head
        qkv = self.c_attn(x).view(B, T, 3, self.n_head, hs)
        # queries and keys as one tensor (2, B, nh, T, hs): normalized and rotated together
        qk = qkv[:, :, :2].permute(2, 0, 3, 1, 4)
        v = qkv[:, :, 2]  # (B, T, nh, hs)
        if value_embedding is not None:
            mixed = self.value_mix[1] * value_embedding.view(B, T, self.n_head, hs)
            v = self.value_mix[0] * v + mixed
        v = v.transpose(1, 2)  # (B, nh, T, hs)
        if self.qk_norm:  # unit-RMS queries and keys: attention logits stay bounded
            qk = F.rms_norm(qk, (hs,))
        if rotation is not None:
            qk = rotate(qk, rotation)
        q, k = qk.unbind(0)  # (B, nh, T, hs) each
        if self.kv_cache is not None:
            k, v = self.kv_cache.update(k, v)  # (B, nh, S, hs): every position so far
        S = k.size(2)
        if self.explicit or self.keep_weights:
            # softmax(Q K^T / sqrt(hs) + mask) V, written out; the mask, 0 or -inf, is
            # where baddbmm's sum starts (one operation for the product, scale and mask)
            scores = torch.baddbmm(
                causal_bias(T, S, x.device, q.dtype),
                q.flatten(0, 1),  # (B * nh, T, hs)
                k.flatten(0, 1).transpose(1, 2),  # (B * nh, hs, S)
                alpha=1 / math.sqrt(hs),
            ).view(B, self.n_head, T, S)
            weights = F.softmax(scores, dim=-1)  # (B, nh, T, S)
            if self.keep_weights:
                self.weights = weights.detach()
            y = self.attn_dropout(weights) @ v  # (B, nh, T, hs)
        else:
            dropout = self.dropout if self.training else 0.0
            if S == T:  # square causal mask: the fused kernel's own
                y = F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=True)
            else:  # the newest T queries against all S keys
                mask = causal_mask(T, S, x.device)
                y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout)
            # y: (B, nh, T, hs)
        y = y.transpose(1, 2).contiguous().view(B, T, C)  # concatenate heads: (B, T, C)
        return self.resid_dropout(self.c_proj(y))


# ---------------------------------------------------------------------------- feed-forward


class ReLUSquared(nn.Module):
    """relu(x)^2 (So et al. 2021, "Primer"; the modded-nanogpt speedrun's activation)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.relu(x).square()


def gelu_tanh() -> nn.GELU:
    """GELU by its tanh approximation: GPT-2's activation (transformers' `gelu_new`)."""
    return nn.GELU(approximate="tanh")


ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "gelu_tanh": gelu_tanh, "relu2": ReLUSquared}


class MLP(nn.Module):
    """Position-wise feed-forward: Linear(C, 4C) -> activation -> Linear(4C, C)."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        hidden = config.mlp_ratio * config.n_embd
        self.c_fc = nn.Linear(config.n_embd, hidden, bias=config.bias)
        self.act = ACTIVATIONS[config.activation]()
        self.c_proj = nn.Linear(hidden, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(self.c_proj(self.act(self.c_fc(x))))


class SwiGLU(nn.Module):
    """Gated feed-forward (Shazeer 2020): (SiLU(x W) * x V) W2. The hidden width is 2/3 of
    the MLP's so that the three matrices hold about as many parameters as the MLP's two."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        hidden = int(2 * config.mlp_ratio * config.n_embd / 3)
        self.c_fc = nn.Linear(config.n_embd, 2 * hidden, bias=config.bias)  # gate and value
        self.c_proj = nn.Linear(hidden, config.n_embd, bias=config.bias)
        self.dropout = nn.Dropout(config.dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.c_fc(x).chunk(2, dim=-1)  # (B, T, hidden) each
        return self.dropout(self.c_proj(F.silu(gate) * value))


FEED_FORWARDS = {"relu": MLP, "gelu": MLP, "gelu_tanh": MLP, "relu2": MLP, "swiglu": SwiGLU}


NORMS = {
    "layernorm": lambda config: nn.LayerNorm(config.n_embd, bias=config.bias),
    "rmsnorm": lambda config: nn.RMSNorm(config.n_embd, eps=1e-5),
}


# ---------------------------------------------------------------------------- block


class Block(nn.Module):
    """One decoder block: attention and feed-forward, each inside a residual connection.

    pre-norm (GPT-2):        x = x + attn(norm(x));  x = x + ffn(norm(x))
    post-norm (Add & Norm):  x = norm(x + attn(x));  x = norm(x + ffn(x))
    """

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.pre_norm = config.norm_placement == "pre"
        self.ln_1 = NORMS[config.norm](config)
        self.attn = CausalSelfAttention(config)
        self.ln_2 = NORMS[config.norm](config)
        self.mlp = FEED_FORWARDS[config.activation](config)

    def forward(self, x: torch.Tensor, rotation=None, value_embedding=None) -> torch.Tensor:
        """x (B, T, C) -> same; rotation and value_embedding: CausalSelfAttention's."""
        if self.pre_norm:
            x = x + self.attn(self.ln_1(x), rotation, value_embedding)
            return x + self.mlp(self.ln_2(x))
        x = self.ln_1(x + self.attn(x, rotation, value_embedding))
        return self.ln_2(x + self.mlp(x))


# ---------------------------------------------------------------------------- shortcuts


class Smear(nn.Module):
    """Each token's embedding takes a gated share of the previous token's (modded-nanogpt's
    "smear", a 1-token look-back before any attention):
    x_t += scale * sigmoid(w . x_t[:12]) * x_{t-1}. scale starts at 0: no change at step 0."""

    GATE_CHANNELS = 12

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.channels = min(self.GATE_CHANNELS, config.n_embd)
        self.gate = nn.Linear(self.channels, 1, bias=False)
        self.scale = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor, previous: torch.Tensor | None = None) -> torch.Tensor:
        """x (B, T, C) -> same. previous: (B, 1, C), the embedding of the token before x's
        first (generation with the KV cache), or None: x's first token has none."""
        share = self.scale * torch.sigmoid(self.gate(x[..., : self.channels]))  # (B, T, 1)
        if previous is not None:
            return x + share * torch.cat((previous, x[:, :-1]), dim=1)
        return torch.cat((x[:, :1], x[:, 1:] + share[:, 1:] * x[:, :-1]), dim=1)


# ---------------------------------------------------------------------------- config

# options beyond GPT-2's, GPT-NeoX's and LLaMA's computation: a model with any of them on
# has no transformers architecture (minigpt.tools.convert) and no NumPy version
# (minigpt.fundamentals)
BEYOND_STANDARD = ("qk_norm", "logit_softcap", "value_embeddings", "smear", "x0_skip")


@dataclass
class GPTConfig:
    """Everything that defines the network. Option names are strings, so the config is
    plain data (it is stored in checkpoints as a dict)."""

    vocab_size: int = 65
    # the embedding and head hold vocab_size rounded up to a multiple of this (GPT-2's
    # 50257 -> 50304 = 786 x 64: faster matrix products); the extra rows are never output
    vocab_multiple: int = 1
    block_size: int = 128  # longest context, in tokens
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 128
    mlp_ratio: int = 4  # feed-forward hidden width = mlp_ratio * n_embd
    dropout: float = 0.0
    bias: bool = True  # biases in Linear and LayerNorm
    pos_encoding: str = "sinusoidal"  # sinusoidal | learned | rope
    rope_base: float = 10000.0
    norm: str = "layernorm"  # layernorm | rmsnorm
    norm_placement: str = "pre"  # pre | post
    activation: str = "gelu"  # relu | gelu | gelu_tanh (GPT-2's) | relu2 | swiglu
    attention: str = "sdpa"  # sdpa (fused kernel) | explicit (written-out softmax)
    qk_norm: bool = False  # RMS-normalize each head's queries and keys before attention
    tie_weights: bool = True  # LM head shares the token embedding matrix
    # the projections that write into the residual stream start at zero: every block is
    # the identity at step 0 (else GPT-2's 0.02 / sqrt(2 n_layer))
    zero_init_proj: bool = False
    logit_softcap: float = 0.0  # > 0: logits = cap * tanh(logits / cap), within (-cap, cap)
    # modded-nanogpt's shortcuts: each layer's own embedding of the tokens mixed into the
    # attention values; each token's embedding plus a gated share of the previous one's;
    # each block's input a learned mix of the residual stream and the embeddings (x0)
    value_embeddings: bool = False
    smear: bool = False
    x0_skip: bool = False
    # in training, keep only each block's input and recompute its activations in the
    # backward pass: less memory for about one more forward pass of compute
    activation_checkpointing: bool = False

    def __post_init__(self):
        positive = ("vocab_size", "vocab_multiple", "block_size", "n_layer", "n_head", "n_embd")
        for name in (*positive, "mlp_ratio"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name}={value!r} must be a positive integer")
        if self.n_embd % self.n_head:
            raise ValueError(
                f"n_embd={self.n_embd} is not divisible by n_head={self.n_head}: "
                "choose n_embd as a multiple of n_head"
            )
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout={self.dropout} must be in [0, 1)")
        if not self.logit_softcap >= 0.0:
            raise ValueError(f"logit_softcap={self.logit_softcap} must be >= 0 (0: no cap)")
        choices = {
            "pos_encoding": tuple(POSITIONS),
            "norm": tuple(NORMS),
            "norm_placement": ("pre", "post"),
            "activation": tuple(FEED_FORWARDS),
            "attention": ("sdpa", "explicit"),
        }
        for name, allowed in choices.items():
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"{name}={value!r} is not one of {', '.join(allowed)}")
        if self.pos_encoding in ("sinusoidal", "rope") and self.dims_for_pairs % 2:
            raise ValueError(
                f"pos_encoding={self.pos_encoding!r} needs an even "
                f"{'n_embd' if self.pos_encoding == 'sinusoidal' else 'head size'}, "
                f"got {self.dims_for_pairs}"
            )

    @property
    def padded_vocab_size(self) -> int:
        """Rows of the embedding and the head: vocab_size up to a multiple of vocab_multiple."""
        return -(-self.vocab_size // self.vocab_multiple) * self.vocab_multiple

    @property
    def head_size(self) -> int:
        return self.n_embd // self.n_head

    @property
    def dims_for_pairs(self) -> int:
        return self.n_embd if self.pos_encoding == "sinusoidal" else self.head_size

    def to_dict(self) -> dict:
        return asdict(self)


# ---------------------------------------------------------------------------- model


class GPT(nn.Module):
    """Token embedding + positions -> N blocks -> final norm -> LM head."""

    def __init__(self, config: GPTConfig):
        super().__init__()
        self.config = config
        self.wte = nn.Embedding(config.padded_vocab_size, config.n_embd)
        self.positions = POSITIONS[config.pos_encoding](config)
        self.drop = nn.Dropout(config.dropout)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layer))
        if config.value_embeddings:
            self.value_embeddings = nn.ModuleList(
                nn.Embedding(config.padded_vocab_size, config.n_embd) for _ in self.blocks
            )
        if config.smear:
            self.smear = Smear(config)
        if config.x0_skip:  # block i's input: residual_scales[i] * x + x0_scales[i] * x0
            self.residual_scales = nn.Parameter(torch.ones(config.n_layer))
            self.x0_scales = nn.Parameter(torch.zeros(config.n_layer))
        # post-norm blocks already end in a norm; pre-norm ones need one before the head
        self.ln_f = NORMS[config.norm](config) if config.norm_placement == "pre" else nn.Identity()
        self.lm_head = nn.Linear(config.n_embd, config.padded_vocab_size, bias=False)
        if config.tie_weights:
            self.lm_head.weight = self.wte.weight
        self.apply(self._init_weights)
        # the projections that write into the residual stream: GPT-2 scales them by
        # 1/sqrt(2 N), so the variance of the residual stream does not grow with depth
        for name, param in self.named_parameters():
            if name.endswith("c_proj.weight"):
                if config.zero_init_proj:
                    nn.init.zeros_(param)
                else:
                    nn.init.normal_(param, mean=0.0, std=0.02 / math.sqrt(2 * config.n_layer))
        if config.smear:  # the gate starts at 1/2 for every token (its scale at 0)
            nn.init.zeros_(self.smear.gate.weight)
        self.smear_previous: torch.Tensor | None = None  # generation: the last embedding fed

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def num_parameters(self, embeddings: bool = True) -> int:
        """Parameters counted once (the tied head is the embedding); without embeddings,
        those of the token and position tables left out (Kaplan et al.'s N), an untied
        head counted."""
        total = sum(p.numel() for p in self.parameters())
        if embeddings:
            return total
        return total - self.wte.weight.numel() - self._lookup_only_parameters()

    def _lookup_only_parameters(self) -> int:
        """The entries of the tables that are only looked up, never multiplied: learned
        positions and value embeddings (not the token embedding, the tied head's matrix)."""
        tables = [getattr(self.positions, "wpe", None), getattr(self, "value_embeddings", None)]
        return sum(p.numel() for table in tables if table is not None for p in table.parameters())

    def flops_per_token(self) -> int:
        """Training FLOPs per token (forward and backward) at full context: 6 N for the
        matrix products of N parameters plus 12 L H Q T for attention (PaLM, appendix B; L
        layers, H heads, Q head size, T block_size). Tables that are looked up, not
        multiplied (position and value embeddings; the token embedding when the head is
        untied), are not in N; a tied token embedding is, once, as the head."""
        c = self.config
        n = self.num_parameters() - self._lookup_only_parameters()
        if not c.tie_weights:
            n -= self.wte.weight.numel()
        return 6 * n + 12 * c.n_layer * c.n_head * c.head_size * c.block_size

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """idx (B, T) token ids -> logits (B, T, V), and the mean cross-entropy over the
        targets (B, T) that are not IGNORE_INDEX when targets are given.

        With the KV cache on (`enable_kv_cache`), idx continues the positions the cache
        holds and attends to them as well."""
        T = idx.size(1)
        start = self.cache_length
        if start + T > self.config.block_size:
            raise ValueError(
                f"positions up to {start + T} exceed block_size={self.config.block_size}: "
                "crop the input to the last block_size tokens"
            )
        x = self.wte(idx)  # (B, T, C)
        if self.config.smear:
            caching = self.blocks[0].attn.kv_cache is not None
            x_embedded = x
            x = self.smear(x, self.smear_previous if caching and start > 0 else None)
            self.smear_previous = x_embedded[:, -1:].detach() if caching else None
        x = x0 = self.drop(self.positions(x, start))  # (B, T, C)
        rotation = self.positions.rotation(start, T)  # (cos, sin), (T, hs) each, or None
        recompute = self.config.activation_checkpointing and self.training
        value_tables = self.value_embeddings if self.config.value_embeddings else None
        for i, block in enumerate(self.blocks):
            if self.config.x0_skip:
                x = self.residual_scales[i] * x + self.x0_scales[i] * x0
            value_embedding = value_tables[i](idx) if value_tables is not None else None
            if recompute:
                x = checkpoint(block, x, rotation, value_embedding, use_reentrant=False)
            else:
                x = block(x, rotation, value_embedding)
        logits = self.lm_head(self.ln_f(x))  # (B, T, V)
        if self.config.padded_vocab_size != self.config.vocab_size:
            # padding rows are no tokens: never sampled, no share of the softmax
            logits = logits[..., : self.config.vocab_size]
        if self.config.logit_softcap:
            cap = self.config.logit_softcap
            logits = cap * torch.tanh(logits / cap)
        if targets is None:
            return logits, None
        # (under bf16 autocast, cross_entropy runs in float32 by itself)
        loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=IGNORE_INDEX)
        return logits, loss

    @property
    def cache_length(self) -> int:
        """The positions the KV cache holds (0 without one): the next input starts there."""
        cache = self.blocks[0].attn.kv_cache
        return 0 if cache is None else cache.length

    def enable_kv_cache(self, batch_size: int) -> None:
        """Gives every attention layer an empty KV cache for batch_size sequences of up to
        block_size positions, on the model's device and dtype (see minigpt.core.sampling)."""
        weight = self.wte.weight
        for block in self.blocks:
            block.attn.kv_cache = KVCache(batch_size, self.config, weight.device, weight.dtype)

    def disable_kv_cache(self) -> None:
        for block in self.blocks:
            block.attn.kv_cache = None
        self.smear_previous = None

    def param_group_names(self) -> dict[str, str]:
        """The optimizer group of each parameter, by name: "hidden", the matrices inside
        the blocks (Muon's, with optimizer=muon); "embeddings", the token and position tables
        and an untied head; "no_decay", biases and norm gains. Read from this plain module's
        names and shapes, so that a wrapper that flattens or shards the parameters (FSDP)
        keeps the same groups."""
        groups = {}
        for name, p in self.named_parameters():
            if not p.requires_grad:
                continue
            if p.dim() < 2:
                groups[name] = "no_decay"
            else:
                groups[name] = "hidden" if name.startswith("blocks.") else "embeddings"
        return groups

    def param_groups(self, named_parameters=None, group_names=None) -> list[dict]:
        """Optimizer groups (`param_group_names`): "no_decay" without weight decay, the
        others with the optimizer's. named_parameters: those of a wrapped copy of this model
        (default: this module's); group_names: the names' groups, from the plain model."""
        group_names = group_names or self.param_group_names()
        named = self.named_parameters() if named_parameters is None else named_parameters
        members = {"hidden": [], "embeddings": [], "no_decay": []}
        for name, p in named:
            if name in group_names:
                members[group_names[name]].append(p)
        return [
            {"params": members["hidden"], "name": "hidden"},
            {"params": members["embeddings"], "name": "embeddings"},
            {"params": members["no_decay"], "weight_decay": 0.0, "name": "no_decay"},
        ]
