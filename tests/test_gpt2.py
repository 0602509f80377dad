"""GPT-2's pieces, offline: its tokenizer through tiktoken (proven on merges of our own,
written in GPT-2's file format), its tanh GELU, its padded vocabulary, and its weights
through transformers (a GPT2LMHeadModel built here with GPT-2's settings)."""

import json
import math

import pytest
import torch
import transformers
from conftest import compose_into

from minigpt.commands import train as train_script
from minigpt.core.model import GPT, GPTConfig
from minigpt.core.sampling import generate_tokens
from minigpt.core.tokenizers import (
    END_OF_TEXT,
    BPETokenizer,
    TiktokenTokenizer,
    tokenizer_from_dict,
)
from minigpt.data.corpus import shakespeare_works
from minigpt.tools.convert import export_hf, load_hf, load_pretrained

EDGE_CASES = [
    "",
    "\n",
    "\n\n\n",
    "\x00",
    "😀" * 50,
    "東京タワー",
    "e\u0301",
    "x" * 10_000,
    " " * 7,
    "Ünïcödé — 東京 😀 e\u0301 \x00 tab\tend\n",
    "it's 'twas they'll   spaces\t\t\n\n  trailing  ",
    f"two{END_OF_TEXT}documents",
]


@pytest.fixture(scope="module")
def texts() -> tuple[str, str]:
    works = list(shakespeare_works().values())
    return works[0].text[:200_000], works[1].text[:100_000]


@pytest.fixture(scope="module")
def bpe(texts) -> BPETokenizer:
    return BPETokenizer.train(texts[0], vocab_size=1000)


def test_tiktoken_encodes_our_merges_with_our_ids(bpe, texts):
    fast = TiktokenTokenizer.from_bpe(bpe)
    assert fast.vocab_size == bpe.vocab_size and fast.eot_id == bpe.eot_id
    for text in [*EDGE_CASES, texts[1]]:
        assert fast.encode(text) == bpe.encode(text), text[:40]
        assert fast.encode(text, allowed_special=True) == bpe.encode(text, allowed_special=True)
        assert fast.decode(fast.encode(text)) == text
    assert fast.merges == bpe.merges  # recovered from the ranks alone
    again = tokenizer_from_dict(json.loads(json.dumps(fast.to_dict())))
    assert again.encode(texts[1]) == bpe.encode(texts[1])


def test_gpt2_files_load_through_tiktokens_gpt2_reader(bpe, texts, tmp_path):
    """GPT-2's own format (what a Hugging Face `gpt2` download holds) read by tiktoken's
    reader of GPT-2's files: the same tokens as our encoder (ids differ only in the order
    of the 256 bytes, which GPT-2 numbers by its table) and as transformers' GPT-2
    tokenizer on the same files, end-of-text last."""
    bpe.save_gpt2_files(tmp_path)
    gpt2 = TiktokenTokenizer.gpt2(tmp_path)
    tokens = gpt2.token_bytes()
    hf = transformers.GPT2TokenizerFast.from_pretrained(tmp_path)
    assert gpt2.vocab_size == bpe.vocab_size and gpt2.eot_id == bpe.vocab_size - 1
    for text in [*EDGE_CASES[:-1], texts[1]]:
        ids = gpt2.encode(text)
        assert [tokens[i] for i in ids] == [bpe.vocab[i] for i in bpe.encode(text)]
        assert ids == hf(text)["input_ids"]
    with pytest.raises(FileNotFoundError, match="vocab.json is missing"):
        TiktokenTokenizer.gpt2(tmp_path / "elsewhere")


def test_a_padded_vocabulary_never_outputs_a_padding_id():
    """vocab_multiple=64: 65 tokens get 128 rows; logits, loss and samples are those of the
    65 real tokens (the padding rows take no share of the softmax)."""
    torch.manual_seed(0)
    small = GPT(GPTConfig(vocab_size=65, block_size=16, n_layer=1, n_head=2, n_embd=16))
    padded = GPT(GPTConfig(**small.config.to_dict() | {"vocab_multiple": 64}))
    assert padded.wte.weight.shape == (128, 16) and padded.config.padded_vocab_size == 128
    state = small.state_dict()
    with torch.no_grad():
        padded.wte.weight.fill_(5.0)  # large padding rows would win every softmax
        for name, value in state.items():
            if name in ("wte.weight", "lm_head.weight"):
                padded.state_dict()[name][:65] = value
            else:
                padded.state_dict()[name].copy_(value)
    idx = torch.randint(0, 65, (3, 16))
    logits, loss = padded(idx, idx)
    expected_logits, expected_loss = small(idx, idx)
    assert logits.shape == (3, 16, 65)
    torch.testing.assert_close(logits, expected_logits)
    torch.testing.assert_close(loss, expected_loss)
    steps = generate_tokens(padded, idx[:, :2], 40, temperature=2.0)
    assert int(torch.cat(list(steps), dim=1).max()) < 65


