import math

import pytest
import torch
import torch.nn.functional as F

from minigpt.core.model import GPT, IGNORE_INDEX, GPTConfig, sinusoidal_table

POSITIONAL = ["sinusoidal", "learned", "rope"]


def tiny_config(**overrides) -> GPTConfig:
    base = dict(vocab_size=11, block_size=16, n_layer=2, n_head=2, n_embd=8, dropout=0.0)
    return GPTConfig(**(base | overrides))


def random_model(seed: int = 0, **overrides) -> GPT:
    torch.manual_seed(seed)
    model = GPT(tiny_config(**overrides)).eval()
    # non-trivial values everywhere (init puts zeros in biases and ones in norm gains)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(n_embd=10, n_head=3), "n_embd=10 is not divisible by n_head=3"),
        (dict(n_layer=0), "n_layer=0 must be a positive integer"),
        (dict(block_size=-1), "block_size=-1"),
        (dict(dropout=1.0), "dropout=1.0"),
        (dict(dropout=-0.1), "dropout=-0.1"),
        (dict(pos_encoding="alibi"), "pos_encoding='alibi' is not one of"),
        (dict(norm="batchnorm"), "norm='batchnorm'"),
        (dict(activation="tanh"), "activation='tanh'"),
        (dict(norm_placement="middle"), "norm_placement='middle'"),
        (dict(attention="flash"), "attention='flash'"),
        (dict(pos_encoding="rope", n_embd=6, n_head=2), "head size"),
        (dict(logit_softcap=-1.0), "logit_softcap=-1.0 must be >= 0"),
    ],
)
def test_config_rejects_bad_values_naming_the_field(overrides, message):
    with pytest.raises(ValueError, match=message):
        tiny_config(**overrides)


@pytest.mark.parametrize("pos_encoding", POSITIONAL)
@pytest.mark.parametrize("attention", ["sdpa", "explicit"])
@pytest.mark.parametrize("norm_placement", ["pre", "post"])
def test_changing_a_future_token_leaves_past_logits_unchanged(
    pos_encoding, attention, norm_placement
):
    model = random_model(
        pos_encoding=pos_encoding, attention=attention, norm_placement=norm_placement
    )
    idx = torch.randint(0, 11, (2, 16), generator=torch.Generator().manual_seed(1))
    t = 7
    changed = idx.clone()
    changed[:, t + 1] = (changed[:, t + 1] + 1) % 11
    with torch.no_grad():
        before, _ = model(idx)
        after, _ = model(changed)
    torch.testing.assert_close(before[:, : t + 1], after[:, : t + 1], rtol=0, atol=1e-6)
    # and the change does reach the position it was made at
    assert not torch.allclose(before[:, t + 1], after[:, t + 1])


@pytest.mark.parametrize("pos_encoding", POSITIONAL)
def test_sdpa_and_explicit_attention_agree(pos_encoding):
    sdpa = random_model(pos_encoding=pos_encoding, attention="sdpa")
    explicit = GPT(tiny_config(pos_encoding=pos_encoding, attention="explicit")).eval()
    explicit.load_state_dict(sdpa.state_dict())
    idx = torch.randint(0, 11, (3, 16))
    with torch.no_grad():
        torch.testing.assert_close(sdpa(idx)[0], explicit(idx)[0], rtol=1e-5, atol=1e-6)


