import json

import numpy as np
import pytest
import torch

import minigpt.data as data_module
from minigpt.data import (
    FixedWindows,
    PaddedDocuments,
    RandomWindows,
    StepBatches,
    TokenDataModule,
)
from minigpt.model import GPT, IGNORE_INDEX, GPTConfig


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
    works = {split: set(meta["splits"][split]["documents"]) for split in ("train", "val", "test")}
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

    monkeypatch.setattr(data_module, "tokenize_splits", fail)
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
    second = datamodule()
    assert "training it again" in caplog.text
    assert second.tokenizer.to_dict() == first.tokenizer.to_dict()
