"""Data: the token cache (`cache`), the examples cut from it (`windows`) and the
LightningDataModule that serves them (`module`)."""

from minigpt.data.cache import CACHE_FORMAT, cache_damage, file_sha256
from minigpt.data.module import TokenDataModule
from minigpt.data.windows import (
    PAD_INPUT_ID,
    FixedWindows,
    PaddedDocuments,
    RandomWindows,
    StepBatches,
)

__all__ = [
    "CACHE_FORMAT",
    "PAD_INPUT_ID",
    "FixedWindows",
    "PaddedDocuments",
    "RandomWindows",
    "StepBatches",
    "TokenDataModule",
    "cache_damage",
    "file_sha256",
]
