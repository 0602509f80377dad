import json
import os
import pickle
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import torch

import minigpt.data as data_module
import minigpt.data.module as datamodule_module
import minigpt.data.stream as data_stream
from minigpt.core.model import GPT, IGNORE_INDEX, GPTConfig
from minigpt.core.tokenizers import UNKNOWN_CHAR, CharTokenizer
from minigpt.data import (
    FixedWindows,
    PaddedDocuments,
    RandomWindows,
    StepBatches,
    TokenDataModule,
)
from minigpt.data.cache import TokenFile
from minigpt.data.corpus import clean_text, text_file_splits
from minigpt.data.stream import file_pieces, plan_splits


def test_random_windows_are_shifted_pairs():
    tokens = np.arange(100, dtype=np.uint16)
    ds = RandomWindows(tokens, block_size=8)
    assert len(ds) == 92
    x, y = ds[5]
    assert x.tolist() == list(range(5, 13)) and y.tolist() == list(range(6, 14))
    assert x.dtype == torch.long
    assert ds[len(ds) - 1][1][-1].item() == 99  # the last window reaches the last token


def test_fixed_windows_are_disjoint_deterministic_and_spread():
    tokens = np.arange(1001, dtype=np.uint16)
    a, b = FixedWindows(tokens, 10, seed=0), FixedWindows(tokens, 10, seed=0)
    starts = [a[i][0][0].item() for i in range(len(a))]
    assert starts == [b[i][0][0].item() for i in range(len(b))]
    assert sorted(starts) == list(range(0, 1000, 10))
    assert starts[:10] != sorted(starts[:10])  # order shuffled: a prefix samples everywhere


def test_padded_documents_never_cross_a_boundary():
    tokens = np.arange(1, 24, dtype=np.uint16)  # three documents: 1..10, 11..13, 14..23
    ds = PaddedDocuments(tokens, np.array([0, 10, 13]), block_size=4)
    pairs = [(x.tolist(), y.tolist()) for x, y in (ds[i] for i in range(len(ds)))]
    PAD, IGN = data_module.PAD_INPUT_ID, IGNORE_INDEX
    assert pairs == [
        ([1, 2, 3, 4], [2, 3, 4, 5]),
        ([5, 6, 7, 8], [6, 7, 8, 9]),
        ([9, PAD, PAD, PAD], [10, IGN, IGN, IGN]),
        ([11, 12, PAD, PAD], [12, 13, IGN, IGN]),
        ([14, 15, 16, 17], [15, 16, 17, 18]),
        ([18, 19, 20, 21], [19, 20, 21, 22]),
        ([22, PAD, PAD, PAD], [23, IGN, IGN, IGN]),
    ]


def test_padded_loss_equals_loss_over_real_tokens_only():
    torch.manual_seed(0)
    model = GPT(GPTConfig(vocab_size=30, block_size=8, n_layer=2, n_head=2, n_embd=16)).eval()
    tokens = np.random.default_rng(0).integers(1, 30, size=40).astype(np.uint16)
    ds = PaddedDocuments(tokens, np.array([0, 11, 14, 31]), block_size=8)
    x = torch.stack([ds[i][0] for i in range(len(ds))])
    y = torch.stack([ds[i][1] for i in range(len(ds))])
    assert (y == IGNORE_INDEX).any()
    _, padded_loss = model(x, y)
    # the same examples with the padding cut off, one at a time
    total, count = 0.0, 0
    for xi, yi in zip(x, y, strict=True):
        n = int((yi != IGNORE_INDEX).sum())
        logits, _ = model(xi[None, :n])
        total += torch.nn.functional.cross_entropy(logits[0], yi[:n], reduction="sum").item()
        count += n
    assert padded_loss.item() == pytest.approx(total / count, rel=1e-5)


@pytest.fixture(scope="module")
def shakespeare(tmp_path_factory):
    dm = TokenDataModule(block_size=32, batch_size=4, cache_dir=tmp_path_factory.mktemp("cache"))
    dm.setup()
    return dm


