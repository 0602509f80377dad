"""Preparing corpora in pieces across processes: pieces cut where encoding them gives the
tokens of the whole, parallel and single-process caches identical, BPE trained on a bounded
sample, HF datasets read row by row, and wide vocabularies stored as uint32."""

import json
import multiprocessing
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import regex
from hypothesis import given, settings
from hypothesis import strategies as st

import minigpt.data.rows as data_rows
import minigpt.data.stream as data_stream
from minigpt.core.tokenizers import GPT2_PATTERN, UNKNOWN_CHAR, BPETokenizer
from minigpt.data import TokenDataModule
from minigpt.data.corpus import Document, text_file_splits
from minigpt.data.encode import DocumentsPiece, map_pieces, sample_pieces, write_cache
from minigpt.data.stream import Part, file_pieces

TRICKY = (
    "It's  a test, naïve café 123 go!\n  Indented line\twith a tab\n"
    "She said: 'don't' -- x y; 東京 was here.\nEnd of part one.\n"
)


@pytest.fixture(scope="module")
def bpe() -> BPETokenizer:
    return BPETokenizer.train(TRICKY * 20, vocab_size=300)


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet="ab C'.,!? \n\t1é東", min_size=1, max_size=300))
def test_bpe_pieces_encode_to_the_tokens_of_the_whole_text(text):
    """Pieces of a few bytes, cut only before a space that follows a printable ASCII
    character and precedes an ASCII letter (else at a character boundary, after a search
    window of 16 bytes): the pre-tokenized chunks of the pieces are those of the whole text
    whenever a chunk start was found."""
    with tempfile.TemporaryDirectory() as directory:
        path = Path(directory) / "t.txt"
        path.write_bytes(text.encode("utf-8"))
        size = path.stat().st_size
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(data_stream, "BPE_CHUNK_BYTES", 5)
            patch.setattr(data_stream, "BOUNDARY_SEARCH", 16)
            pieces = file_pieces({"train": [Part(path, 0, size)], "val": [], "test": []}, True)
        texts = [p.read()[0][0] for p in pieces["train"]]
    texts = [t.decode("ascii") if isinstance(t, bytes) else t for t in texts]
    assert "".join(texts) == text
    cuts = [len("".join(texts[:i]).encode("utf-8")) for i in range(1, len(texts))]
    data = text.encode("utf-8")
    if all(data[c] == 32 and 33 <= data[c - 1] <= 126 and chr(data[c + 1]).isalpha() for c in cuts):
        chunks = [c for t in texts for c in regex.findall(GPT2_PATTERN, t)]
        assert chunks == regex.findall(GPT2_PATTERN, text)


def module(tmp_path, names, **kwargs):
    dm = TokenDataModule(
        corpus="text_files",
        paths=[str(tmp_path / n) for n in names],
        block_size=8,
        cache_dir=tmp_path / "cache",
        **kwargs,
    )
    dm.setup()
    return dm


def test_streamed_bpe_files_match_the_in_memory_path_on_two_processes(tmp_path, monkeypatch):
    """BPE over text files cut into 64-byte pieces, trained and encoded by two worker
    processes, gives the tokenizer trained on the whole train text and its tokens for each
    document (a file's part of a split: `text_file_splits`), end-of-text after each."""
    (tmp_path / "a.txt").write_text(TRICKY * 9)
    (tmp_path / "b.txt").write_text("Another book: ünïcödé ☃, snow.\n" * 7)
    monkeypatch.setattr(data_stream, "BPE_CHUNK_BYTES", 64)
    config = {"kind": "bpe", "vocab_size": 320}
    streamed = module(tmp_path, ["a.txt", "b.txt"], tokenizer=config, num_proc=2)
    splits = text_file_splits([str(tmp_path / n) for n in ("a.txt", "b.txt")], 0.1)
    counts = Counter(c for d in splits["train"] for c in regex.findall(GPT2_PATTERN, d.text))
    reference = BPETokenizer.train_on_counts(counts, 320)
    assert streamed.tokenizer.merges == reference.merges
    eot = streamed.tokenizer.eot_id
    for split in ("train", "val"):
        ids = [i for d in splits[split] for i in reference.encode(d.text) + [eot]]
        assert streamed.tokens[split][:].tolist() == ids, split
        starts = np.cumsum([0] + [len(reference.encode(d.text)) + 1 for d in splits[split]])
        assert streamed.doc_starts[split].tolist() == starts[:-1].tolist(), split
    # a file's part of a split is a document: a.txt and b.txt's first part in train
    assert streamed.tokens["train"][:].tolist().count(eot) == 2
    assert streamed.tokens["val"][:].tolist().count(eot) == 1
    text = (tmp_path / "a.txt").read_text() + (tmp_path / "b.txt").read_text()
    ids = [i for s in ("train", "val") for i in streamed.tokens[s][:].tolist() if i != eot]
    assert streamed.tokenizer.decode(ids) == text


