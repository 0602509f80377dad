"""HellaSwag (Zellers et al. 2019), the downstream score of GPT-2 reproductions: a context
and four endings, one right. Each ending is scored by the log-likelihood of its tokens
given the context, as nanoGPT's and llm.c's hellaswag.py score it:
- acc: the ending with the highest total log-likelihood;
- acc_norm: the highest mean log-likelihood per token of the ending (lm-evaluation-harness's
  acc_norm divides by the ending's bytes instead; its figures differ a little).
The context is encoded alone and each ending with a leading space, and a row longer than
the model's context keeps its last block_size tokens. GPT-2 124M scores acc_norm 0.2955 on
the validation set's 10,042 items this way (llm.c's figure).

The items are the validation set's JSON lines (`ctx`, `endings`, `label`): the Hugging Face
hub's `Rowan/hellaswag` through `datasets` on a machine with a network, or a local file in
that format (the original repository's hellaswag_val.jsonl)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from minigpt.core.model import GPT
from minigpt.core.sampling import unencodable

HUB_DATASET = "Rowan/hellaswag"


@dataclass(frozen=True)
class Item:
    context: str
    endings: tuple[str, ...]
    label: int


def read_items(file: str | Path | None = None, limit: int | None = None) -> list[Item]:
    """The validation items: from a local JSON-lines file, or (file=None) from the hub."""
    if file is not None:
        path = Path(file)
        if not path.is_file():
            raise FileNotFoundError(f"hellaswag.file={file} does not exist")
        rows = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as err:
                    raise ValueError(f"{path}, line {number}: not JSON ({err.msg})") from None
    else:
        import datasets

        try:
            rows = datasets.load_dataset(HUB_DATASET, split="validation")
        except Exception as err:
            raise ValueError(
                f"HellaSwag could not be fetched from the Hugging Face hub ({type(err).__name__}); "
                "without a network, give its validation file: hellaswag.file=hellaswag_val.jsonl"
            ) from None
    items = []
    for number, row in enumerate(rows, 1):
        try:
            item = Item(str(row["ctx"]), tuple(row["endings"]), int(row["label"]))
        except (KeyError, TypeError, ValueError) as err:
            raise ValueError(
                f"HellaSwag item {number} lacks ctx, endings or an integer label ({err!r})"
            ) from None
        if not 0 <= item.label < len(item.endings):
            raise ValueError(f"HellaSwag item {number}: label {item.label} names no ending")
        items.append(item)
        if limit is not None and len(items) >= limit:
            break
    return items


def ending_log_likelihoods(
    model: GPT, tokenizer, item: Item, device: torch.device | str = "cpu"
) -> list[tuple[float, int]]:
    """(total log-likelihood, tokens) of each ending given the context."""
    context = tokenizer.encode(item.context)
    endings = [tokenizer.encode(" " + ending) for ending in item.endings]
    block = model.config.block_size
    rows = [(context + ending)[-(block + 1) :] for ending in endings]
    width = max(len(row) for row in rows)
    ids = torch.zeros((len(rows), width), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
    with torch.no_grad():
        logits, _ = model(ids[:, :-1].to(device))
    log_probs = F.log_softmax(logits.float(), dim=-1).cpu()
    scores = []
    for i, (row, ending) in enumerate(zip(rows, endings, strict=True)):
        count = min(len(ending), len(row) - 1)  # the ending's tokens that are targets
        targets = torch.tensor(row[len(row) - count :])
        positions = torch.arange(len(row) - count - 1, len(row) - 1)
        scores.append((float(log_probs[i, positions, targets].sum()), count))
    return scores


def score(model: GPT, tokenizer, items: list[Item], device="cpu", progress=None) -> dict:
    """acc and acc_norm over the items the tokenizer can encode (a character vocabulary may
    lack some characters: those items are counted apart, never scored)."""
    model.eval()
    correct = correct_norm = scored = 0
    skipped = 0
    for item in items:
        if unencodable(tokenizer, " ".join([item.context, *item.endings])):
            skipped += 1
            continue
        scores = ending_log_likelihoods(model, tokenizer, item, device)
        totals = [total for total, _ in scores]
        means = [total / max(count, 1) for total, count in scores]
        correct += int(max(range(len(totals)), key=totals.__getitem__) == item.label)
        correct_norm += int(max(range(len(means)), key=means.__getitem__) == item.label)
        scored += 1
        if progress is not None:
            progress(scored + skipped, len(items))
    return {
        "task": "hellaswag",
        "items": scored,
        "skipped": skipped,
        "acc": correct / scored if scored else float("nan"),
        "acc_norm": correct_norm / scored if scored else float("nan"),
    }
