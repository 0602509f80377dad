"""The decoder-only transformer in NumPy: feed-forward, decoder block (pre-norm or post-norm
"Add & Norm"), and a language model of N stacked blocks, each with its backward pass.
The parameter names and layouts match minigpt.core.model.GPT, so `LanguageModel.from_gpt` can
load a trained GPT's weights."""

from __future__ import annotations

import math

import numpy as np

from minigpt.fundamentals.attention import MultiHeadAttention
from minigpt.fundamentals.layers import (
    GELU,
    CrossEntropy,
    Embedding,
    Layer,
    LayerNorm,
    LearnedPositions,
    Linear,
    ReLU,
    SinusoidalPositions,
    Softmax,
)


class FeedForward(Layer):
    """Linear(C, 4C) -> ReLU or GELU -> Linear(4C, C), applied at every position."""

    def __init__(
        self,
        dim: int,
        hidden: int,
        rng: np.random.Generator,
        activation: str = "relu",
        bias: bool = True,
        dtype=np.float64,
        proj_std: float = 0.02,
    ):
        super().__init__()
        if activation not in ("relu", "gelu"):
            raise ValueError(f"activation={activation!r} is not one of relu, gelu")
        self.c_fc = Linear(dim, hidden, rng, bias, dtype)
        self.act = ReLU() if activation == "relu" else GELU()
        self.c_proj = Linear(hidden, dim, rng, bias, dtype, std=proj_std)

    def forward(self, x: np.ndarray) -> np.ndarray:
        return self.c_proj.forward(self.act.forward(self.c_fc.forward(x)))

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return self.c_fc.backward(self.act.backward(self.c_proj.backward(dy)))


class DecoderBlock(Layer):
    """Attention and feed-forward, each inside a residual connection with a LayerNorm.

    pre-norm:              h = x + attn(ln_1(x));  y = h + ffn(ln_2(h))
    post-norm (Add & Norm): h = ln_1(x + attn(x));  y = ln_2(h + ffn(h))

    A residual connection y = x + f(x) passes the gradient twice: dx = dy + f'(x)^T dy.
    """

    def __init__(
        self,
        dim: int,
        n_head: int,
        rng: np.random.Generator,
        activation="relu",
        norm_placement: str = "pre",
        bias: bool = True,
        mlp_ratio: int = 4,
        dtype=np.float64,
        proj_std: float = 0.02,
    ):
        super().__init__()
        if norm_placement not in ("pre", "post"):
            raise ValueError(f"norm_placement={norm_placement!r} is not one of pre, post")
        self.pre_norm = norm_placement == "pre"
        self.ln_1 = LayerNorm(dim, bias, dtype=dtype)
        self.attn = MultiHeadAttention(dim, n_head, rng, bias, dtype, proj_std)
        self.ln_2 = LayerNorm(dim, bias, dtype=dtype)
        self.mlp = FeedForward(dim, mlp_ratio * dim, rng, activation, bias, dtype, proj_std)

    def forward(self, x: np.ndarray) -> np.ndarray:
        if self.pre_norm:
            h = x + self.attn.forward(self.ln_1.forward(x))
            return h + self.mlp.forward(self.ln_2.forward(h))
        h = self.ln_1.forward(x + self.attn.forward(x))
        return self.ln_2.forward(h + self.mlp.forward(h))

    def backward(self, dy: np.ndarray) -> np.ndarray:
        if self.pre_norm:
            dh = dy + self.ln_2.backward(self.mlp.backward(dy))
            return dh + self.ln_1.backward(self.attn.backward(dh))
        dsum = self.ln_2.backward(dy)  # gradient of h + mlp(h)
        dh = dsum + self.mlp.backward(dsum)
        dsum = self.ln_1.backward(dh)  # gradient of x + attn(x)
        return dsum + self.attn.backward(dsum)