def test_datamodule_serves_the_embedded_corpus(shakespeare):
    dm = shakespeare
    meta = json.loads((dm.cache_path / "meta.json").read_text())
    works = {split: set(meta["splits"][split]["titles"]) for split in ("train", "val", "test")}
    assert not works["train"] & works["val"] and not works["train"] & works["test"]
    assert not works["val"] & works["test"]
    x, y = next(iter(dm.train_dataloader()))
    assert x.shape == y.shape == (4, 32)
    assert torch.equal(x[:, 1:], y[:, :-1])
    assert dm.tokens["train"].dtype == np.uint16
    val_a = [b[0] for b in dm.val_dataloader()][:3]
    val_b = [b[0] for b in dm.val_dataloader()][:3]
    assert all(torch.equal(a, b) for a, b in zip(val_a, val_b, strict=True))
    text = dm.tokenizer.decode(dm.tokens["val"][:200].tolist())
    assert "Caesar" in text or "CAESAR" in text  # val opens with Julius Caesar


def test_second_run_reuses_the_cache_without_tokenizing(shakespeare, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("tokenized again")

    monkeypatch.setattr(datamodule_module, "write_cache", fail)
    dm = TokenDataModule(block_size=32, batch_size=4, cache_dir=shakespeare.cache_root)
    dm.setup()
    assert dm.cache_path == shakespeare.cache_path
    assert np.array_equal(dm.tokens["val"], shakespeare.tokens["val"])


def test_changed_text_gets_a_new_cache_entry(tmp_path):
    book = tmp_path / "book.txt"
    book.write_text("abcdefghij" * 30)
    dm = TokenDataModule(corpus="text_files", paths=[str(book)], block_size=8, cache_dir=tmp_path)
    dm.setup()
    book.write_text("abcdefghij" * 31)
    dm2 = TokenDataModule(corpus="text_files", paths=[str(book)], block_size=8, cache_dir=tmp_path)
    dm2.setup()
    assert dm.cache_path != dm2.cache_path
    assert len(dm2.tokens["train"]) + len(dm2.tokens["val"]) == 310


def test_unpacked_batches_are_padded_to_block_size(tmp_path):
    book = tmp_path / "book.txt"
    book.write_text("to be or not to be\n" * 20)
    dm = TokenDataModule(
        corpus="text_files", paths=[str(book)], block_size=16, packing=False, cache_dir=tmp_path
    )
    dm.setup()
    batches = list(dm.val_dataloader())
    y = torch.cat([b[1] for b in batches])
    assert y.shape[1] == 16 and (y == IGNORE_INDEX).any()
    assert int((y != IGNORE_INDEX).sum()) == len(dm.tokens["val"]) - 1


def test_split_shorter_than_a_block_is_an_error(tmp_path):
    book = tmp_path / "book.txt"
    book.write_text("x" * 100)  # val gets 10 characters
    dm = TokenDataModule(corpus="text_files", paths=[str(book)], block_size=32, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="the val split has 10 tokens, fewer than one block"):
        dm.setup()


def test_step_batches_are_a_pure_function_of_seed_rank_and_index():
    tokens = np.arange(1000, dtype=np.uint16)
    windows = RandomWindows(tokens, 8)
    batches = StepBatches(windows, 4, seed=7)
    first = [b for _, b in zip(range(6), batches, strict=False)]
    # started at batch 3 (a resumed run): batches 3, 4, 5 as before
    resumed = StepBatches(windows, 4, seed=7, start=3)
    for expected, got in zip(first[3:], resumed, strict=False):
        assert torch.equal(expected[0], got[0]) and torch.equal(expected[1], got[1])
    assert torch.equal(first[2][1][:, :-1], first[2][0][:, 1:])  # targets shifted by one
    other_rank = StepBatches(windows, 4, seed=7, rank=1).batch(0)[0]
    other_seed = StepBatches(windows, 4, seed=8).batch(0)[0]
    assert not torch.equal(first[0][0], other_rank) and not torch.equal(first[0][0], other_seed)
    # two loader workers take turns: the same batches in the same order
    loader = torch.utils.data.DataLoader(batches, batch_size=None, num_workers=2)
    for expected, got in zip(first, loader, strict=False):
        assert torch.equal(expected[0], got[0])


@pytest.mark.parametrize(
    "damage",
    [
        lambda entry: (entry / "train.bin").write_bytes((entry / "train.bin").read_bytes()[:-10]),
        lambda entry: (entry / "train.bin").write_bytes(
            bytes(reversed((entry / "train.bin").read_bytes()))
        ),
        lambda entry: (entry / "meta.json").write_text("{garbled"),
        lambda entry: (entry / "tokenizer.json").write_text("[]"),
        lambda entry: (entry / "val.bin").unlink(),
    ],
    ids=["truncated", "garbled", "bad-meta", "bad-tokenizer", "missing"],
)
def test_a_damaged_token_cache_is_rebuilt(tmp_path, damage, caplog):
    book = tmp_path / "book.txt"
    book.write_text("the quick brown fox jumps over the lazy dog\n" * 40)
    dm = TokenDataModule(corpus="text_files", paths=[str(book)], block_size=8, cache_dir=tmp_path)
    dm.setup()
    good = {split: np.array(dm.tokens[split]) for split in ("train", "val")}
    damage(dm.cache_path)
    again = TokenDataModule(
        corpus="text_files", paths=[str(book)], block_size=8, cache_dir=tmp_path
    )
    again.setup()
    assert "is damaged" in caplog.text and "rebuilding it" in caplog.text
    assert again.cache_path == dm.cache_path
    for split, tokens in good.items():
        assert np.array_equal(again.tokens[split], tokens)


def test_a_damaged_bpe_tokenizer_cache_is_trained_again(tmp_path, caplog):
    book = tmp_path / "book.txt"
    book.write_text("the quick brown fox jumps over the lazy dog\n" * 40)

    def datamodule():
        dm = TokenDataModule(
            corpus="text_files",
            paths=[str(book)],
            block_size=8,
            cache_dir=tmp_path / "cache",
            tokenizer={"kind": "bpe", "vocab_size": 270},
        )
        dm.setup()
        return dm

    first = datamodule()
    (cached,) = (tmp_path / "cache").glob("bpe-*.json")
    cached.write_text("not json")
    for entry in (tmp_path / "cache").glob("text_files-*"):  # the token cache: build it again
        shutil.rmtree(entry)
    second = datamodule()
    assert "training it again" in caplog.text
    assert second.tokenizer.to_dict() == first.tokenizer.to_dict()


def stream_module(tmp_path, *names, **kwargs):
    dm = TokenDataModule(
        corpus="text_files", paths=[str(tmp_path / n) for n in names], cache_dir=tmp_path, **kwargs
    )
    dm.setup()
    return dm


def test_streamed_files_match_the_in_memory_path_in_small_chunks(tmp_path, monkeypatch):
    """Text files are read a chunk at a time (here 7 bytes: every multi-byte character gets
    cut somewhere by a chunk boundary) and give the tokens of the in-memory reference
    (`text_file_splits`): the same vocabulary, the same byte-based split, the same ids."""
    (tmp_path / "a.txt").write_text("Père Noël: 日本語, déjà vu!\n" * 13)
    (tmp_path / "b.txt").write_text("ünïcödé ☃ snow\n" * 11)
    monkeypatch.setattr(data_stream, "CHUNK_BYTES", 7)
    streamed = stream_module(tmp_path, "a.txt", "b.txt", block_size=8)
    splits = text_file_splits([str(tmp_path / n) for n in ("a.txt", "b.txt")], 0.1)
    train_chars = set("".join(d.text for d in splits["train"]))
    tokenizer = CharTokenizer.for_splits(train_chars, set("".join(d.text for d in splits["val"])))
    assert streamed.tokenizer.chars == tokenizer.chars
    for split in ("train", "val"):
        ids = [
            i for d in splits[split] for i in tokenizer.encode(tokenizer.replace_unknown(d.text))
        ]
        assert streamed.tokens[split][:].tolist() == ids, split
    text = (tmp_path / "a.txt").read_text() + (tmp_path / "b.txt").read_text()
    decoded = "".join(
        streamed.tokenizer.decode(streamed.tokens[s][:].tolist()) for s in ("train", "val")
    )
    assert decoded == text
    assert streamed.doc_starts["train"].tolist() == [0, len((tmp_path / "a.txt").read_text())]


def test_a_cached_corpus_is_not_read_again_and_a_touched_one_is(tmp_path, monkeypatch):
    (tmp_path / "a.txt").write_text("abcdefghij" * 40)
    first = stream_module(tmp_path, "a.txt", block_size=8)

    def fail(*args, **kwargs):
        raise AssertionError("read again")

    with monkeypatch.context() as patched:
        patched.setattr(data_stream.FilePiece, "read", fail)
        again = stream_module(tmp_path, "a.txt", block_size=8)
    assert again.cache_path == first.cache_path
    os.utime(tmp_path / "a.txt", ns=(1, 1))  # same bytes, another modification time
    assert stream_module(tmp_path, "a.txt", block_size=8).cache_path != first.cache_path


def test_a_vocabulary_above_65535_characters_is_stored_as_uint32(tmp_path):
    points = [p for p in range(0x100, 0x100 + 70_000) if not 0xD800 <= p <= 0xDFFF]
    text = "".join(map(chr, points))
    (tmp_path / "wide.txt").write_text(text * 2)
    dm = stream_module(tmp_path, "wide.txt", block_size=8)
    assert dm.vocab_size == len(points) > 2**16
    assert dm.tokens["train"].dtype == np.uint32
    assert dm.tokenizer.decode(dm.tokens["train"][:100].tolist()) == text[:100]


def test_streamed_file_errors_name_the_file(tmp_path):
    (tmp_path / "latin1.txt").write_bytes("caf\xe9 ".encode("latin-1") * 50)
    with pytest.raises(ValueError, match=r"latin1.txt is not UTF-8 \(byte 3"):
        stream_module(tmp_path, "latin1.txt", block_size=8)
    (tmp_path / "short.txt").write_text("tiny")
    with pytest.raises(ValueError, match="short.txt has 4 bytes, shorter than one block"):
        stream_module(tmp_path, "short.txt", block_size=8)
    assert not list(tmp_path.glob(".text_files-*.tmp"))  # no half-written entry stays


@pytest.mark.parametrize("clean", [False, True], ids=["raw", "cleaned"])
def test_held_out_characters_that_train_lacks_become_unknown(tmp_path, clean):
    """The vocabulary is the train split's: val's own characters become U+FFFD (added to
    the vocabulary only then); bits per byte still count the original bytes."""
    (tmp_path / "a.txt").write_text("abc def\n" * 90 + "xyz Ω!\n" * 3)
    dm = stream_module(tmp_path, "a.txt", block_size=8, clean=clean)
    assert dm.tokenizer.chars == sorted(set("abc def\n") | {UNKNOWN_CHAR})
    val = dm.tokenizer.decode(dm.tokens["val"][:].tolist())
    assert val.endswith("\ufffd\ufffd\ufffd \ufffd\ufffd\n")
    meta = json.loads((dm.cache_path / "meta.json").read_text())
    counted = meta["splits"]["train"]["bytes"] + meta["splits"]["val"]["bytes"]
    assert counted == (tmp_path / "a.txt").stat().st_size  # Ω is 2 bytes, U+FFFD 3


def test_evaluation_windows_are_the_same_on_one_and_on_two_processes(shakespeare):
    """Each DDP rank reads its share of the windows one process reads (limit_val_batches
    counting for the whole run, not per rank), with nothing repeated: the token-weighted
    val/loss is the same on 1 and on N processes."""

    def windows(rank: int, world: int) -> list[bytes]:
        shakespeare.trainer = SimpleNamespace(
            global_rank=rank, world_size=world, limit_val_batches=3, limit_test_batches=1.0
        )
        return [x.numpy().tobytes() for inputs, _ in shakespeare.val_dataloader() for x in inputs]

    try:
        one = windows(0, 1)
        two = windows(0, 2) + windows(1, 2)
    finally:
        shakespeare.trainer = None
    assert len(one) == 3 * shakespeare.batch_size
    assert sorted(two) == sorted(one) and len(set(one)) == len(one)


def test_token_files_read_like_arrays_in_any_process(tmp_path):
    """Split arrays are read with pread (no memory map whose pages would count as the
    process's memory): slices and items as numpy's, and usable in DataLoader workers."""
    array = np.arange(1000, dtype=np.uint16)
    array.tofile(tmp_path / "t.bin")
    tokens = TokenFile(tmp_path / "t.bin", "uint16")
    assert len(tokens) == 1000 and tokens[5] == 5 and tokens[-1] == 999
    assert np.array_equal(tokens[10:20], array[10:20]) and np.array_equal(tokens, array)
    assert np.array_equal(pickle.loads(pickle.dumps(tokens))[990:], array[990:])
    loader = torch.utils.data.DataLoader(RandomWindows(tokens, 8), batch_size=4, num_workers=2)
    inputs, targets = next(iter(loader))
    assert torch.equal(inputs[:, 1:], targets[:, :-1]) and inputs.shape == (4, 8)


def test_a_local_hf_dataset_is_a_corpus(tmp_path):
    """data=hf_dataset: a JSON-lines file the test writes, opened by datasets.load_dataset
    offline, one document per row of the named column; the last 10% of the rows validate."""
    rows = [{"id": i, "body": f"document {i}: " + "the quick brown fox. " * 5} for i in range(40)]
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    hf = {"builder": "json", "data_files": [str(tmp_path / "docs.jsonl")], "text_column": "body"}
    dm = TokenDataModule(corpus="hf_dataset", hf=hf, block_size=8, cache_dir=tmp_path / "cache")
    dm.setup()
    texts = [r["body"] for r in rows]
    assert dm.tokenizer.decode(dm.tokens["train"][:].tolist()) == "".join(texts[:36])
    assert dm.tokenizer.decode(dm.tokens["val"][:].tolist()) == "".join(texts[36:])
    assert dm.doc_starts["val"].tolist() == [0, *np.cumsum([len(t) for t in texts[36:39]])]
    bad = TokenDataModule(
        corpus="hf_dataset", hf=hf | {"text_column": "text"}, cache_dir=tmp_path / "cache"
    )
    with pytest.raises(ValueError, match="text_column='text' is not a column.*id, body"):
        bad.setup()


@pytest.mark.parametrize("piece_bytes", [16, 1 << 20])
def test_cleaning_streams_a_piece_at_a_time_as_clean_text_does(tmp_path, monkeypatch, piece_bytes):
    """data.clean=true on pieces of 16 bytes (cut only after a line break between two
    characters that are not whitespace) gives `clean_text` of each file."""
    body = "First line.  \r\nSecond\t\n\n\n\n\nThird line\rfourth.\nPlain one.\nPlain two.\n"
    raw_a = "\n\n" + body * 30 + "\n\n"
    raw_b = "  Indented start\r\n\r\n\r\nend   \n\n\n"
    (tmp_path / "a.txt").write_text(raw_a, newline="")
    (tmp_path / "b.txt").write_text(raw_b, newline="")
    sizes = [(tmp_path / n).stat().st_size for n in ("a.txt", "b.txt")]
    monkeypatch.setattr(data_stream, "CHUNK_BYTES", piece_bytes)
    dm = stream_module(
        tmp_path, "a.txt", "b.txt", block_size=8, clean=True, val_fraction=sizes[1] / sum(sizes)
    )
    parts = plan_splits([str(tmp_path / "a.txt")], 0.5, 1)
    pieces = len(file_pieces(parts, bpe=False, clean=True)["train"])
    assert pieces > 10 if piece_bytes == 16 else pieces == 1
    assert dm.tokenizer.decode(dm.tokens["train"][:].tolist()) == clean_text(raw_a)
    val = dm.tokenizer.decode(dm.tokens["val"][:].tolist())
    train_chars = set(clean_text(raw_a))  # val's other characters become U+FFFD
    assert val == "".join(c if c in train_chars else UNKNOWN_CHAR for c in clean_text(raw_b))
    assert val.startswith("  \ufffdndented st")  # the file's start keeps its indent


@pytest.mark.parametrize("bpe", [False, True], ids=["char", "bpe"])
def test_cleaning_a_crlf_file_in_small_pieces_is_cleaning_it_whole(tmp_path, monkeypatch, bpe):
    """A file with Windows line ends (CRLF), cut into 64-byte pieces with a 64-byte search
    for a cut: each cut falls where cleaning the pieces gives what cleaning the whole file
    gives (not between CR and LF, nor inside a run of blank lines or trailing spaces)."""
    lines = ["First line of text  ", "", "", "", "Second\tline", "x" * 90, "", "end of it"]
    raw = "\r\n".join(lines * 20) + "\r\n"
    (tmp_path / "a.txt").write_bytes(raw.encode())
    (tmp_path / "b.txt").write_bytes(raw.encode())
    monkeypatch.setattr(data_stream, "CHUNK_BYTES", 64)
    monkeypatch.setattr(data_stream, "BPE_CHUNK_BYTES", 64)
    monkeypatch.setattr(data_stream, "BOUNDARY_SEARCH", 64)
    tokenizer = {"kind": "bpe", "vocab_size": 300} if bpe else None
    dm = stream_module(
        tmp_path, "a.txt", "b.txt", block_size=8, clean=True, tokenizer=tokenizer, val_fraction=0.5
    )
    parts = plan_splits([str(tmp_path / "a.txt")], 0.5, 1)
    assert len(file_pieces(parts, bpe=bpe, clean=True)["train"]) > 10
    text = dm.tokenizer.decode(dm.tokens["train"][:].tolist())
    assert text.removesuffix("<|endoftext|>") == clean_text(raw)


def test_a_custom_pattern_never_streams_a_file_in_pieces(tmp_path, monkeypatch):
    """The cut rule of streamed files is GPT-2's pattern's: with another pattern, a file
    longer than a piece is refused (naming the pattern, the file and what to do); one that
    fits a piece is encoded whole."""
    (tmp_path / "a.txt").write_text("Hello world, this is text. " * 10)
    (tmp_path / "b.txt").write_text("More words for the val split. " * 4)
    monkeypatch.setattr(data_stream, "BPE_CHUNK_BYTES", 64)
    custom = {"kind": "bpe", "vocab_size": 300, "pattern": r"\S+|\s+"}
    with pytest.raises(ValueError, match=r"pattern='\\\\S\+\|\\\\s\+' is not GPT-2's.*a.txt"):
        stream_module(tmp_path, "a.txt", "b.txt", block_size=8, tokenizer=custom)
    monkeypatch.setattr(data_stream, "BPE_CHUNK_BYTES", 1 << 20)
    dm = stream_module(tmp_path, "a.txt", "b.txt", block_size=8, tokenizer=custom)
    assert dm.tokenizer.pattern == r"\S+|\s+"