def gpt2_like(tokenizer: BPETokenizer, folder) -> transformers.GPT2LMHeadModel:
    """A GPT2LMHeadModel with GPT-2's settings (gelu_new, biases, tied head, eps 1e-5) at
    a small size, random weights perturbed, saved with the tokenizer in GPT-2's files."""
    torch.manual_seed(0)
    config = transformers.GPT2Config(
        vocab_size=tokenizer.vocab_size, n_positions=64, n_embd=48, n_layer=2, n_head=4
    )
    assert config.activation_function == "gelu_new"
    model = transformers.GPT2LMHeadModel(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    model.save_pretrained(folder)
    tokenizer.save_gpt2_files(folder)
    return model


def test_gpt2_weights_compute_what_transformers_computes(bpe, texts, tmp_path):
    """init_from on a GPT-2 directory: gelu_tanh blocks, logits within 1e-5 of
    transformers', the same greedy continuation, GPT-2's tokenizer (through tiktoken) from
    the directory's files; padded to a multiple of 64 it computes the same; exported back
    to GPT-2's names, transformers computes it again."""
    theirs = gpt2_like(bpe, tmp_path / "gpt2")
    ours, tokenizer_dict = load_pretrained(tmp_path / "gpt2", vocab_multiple=64)
    assert ours.config.activation == "gelu_tanh" and ours.wte.weight.shape[0] == 1024
    tokenizer = tokenizer_from_dict(tokenizer_dict)
    assert tokenizer.kind == "tiktoken" and tokenizer.name == "gpt2"
    idx = torch.tensor([tokenizer.encode(texts[1][:200])[:60]])
    with torch.no_grad():
        expected = theirs(idx).logits
        assert (ours(idx)[0] - expected).abs().max() <= 1e-5
    continuation = generate_tokens(ours, idx[:, :8], 24, temperature=0.0, use_kv_cache=True)
    greedy = theirs.generate(idx[:, :8], max_new_tokens=24, do_sample=False, pad_token_id=0)
    assert torch.cat(list(continuation), dim=1)[0].tolist() == greedy[0, 8:].tolist()
    export_hf(ours, tokenizer, tmp_path / "back")
    again = transformers.GPT2LMHeadModel.from_pretrained(tmp_path / "back").eval()
    assert again.config.activation_function == "gelu_new" and again.config.vocab_size == 1000
    with torch.no_grad():
        assert (again(idx).logits - expected).abs().max() <= 1e-5
    assert (
        load_hf(tmp_path / "back").state_dict().keys()
        == load_hf(tmp_path / "gpt2").state_dict().keys()
    )
    hf_tokenizer = transformers.AutoTokenizer.from_pretrained(tmp_path / "back")
    assert hf_tokenizer(texts[1][:500])["input_ids"] == tokenizer.encode(texts[1][:500])


def test_train_starts_from_gpt2_weights(bpe, tmp_path, cache_dir):
    """train.py init_from=<GPT-2 directory>: GPT-2's weights and tokenizer, padded rows."""
    gpt2_like(bpe, tmp_path / "gpt2")
    options = ("experiment=tiny", "logger=none", "sample.num_samples=0", "model.vocab_multiple=64")
    cfg = compose_into(tmp_path / "tune", cache_dir, *options, f"init_from={tmp_path}/gpt2")
    datamodule, module, _ = train_script.build(cfg)
    assert datamodule.tokenizer.kind == "tiktoken" and module.model.wte.weight.shape[0] == 1024
    assert module.model.config.activation == "gelu_tanh"


def test_bits_per_byte_leave_end_of_text_out(tmp_path):
    """val/bpb: the loss on tokens of text over their bytes, end-of-text tokens (one after
    each document; they stand for no bytes) counted in neither."""
    from minigpt.data import TokenDataModule
    from minigpt.training.module import GPTLightningModule

    rows = [{"text": f"document {i}: " + "the quick brown fox. " * (1 + i % 3)} for i in range(60)]
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    hf = {"builder": "json", "data_files": [str(tmp_path / "docs.jsonl")]}
    tokenizer = {"kind": "bpe", "vocab_size": 300}
    dm = TokenDataModule(
        corpus="hf_dataset", hf=hf, block_size=8, cache_dir=tmp_path / "c", tokenizer=tokenizer
    )
    dm.setup()
    val = dm.tokens["val"][:].tolist()
    eot = dm.tokenizer.eot_id
    text_bytes = sum(len(r["text"].encode()) for r in rows[54:])
    assert dm.tokens_per_byte("val") == (len(val) - val.count(eot)) / text_bytes
    module = GPTLightningModule(
        model=dict(vocab_size=dm.vocab_size, block_size=8, n_layer=1, n_head=2, n_embd=16),
        optimizer={},
        scheduler={},
        tokenizer=dm.tokenizer.to_dict(),
    )
    start = val.index(eot) - 4  # a window whose targets hold an end-of-text
    x = torch.tensor([val[start : start + 8]])
    y = torch.tensor([val[start + 1 : start + 9]])
    assert eot in y.tolist()[0]
    losses, counted, text = module.token_losses((x, y))
    assert counted.all() and text.sum() == 8 - y.tolist()[0].count(eot)
    module.validation_step((x, y), 0)
    expected = float(losses[y != eot].mean())
    assert math.isclose(float(module.val_text_loss.compute()), expected, rel_tol=1e-6)


def test_global_batch_tokens_set_the_accumulated_batches_per_process(tmp_path, cache_dir):
    """experiment=gpt2_124m: 2^19 tokens an optimizer step, micro-batches of 64 x 1024:
    8 accumulated batches on one process, 1 on eight; a batch that does not divide it is
    refused, naming the product."""
    for devices, accumulate in ((1, 8), (2, 4), (8, 1)):
        cfg = compose_into(
            tmp_path, cache_dir, "experiment=gpt2_124m", f"trainer.devices={devices}"
        )
        assert cfg.trainer.accumulate_grad_batches is None
        assert train_script.accumulation(cfg) == accumulate
    cfg = compose_into(tmp_path, cache_dir, "experiment=gpt2_124m", "data.batch_size=48")
    with pytest.raises(ValueError, match="64 x 1024|48 x 1024 x 1 = 49,152"):
        train_script.accumulation(cfg)
