"""Basic layers in NumPy, each with a forward pass and a hand-written backward pass.

Convention: `forward` computes the output and keeps what the backward pass needs;
`backward(dy)` takes dL/d(output), adds dL/d(parameter) into `self.grads` (adding, so that a
weight used twice, like a tied embedding, collects both gradients) and returns dL/d(input).
Shapes: N rows, B batch, T time, C channels, V vocabulary.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import numpy as np

_erf = np.frompyfunc(math.erf, 1, 1)


def check_last_dim(name: str, x: np.ndarray, size: int, min_ndim: int = 1) -> None:
    if x.ndim < min_ndim or x.shape[-1] != size:
        raise ValueError(
            f"{name} expects input of shape (..., {size}) with at least {min_ndim} dims, "
            f"got shape {x.shape}"
        )


class Layer:
    """Holds parameters and their gradients; layers held as attributes (or in lists) are
    children, and their parameters are listed with dotted names."""

    def __init__(self):
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}

    def add_param(self, name: str, value: np.ndarray) -> None:
        self.params[name] = value
        self.grads[name] = np.zeros_like(value)

    def children(self) -> Iterator[tuple[str, Layer]]:
        for name, value in vars(self).items():
            if isinstance(value, Layer):
                yield name, value
            elif isinstance(value, list):
                for i, item in enumerate(value):
                    if isinstance(item, Layer):
                        yield f"{name}.{i}", item

    def named_parameters(self, prefix: str = "") -> Iterator[tuple[str, np.ndarray, np.ndarray]]:
        """(name, parameter, gradient) for this layer and its children, each array once."""
        seen: set[int] = set()
        for name, param, grad in self._named_parameters(prefix):
            if id(param) not in seen:
                seen.add(id(param))
                yield name, param, grad

    def _named_parameters(self, prefix: str):
        for name, param in self.params.items():
            yield prefix + name, param, self.grads[name]
        for child_name, child in self.children():
            yield from child._named_parameters(f"{prefix}{child_name}.")

    def zero_grad(self) -> None:
        for _, _, grad in self.named_parameters():
            grad[...] = 0.0

    def layer_at(self, path: str) -> Layer:
        """The layer at a dotted path such as "blocks.0.attn.c_attn" ("" is self)."""
        layer = self
        for part in filter(None, path.split(".")):
            layer = layer[int(part)] if isinstance(layer, list) else getattr(layer, part)
        return layer

    def load_state_dict(self, state_dict: dict) -> None:
        """Copies in a PyTorch module's weights (tensors or arrays), named as PyTorch names
        them ("attn.c_attn.weight"). PyTorch's Linear stores W as (C_out, C_in); here it is
        (C_in, C_out). Every parameter here must receive a value."""
        loaded = set()
        for key, value in state_dict.items():
            array = np.asarray(value.detach().cpu() if hasattr(value, "detach") else value)
            path, kind = key.rpartition(".")[::2]
            layer = self.layer_at(path)
            if isinstance(layer, Linear):
                name, array = ("W", array.T) if kind == "weight" else ("b", array)
            elif isinstance(layer, LayerNorm):
                name = "g" if kind == "weight" else "b"
            else:
                name = "W"
            param = layer.params[name]
            if param.shape != array.shape:
                raise ValueError(f"{key}: shape {array.shape} does not fit {param.shape}")
            param[...] = array
            loaded.add(id(param))
        missing = [name for name, param, _ in self.named_parameters() if id(param) not in loaded]
        if missing:
            raise ValueError(f"the state dict has no values for {missing}")


class Linear(Layer):
    """y = x W + b, with W (C_in, C_out). x (..., C_in) -> y (..., C_out)."""

    def __init__(
        self,
        c_in: int,
        c_out: int,
        rng: np.random.Generator,
        bias: bool = True,
        dtype=np.float64,
        std: float = 0.02,
    ):
        super().__init__()
        self.c_in, self.c_out = c_in, c_out
        self.add_param("W", (std * rng.standard_normal((c_in, c_out))).astype(dtype))
        if bias:
            self.add_param("b", np.zeros(c_out, dtype=dtype))

    def forward(self, x: np.ndarray) -> np.ndarray:
        check_last_dim("Linear", x, self.c_in)
        self.x = x
        y = x @ self.params["W"]
        return y + self.params["b"] if "b" in self.params else y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        x2d, dy2d = self.x.reshape(-1, self.c_in), dy.reshape(-1, self.c_out)
        self.grads["W"] += x2d.T @ dy2d  # dL/dW = x^T dy, summed over all rows
        if "b" in self.params:
            self.grads["b"] += dy2d.sum(axis=0)
        return dy @ self.params["W"].T  # dL/dx = dy W^T


class ReLU(Layer):
    """max(0, x); the gradient passes where x > 0."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.mask = x > 0
        return x * self.mask

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return dy * self.mask


