"""A GPT from fundamentals, in NumPy only: every layer with a hand-written backward pass.

Read in this order: layers.py (Linear, ReLU, GELU, Softmax, CrossEntropy, Embedding,
LayerNorm, positions), attention.py, transformer.py (feed-forward, decoder block, language
model), optim.py, projects.py (counts, bigram model, two-layer network), gradcheck.py.
`python -m minigpt.fundamentals` proves it all against finite differences and PyTorch
(checks.py, the one module here that imports torch).
"""

from minigpt.fundamentals.attention import MultiHeadAttention, ScaledDotProductAttention
from minigpt.fundamentals.layers import (
    GELU,
    CrossEntropy,
    Embedding,
    LayerNorm,
    LearnedPositions,
    Linear,
    ReLU,
    SinusoidalPositions,
    Softmax,
    sinusoidal_table,
)
from minigpt.fundamentals.transformer import DecoderBlock, FeedForward, LanguageModel

__all__ = [
    "GELU",
    "CrossEntropy",
    "DecoderBlock",
    "Embedding",
    "FeedForward",
    "LanguageModel",
    "LayerNorm",
    "LearnedPositions",
    "Linear",
    "MultiHeadAttention",
    "ReLU",
    "ScaledDotProductAttention",
    "SinusoidalPositions",
    "Softmax",
    "sinusoidal_table",
]
