"""Optimizers in NumPy: they update a model's parameters in place from its gradients."""

from __future__ import annotations

import numpy as np

from minigpt.fundamentals.layers import Layer


class SGD:
    """p <- p - lr * g."""

    def __init__(self, model: Layer, lr: float = 0.1):
        self.model, self.lr = model, lr

    def step(self) -> None:
        for _, param, grad in self.model.named_parameters():
            param -= self.lr * grad


class Adam:
    """Adam (Kingma & Ba): per-parameter steps from running means of the gradient (m) and
    of its square (v), bias-corrected for their zero start."""

    def __init__(self, model: Layer, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8):
        self.model, self.lr, self.betas, self.eps = model, lr, betas, eps
        self.t = 0
        self.m = {name: np.zeros_like(p) for name, p, _ in model.named_parameters()}
        self.v = {name: np.zeros_like(p) for name, p, _ in model.named_parameters()}

    def step(self) -> None:
        self.t += 1
        b1, b2 = self.betas
        for name, param, grad in self.model.named_parameters():
            self.m[name] = b1 * self.m[name] + (1 - b1) * grad
            self.v[name] = b2 * self.v[name] + (1 - b2) * grad**2
            m_hat = self.m[name] / (1 - b1**self.t)
            v_hat = self.v[name] / (1 - b2**self.t)
            param -= self.lr * m_hat / (np.sqrt(v_hat) + self.eps)