@pytest.mark.parametrize("pieces, pools", [([], 0), (["abc"], 0), (["abc", "de", "f"], 1)])
def test_a_pool_is_started_only_for_more_than_one_piece(monkeypatch, pieces, pools):
    """One piece is computed in this process (a pool would run nothing beside it); more
    are spread over the workers. Either way every piece comes back, in order, from an
    iterator as from a list."""
    started, get_context = [], multiprocessing.get_context
    monkeypatch.setattr(
        multiprocessing, "get_context", lambda method: started.append(method) or get_context(method)
    )
    assert list(map_pieces(len, iter(pieces), workers=2)) == [len(p) for p in pieces]
    assert len(started) == pools


@pytest.mark.parametrize("kind", ["char", "bpe"])
def test_one_and_two_processes_write_the_same_cache(tmp_path, monkeypatch, kind):
    (tmp_path / "a.txt").write_text(TRICKY * 30)
    monkeypatch.setattr(data_stream, "CHUNK_BYTES", 100)
    monkeypatch.setattr(data_stream, "BPE_CHUNK_BYTES", 100)
    config = {"kind": kind, "vocab_size": 300}
    one, two = (
        TokenDataModule(
            corpus="text_files",
            paths=[str(tmp_path / "a.txt")],
            block_size=8,
            cache_dir=tmp_path / f"cache{workers}",
            tokenizer=config,
            num_proc=workers,
        )
        for workers in (1, 2)
    )
    one.setup()
    two.setup()
    for name in ("train.bin", "val.bin", "train.docs.npy", "tokenizer.json", "meta.json"):
        assert (one.cache_path / name).read_bytes() == (two.cache_path / name).read_bytes()


def test_bpe_trains_on_an_evenly_spaced_sample_of_the_train_split(tmp_path, monkeypatch):
    """sample_mb bounds the text BPE training reads: evenly spaced pieces of the train
    split, the tokenizer being the one trained on exactly their chunks."""
    pieces = [DocumentsPiece((Document(str(i), "x" * 100),)) for i in range(10)]
    assert sample_pieces(pieces, 10_000) == pieces
    assert [p.documents[0].title for p in sample_pieces(pieces, 300)] == ["0", "3", "6"]
    text = "".join(f"line {i} of the book, {i * i} words\n" for i in range(2000))
    (tmp_path / "a.txt").write_text(text)
    monkeypatch.setattr(data_stream, "BPE_CHUNK_BYTES", 4096)
    mib = 1 << 20
    config = {"kind": "bpe", "vocab_size": 300, "sample_mb": 8192 / mib}
    dm = module(tmp_path, ["a.txt"], tokenizer=config, num_proc=2)
    parts = {"train": [Part(tmp_path / "a.txt", 0, 0)], "val": [], "test": []}
    train_end = len(text.encode()) - len(dm.tokenizer.decode(dm.tokens["val"][:].tolist()))
    parts["train"] = [Part(tmp_path / "a.txt", 0, train_end)]
    train_pieces = file_pieces(parts, True)["train"]
    sample = sample_pieces(train_pieces, 8192)
    assert 1 < len(sample) < len(train_pieces)
    counts = Counter(
        c for p in sample for c in regex.findall(GPT2_PATTERN, p.read()[0][0].decode())
    )
    assert dm.tokenizer.merges == BPETokenizer.train_on_counts(counts, 300).merges