def test_sinusoidal_table_matches_the_formula():
    table = sinusoidal_table(block_size=50, n_embd=16)
    for pos in (0, 1, 17, 49):
        for i in range(8):
            angle = pos / 10000 ** (2 * i / 16)
            assert table[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
            assert table[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)


def test_positions_matter_for_every_encoding():
    """Without positional information a permuted context would give permuted logits."""
    for pos_encoding in POSITIONAL:
        model = random_model(pos_encoding=pos_encoding)
        idx = torch.tensor([[1, 2, 3, 4]])
        with torch.no_grad():
            a = model(idx)[0][0, -1]
            b = model(torch.tensor([[3, 2, 1, 4]]))[0][0, -1]
        assert not torch.allclose(a, b, atol=1e-4), pos_encoding


def test_rope_scores_depend_only_on_relative_position():
    from minigpt.core.model import RotaryPositions, rotate

    rotation = RotaryPositions(tiny_config(pos_encoding="rope", block_size=32)).rotation(0, 32)
    q, k = torch.randn(4), torch.randn(4)
    qs = rotate(q.expand(1, 1, 32, 4), rotation)[0, 0]  # the same q at every position
    ks = rotate(k.expand(1, 1, 32, 4), rotation)[0, 0]
    assert (qs[10] @ ks[7]).item() == pytest.approx((qs[25] @ ks[22]).item(), rel=1e-5)


def test_loss_is_cross_entropy_and_ignores_padding():
    model = random_model()
    idx = torch.randint(0, 11, (2, 10))
    targets = torch.randint(0, 11, (2, 10))
    targets[1, 6:] = IGNORE_INDEX
    logits, loss = model(idx, targets)
    keep = targets != IGNORE_INDEX
    expected = F.cross_entropy(logits[keep], targets[keep])
    torch.testing.assert_close(loss, expected)


def test_weights_are_tied_and_counted_once():
    model = GPT(tiny_config(tie_weights=True))
    assert model.lm_head.weight is model.wte.weight
    untied = GPT(tiny_config(tie_weights=False))
    assert untied.num_parameters() == model.num_parameters() + 11 * 8


def test_bias_option_removes_all_biases():
    model = GPT(tiny_config(bias=False))
    assert not [n for n, _ in model.named_parameters() if n.endswith("bias")]


def test_residual_projections_get_scaled_init():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=50, n_layer=8, n_head=4, n_embd=256))
    std_proj = model.blocks[0].attn.c_proj.weight.std().item()
    std_fc = model.blocks[0].mlp.c_fc.weight.std().item()
    assert std_fc == pytest.approx(0.02, rel=0.05)
    assert std_proj == pytest.approx(0.02 / math.sqrt(16), rel=0.05)


@pytest.mark.parametrize("activation", ["relu", "gelu", "relu2", "swiglu"])
@pytest.mark.parametrize("norm", ["layernorm", "rmsnorm"])
def test_every_option_trains(activation, norm):
    torch.manual_seed(0)
    model = GPT(tiny_config(activation=activation, norm=norm, n_embd=16))
    optimizer = torch.optim.AdamW(model.param_groups(), lr=1e-2)
    idx = torch.randint(0, 11, (4, 16))
    losses = []
    for _ in range(60):
        _, loss = model(idx[:, :-1], idx[:, 1:])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_param_groups_split_hidden_matrices_embeddings_and_gains():
    model = GPT(tiny_config(pos_encoding="learned", tie_weights=False))
    hidden, embeddings, no_decay = model.param_groups()
    names = {id(p): name for name, p in model.named_parameters()}
    assert {names[id(p)] for p in embeddings["params"]} == {
        "wte.weight",
        "positions.wpe.weight",
        "lm_head.weight",
    }
    assert all(names[id(p)].startswith("blocks.") and p.dim() == 2 for p in hidden["params"])
    assert all(p.dim() == 1 for p in no_decay["params"]) and no_decay["weight_decay"] == 0.0
    groups = (hidden, embeddings, no_decay)
    assert sum(len(g["params"]) for g in groups) == len(list(model.parameters()))


def test_relu_squared_feed_forward():
    from minigpt.core.model import MLP

    mlp = MLP(tiny_config(activation="relu2"))
    x = torch.randn(2, 5, 8)
    expected = mlp.c_proj(torch.relu(mlp.c_fc(x)) ** 2)
    torch.testing.assert_close(mlp(x), expected)


def test_logit_softcap_bounds_the_logits_with_tanh():
    capped = random_model(logit_softcap=2.0)
    plain = GPT(tiny_config()).eval()
    plain.load_state_dict(capped.state_dict())
    with torch.no_grad():
        for model in (capped, plain):
            model.lm_head.weight.mul_(50.0)  # raw logits far beyond the cap
        idx = torch.randint(0, 11, (2, 16))
        raw, logits = plain(idx)[0], capped(idx)[0]
    assert raw.abs().max() > 4.0 and logits.abs().max() <= 2.0  # tanh saturates at 1
    torch.testing.assert_close(logits, 2.0 * torch.tanh(raw / 2.0))


def test_zero_init_projections_make_every_block_the_identity_at_step_0():
    torch.manual_seed(0)
    model = GPT(tiny_config(zero_init_proj=True))
    x = torch.randn(2, 16, 8)
    for block in model.blocks:
        assert torch.equal(block(x), x)
    default = GPT(tiny_config())
    assert not torch.equal(default.blocks[0](x), x)


