"""The proof of the NumPy implementation: every component's backward pass against finite
differences, and its forward and backward passes against PyTorch (torch functions, and the
modules of minigpt.core.model with the same weights), all in float64.

This is the yardstick, not part of the NumPy code: the one module of minigpt.fundamentals
that imports torch.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from minigpt.core import model as gpt
from minigpt.fundamentals.attention import MultiHeadAttention, ScaledDotProductAttention
from minigpt.fundamentals.gradcheck import check_gradients, numerical_gradient, relative_error
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
from minigpt.fundamentals.transformer import DecoderBlock, FeedForward, LanguageModel

GRAD_TOLERANCE = 1e-6  # finite differences vs backward pass, relative
TORCH_TOLERANCE = 1e-8  # NumPy vs PyTorch autograd, relative, float64


@dataclass
class CheckResult:
    name: str
    grad_error: float  # largest relative error, backward pass vs finite differences
    torch_error: float  # largest relative difference from PyTorch, outputs and gradients

    @property
    def passed(self) -> bool:
        return self.grad_error < GRAD_TOLERANCE and self.torch_error < TORCH_TOLERANCE


def torch_config(**overrides) -> gpt.GPTConfig:
    base = dict(vocab_size=7, block_size=6, n_layer=2, n_head=2, n_embd=8, dropout=0.0)
    base.update(pos_encoding="learned", activation="relu")
    return gpt.GPTConfig(**(base | overrides))


def perturbed(module: nn.Module, seed: int) -> nn.Module:
    """The module in float64 with noise on every parameter (so biases and gains are not the
    trivial 0 and 1 they start at)."""
    module = module.double()
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=generator, dtype=p.dtype))
    return module


def check_layer(
    name: str, layer: Layer, reference, inputs: list[np.ndarray], seed=0
) -> CheckResult:
    """Runs one component: layer.forward(*inputs) / layer.backward(dout), against finite
    differences and against `reference`, a torch function or a torch module whose weights
    the layer has loaded."""
    is_float = [x.dtype.kind == "f" for x in inputs]
    state = {}

    def backward(dout):
        layer.zero_grad()
        dinputs = layer.backward(dout)
        state["dinputs"] = dinputs if isinstance(dinputs, tuple) else (dinputs,)

    def analytic():
        grads = {f"input{i}": state["dinputs"][i] for i, f in enumerate(is_float) if f}
        grads.update({n: g.copy() for n, _, g in layer.named_parameters()})
        return grads

    arrays = {f"input{i}": x for i, (x, f) in enumerate(zip(inputs, is_float, strict=True)) if f}
    arrays.update({n: p for n, p, _ in layer.named_parameters()})
    grad_error = max(
        check_gradients(lambda: layer.forward(*inputs), backward, arrays, analytic, seed).values()
    )

    out = layer.forward(*inputs)
    dout = np.random.default_rng(seed + 1).standard_normal(np.shape(out))
    backward(dout)
    tensors = [
        torch.tensor(x, requires_grad=bool(f)) for x, f in zip(inputs, is_float, strict=True)
    ]
    out_t = reference(*tensors)
    (out_t * torch.tensor(dout)).sum().backward()
    errors = [relative_error(np.asarray(out), out_t.detach().numpy())]
    errors += [
        relative_error(state["dinputs"][i], t.grad.numpy())
        for i, t in enumerate(tensors)
        if is_float[i]
    ]
    if isinstance(reference, nn.Module):
        errors += compare_parameter_grads(layer, reference)
    return CheckResult(name, grad_error, max(errors))


def compare_parameter_grads(layer: Layer, reference: nn.Module) -> list[float]:
    """Relative differences between the layer's gradients and the torch module's, matched by
    loading the torch gradients into a copy of the layer as if they were weights."""
    as_layer = copy.deepcopy(layer)
    as_layer.load_state_dict({k: p.grad for k, p in reference.named_parameters()})
    theirs = [p for _, p, _ in as_layer.named_parameters()]
    ours = [g for _, _, g in layer.named_parameters()]
    return [relative_error(a, b) for a, b in zip(ours, theirs, strict=True)]


def loaded(layer: Layer, module: nn.Module) -> Layer:
    layer.load_state_dict(module.state_dict())
    return layer


def component_checks() -> list[CheckResult]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 5, 8))
    results = []

    linear = perturbed(nn.Linear(8, 6), 1)
    results.append(check_layer("Linear", loaded(Linear(8, 6, rng), linear), linear, [x]))
    results.append(check_layer("ReLU", ReLU(), torch.relu, [x]))
    results.append(check_layer("GELU", GELU(), F.gelu, [x]))
    results.append(check_layer("Softmax", Softmax(), lambda t: torch.softmax(t, -1), [x]))

    logits = rng.standard_normal((10, 7))
    targets = rng.integers(0, 7, size=10)
    targets[[2, 5]] = -100  # ignored (padding)
    results.append(
        check_layer(
            "CrossEntropy (fused softmax)",
            CrossEntropy(),
            lambda a, b: F.cross_entropy(a, b, ignore_index=-100),
            [logits, targets],
        )
    )

    embedding = perturbed(nn.Embedding(7, 8), 2)
    ids = np.array([[1, 3, 3, 0], [3, 6, 1, 1]])  # repeated ids: gradients must add up
    results.append(
        check_layer("Embedding", loaded(Embedding(7, 8, rng), embedding), embedding, [ids])
    )

    norm = perturbed(nn.LayerNorm(8), 3)
    results.append(check_layer("LayerNorm", loaded(LayerNorm(8), norm), norm, [x]))

    sinusoidal = gpt.SinusoidalPositions(torch_config(pos_encoding="sinusoidal")).double()
    results.append(check_layer("Sinusoidal positions", SinusoidalPositions(6, 8), sinusoidal, [x]))
    learned = perturbed(gpt.LearnedPositions(torch_config()), 4)
    results.append(
        check_layer("Learned positions", loaded(LearnedPositions(6, 8, rng), learned), learned, [x])
    )

    q, k, v = (rng.standard_normal((2, 2, 5, 4)) for _ in range(3))
    sdpa = lambda a, b, c: F.scaled_dot_product_attention(a, b, c, is_causal=True)  # noqa: E731
    results.append(
        check_layer(
            "Scaled dot-product attention (causal)", ScaledDotProductAttention(), sdpa, [q, k, v]
        )
    )

    attn = perturbed(gpt.CausalSelfAttention(torch_config()), 5)
    results.append(
        check_layer("Multi-head attention", loaded(MultiHeadAttention(8, 2, rng), attn), attn, [x])
    )

    for activation in ("relu", "gelu"):
        mlp = perturbed(gpt.MLP(torch_config(activation=activation)), 6)
        ffn = loaded(FeedForward(8, 32, rng, activation), mlp)
        results.append(check_layer(f"Feed-forward ({activation})", ffn, mlp, [x]))

    for placement, title in (("post", "Add & Norm"), ("pre", "pre-norm")):
        block = perturbed(gpt.Block(torch_config(norm_placement=placement, activation="gelu")), 7)
        ours = loaded(DecoderBlock(8, 2, rng, "gelu", placement), block)
        results.append(check_layer(f"Decoder block ({title})", ours, block, [x]))
    return results


LM_CONFIGS = {
    "LM: sinusoidal, ReLU, post-norm": dict(pos_encoding="sinusoidal", norm_placement="post"),
    "LM: sinusoidal, GELU, pre-norm": dict(pos_encoding="sinusoidal", activation="gelu"),
    "LM: learned, ReLU, pre-norm, untied, no bias": dict(tie_weights=False, bias=False),
    "LM: learned, GELU, post-norm, 3 layers": dict(
        activation="gelu", norm_placement="post", n_layer=3
    ),
}


def language_model_check(name: str, overrides: dict, seed: int = 0) -> CheckResult:
    """A minigpt.core.model.GPT converted into the NumPy LanguageModel: logits, loss and every
    parameter gradient against PyTorch autograd, and the NumPy backward pass against
    finite differences."""
    config = torch_config(**overrides)
    torch.manual_seed(seed)
    model = perturbed(gpt.GPT(config), seed).eval()
    lm = LanguageModel.from_gpt(model.state_dict(), config.to_dict())
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, config.vocab_size, size=(2, config.block_size))
    targets = rng.integers(0, config.vocab_size, size=(2, config.block_size))
    targets[1, -2:] = -100  # padded positions

    lm.zero_grad()
    logits, loss = lm.forward(idx, targets)
    lm.backward()
    logits_t, loss_t = model(torch.tensor(idx), torch.tensor(targets))
    loss_t.backward()
    errors = [
        relative_error(logits, logits_t.detach().numpy()),
        abs(loss - loss_t.item()) / abs(loss),
    ]
    errors += compare_parameter_grads(lm, model)

    grad_errors = []
    for _, param, grad in lm.named_parameters():
        analytic = grad.copy()
        numeric = numerical_gradient(lambda: lm.forward(idx, targets)[1], param)
        grad_errors.append(relative_error(analytic, numeric))
    return CheckResult(name, max(grad_errors), max(errors))


def all_checks() -> list[CheckResult]:
    return component_checks() + [language_model_check(n, o) for n, o in LM_CONFIGS.items()]
