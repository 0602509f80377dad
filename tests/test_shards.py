"""Token shards in llm.c's format (minigpt.data.shards): the format both ways, preparation
from a streamed dataset on several processes, resuming a stopped preparation, and training
on shards (data=fineweb) from local files, offline."""

import json

import numpy as np
import pytest
from conftest import compose_into

from minigpt.commands import train as train_script
from minigpt.commands.prepare import prepare
from minigpt.core.tokenizers import BPETokenizer, TiktokenTokenizer
from minigpt.data import TokenDataModule
from minigpt.data import shards as shards_module
from minigpt.data.corpus import shakespeare_works
from minigpt.data.rows import streamed_documents
from minigpt.data.shards import (
    HEADER_BYTES,
    ShardTokens,
    find_shards,
    prepare_shards,
    read_progress,
    shard_tokens,
    write_shard,
)


def llmc_read(path) -> np.ndarray:
    """llm.c's reader (dev/data/data_common.py, load of a data file), as written there."""
    header = np.fromfile(path, dtype=np.int32, count=256)
    assert header[0] == 20240520 and header[1] == 1
    tokens = np.fromfile(path, dtype=np.uint16, offset=256 * 4)
    assert len(tokens) == header[2]
    return tokens


def llmc_write(path, tokens) -> None:
    """llm.c's writer: the header, then the uint16 tokens."""
    header = np.zeros(256, dtype=np.int32)
    header[:3] = 20240520, 1, len(tokens)
    with open(path, "wb") as f:
        f.write(header.tobytes())
        f.write(np.asarray(tokens, dtype=np.uint16).tobytes())


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """A JSON-lines corpus of 300 documents (Shakespeare's paragraphs) and GPT-2's files of
    a BPE trained on other text."""
    folder = tmp_path_factory.mktemp("corpus")
    works = list(shakespeare_works().values())
    paragraphs = [p for p in works[3].text.split("\n\n") if p.strip()][:300]
    rows = [{"id": i, "text": p} for i, p in enumerate(paragraphs)]
    (folder / "docs.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    BPETokenizer.train(works[0].text[:100_000], vocab_size=600).save_gpt2_files(folder / "gpt2")
    return folder, paragraphs


def local(corpus) -> dict:
    folder, _ = corpus
    return {"builder": "json", "data_files": [str(folder / "docs.jsonl")]}


def test_shards_are_llmc_shards_both_ways(tmp_path):
    tokens = np.arange(1000, dtype=np.uint16)
    write_shard(tmp_path / "a_val_000000.bin", tokens[:300])
    llmc_write(tmp_path / "a_train_000001.bin", tokens[300:])
    assert np.array_equal(llmc_read(tmp_path / "a_val_000000.bin"), tokens[:300])
    found = find_shards(tmp_path)
    train = ShardTokens(found["val"] + found["train"])
    assert len(train) == 1000 and np.array_equal(np.asarray(train), tokens)
    assert np.array_equal(train[290:310], tokens[290:310])  # a window across two shards
    assert train[-1] == 999 and np.array_equal(train[5:9], tokens[5:9])
    cut = tmp_path / "cut_val_000000.bin"
    cut.write_bytes((tmp_path / "a_val_000000.bin").read_bytes()[: HEADER_BYTES + 100])
    with pytest.raises(ValueError, match="a shard cut short"):
        shard_tokens(cut)
    (tmp_path / "text_val_000000.bin").write_bytes(b"not a shard" * 200)
    with pytest.raises(ValueError, match="not a token shard"):
        shard_tokens(tmp_path / "text_val_000000.bin")


def expected_stream(paragraphs, tokenizer) -> np.ndarray:
    """What llm.c's fineweb.py writes: each document preceded by end-of-text."""
    return np.array(
        [t for p in paragraphs for t in [tokenizer.eot_id, *tokenizer.encode(p)]], np.uint16
    )


@pytest.mark.parametrize("workers", [1, 2])
def test_preparation_writes_the_documents_stream_in_shards(corpus, tmp_path, workers, monkeypatch):
    folder, paragraphs = corpus
    monkeypatch.setattr(shards_module, "BATCH_BYTES", 2000)  # many batches, many workers' tasks
    tokenizer = TiktokenTokenizer.gpt2(folder / "gpt2")
    progress = prepare_shards(
        streamed_documents(local(corpus)), tokenizer, tmp_path, "docs", 5000, workers=workers
    )
    found = find_shards(tmp_path)
    names = [p.name for p in found["val"] + found["train"]]
    assert names[:2] == ["docs_val_000000.bin", "docs_train_000001.bin"]
    stream = np.concatenate([llmc_read(p) for p in found["val"] + found["train"]])
    assert np.array_equal(stream, expected_stream(paragraphs, tokenizer))
    assert progress["complete"] and progress["tokens"][:-1] == [5000] * (len(names) - 1)


def test_a_stopped_preparation_continues_from_its_last_whole_shard(corpus, tmp_path, monkeypatch):
    """A preparation that dies mid-shard leaves whole shards, a progress record and no
    shard half-written under a shard's name; run again, it gives the shards of an
    uninterrupted preparation (documents cut across shards included)."""
    folder, paragraphs = corpus
    monkeypatch.setattr(shards_module, "BATCH_BYTES", 2000)
    tokenizer = TiktokenTokenizer.gpt2(folder / "gpt2")
    documents = streamed_documents(local(corpus))

    def dying(start):
        for i, text in enumerate(documents(start)):
            if start + i == 200:
                raise KeyboardInterrupt  # killed while filling a shard
            yield text

    with pytest.raises(KeyboardInterrupt):
        prepare_shards(dying, tokenizer, tmp_path / "run", "docs", 1000)
    progress = read_progress(tmp_path / "run")
    assert not progress["complete"] and progress["shards"] >= 2 and progress["offset"] > 0
    prepare_shards(documents, tokenizer, tmp_path / "run", "docs", 1000)
    prepare_shards(documents, tokenizer, tmp_path / "whole", "docs", 1000)
    for split in ("val", "train"):
        resumed, whole = (
            find_shards(tmp_path / "run")[split],
            find_shards(tmp_path / "whole")[split],
        )
        assert [p.read_bytes() for p in resumed] == [p.read_bytes() for p in whole]
    assert not list((tmp_path / "run").glob(".*"))


def fineweb_options(corpus, tmp_path) -> list[str]:
    folder, _ = corpus
    return [
        "data=fineweb",
        f"data.tokenizer.files={folder / 'gpt2'}",
        f"data.shards.dir={tmp_path / 'shards'}",
        "data.shards.builder=json",
        f"data.shards.data_files=[{folder / 'docs.jsonl'}]",
        "data.shards.shard_tokens=4000",
    ]


def test_training_reads_shards_prepared_by_prepare_py(corpus, tmp_path, cache_dir):
    """prepare.py data=fineweb (local files) prepares the shards; train.py trains on them
    (val: shard 0), with bits per byte over the text tokens of the val shard."""
    options = fineweb_options(corpus, tmp_path)
    dm = prepare(compose_into(tmp_path / "prep", cache_dir, *options))
    assert dm.cache_path == tmp_path / "shards" and len(dm.tokens["val"]) == 4000
    val = np.asarray(dm.tokens["val"])
    text = [t for t in val.tolist() if t != dm.tokenizer.eot_id]
    expected = len(text) / len(dm.tokenizer.decode(text).encode())
    assert dm.tokens_per_byte("val") == pytest.approx(expected, rel=1e-3)  # cuts inside chars
    tiny = ("experiment=tiny", "logger=none", "sample.num_samples=0", "trainer.max_steps=3")
    train_script.train(compose_into(tmp_path / "run", cache_dir, *options, *tiny))
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["status"] == "done" and metrics["best_val_bpb"] > 0


def test_someone_elses_shards_are_read_as_they_are(corpus, tmp_path):
    folder, paragraphs = corpus
    tokenizer = TiktokenTokenizer.gpt2(folder / "gpt2")
    stream = expected_stream(paragraphs, tokenizer)
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    llmc_write(theirs / "fineweb_val_000000.bin", stream[:3000])
    llmc_write(theirs / "fineweb_train_000001.bin", stream[3000:])
    dm = TokenDataModule(
        corpus="shards",
        shards={"dir": str(theirs)},
        tokenizer={"kind": "gpt2", "files": str(folder / "gpt2")},
        block_size=16,
    )
    dm.setup()
    assert np.array_equal(np.asarray(dm.tokens["train"]), stream[3000:])
    assert not (theirs / "progress.json").exists()  # nothing written into their folder
    with pytest.raises(ValueError, match="data.tokenizer.kind=gpt2"):
        TokenDataModule(corpus="shards", shards={"dir": str(theirs)}, tokenizer={"kind": "bpe"})


def test_a_preparation_is_finished_with_the_tokenizer_it_began_with(corpus, tmp_path):
    """A stopped preparation in a folder, continued with another tokenizer: refused (the
    shards would mix two vocabularies), the folder left as it was."""
    folder, _ = corpus
    options = {"builder": "json", "data_files": [str(folder / "docs.jsonl")]}
    shards = {"dir": str(tmp_path / "shards"), "shard_tokens": 1000, **options}
    first = {"kind": "gpt2", "files": str(folder / "gpt2")}
    (tmp_path / "shards").mkdir()
    TiktokenTokenizer.gpt2(folder / "gpt2").save(tmp_path / "shards" / "tokenizer.json")
    (tmp_path / "shards" / "progress.json").write_text(
        json.dumps(
            {
                "name": "shards",
                "shard_tokens": 1000,
                "shards": 0,
                "documents": 0,
                "offset": 0,
                "tokens": [],
                "complete": False,
            }
        )
    )
    BPETokenizer.train("other text " * 100, vocab_size=300).save_gpt2_files(tmp_path / "other")
    other = {"kind": "gpt2", "files": str(tmp_path / "other")}
    with pytest.raises(ValueError, match="begun with another tokenizer"):
        TokenDataModule(corpus="shards", shards=shards, tokenizer=other).prepare_data()
    assert read_progress(tmp_path / "shards")["shards"] == 0
    dm = TokenDataModule(corpus="shards", shards=shards, tokenizer=first, block_size=8)
    dm.setup()
    assert read_progress(tmp_path / "shards")["complete"]