@pytest.mark.parametrize("qk_norm", [True, False])
def test_qk_norm_makes_attention_blind_to_the_scale_of_queries_and_keys(qk_norm):
    from minigpt.core.model import CausalSelfAttention

    torch.manual_seed(0)
    attn = CausalSelfAttention(tiny_config(qk_norm=qk_norm, bias=False))
    x = torch.randn(2, 16, 8)
    with torch.no_grad():
        before = attn(x)
        attn.c_attn.weight[:16].mul_(7.0)  # the query and key rows
        after = attn(x)
    assert torch.allclose(before, after, atol=1e-5) == qk_norm


@pytest.mark.parametrize("attention", ["sdpa", "explicit"])
@pytest.mark.parametrize("qk_norm", [True, False])
def test_attention_computes_its_formula_head_by_head(attention, qk_norm):
    """softmax(q k^T / sqrt(hs), causal) v per head, q and k unit-RMS (qk_norm) and rotated
    (rope: channel i with i + hs/2 by the angle t / base^(2i/hs)), then c_proj; written
    out with loops here."""
    from minigpt.core.model import CausalSelfAttention, RotaryPositions

    torch.manual_seed(0)
    config = tiny_config(n_embd=8, n_head=2, qk_norm=qk_norm, attention=attention)
    attn = CausalSelfAttention(config).eval()
    x = torch.randn(2, 6, 8)
    with torch.no_grad():
        y = attn(x, RotaryPositions(config).rotation(0, 6))
        q, k, v = attn.c_attn(x).split(8, dim=2)
    hs, half, expected = 4, 2, torch.zeros(2, 6, 8)

    def prepared(vector, t):  # normalized, then rotated by position t
        if qk_norm:
            vector = vector / vector.pow(2).mean().add(torch.finfo(vector.dtype).eps).sqrt()
        out = vector.clone()
        for i in range(half):
            angle = t / config.rope_base ** (2 * i / hs)
            a, b = vector[i], vector[i + half]
            out[i], out[i + half] = (
                a * math.cos(angle) - b * math.sin(angle),
                (b * math.cos(angle) + a * math.sin(angle)),
            )
        return out

    for b in range(2):
        for h in range(2):
            heads = slice(h * hs, (h + 1) * hs)
            for t in range(6):
                query = prepared(q[b, t, heads], t)
                scores = torch.stack(
                    [query @ prepared(k[b, s, heads], s) / math.sqrt(hs) for s in range(t + 1)]
                )
                expected[b, t, heads] = torch.softmax(scores, 0) @ v[b, : t + 1, heads]
    torch.testing.assert_close(y, attn.c_proj(expected), rtol=1e-4, atol=1e-5)


def test_input_longer_than_block_size_is_rejected():
    with pytest.raises(ValueError, match="positions up to 17 exceed block_size=16"):
        GPT(tiny_config())(torch.zeros(1, 17, dtype=torch.long))


def test_activation_checkpointing_gives_the_same_gradients(monkeypatch):
    import minigpt.core.model as model_module

    calls = []
    original = model_module.checkpoint
    monkeypatch.setattr(
        model_module, "checkpoint", lambda *a, **k: calls.append(1) or original(*a, **k)
    )
    torch.manual_seed(0)
    plain = GPT(tiny_config(n_layer=3))
    recomputed = GPT(tiny_config(n_layer=3, activation_checkpointing=True))
    recomputed.load_state_dict(plain.state_dict())
    idx = torch.randint(0, 11, (4, 16))
    forwards = {}
    for label, model in (("plain", plain), ("recomputed", recomputed)):
        forwards[label] = []
        for block in model.blocks:
            block.register_forward_pre_hook(lambda *_, runs=forwards[label]: runs.append(1))
        model.train()
        _, loss = model(idx[:, :-1], idx[:, 1:])
        loss.backward()
    # every block runs once in the forward pass and, checkpointed, again in the backward pass
    assert len(calls) == 3 and len(forwards["plain"]) == 3 and len(forwards["recomputed"]) == 6
    for (name, a), (_, b) in zip(
        plain.named_parameters(), recomputed.named_parameters(), strict=True
    ):
        torch.testing.assert_close(a.grad, b.grad, rtol=1e-5, atol=1e-7, msg=name)


def test_flops_per_token_follows_the_palm_formula():
    config = GPTConfig(
        vocab_size=50304,
        block_size=1024,
        n_layer=12,
        n_head=12,
        n_embd=768,
        pos_encoding="learned",
        bias=False,
    )
    with torch.device("meta"):
        model = GPT(config)
    n = model.num_parameters() - 1024 * 768  # position embeddings do no matrix product
    assert model.flops_per_token() == 6 * n + 12 * 12 * 12 * 64 * 1024