def test_a_vocabulary_above_65535_tokens_is_stored_as_uint32(tmp_path):
    """A GPT-2 sized BPE vocabulary (here every pair of bytes merged: 65,536 + 256 tokens)
    does not fit uint16."""
    merges = [(a, b) for a in range(256) for b in range(256)]
    wide = BPETokenizer(merges)
    text = "zz~~ \x7f\x7f wide tokens"
    pieces = {"train": [DocumentsPiece((Document("d", text),))], "val": [], "test": []}
    write_cache(pieces, wide, tmp_path, workers=1)
    meta = json.loads((tmp_path / "meta.json").read_text())
    assert meta["dtype"] == "uint32"
    ids = np.fromfile(tmp_path / "train.bin", dtype=np.uint32).tolist()
    assert max(ids) > 2**16 and ids[-1] == wide.eot_id
    assert wide.decode(ids[:-1]) == text


def hf_module(tmp_path, builder, files, **kwargs):
    hf = {"builder": builder, "data_files": files, "text_column": kwargs.pop("column", "text")}
    dm = TokenDataModule(
        corpus="hf_dataset", hf=hf, block_size=8, cache_dir=tmp_path / "cache", **kwargs
    )
    dm.setup()
    return dm


def test_hf_parquet_rows_stream_through_two_processes_in_small_pieces(tmp_path, monkeypatch):
    """A parquet file the test writes: rows read in pieces of a few rows by two workers,
    one document per non-empty row, the vocabulary from the train rows only (val's 'Ω'
    becomes U+FFFD)."""
    import datasets

    rows = [f"row {i}: the quick brown fox.\n" for i in range(30)] + ["", "the row Ω\n"]
    datasets.Dataset.from_dict({"text": rows}).to_parquet(tmp_path / "d.parquet")
    monkeypatch.setattr(data_rows, "ROWS_PIECE_BYTES", 64)
    dm = hf_module(tmp_path, "parquet", [str(tmp_path / "d.parquet")], num_proc=2)
    cut = int(len(rows) * 0.9)
    assert dm.tokenizer.decode(dm.tokens["train"][:].tolist()) == "".join(rows[:cut])
    val = [r.replace("Ω", UNKNOWN_CHAR) for r in rows[cut:] if r]
    assert dm.tokenizer.decode(dm.tokens["val"][:].tolist()) == "".join(val)
    assert "Ω" not in dm.tokenizer.chars and UNKNOWN_CHAR in dm.tokenizer.chars
    assert len(dm.doc_starts["train"]) == cut and len(dm.doc_starts["val"]) == len(val)
    again = hf_module(tmp_path, "parquet", [str(tmp_path / "d.parquet")], num_proc=1)
    assert again.cache_path == dm.cache_path  # datasets' fingerprint keys the cache


def test_hf_text_builder_with_its_own_validation_split_and_bpe(tmp_path):
    """The `text` builder (one row per line) with a validation file: the dataset's own
    split validates; BPE puts end-of-text after every row."""
    (tmp_path / "train.txt").write_text("".join(f"line {i} of many\n" for i in range(50)))
    (tmp_path / "valid.txt").write_text("a held out line\nand another\n")
    files = {"train": str(tmp_path / "train.txt"), "validation": str(tmp_path / "valid.txt")}
    dm = hf_module(tmp_path, "text", files, tokenizer={"kind": "bpe", "vocab_size": 280})
    eot = dm.tokenizer.eot_id
    val = dm.tokens["val"][:].tolist()
    assert val.count(eot) == 2 and val[-1] == eot
    assert dm.tokenizer.decode([i for i in val if i != eot]) == "a held out lineand another"
    assert len(dm.doc_starts["train"]) == 50
