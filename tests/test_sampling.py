import pytest
import torch

from minigpt.model import GPT, GPTConfig
from minigpt.sampling import filter_top_k, filter_top_p, generate, next_token


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=13, block_size=8, n_layer=2, n_head=2, n_embd=16)).eval()


def test_greedy_is_deterministic_and_takes_the_argmax(model):
    prompt = torch.tensor([[1, 2, 3]])
    a = generate(model, prompt, 12, temperature=0)
    b = generate(model, prompt, 12, temperature=0)
    assert torch.equal(a, b)
    # each new token is the argmax of the model's logits for the context before it
    for t in range(3, a.size(1)):
        logits, _ = model(a[:, max(0, t - 8) : t])
        assert a[0, t].item() == logits[0, -1].argmax().item()


def test_generation_runs_past_block_size_with_a_cropped_context(model):
    out = generate(model, torch.tensor([[1] * 8]), 20, temperature=0)
    assert out.shape == (1, 28)


def test_top_k_1_and_tiny_top_p_equal_greedy(model):
    prompt = torch.tensor([[4, 5], [6, 7]])
    greedy = generate(model, prompt, 15, temperature=0)
    g = torch.Generator().manual_seed(3)
    assert torch.equal(generate(model, prompt, 15, temperature=1.0, top_k=1, generator=g), greedy)
    assert torch.equal(
        generate(model, prompt, 15, temperature=1.0, top_p=1e-6, generator=g), greedy
    )


def test_same_seed_same_sample(model):
    prompt = torch.tensor([[1]])
    a = generate(model, prompt, 20, top_p=0.9, generator=torch.Generator().manual_seed(7))
    b = generate(model, prompt, 20, top_p=0.9, generator=torch.Generator().manual_seed(7))
    assert torch.equal(a, b)


def test_filter_top_k_keeps_the_k_largest():
    logits = torch.tensor([[1.0, 5.0, 3.0, 4.0, 2.0]])
    kept = torch.isfinite(filter_top_k(logits, 2))
    assert kept.tolist() == [[False, True, False, True, False]]


def test_filter_top_p_keeps_the_smallest_nucleus():
    probs = torch.tensor([[0.05, 0.5, 0.3, 0.15]])
    logits = probs.log()
    assert torch.isfinite(filter_top_p(logits, 0.5)).tolist() == [[False, True, False, False]]
    assert torch.isfinite(filter_top_p(logits, 0.8)).tolist() == [[False, True, True, False]]
    assert torch.isfinite(filter_top_p(logits, 0.81)).tolist() == [[False, True, True, True]]
    assert torch.isfinite(filter_top_p(logits, 1.0)).all()


def test_top_k_and_top_p_combine():
    torch.manual_seed(0)
    logits = torch.tensor([[0.0, 3.0, 2.9, 2.8, -1.0]]).repeat(2000, 1)
    tokens = next_token(logits, temperature=1.0, top_k=3, top_p=0.5).flatten()
    assert set(tokens.tolist()) <= {1, 2}


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(temperature=-1.0), "temperature=-1.0"),
        (dict(top_p=0.0), "top_p=0.0"),
        (dict(top_p=1.5), "top_p=1.5"),
        (dict(top_k=0), "top_k=0"),
    ],
)
def test_bad_sampling_values_are_rejected(model, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate(model, torch.tensor([[1]]), 3, **kwargs)
