"""Attention in NumPy: scaled dot-product attention with the causal mask, and multi-head
self-attention, each with its backward pass. Shapes: B batch, H heads, T time, D head size,
C = H * D channels."""

from __future__ import annotations

import math

import numpy as np

from minigpt.fundamentals.layers import Layer, Linear, Softmax, check_last_dim


class ScaledDotProductAttention(Layer):
    """softmax(Q K^T / sqrt(D) + M) V, where M is -inf above the diagonal when causal (a
    position sees itself and the past). q, k, v (..., T, D) -> (..., T, D)."""

    def __init__(self, causal: bool = True):
        super().__init__()
        self.causal = causal
        self.softmax = Softmax()

    def forward(self, q: np.ndarray, k: np.ndarray, v: np.ndarray) -> np.ndarray:
        if not (q.shape == k.shape == v.shape) or q.ndim < 2:
            raise ValueError(
                f"attention expects q, k, v of one shape (..., T, D), got {q.shape}, "
                f"{k.shape}, {v.shape}"
            )
        T, D = q.shape[-2:]
        self.q, self.k, self.v, self.scale = q, k, v, 1.0 / math.sqrt(D)
        scores = q @ k.swapaxes(-1, -2) * self.scale  # (..., T, T)
        if self.causal:
            future = np.triu(np.ones((T, T), dtype=bool), k=1)
            scores = np.where(future, -np.inf, scores)
        self.weights = self.softmax.forward(scores)  # (..., T, T); 0 on masked entries
        return self.weights @ v

    def backward(self, dout: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        # out = P V  =>  dV = P^T dout,  dP = dout V^T
        dv = self.weights.swapaxes(-1, -2) @ dout  # (..., T, D)
        dweights = dout @ self.v.swapaxes(-1, -2)  # (..., T, T)
        # P = softmax(S), S = Q K^T / sqrt(D)  =>  dQ = dS K / sqrt(D),  dK = dS^T Q / sqrt(D)
        dscores = self.softmax.backward(dweights) * self.scale  # masked entries: P = 0, so 0
        dq = dscores @ self.k
        dk = dscores.swapaxes(-1, -2) @ self.q
        return dq, dk, dv


class MultiHeadAttention(Layer):
    """Causal multi-head self-attention: one Linear makes Q, K and V (C -> 3C), they are
    split into H heads of size D, attended separately, concatenated, and projected (C -> C).
    The layout of the weights matches minigpt.core.model.CausalSelfAttention."""

    def __init__(
        self,
        dim: int,
        n_head: int,
        rng: np.random.Generator,
        bias: bool = True,
        dtype=np.float64,
        proj_std: float = 0.02,
    ):
        super().__init__()
        if dim % n_head:
            raise ValueError(f"dim={dim} is not divisible by n_head={n_head}")
        self.dim, self.n_head = dim, n_head
        self.c_attn = Linear(dim, 3 * dim, rng, bias, dtype)
        self.attention = ScaledDotProductAttention(causal=True)
        self.c_proj = Linear(dim, dim, rng, bias, dtype, std=proj_std)

    def split_heads(self, x: np.ndarray) -> np.ndarray:  # (B, T, C) -> (B, H, T, D)
        B, T, C = x.shape
        return x.reshape(B, T, self.n_head, C // self.n_head).transpose(0, 2, 1, 3)

    @staticmethod
    def merge_heads(x: np.ndarray) -> np.ndarray:  # (B, H, T, D) -> (B, T, C)
        B, H, T, D = x.shape
        return x.transpose(0, 2, 1, 3).reshape(B, T, H * D)

    def forward(self, x: np.ndarray) -> np.ndarray:
        check_last_dim("MultiHeadAttention", x, self.dim, min_ndim=3)
        if x.ndim != 3:
            raise ValueError(f"MultiHeadAttention expects (B, T, {self.dim}), got {x.shape}")
        q, k, v = np.split(self.c_attn.forward(x), 3, axis=-1)  # (B, T, C) each
        heads = self.attention.forward(*(self.split_heads(t) for t in (q, k, v)))
        return self.c_proj.forward(self.merge_heads(heads))

    def backward(self, dy: np.ndarray) -> np.ndarray:
        dheads = self.split_heads(self.c_proj.backward(dy))  # (B, H, T, D)
        dq, dk, dv = (self.merge_heads(d) for d in self.attention.backward(dheads))
        return self.c_attn.backward(np.concatenate([dq, dk, dv], axis=-1))
