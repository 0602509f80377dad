"""A dataset that HF `datasets.load_dataset` opens from local files or a local directory
(JSON lines, text, parquet, csv, ...) as pieces for `minigpt.data.encode`: one document per
row's text column, read by the workers from datasets' Arrow cache (memory-mapped) in runs of
rows, so memory does not grow with the dataset.

`load_dataset` converts the files into its Arrow cache once and names that cache by the
files' paths and modification times; the dataset's `_fingerprint` therefore identifies the
data without reading it, and keys the token cache. The dataset's own `validation` and
`test` splits are used when it has them; otherwise the last val_fraction of the rows
validate. Nothing is downloaded (HF_DATASETS_OFFLINE is set while loading).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass

from minigpt.data.corpus import SPLITS

ROWS_PIECE_BYTES = 2 << 20
_open: dict = {}  # fingerprint -> datasets.Dataset, for the pieces (inherited by workers)


@dataclass(frozen=True)
class RowsPiece:
    """Rows [start, end) of an opened dataset; every non-empty row is a document."""

    dataset: str  # its fingerprint
    column: str
    start: int
    end: int
    nbytes: int  # estimated from the column's Arrow size

    def read(self) -> list[tuple[str, bool, bool]]:
        texts = _open[self.dataset][self.start : self.end][self.column]
        return [(str(t), True, True) for t in texts if t]


def load(builder: str, data_files, cache_dir: str | None):
    import datasets

    previous = os.environ.get("HF_DATASETS_OFFLINE")
    os.environ["HF_DATASETS_OFFLINE"] = "1"
    try:
        return datasets.load_dataset(builder, data_files=data_files, cache_dir=cache_dir)
    except (FileNotFoundError, ValueError, datasets.exceptions.DatasetNotFoundError) as err:
        raise ValueError(
            f"data.hf: datasets.load_dataset({builder!r}, data_files={data_files!r}) failed: "
            f"{str(err).strip().splitlines()[0]}"
        ) from None
    finally:
        if previous is None:
            os.environ.pop("HF_DATASETS_OFFLINE", None)
        else:
            os.environ["HF_DATASETS_OFFLINE"] = previous


def row_pieces(
    builder: str,
    data_files,
    text_column: str = "text",
    val_fraction: float = 0.1,
    cache_dir: str | None = None,
) -> tuple[dict[str, list[RowsPiece]], str]:
    """Each split's pieces, and a fingerprint of the data and the split."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"data.val_fraction={val_fraction} must be in (0, 1)")
    loaded = load(builder, data_files, cache_dir)
    train = loaded["train"] if "train" in loaded else next(iter(loaded.values()))
    if text_column not in train.column_names:
        raise ValueError(
            f"data.hf.text_column={text_column!r} is not a column of the dataset; "
            f"its columns: {', '.join(train.column_names)}"
        )
    if "validation" in loaded or "test" in loaded:
        ranges = {
            "train": (train, 0, len(train)),
            "val": (loaded["validation"], 0, len(loaded["validation"]))
            if "validation" in loaded
            else None,
            "test": (loaded["test"], 0, len(loaded["test"])) if "test" in loaded else None,
        }
    else:
        cut = max(1, int(len(train) * (1.0 - val_fraction)))
        ranges = {"train": (train, 0, cut), "val": (train, cut, len(train)), "test": None}
    pieces: dict[str, list[RowsPiece]] = {split: [] for split in SPLITS}
    digest = hashlib.sha256(text_column.encode())
    for split in SPLITS:
        if ranges[split] is None:
            continue
        dataset, start, end = ranges[split]
        _open[dataset._fingerprint] = dataset
        digest.update(json.dumps([split, dataset._fingerprint, start, end]).encode())
        column_bytes = dataset.data.column(text_column).nbytes
        row_bytes = column_bytes / max(1, len(dataset))
        step = max(1, int(ROWS_PIECE_BYTES / max(row_bytes, 1.0)))
        for first in range(start, end, step):
            last = min(end, first + step)
            nbytes = int(row_bytes * (last - first))
            pieces[split].append(RowsPiece(dataset._fingerprint, text_column, first, last, nbytes))
    if not pieces["train"] or not pieces["val"]:
        raise ValueError(
            f"data.hf: the dataset gives {len(pieces['train'])} train and "
            f"{len(pieces['val'])} val pieces of rows: it needs rows in both"
        )
    return pieces, digest.hexdigest()[:16]


def streamed_documents(settings: dict):
    """For data.corpus=shards: a function of n giving the texts of a dataset's rows from the
    n-th on, streamed (`streaming=True`: nothing is stored but what is read): a dataset of
    the Hugging Face hub by name and config (`dataset`, `config`, `split`), or local files
    (`builder`: json, parquet, ...; `data_files`)."""
    import datasets

    column = settings.get("text_column", "text")
    try:
        if settings.get("data_files"):
            rows = datasets.load_dataset(
                settings.get("builder") or "json",
                data_files=settings["data_files"],
                split="train",
                streaming=True,
            )
        else:
            rows = datasets.load_dataset(
                settings["dataset"],
                name=settings.get("config"),
                split=settings.get("split", "train"),
                streaming=True,
            )
    except (FileNotFoundError, ValueError, ConnectionError, OSError) as err:
        raise ValueError(
            f"data.shards: the dataset could not be opened "
            f"({str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__}); "
            "without a network, give local files: data.shards.builder=parquet "
            "data.shards.data_files=[...]"
        ) from None

    def documents_from(start: int):
        """The texts of rows start, start + 1, ...: read as Arrow tables of a thousand
        rows, the text column alone (row by row, datasets makes a dict of every column per
        row: 10 MB/s of text; this reads 200 MB/s of parquet, and leaves the cores to the
        encoding workers)."""
        selected = rows.skip(start) if start else rows
        names = selected.column_names or next(iter(selected)).keys()
        if column not in names:
            raise ValueError(
                f"data.shards.text_column={column!r} is not a column of the dataset; its "
                f"columns: {', '.join(names)}"
            )
        tables = selected.select_columns([column]).with_format("arrow").iter(batch_size=1000)
        for table in tables:
            yield from (text or "" for text in table.column(column).to_pylist())

    return documents_from
