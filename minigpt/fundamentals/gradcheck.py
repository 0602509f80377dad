"""Finite-difference gradient checking: the numerical derivative of a scalar function,
compared with a hand-written backward pass."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def numerical_gradient(f: Callable[[], float], x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences (f(x + eps) - f(x - eps)) / 2 eps for every entry of x, changing x
    in place and restoring it. Error O(eps^2): ~1e-10 relative in float64."""
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + eps
        up = f()
        x[i] = old - eps
        down = f()
        x[i] = old
        grad[i] = (up - down) / (2 * eps)
    return grad


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    """||a - b|| / (||a|| + ||b||): 0 when equal, scale-free, defined when both are 0."""
    denominator = np.linalg.norm(a) + np.linalg.norm(b)
    return float(np.linalg.norm(a - b) / denominator) if denominator > 0 else 0.0


def check_gradients(
    forward: Callable[[], np.ndarray],
    backward: Callable[[np.ndarray], object],
    arrays: dict[str, np.ndarray],
    analytic: Callable[[], dict[str, np.ndarray]],
    seed: int = 0,
) -> dict[str, float]:
    """Checks d/d(array) of L = sum(forward() * R), R a fixed random array.

    forward(): the output; backward(R): runs the backward pass for dL/doutput = R;
    analytic(): the gradients the backward pass produced, by the names of `arrays`.
    Returns the relative error of each."""
    out = forward()
    weights = np.random.default_rng(seed).standard_normal(np.shape(out))
    backward(weights)
    grads = analytic()
    loss = lambda: float((forward() * weights).sum())  # noqa: E731
    return {
        name: relative_error(grads[name], numerical_gradient(loss, x)) for name, x in arrays.items()
    }
