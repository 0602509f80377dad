"""minigpt.tools.convert: models that move to and from Hugging Face transformers computing the same
function (logits within 1e-4 in float32, identical greedy generations), tokenizers that
encode the same, and nanoGPT's names. Every directory is built here; nothing is downloaded."""

import json
from dataclasses import replace

import pytest
import torch
import transformers
from conftest import ROOT, compose_into
from hydra import compose, initialize_config_dir

from minigpt.commands import export as export_script
from minigpt.commands import train as train_script
from minigpt.core.model import GPT, GPTConfig
from minigpt.core.sampling import generate_tokens
from minigpt.core.tokenizers import BPETokenizer, CharTokenizer
from minigpt.tools.convert import (
    export_hf,
    from_nanogpt,
    hf_architecture,
    hf_tokenizer,
    load_hf,
    to_nanogpt,
)

COMBINATIONS = {
    "GPT2LMHeadModel": dict(pos_encoding="learned"),
    "GPT2LMHeadModel, relu, no bias, untied": dict(
        pos_encoding="learned", activation="relu", bias=False, tie_weights=False
    ),
    "GPTNeoXForCausalLM (the default model's options)": dict(pos_encoding="rope"),
    "GPTNeoXForCausalLM, no bias, untied": dict(pos_encoding="rope", bias=False, tie_weights=False),
    "LlamaForCausalLM": dict(pos_encoding="rope", norm="rmsnorm", activation="swiglu", bias=False),
    "LlamaForCausalLM, biases": dict(pos_encoding="rope", norm="rmsnorm", activation="swiglu"),
}
CHARS = CharTokenizer(list("\n !',.:;?abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"))


def random_model(**options) -> GPT:
    """A small GPT whose every parameter (biases and norm gains included) is random, so a
    parameter mapped to the wrong place shows in the logits."""
    torch.manual_seed(0)
    config = GPTConfig(vocab_size=CHARS.vocab_size, block_size=64, n_layer=2, n_head=4, n_embd=32)
    model = GPT(GPTConfig(**(config.to_dict() | options)))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.eval()


def greedy(model: GPT, prompt: torch.Tensor, count: int = 32) -> list[int]:
    steps = generate_tokens(model, prompt, count, temperature=0.0, use_kv_cache=True)
    return torch.cat(list(steps), dim=1)[0].tolist()


