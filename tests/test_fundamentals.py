"""The NumPy implementation (minigpt.fundamentals) against finite differences and PyTorch."""

import ast
import math
from pathlib import Path

import numpy as np
import pytest

import minigpt.fundamentals.__main__ as fundamentals_cli
from minigpt.fundamentals import (
    CrossEntropy,
    Embedding,
    LanguageModel,
    LayerNorm,
    Linear,
    MultiHeadAttention,
    ReLU,
    ScaledDotProductAttention,
    sinusoidal_table,
)
from minigpt.fundamentals.checks import (
    GRAD_TOLERANCE,
    LM_CONFIGS,
    TORCH_TOLERANCE,
    CheckResult,
    check_layer,
    component_checks,
    language_model_check,
)
from minigpt.fundamentals.projects import (
    BigramModel,
    TwoLayerNet,
    bigram_entropy,
    char_counts,
    spirals,
    train_language_model,
    word_counts,
)

PACKAGE = Path(__file__).resolve().parents[1] / "minigpt" / "fundamentals"


@pytest.fixture(scope="module")
def components() -> dict[str, CheckResult]:
    return {r.name: r for r in component_checks()}


COMPONENTS = [
    "Linear",
    "ReLU",
    "GELU",
    "Softmax",
    "CrossEntropy (fused softmax)",
    "Embedding",
    "LayerNorm",
    "Sinusoidal positions",
    "Learned positions",
    "Scaled dot-product attention (causal)",
    "Multi-head attention",
    "Feed-forward (relu)",
    "Feed-forward (gelu)",
    "Decoder block (Add & Norm)",
    "Decoder block (pre-norm)",
]


@pytest.mark.parametrize("name", COMPONENTS)
def test_component_backward_matches_finite_differences_and_pytorch(components, name):
    result = components[name]
    assert result.grad_error < GRAD_TOLERANCE
    assert result.torch_error < TORCH_TOLERANCE


@pytest.mark.parametrize("name", list(LM_CONFIGS))
def test_converted_gpt_matches_pytorch_logits_loss_and_every_gradient(name):
    result = language_model_check(name, LM_CONFIGS[name])
    assert result.torch_error < TORCH_TOLERANCE
    assert result.grad_error < GRAD_TOLERANCE


@pytest.mark.parametrize(
    "option",
    [dict(pos_encoding="rope"), dict(qk_norm=True), dict(value_embeddings=True), dict(smear=True)],
)
def test_a_gpt_option_without_a_numpy_version_is_refused(option):
    from minigpt.core.model import GPT, GPTConfig

    shape = dict(vocab_size=11, block_size=8, n_layer=1, n_head=2, n_embd=8)
    model = GPT(GPTConfig(**(shape | option)))
    name = next(iter(option))
    with pytest.raises(ValueError, match=f"{name}=.* has no NumPy version"):
        LanguageModel.from_gpt(model.state_dict(), model.config.to_dict())


def test_the_checker_catches_a_wrong_backward_pass():
    class LeakyWrongReLU(ReLU):
        def backward(self, dy):
            return dy * (self.mask + 0.01)  # off by a little where x <= 0

    x = np.random.default_rng(0).standard_normal((4, 6))
    import torch

    result = check_layer("wrong", LeakyWrongReLU(), torch.relu, [x])
    assert result.grad_error > 1e-3 and result.torch_error > 1e-3


def test_sinusoidal_table_matches_the_formula():
    table = sinusoidal_table(20, 8)
    for pos in (0, 3, 19):
        for i in range(4):
            angle = pos / 10000 ** (2 * i / 8)
            assert table[pos, 2 * i] == pytest.approx(math.sin(angle))
            assert table[pos, 2 * i + 1] == pytest.approx(math.cos(angle))


def test_embedding_gradient_adds_up_repeated_ids():
    emb = Embedding(5, 3, np.random.default_rng(0))
    emb.forward(np.array([2, 2, 4, 2]))
    emb.backward(np.ones((4, 3)))
    assert emb.grads["W"][:, 0].tolist() == [0, 0, 3, 0, 1]


def test_float32_runs_in_float32_and_agrees_with_float64():
    idx = np.random.default_rng(0).integers(0, 9, size=(2, 8))
    lm64 = LanguageModel(9, 8, 2, 2, 16, np.random.default_rng(0), activation="gelu")
    lm32 = LanguageModel(
        9, 8, 2, 2, 16, np.random.default_rng(0), activation="gelu", dtype=np.float32
    )
    logits32, loss32 = lm32.forward(idx, idx)
    lm32.backward()
    assert logits32.dtype == np.float32
    assert all(g.dtype == np.float32 for _, _, g in lm32.named_parameters())
    logits64, loss64 = lm64.forward(idx, idx)
    np.testing.assert_allclose(logits32, logits64, rtol=1e-4, atol=1e-5)
    assert loss32 == pytest.approx(loss64, rel=1e-5)


