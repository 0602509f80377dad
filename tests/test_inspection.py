"""minigpt.core.inspection: the attention weights are the softmax the model uses, and the
per-token losses are the model's loss; explain.py writes its picture and page."""

import html
import math
import re

import pytest
import torch
from conftest import ROOT, compose_into
from hydra import compose, initialize_config_dir

from minigpt.commands import explain as explain_script
from minigpt.commands import train as train_script
from minigpt.core.inspection import (
    attention_maps,
    mean_loss,
    surprise_html,
    surprise_text,
    token_context,
    token_label,
    token_surprise,
)
from minigpt.core.model import GPT, GPTConfig
from minigpt.core.tokenizers import CharTokenizer

TEXT = "ROMEO:\nWhat light through yonder window breaks?\n"
CHARS = CharTokenizer(sorted(set(TEXT)))


def random_model(**options) -> GPT:
    torch.manual_seed(0)
    config = dict(vocab_size=CHARS.vocab_size, block_size=64, n_layer=2, n_head=4, n_embd=32)
    return GPT(GPTConfig(**config | options)).eval()


@pytest.mark.parametrize("pos_encoding", ["rope", "learned"])
def test_attention_weights_are_the_softmax_the_model_uses(pos_encoding):
    model = random_model(pos_encoding=pos_encoding)
    ids = CHARS.encode(TEXT)
    maps = attention_maps(model, ids)
    T = len(ids)
    assert maps.shape == (2, 4, T, T)
    assert torch.allclose(maps.sum(-1), torch.ones(2, 4, T), atol=1e-6)  # rows sum to 1
    assert torch.all(maps.triu(diagonal=1) == 0)  # the future gets nothing
    # the attention output recomputed from the weights is the module's (sdpa) output
    attn = model.blocks[0].attn
    x = model.positions(model.wte(torch.tensor([ids])))
    x = model.blocks[0].ln_1(x)
    with torch.no_grad():
        expected = attn(x, model.positions.rotation(0, T))  # the fused kernel, nothing kept
        q, k, v = attn.c_attn(x).split(32, dim=2)
        v = v.view(1, T, 4, 8).transpose(1, 2)  # (B, nh, T, hs)
        y = (maps[0].unsqueeze(0) @ v).transpose(1, 2).reshape(1, T, 32)
        recomputed = attn.c_proj(y)
    assert torch.allclose(recomputed, expected, atol=1e-5)
    assert attn.weights is None and not attn.keep_weights  # nothing kept afterwards


def test_per_token_losses_average_to_the_models_loss():
    model = random_model()
    ids = CHARS.encode(TEXT)
    tokens = token_surprise(model, CHARS, ids, k=3)
    assert tokens[0].loss is None and "".join(t.text for t in tokens) == TEXT
    with torch.no_grad():
        _, loss = model(torch.tensor([ids[:-1]]), torch.tensor([ids[1:]]))
    assert mean_loss(tokens) == pytest.approx(float(loss), rel=1e-5)
    for token in tokens[1:]:
        probabilities = [p for _, p in token.candidates]
        assert probabilities == sorted(probabilities, reverse=True) and len(probabilities) == 3
        assert math.exp(-token.loss) <= probabilities[0] + 1e-6  # nothing beats the top one
    page = surprise_html(tokens, "test")
    assert page.count('class="t"') == len(tokens) and "loss " in page
    assert "\x1b[48;5;" in surprise_text(tokens) and "\x1b" not in surprise_text(tokens, False)
    assert token_label("a b\n\t") == "a·b↵→"
    # the most surprising tokens, each with its number and the text around it
    worst = max(range(1, len(tokens)), key=lambda i: tokens[i].loss)
    rows = surprise_text(tokens, color=False).split("most surprising")[1].splitlines()[1:]
    assert rows[0].split()[0] == str(worst)
    assert token_context(tokens, worst) in rows[0]
    left = "".join(t.text for t in tokens[:worst])[-12:]
    assert token_context(tokens, worst).startswith(token_label(left) + "[")


def test_explain_writes_the_picture_and_the_page(tmp_path, cache_dir):
    out = tmp_path / "run"
    tiny = ("experiment=tiny", "logger=none", "sample.num_samples=0", "trainer.max_steps=2")
    train_script.train(compose_into(out, cache_dir, *tiny))
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("explain", overrides=[f"ckpt_path={out}/checkpoints/last.ckpt"])
    files = explain_script.explain(cfg)
    assert files["attention"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert files["attention"].parent == out / "explain"
    page = files["surprise"].read_text()
    shown = "".join(re.findall(r'<span class="t"[^>]*>(.*?)</span>', page, flags=re.DOTALL))
    shown = html.unescape(shown.replace("↵<br>", "\n"))
    assert len(shown) == 32 and cfg.prompt.endswith(shown)  # the tiny model's context


def test_attention_maps_reach_tensorboards_images_tab(tmp_path, cache_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    overrides = (
        "experiment=tiny",
        "logger=tensorboard",
        "sample.num_samples=0",
        "+callbacks.attention_maps._target_=minigpt.training.callbacks.tensorboard.AttentionMaps",
        "trainer.max_steps=4",
        "trainer.val_check_interval=2",
    )
    train_script.train(compose_into(tmp_path, cache_dir, *overrides))
    (events,) = tmp_path.rglob("events.out.tfevents.*")
    accumulator = EventAccumulator(str(events.parent), size_guidance={"images": 0}).Reload()
    images = accumulator.Images("attention")
    assert [image.step for image in images] == [2, 4]  # after each validation
    assert images[0].encoded_image_string[:8] == b"\x89PNG\r\n\x1a\n"
