import copy

import pytest
import torch

from minigpt.core.model import GPT, GPTConfig
from minigpt.core.sampling import filter_top_k, filter_top_p, generate, generate_tokens, next_token


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return GPT(GPTConfig(vocab_size=13, block_size=8, n_layer=2, n_head=2, n_embd=16)).eval()


def test_greedy_is_deterministic_and_takes_the_argmax(model):
    prompt = torch.tensor([[1, 2, 3]])
    a = generate(model, prompt, 12, temperature=0)
    b = generate(model, prompt, 12, temperature=0)
    assert torch.equal(a, b)
    # while the context fits (block_size 8), each new token is the argmax of the model's
    # logits for everything before it
    for t in range(3, 9):
        logits, _ = model(a[:, :t])
        assert a[0, t].item() == logits[0, -1].argmax().item()


def test_a_full_context_restarts_from_its_last_keep_tokens(model):
    out = generate(model, torch.tensor([[1, 2, 3]]), 12, temperature=0, keep=3)
    # tokens 3..7 fill the context to 8; token 8 makes it 9 > 8, so the context restarts
    # from tokens 6..8, and token 9 is predicted from those three alone
    logits, _ = model(out[:, 6:9])
    assert out[0, 9].item() == logits[0, -1].argmax().item()


def test_generation_runs_past_block_size_with_a_cropped_context():
    """Past block_size, each token is the argmax of the model over the context as the rule
    says: the context grows to block_size (8), then restarts from its last block_size // 2
    (not a window sliding by one token, which gives other tokens here)."""
    torch.manual_seed(1)
    model = GPT(GPTConfig(vocab_size=13, block_size=8, n_layer=2, n_head=2, n_embd=16)).eval()
    with torch.no_grad():
        for weight in model.parameters():
            weight.mul_(8)  # sharper logits: greedy decoding does not settle on one token
    out = generate(model, torch.tensor([list(range(1, 9))]), 20, temperature=0)

    def greedy(next_context):
        context, tokens = list(range(1, 9)), []
        with torch.no_grad():
            for _ in range(20):
                logits, _ = model(torch.tensor([context]))
                tokens.append(int(logits[0, -1].argmax()))
                context = next_context(context + tokens[-1:])
        return tokens

    restarting = greedy(lambda c: c[-4:] if len(c) > 8 else c)
    sliding = greedy(lambda c: c[-8:])
    assert out[0, 8:].tolist() == restarting != sliding


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
    other = generate(model, prompt, 20, top_p=0.9, generator=torch.Generator().manual_seed(8))
    assert not torch.equal(a, other)  # the generator is what decides


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


POSITIONAL = ["sinusoidal", "learned", "rope"]


def random_gpt(**overrides) -> GPT:
    torch.manual_seed(0)
    config = dict(vocab_size=13, block_size=16, n_layer=2, n_head=2, n_embd=16) | overrides
    model = GPT(GPTConfig(**config)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.2 * torch.randn_like(p))
    return model


@pytest.mark.parametrize("pos_encoding", POSITIONAL)
@pytest.mark.parametrize("attention", ["sdpa", "explicit"])
@pytest.mark.parametrize("prompt_length", [1, 5, 16])
def test_cached_logits_equal_full_recomputation(pos_encoding, attention, prompt_length):
    model = random_gpt(pos_encoding=pos_encoding, attention=attention)
    reference = copy.deepcopy(model)  # never cached
    tokens = torch.randint(0, 13, (3, 16), generator=torch.Generator().manual_seed(prompt_length))
    with torch.no_grad():
        model.enable_kv_cache(batch_size=3)
        prefill, _ = model(tokens[:, :prompt_length])
        full, _ = reference(tokens[:, :prompt_length])
        torch.testing.assert_close(prefill, full, atol=1e-5, rtol=0)
        for t in range(prompt_length, 16):  # then one token at a time
            cached, _ = model(tokens[:, t : t + 1])  # at position t, from the cache
            full, _ = reference(tokens[:, : t + 1])
            torch.testing.assert_close(cached[:, -1], full[:, -1], atol=1e-5, rtol=0)


@pytest.mark.parametrize("pos_encoding", POSITIONAL)
@pytest.mark.parametrize("attention", ["sdpa", "explicit"])
def test_greedy_with_and_without_cache_agree_across_block_size(pos_encoding, attention):
    model = random_gpt(pos_encoding=pos_encoding, attention=attention)
    prompt = torch.randint(0, 13, (2, 5), generator=torch.Generator().manual_seed(1))
    cached = generate(model, prompt, 50, temperature=0)  # 50 > 3 * block_size: several restarts
    uncached = generate(model, prompt, 50, temperature=0, use_kv_cache=False)
    assert torch.equal(cached, uncached)
    assert all(block.attn.kv_cache is None for block in model.blocks)  # cache released


def test_cached_and_uncached_steps_give_the_same_logits_across_restarts():
    model = random_gpt(pos_encoding="rope")
    prompt = torch.randint(0, 13, (1, 7), generator=torch.Generator().manual_seed(2))
    captured = {True: [], False: []}
    for use_cache in (True, False):
        original = model.forward

        def recording(*args, _use=use_cache, _orig=original, **kwargs):
            logits, loss = _orig(*args, **kwargs)
            captured[_use].append(logits[:, -1].clone())
            return logits, loss

        model.forward = recording
        list(generate_tokens(model, prompt, 40, temperature=0, use_kv_cache=use_cache))
        del model.forward
    assert len(captured[True]) == len(captured[False]) == 40
    for a, b in zip(captured[True], captured[False], strict=True):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)


def test_cache_is_not_part_of_the_state_dict_and_needs_enabling():
    model = random_gpt()
    keys = set(model.state_dict())
    model.enable_kv_cache(batch_size=2)
    assert set(model.state_dict()) == keys
    model.disable_kv_cache()
    assert model.cache_length == 0
    with pytest.raises(ValueError, match="keep=16 must be in"):
        generate(model, torch.tensor([[1]]), 3, keep=16)


@pytest.mark.parametrize("shortcut", ["value_embeddings", "smear", "x0_skip"])
def test_cached_logits_equal_full_recomputation_with_the_shortcuts(shortcut):
    model = random_gpt(pos_encoding="rope", **{shortcut: True})
    reference = copy.deepcopy(model)
    tokens = torch.randint(0, 13, (3, 16), generator=torch.Generator().manual_seed(5))
    prompt = torch.randint(0, 13, (2, 5), generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        model.enable_kv_cache(batch_size=3)
        model(tokens[:, :4])
        for t in range(4, 16):
            cached, _ = model(tokens[:, t : t + 1])
            full, _ = reference(tokens[:, : t + 1])
            torch.testing.assert_close(cached[:, -1], full[:, -1], atol=1e-5, rtol=0)
        model.disable_kv_cache()
    cached = generate(model, prompt, 40, temperature=0)  # past block_size: restarts
    assert torch.equal(cached, generate(model, prompt, 40, temperature=0, use_kv_cache=False))