class GELU(Layer):
    """x·Φ(x), Φ the standard normal CDF (the exact form, as torch.nn.GELU)."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        self.x = x
        self.cdf = 0.5 * (1.0 + _erf(x / math.sqrt(2.0)).astype(x.dtype))
        return x * self.cdf

    def backward(self, dy: np.ndarray) -> np.ndarray:
        pdf = np.exp(-0.5 * self.x**2) / math.sqrt(2.0 * math.pi)
        return dy * (self.cdf + self.x * pdf)  # d/dx x·Φ(x) = Φ(x) + x·φ(x)


class Softmax(Layer):
    """exp(x_i) / sum_j exp(x_j) along the last axis."""

    def forward(self, x: np.ndarray) -> np.ndarray:
        e = np.exp(x - x.max(axis=-1, keepdims=True))  # shifted: same result, no overflow
        self.y = e / e.sum(axis=-1, keepdims=True)
        return self.y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        # Jacobian diag(y) - y y^T applied to dy: y * (dy - <dy, y>)
        return self.y * (dy - (dy * self.y).sum(axis=-1, keepdims=True))


class CrossEntropy(Layer):
    """Mean negative log-likelihood of the targets under softmax(logits), fused with the
    softmax: dL/dlogits = (softmax(logits) - onehot(target)) / N. Rows whose target is
    `ignore_index` count neither in the loss nor in N."""

    def __init__(self, ignore_index: int = -100):
        super().__init__()
        self.ignore_index = ignore_index

    def forward(self, logits: np.ndarray, targets: np.ndarray) -> float:
        if logits.ndim != 2 or targets.shape != logits.shape[:1]:
            raise ValueError(
                f"CrossEntropy expects logits (N, V) and targets (N,), got {logits.shape} "
                f"and {targets.shape}"
            )
        shifted = logits - logits.max(axis=-1, keepdims=True)
        log_probs = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
        self.keep = targets != self.ignore_index
        self.count = max(int(self.keep.sum()), 1)
        self.targets = np.where(self.keep, targets, 0)
        self.probs = np.exp(log_probs)
        picked = log_probs[np.arange(len(targets)), self.targets]
        return float(-(picked * self.keep).sum() / self.count)

    def backward(self, dloss: float = 1.0) -> np.ndarray:
        dlogits = self.probs.copy()
        dlogits[np.arange(len(self.targets)), self.targets] -= 1.0
        return dlogits * self.keep[:, None] * (float(dloss) / self.count)


class Embedding(Layer):
    """Row lookup: idx (...) integer ids -> W[idx] (..., C). The gradient of a row is the
    sum of the gradients of every position that looked it up."""

    def __init__(
        self, num: int, dim: int, rng: np.random.Generator, dtype=np.float64, std: float = 0.02
    ):
        super().__init__()
        self.num = num
        self.add_param("W", (std * rng.standard_normal((num, dim))).astype(dtype))

    def forward(self, idx: np.ndarray) -> np.ndarray:
        if not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(f"Embedding expects integer ids, got dtype {idx.dtype}")
        if idx.size and (idx.min() < 0 or idx.max() >= self.num):
            raise ValueError(
                f"Embedding ids must be in [0, {self.num}), got {idx.min()}..{idx.max()}"
            )
        self.idx = idx
        return self.params["W"][idx]

    def backward(self, dy: np.ndarray) -> None:
        np.add.at(self.grads["W"], self.idx, dy)  # scatter-add: repeated ids accumulate


class LayerNorm(Layer):
    """(x - mean) / sqrt(var + eps) * g + b over the last axis (biased variance)."""

    def __init__(self, dim: int, bias: bool = True, eps: float = 1e-5, dtype=np.float64):
        super().__init__()
        self.dim, self.eps = dim, eps
        self.add_param("g", np.ones(dim, dtype=dtype))
        if bias:
            self.add_param("b", np.zeros(dim, dtype=dtype))

    def forward(self, x: np.ndarray) -> np.ndarray:
        check_last_dim("LayerNorm", x, self.dim)
        mean = x.mean(axis=-1, keepdims=True)
        self.inv_std = 1.0 / np.sqrt(x.var(axis=-1, keepdims=True) + self.eps)
        self.xhat = (x - mean) * self.inv_std
        y = self.xhat * self.params["g"]
        return y + self.params["b"] if "b" in self.params else y

    def backward(self, dy: np.ndarray) -> np.ndarray:
        lead = tuple(range(dy.ndim - 1))
        self.grads["g"] += (dy * self.xhat).sum(axis=lead)
        if "b" in self.params:
            self.grads["b"] += dy.sum(axis=lead)
        dxhat = dy * self.params["g"]
        # through the normalization: the mean and the variance depend on every input
        return self.inv_std * (
            dxhat
            - dxhat.mean(axis=-1, keepdims=True)
            - self.xhat * (dxhat * self.xhat).mean(axis=-1, keepdims=True)
        )


def sinusoidal_table(block_size: int, dim: int, dtype=np.float64) -> np.ndarray:
    """PE[t, 2i] = sin(t / 10000^(2i/C)), PE[t, 2i+1] = cos(t / 10000^(2i/C))."""
    if dim % 2:
        raise ValueError(f"sinusoidal positions need an even dimension, got {dim}")
    position = np.arange(block_size)[:, None]  # (T, 1)
    inv_freq = 10000.0 ** (-np.arange(0, dim, 2) / dim)  # (C/2,)
    table = np.zeros((block_size, dim))
    table[:, 0::2] = np.sin(position * inv_freq)
    table[:, 1::2] = np.cos(position * inv_freq)
    return table.astype(dtype)


class SinusoidalPositions(Layer):
    """x * sqrt(C) + PE[:T] for x (B, T, C): the fixed table, no parameters (the embedding is
    scaled so that the table, of size ~1, does not drown it)."""

    def __init__(self, block_size: int, dim: int, dtype=np.float64):
        super().__init__()
        self.scale = math.sqrt(dim)
        self.table = sinusoidal_table(block_size, dim, dtype)

    def forward(self, x: np.ndarray) -> np.ndarray:
        return x * self.scale + self.table[: x.shape[1]]

    def backward(self, dy: np.ndarray) -> np.ndarray:
        return dy * self.scale


class LearnedPositions(Layer):
    """x + P[:T] for x (B, T, C), P a learned (block_size, C) table."""

    def __init__(self, block_size: int, dim: int, rng: np.random.Generator, dtype=np.float64):
        super().__init__()
        self.wpe = Embedding(block_size, dim, rng, dtype)

    def forward(self, x: np.ndarray) -> np.ndarray:
        return x + self.wpe.forward(np.arange(x.shape[1]))

    def backward(self, dy: np.ndarray) -> np.ndarray:
        self.wpe.backward(dy.sum(axis=0))  # every sequence adds to the same rows
        return dy