class LanguageModel(Layer):
    """Token embedding + positions -> N decoder blocks -> final LayerNorm (pre-norm only)
    -> projection to the vocabulary (tied to the embedding by default) -> next-token logits.

    forward(idx (B, T)) -> logits (B, T, V); with targets, also the mean cross-entropy.
    backward() after a forward with targets fills every parameter's gradient."""

    def __init__(
        self,
        vocab_size: int,
        block_size: int,
        n_layer: int,
        n_head: int,
        dim: int,
        rng: np.random.Generator,
        pos_encoding: str = "sinusoidal",
        activation: str = "relu",
        norm_placement: str = "pre",
        bias: bool = True,
        tie_weights: bool = True,
        mlp_ratio: int = 4,
        dtype=np.float64,
    ):
        super().__init__()
        if pos_encoding not in ("sinusoidal", "learned"):
            raise ValueError(f"pos_encoding={pos_encoding!r} is not one of sinusoidal, learned")
        self.vocab_size, self.block_size = vocab_size, block_size
        self.wte = Embedding(vocab_size, dim, rng, dtype)
        if pos_encoding == "sinusoidal":
            self.positions = SinusoidalPositions(block_size, dim, dtype)
        else:
            self.positions = LearnedPositions(block_size, dim, rng, dtype)
        proj_std = 0.02 / math.sqrt(2 * n_layer)  # GPT-2's scaled residual projections
        self.blocks = [
            DecoderBlock(
                dim, n_head, rng, activation, norm_placement, bias, mlp_ratio, dtype, proj_std
            )
            for _ in range(n_layer)
        ]
        self.ln_f = LayerNorm(dim, bias, dtype=dtype) if norm_placement == "pre" else None
        self.tie_weights = tie_weights
        self.lm_head = None if tie_weights else Linear(dim, vocab_size, rng, False, dtype)
        self.loss_fn = CrossEntropy()
        self.softmax = Softmax()

    def forward(self, idx: np.ndarray, targets: np.ndarray | None = None):
        if idx.ndim != 2:
            raise ValueError(f"LanguageModel expects token ids (B, T), got shape {idx.shape}")
        if idx.shape[1] > self.block_size:
            raise ValueError(f"sequence length {idx.shape[1]} exceeds block_size={self.block_size}")
        x = self.positions.forward(self.wte.forward(idx))  # (B, T, C)
        for block in self.blocks:
            x = block.forward(x)
        self.h = self.ln_f.forward(x) if self.ln_f else x  # (B, T, C)
        if self.tie_weights:  # the embedding matrix (V, C) maps back to the vocabulary
            logits = self.h @ self.wte.params["W"].T  # (B, T, V)
        else:
            logits = self.lm_head.forward(self.h)  # (B, T, V)
        if targets is None:
            return logits, None
        if targets.shape != idx.shape:
            raise ValueError(f"targets shape {targets.shape} != idx shape {idx.shape}")
        loss = self.loss_fn.forward(logits.reshape(-1, self.vocab_size), targets.reshape(-1))
        return logits, loss

    def next_token_probs(self, idx: np.ndarray) -> np.ndarray:
        """Softmax over the vocabulary of the last position's logits: (B, V)."""
        logits, _ = self.forward(idx)
        return self.softmax.forward(logits[:, -1, :])

    def backward(self) -> None:
        dlogits = self.loss_fn.backward().reshape(self.h.shape[:2] + (self.vocab_size,))
        if self.tie_weights:
            h2d = self.h.reshape(-1, self.h.shape[-1])
            self.wte.grads["W"] += dlogits.reshape(-1, self.vocab_size).T @ h2d
            dx = dlogits @ self.wte.params["W"]  # (B, T, C)
        else:
            dx = self.lm_head.backward(dlogits)
        if self.ln_f:
            dx = self.ln_f.backward(dx)
        for block in reversed(self.blocks):
            dx = block.backward(dx)
        self.wte.backward(self.positions.backward(dx))

    @classmethod
    def from_gpt(cls, state_dict: dict, config: dict, dtype=np.float64) -> LanguageModel:
        """The NumPy model with the weights of a minigpt.core.model.GPT: `state_dict` from
        `gpt.state_dict()` (tensors or arrays), `config` from `gpt.config.to_dict()`.
        PyTorch's Linear stores W as (C_out, C_in); here it is (C_in, C_out)."""
        supported = {  # the first value: what a config saved before the option had
            "pos_encoding": ("sinusoidal", "learned"),
            "norm": ("layernorm",),
            "activation": ("relu", "gelu"),
            "attention": ("sdpa", "explicit"),
            # minigpt.core.model.BEYOND_STANDARD, off (named here: this module needs no torch)
            "qk_norm": (False,),
            "logit_softcap": (0.0,),
            "value_embeddings": (False,),
            "smear": (False,),
            "x0_skip": (False,),
        }
        for key, allowed in supported.items():
            value = config.get(key, allowed[0])
            if value not in allowed:
                raise ValueError(f"{key}={value!r} has no NumPy version; use one of {allowed}")
        model = cls(
            config["vocab_size"],
            config["block_size"],
            config["n_layer"],
            config["n_head"],
            config["n_embd"],
            np.random.default_rng(0),
            config["pos_encoding"],
            config["activation"],
            config["norm_placement"],
            config["bias"],
            config["tie_weights"],
            config["mlp_ratio"],
            dtype,
        )
        state = {
            k: v
            for k, v in state_dict.items()
            if not (config["tie_weights"] and k == "lm_head.weight")
        }
        model.load_state_dict(state)
        return model