def test_next_token_probabilities_are_a_distribution():
    lm = LanguageModel(9, 8, 1, 2, 16, np.random.default_rng(0))
    probs = lm.next_token_probs(np.array([[1, 2, 3]]))
    assert probs.shape == (1, 9) and np.allclose(probs.sum(), 1.0) and (probs > 0).all()


def tiny_lm() -> LanguageModel:
    return LanguageModel(5, 4, 1, 1, 4, np.random.default_rng(0))


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda: Linear(4, 3, np.random.default_rng(0)).forward(np.zeros((2, 5))),
            r"Linear expects input of shape \(\.\.\., 4\).*got shape \(2, 5\)",
        ),
        (lambda: LayerNorm(4).forward(np.zeros((2, 3))), r"LayerNorm .* got shape \(2, 3\)"),
        (
            lambda: MultiHeadAttention(8, 2, np.random.default_rng(0)).forward(np.zeros((5, 8))),
            r"MultiHeadAttention expects input .* got shape \(5, 8\)",
        ),
        (
            lambda: ScaledDotProductAttention().forward(
                np.zeros((2, 3, 4)), np.zeros((2, 3, 4)), np.zeros((2, 5, 4))
            ),
            r"got \(2, 3, 4\), \(2, 3, 4\), \(2, 5, 4\)",
        ),
        (
            lambda: CrossEntropy().forward(np.zeros((4, 3)), np.zeros(5, dtype=int)),
            r"logits \(N, V\) and targets \(N,\), got \(4, 3\) and \(5,\)",
        ),
        (
            lambda: Embedding(5, 2, np.random.default_rng(0)).forward(np.array([0.5])),
            "integer ids, got dtype float64",
        ),
        (
            lambda: Embedding(5, 2, np.random.default_rng(0)).forward(np.array([7])),
            r"ids must be in \[0, 5\), got 7..7",
        ),
        (lambda: tiny_lm().forward(np.zeros(3, int)), r"token ids \(B, T\), got shape \(3,\)"),
        (lambda: tiny_lm().forward(np.zeros((1, 6), int)), "length 6 exceeds block_size=4"),
    ],
)
def test_bad_shapes_are_named(call, message):
    with pytest.raises(ValueError, match=message):
        call()


def test_counts():
    assert char_counts("abca")["a"] == 2
    assert word_counts("To be, or not to be")["to"] == 2


def test_bigram_model_reaches_the_bigram_entropy():
    ids = np.random.default_rng(0).choice(6, size=3000, p=[0.4, 0.2, 0.15, 0.1, 0.1, 0.05])
    ids[1::2] = (ids[::2] + 1) % 6  # every second symbol follows from the one before
    model = BigramModel(6, np.random.default_rng(0))
    losses = model.fit(ids)
    assert losses[-1] == pytest.approx(bigram_entropy(ids, 6), abs=0.01)
    assert losses[-1] < losses[0] - 0.3


def test_two_layer_network_learns_the_spirals():
    x, y = spirals(100, np.random.default_rng(0))
    net = TwoLayerNet(2, 64, 2, np.random.default_rng(0))
    net.fit(x, y)
    assert net.accuracy(x, y) > 0.95


def test_numpy_language_model_learns_from_the_corpus():
    ids, vocab = fundamentals_cli.corpus_ids(8000)
    run = train_language_model(ids, vocab, steps=60, batch_size=8)
    assert run["held_out_after"] < run["held_out_before"] - 0.5
    assert np.mean(run["losses"][-10:]) < np.mean(run["losses"][:10])


def test_command_reports_failure_with_nonzero_exit(monkeypatch, capsys):
    broken = CheckResult("broken", grad_error=1.0, torch_error=0.0)
    monkeypatch.setattr(fundamentals_cli, "all_checks", lambda: [broken])
    monkeypatch.setattr(fundamentals_cli, "learning_checks", lambda: [("run", "ok", True)])
    assert fundamentals_cli.main() == 1
    assert "FAIL" in capsys.readouterr().out
    monkeypatch.setattr(fundamentals_cli, "all_checks", lambda: [CheckResult("fine", 0.0, 0.0)])
    assert fundamentals_cli.main() == 0


def test_only_the_proof_harness_imports_torch():
    """The NumPy code imports numpy, the standard library and itself; checks.py (the
    comparison with PyTorch) and __main__.py (which runs it) are the exceptions."""
    for path in PACKAGE.glob("*.py"):
        if path.name in ("checks.py", "__main__.py"):
            continue
        tree = ast.parse(path.read_text())
        modules = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
        modules += [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
        for module in modules:
            top = module.split(".")[0]
            assert top != "torch", f"{path.name} imports {module}"
            if top == "minigpt":
                assert module.startswith("minigpt.fundamentals"), f"{path.name} imports {module}"
