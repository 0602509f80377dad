"""Token shards (minigpt.data.shards): how fast they are prepared, how much memory that
takes, and whether training on them is slower than on tokens already in memory.

1. Preparation throughput: a parquet corpus of `--mb` MB (documents of ~4 KB made of
   Shakespeare's paragraphs, repeated; FineWeb's files are parquet) prepared with a
   tiktoken tokenizer on every core (datasets streaming the file, the workers encoding,
   this process writing shards), in MB of text a second,
   against tiktoken's own rate on one core in the same run (encode_ordinary of each
   document, one process). Goal: >= 0.9 x cores x that rate.
2. Peak memory: the preparation of that corpus (one file) and of `--scale` times as much
   text (as many files of the same size: a web corpus grows in files, FineWeb-edu's 10B
   sample is 14 parquet files), each in a fresh process (peak resident set, ru_maxrss):
   flat means the same.
3. Reading: training steps of the default model (4 x 128, block 128, batch 32, Muon) on
   windows of the shards against windows of random tokens in memory, alternating blocks
   of steps in one process; the ratio of median step times (random / shards).

The tokenizer is a byte-level BPE of GPT-2's size trained here by HF tokenizers on the
embedded corpus and run by tiktoken (GPT-2's own encoding needs a download).

    python benchmarks/shards.py [--mb 40 --scale 3 --steps 5 --blocks 3]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from minigpt.core.model import GPT, GPTConfig
from minigpt.core.tokenizers import BPETokenizer, TiktokenTokenizer
from minigpt.data.corpus import shakespeare_works
from minigpt.data.encode import default_workers
from minigpt.data.rows import streamed_documents
from minigpt.data.shards import ShardTokens, find_shards, prepare_shards
from minigpt.data.windows import RandomWindows, StepBatches
from minigpt.training.optimizers import MuonWithAdamW


def tokenizer_files(folder: Path) -> Path:
    path = folder / "tokenizer.json"
    if not path.exists():
        text = "".join(w.text for w in shakespeare_works().values())
        BPETokenizer.train_hf(text, vocab_size=50257).save(path)
    return path


DOCUMENT_BYTES = 4000  # about a FineWeb-edu document's mean size


def write_corpus(path: Path, megabytes: float) -> int:
    """Documents of about DOCUMENT_BYTES made of Shakespeare's paragraphs in turn, up to
    `megabytes` of text, as a parquet file with a text column (FineWeb's format), in row
    groups of 10,000 rows."""
    paragraphs = [p for w in shakespeare_works().values() for p in w.text.split("\n\n") if p]
    texts, written, document, i = [], 0, [], 0
    while written < megabytes * 1e6:
        document.append(paragraphs[i % len(paragraphs)])
        i += 1
        if sum(len(p) for p in document) >= DOCUMENT_BYTES:
            texts.append("\n\n".join(document))
            written += len(texts[-1].encode())
            document = []
    pq.write_table(pa.table({"text": texts}), path, row_group_size=10_000)
    return written


def load(tokenizer_path: Path) -> TiktokenTokenizer:
    return TiktokenTokenizer.from_bpe(BPETokenizer.load(tokenizer_path))


def prepare(corpus: list[Path], tokenizer_path: Path, out: Path, workers: int) -> dict:
    """Prepares shards of the corpus's files into out; returns seconds and peak memory
    (this process and its workers)."""
    tokenizer = load(tokenizer_path)
    settings = {"builder": "parquet", "data_files": [str(f) for f in corpus]}
    start = time.perf_counter()
    progress = prepare_shards(
        streamed_documents(settings), tokenizer, out, "bench", 10_000_000, workers=workers
    )
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    return {
        "seconds": seconds,
        "tokens": sum(progress["tokens"]),
        "peak_mb": peak,
        "worker_peak_mb": children,
    }


def single_core_rate(corpus: Path, tokenizer_path: Path) -> float:
    """tiktoken's MB/s on one core: encode_ordinary of every document of the corpus."""
    tokenizer = load(tokenizer_path)
    texts = pq.read_table(corpus).column("text").to_pylist()
    nbytes = sum(len(t.encode()) for t in texts)
    start = time.perf_counter()
    for text in texts:
        tokenizer.encode_ordinary(text)
    return nbytes / 1e6 / (time.perf_counter() - start)


def _encode_all(texts: list[str]) -> None:
    tokenizer = _ceiling_tokenizer[0]
    for text in texts:
        tokenizer.encode_ordinary(text)


_ceiling_tokenizer: list = []


def parallel_ceiling(corpus: Path, tokenizer_path: Path, workers: int) -> float:
    """MB/s of `workers` forked processes encoding a share of the documents each, nothing
    else running: what the cores give tiktoken together on this machine."""
    _ceiling_tokenizer[:] = [load(tokenizer_path)]
    texts = pq.read_table(corpus).column("text").to_pylist()
    nbytes = sum(len(t.encode()) for t in texts)
    start = time.perf_counter()
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        pool.map(_encode_all, [texts[i::workers] for i in range(workers)])
    return nbytes / 1e6 / (time.perf_counter() - start)


def in_fresh_process(corpus: list[Path], tokenizer_path: Path, out: Path, workers: int) -> dict:
    files = ", ".join(f"Path({str(f)!r})" for f in corpus)
    code = (
        "import json, sys; from pathlib import Path; sys.path.insert(0, 'benchmarks');"
        "from shards import prepare;"
        f"print(json.dumps(prepare([{files}], Path({str(tokenizer_path)!r}), "
        f"Path({str(out)!r}), {workers})))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def step_times(batches: StepBatches, model: GPT, optimizer, steps: int) -> list[float]:
    times = []
    iterator = iter(batches)
    for _ in range(steps):
        start = time.perf_counter()
        x, y = next(iterator)
        _, loss = model(x, y)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return times


def reading(shard_folder: Path, vocab_size: int, steps: int, blocks: int) -> dict:
    """Median step of the default model on shard windows and on random tokens in memory."""
    torch.manual_seed(0)
    config = GPTConfig(
        vocab_size=vocab_size, vocab_multiple=64, block_size=128, pos_encoding="rope"
    )
    model = GPT(config)
    optimizer = MuonWithAdamW(model.param_groups(), lr=0.05, adamw_lr=1e-2, ns_dtype="float32")
    found = find_shards(shard_folder)
    shards = ShardTokens(found["val"] + found["train"])
    memory = np.random.default_rng(0).integers(0, vocab_size, len(shards)).astype(np.uint16)
    sources = {
        "shards": StepBatches(RandomWindows(shards, 128), 32, seed=0),
        "random": StepBatches(RandomWindows(memory, 128), 32, seed=0),
    }
    step_times(sources["random"], model, optimizer, 5)  # warm-up
    times = {name: [] for name in sources}
    for _ in range(blocks):
        for name, batches in sources.items():
            times[name] += step_times(batches, model, optimizer, steps)
    medians = {name: statistics.median(t) * 1000 for name, t in times.items()}
    return {"ms": medians, "ratio": medians["random"] / medians["shards"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mb", type=float, default=40.0)
    parser.add_argument("--scale", type=int, default=3)
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--workers", type=int, default=default_workers())
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        tokenizer_path = tokenizer_files(folder)
        vocab = load(tokenizer_path).vocab_size
        small = folder / "small.parquet"
        small_bytes = write_corpus(small, args.mb)
        large = [folder / f"large-{i}.parquet" for i in range(int(args.scale))]
        large_bytes = sum(write_corpus(f, args.mb) for f in large)
        print(
            f"tokenizer: byte-level BPE, {vocab:,} tokens, run by tiktoken; "
            f"{args.workers} workers; corpora {small_bytes / 1e6:.1f} and "
            f"{large_bytes / 1e6:.1f} MB of text"
        )
        rate = single_core_rate(small, tokenizer_path)
        ceiling = parallel_ceiling(small, tokenizer_path, args.workers)
        print(
            f"tiktoken, one core: {rate:.2f} MB/s; {args.workers} processes encoding a share "
            f"each, nothing else: {ceiling:.2f} MB/s ({ceiling / (args.workers * rate):.2f} x "
            f"{args.workers} x one core's rate)"
        )
        results = {}
        for name, corpus, nbytes in (
            ("small", [small], small_bytes),
            ("large", large, large_bytes),
        ):
            out = folder / f"shards-{name}"
            result = in_fresh_process(corpus, tokenizer_path, out, args.workers)
            result["mb_s"] = nbytes / 1e6 / result["seconds"]
            results[name] = result
            print(
                f"prepare {nbytes / 1e6:6.1f} MB ({len(corpus)} files): "
                f"{result['seconds']:6.1f} s, "
                f"{result['mb_s']:.2f} MB/s ({result['mb_s'] / (args.workers * rate):.2f} x "
                f"{args.workers} cores x one core's rate), {result['tokens']:,} tokens; peak "
                f"memory {result['peak_mb']:.0f} MB (this process), "
                f"{result['worker_peak_mb']:.0f} MB (a worker)"
            )
        extra_mb = (large_bytes - small_bytes) / 1e6
        marginal = extra_mb / (results["large"]["seconds"] - results["small"]["seconds"])
        print(
            f"the extra {extra_mb:.0f} MB (start-up left out): {marginal:.2f} MB/s "
            f"({marginal / (args.workers * rate):.2f} x {args.workers} x one core's rate, "
            f"{marginal / ceiling:.2f} x the processes' own)"
        )
        growth = results["large"]["peak_mb"] / results["small"]["peak_mb"]
        print(f"peak memory, {args.scale:g}x the corpus: {growth:.2f}x")
        read = reading(folder / "shards-large", vocab, args.steps, args.blocks)
        print(
            f"training step, default model (vocabulary {vocab:,} padded to 64), batch 32 x "
            f"128: shards {read['ms']['shards']:.1f} ms, random tokens in memory "
            f"{read['ms']['random']:.1f} ms (median of {args.steps * args.blocks}); "
            f"ratio random/shards {read['ratio']:.3f}"
        )
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, pid {os.getpid()}")


if __name__ == "__main__":
    main()