@pytest.mark.parametrize("options", COMBINATIONS.values(), ids=COMBINATIONS.keys())
def test_exported_models_compute_the_same_function_in_transformers(options, tmp_path):
    ours = random_model(**options)
    name = export_hf(ours, CHARS, tmp_path / "hf")
    assert {p.name for p in (tmp_path / "hf").iterdir()} >= {"config.json", "model.safetensors"}
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf").eval()
    assert type(theirs).__name__ == name
    tokens = torch.randint(0, CHARS.vocab_size, (3, 64), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        difference = (ours(tokens)[0] - theirs(tokens).logits).abs().max().item()
        generated = theirs.generate(tokens[:1, :8], max_new_tokens=32, do_sample=False)
    assert difference <= 1e-4
    assert greedy(ours, tokens[:1, :8]) == generated[0, 8:].tolist()
    back = load_hf(tmp_path / "hf")  # and the way back: the same parameters
    assert replace(back.config, bias=ours.config.bias) == ours.config
    returned = back.state_dict()
    for key, value in returned.items():  # GPT-2 and GPT-NeoX biases come back as zeros
        assert torch.equal(value, ours.state_dict().get(key, torch.zeros_like(value))), key


@pytest.mark.parametrize("kind", ["llama", "gpt_neox", "gpt2"])
def test_a_randomly_initialised_transformers_model_loads(kind, tmp_path):
    """A model made by transformers itself (its own initialisation, saved locally)."""
    settings = dict(vocab_size=50, hidden_size=48, num_hidden_layers=2, num_attention_heads=4)
    settings |= dict(intermediate_size=128, max_position_embeddings=40)
    config = {
        "llama": transformers.LlamaConfig(**settings, rms_norm_eps=1e-5, rope_theta=500.0),
        "gpt_neox": transformers.GPTNeoXConfig(
            **settings | {"intermediate_size": 192},
            use_parallel_residual=False,
            rotary_pct=1.0,
            tie_word_embeddings=True,
        ),
        "gpt2": transformers.GPT2Config(
            vocab_size=50,
            n_embd=48,
            n_layer=2,
            n_head=4,
            n_positions=40,
            activation_function="gelu",
        ),
    }[kind]
    torch.manual_seed(0)
    theirs = transformers.AutoModelForCausalLM.from_config(config).eval()
    theirs.save_pretrained(tmp_path)
    ours = load_hf(tmp_path)
    tokens = torch.randint(0, 50, (2, 40))
    with torch.no_grad():
        assert (ours(tokens)[0] - theirs(tokens).logits).abs().max().item() <= 1e-4


def test_what_has_no_counterpart_is_refused_with_the_supported_sets(tmp_path):
    with pytest.raises(ValueError, match="pos_encoding=sinusoidal.*supported: learned positions"):
        hf_architecture(GPTConfig(pos_encoding="sinusoidal"))
    with pytest.raises(ValueError, match="norm_placement=post"):
        hf_architecture(GPTConfig(pos_encoding="learned", norm_placement="post"))
    with pytest.raises(ValueError, match="qk_norm=True"):
        hf_architecture(GPTConfig(pos_encoding="rope", qk_norm=True))
    for shortcut in ("value_embeddings", "smear", "x0_skip"):
        with pytest.raises(ValueError, match=f"{shortcut}=True"):
            hf_architecture(GPTConfig(pos_encoding="rope", **{shortcut: True}))
    with pytest.raises(ValueError, match="activation=relu2"):
        hf_architecture(GPTConfig(pos_encoding="rope", activation="relu2"))
    parallel = transformers.GPTNeoXConfig(
        vocab_size=20, hidden_size=16, num_hidden_layers=1, num_attention_heads=2
    )
    transformers.AutoModelForCausalLM.from_config(parallel).save_pretrained(tmp_path)
    with pytest.raises(ValueError, match="gpt_neox model has parallel residuals"):
        load_hf(tmp_path)
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_hf(tmp_path / "nothing")


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_exported_tokenizers_encode_and_decode_as_ours(kind, tmp_path):
    text = "ROMEO: 'tis not so, Juliet;\nI'll go.  Naïve café — 東京?\n"
    tokenizer = (
        BPETokenizer.train(text * 30, vocab_size=300)
        if kind == "bpe"
        else CharTokenizer(sorted(set(text)))
    )
    hf_tokenizer(tokenizer).save_pretrained(tmp_path)
    loaded = transformers.AutoTokenizer.from_pretrained(tmp_path)
    ids = loaded.encode(text, add_special_tokens=False)
    assert ids == tokenizer.encode(text)
    assert loaded.decode(ids) == text


def test_nanogpt_names_round_trip():
    state = random_model(pos_encoding="learned").state_dict()
    theirs = to_nanogpt(state)
    assert "transformer.h.1.attn.c_attn.weight" in theirs and "transformer.wpe.weight" in theirs
    compiled = {"_orig_mod." + k: v for k, v in theirs.items()}  # torch.compile's prefix
    assert from_nanogpt(compiled).keys() == state.keys()


def test_export_then_fine_tune_from_the_directory(tmp_path, cache_dir):
    """export.py writes a directory transformers loads (the default model's options: GPT-NeoX);
    it refuses to overwrite one; train.py init_from=<dir> starts from its weights and its
    vocabulary and trains."""
    out = tmp_path / "run"
    tiny = ("experiment=tiny", "logger=none", "sample.num_samples=0")
    train_script.train(compose_into(out, cache_dir, *tiny, "trainer.max_steps=2"))
    checkpoint = out / "checkpoints" / "last.ckpt"
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("export", overrides=[f"ckpt_path={checkpoint}", f"out_dir={tmp_path}/hf"])
    export_script.export(cfg)
    theirs = transformers.AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
    assert type(theirs).__name__ == "GPTNeoXForCausalLM"
    with pytest.raises(ValueError, match="exists: name a new directory"):
        export_script.export(cfg)
    pretrained = load_hf(tmp_path / "hf")
    tune = compose_into(tmp_path / "tune", cache_dir, *tiny, f"init_from={tmp_path}/hf")
    _, module, _ = train_script.build(tune)
    for key, value in pretrained.state_dict().items():
        assert torch.equal(module.model.state_dict()[key], value), key
    tuned = compose_into(tmp_path / "tune", cache_dir, *tiny, f"init_from={tmp_path}/hf")
    train_script.train(tuned)
    metrics = json.loads((tmp_path / "tune" / "metrics.json").read_text())
    assert metrics["steps"] == 20 and metrics["status"] == "done"
