"""BPE tokenizer training and encoding: minigpt's trainer against HF `tokenizers`' BPE
trainer, side by side on the embedded corpus's train split, same vocabulary size and same
pre-tokenization (GPT-2's regex, byte-level).

    python benchmarks/bpe.py [--vocab-size 8192] [--repeats 3]

Prints, as medians over the repeats: training time, encoding throughput (MB of UTF-8 per
second, a fresh tokenizer encoding the whole train split) and bytes per token, for both.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from minigpt.core.tokenizers import GPT2_PATTERN, BPETokenizer, train_hf_tokenizer  # noqa: E402
from minigpt.data.corpus import shakespeare_splits  # noqa: E402


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def measure(text: str, vocab_size: int) -> dict:
    size = len(text.encode("utf-8"))
    ours, train_s = timed(lambda: BPETokenizer.train(text, vocab_size))
    fresh = BPETokenizer.from_dict(ours.to_dict())  # empty chunk cache
    ids, encode_s = timed(lambda: fresh.encode(text))
    assert fresh.decode(ids) == text
    n_merges = vocab_size - 256 - 1  # as ours: bytes + merges + end-of-text
    hf, hf_train_s = timed(lambda: train_hf_tokenizer(text, n_merges, GPT2_PATTERN))
    hf_ids, hf_encode_s = timed(lambda: hf.encode(text).ids)
    return {
        "minigpt": {
            "train_s": train_s,
            "encode_MB_s": size / encode_s / 1e6,
            "bytes_per_token": size / len(ids),
        },
        "hf": {
            "train_s": hf_train_s,
            "encode_MB_s": size / hf_encode_s / 1e6,
            "bytes_per_token": size / len(hf_ids),
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--vocab-size", type=int, default=8192)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    text = "".join(d.text for d in shakespeare_splits()["train"])
    runs = [measure(text, args.vocab_size) for _ in range(args.repeats)]
    result = {
        name: {k: statistics.median(r[name][k] for r in runs) for k in runs[0][name]}
        for name in ("minigpt", "hf")
    }
    mb = len(text.encode("utf-8")) / 1e6
    print(f"train split: {mb:.2f} MB, vocab {args.vocab_size}, medians of {args.repeats}")
    print(f"{'':18}{'minigpt':>10}{'HF':>10}")
    for key, fmt in (("train_s", ".2f"), ("encode_MB_s", ".2f"), ("bytes_per_token", ".4f")):
        print(f"{key:18}{result['minigpt'][key]:>10{fmt}}{result['hf'][key]:>10{fmt}}")
    ratio = result["minigpt"]["bytes_per_token"] / result["hf"]["bytes_per_token"]
    print(f"compression minigpt / HF: {ratio:.4f}")
    print(
        json.dumps(
            {
                "machine": platform.machine(),
                "python": platform.python_version(),
                "vocab_size": args.vocab_size,
                "MB": mb,
                **result,
            }
        )
    )


if __name__ == "__main__":
    main()