def test_an_untied_token_embedding_is_a_lookup_not_a_matrix_product():
    """Untying the head adds a V x C table that is only looked up: the FLOPs per token stay
    those of the tied model (whose one matrix is counted once, as the head)."""
    shapes = dict(vocab_size=1000, block_size=64, n_layer=2, n_head=2, n_embd=32)
    tied, untied = GPT(GPTConfig(**shapes)), GPT(GPTConfig(**shapes, tie_weights=False))
    assert untied.num_parameters() == tied.num_parameters() + 1000 * 32
    assert untied.flops_per_token() == tied.flops_per_token()


def copy_into(source: GPT, target: GPT) -> None:
    """target's parameters that source has (by name) set to source's."""
    target.load_state_dict(source.state_dict(), strict=False)


def test_value_embeddings_mix_each_layers_embedding_of_the_tokens_into_its_values():
    model = random_model(value_embeddings=True)
    plain = GPT(tiny_config()).eval()
    copy_into(model, plain)
    idx = torch.randint(0, 11, (2, 16), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        for block in model.blocks:
            block.attn.value_mix.copy_(torch.tensor([1.0, 0.0]))
        torch.testing.assert_close(model(idx)[0], plain(idx)[0])  # v alone: the plain model
        for block in model.blocks:
            block.attn.value_mix.copy_(torch.tensor([0.0, 1.0]))
        # values from the embedding alone: layer 0's values no longer see c_attn's v rows
        model.blocks[0].attn.c_attn.weight[16:].normal_()
        before = model(idx)[0]
        model.blocks[0].attn.c_attn.weight[16:].normal_()
        torch.testing.assert_close(model(idx)[0], before)
    _, loss = model(idx[:, :-1], idx[:, 1:])
    loss.backward()
    seen = torch.zeros(11, dtype=torch.bool)
    seen[idx[:, :-1].flatten()] = True
    for table in model.value_embeddings:  # a lookup: only the rows of the tokens fed move
        assert table.weight.grad[seen].abs().sum(1).gt(0).all()
        assert table.weight.grad[~seen].eq(0).all()
    assert model.num_parameters(embeddings=False) == plain.num_parameters(embeddings=False) + 2 * 2
    assert model.flops_per_token() == plain.flops_per_token() + 6 * 2 * 2  # the 2 mixes a layer


def test_smear_adds_a_gated_share_of_the_previous_tokens_embedding():
    from minigpt.core.model import Smear

    smear = Smear(tiny_config(n_embd=16))
    assert smear(x := torch.randn(2, 5, 16)).equal(x)  # the scale starts at 0
    with torch.no_grad():
        smear.scale.fill_(0.7)
        smear.gate.weight.normal_()
    out = smear(x)
    torch.testing.assert_close(out[:, 0], x[:, 0])  # the first token has none before it
    for t in range(1, 5):
        share = 0.7 * torch.sigmoid(x[:, t, :12] @ smear.gate.weight[0])  # (B,)
        torch.testing.assert_close(out[:, t], x[:, t] + share[:, None] * x[:, t - 1])
    # given the token before (generation with the cache), the first token gets its share
    previous = torch.randn(2, 1, 16)
    joined = smear(torch.cat((previous, x), dim=1))
    torch.testing.assert_close(smear(x, previous), joined[:, 1:])


def test_x0_skip_mixes_the_embeddings_into_every_blocks_input():
    model = random_model(x0_skip=True)
    plain = GPT(tiny_config()).eval()
    copy_into(model, plain)
    idx = torch.randint(0, 11, (2, 16), generator=torch.Generator().manual_seed(4))
    inputs = []
    hooks = [b.register_forward_pre_hook(lambda _, a: inputs.append(a[0])) for b in model.blocks]
    with torch.no_grad():
        model(idx)
        x0 = model.positions(model.wte(idx))
        out0 = model.blocks[0](inputs[0], model.positions.rotation(0, 16))
        r, s = model.residual_scales, model.x0_scales
        torch.testing.assert_close(inputs[0], r[0] * x0 + s[0] * x0)
        torch.testing.assert_close(inputs[1], r[1] * out0 + s[1] * x0)
        model.residual_scales.fill_(1.0)
        model.x0_scales.zero_()
        for hook in hooks:
            hook.remove()
        torch.testing.assert_close(model(idx)[0], plain(idx)[0])  # (1, 0): the plain model
    names = model.param_group_names()
    assert names["residual_scales"] == names["x0_scales"] == "no_decay"
