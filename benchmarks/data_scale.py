"""Data at scale: `data=text_files` on corpora of 256 MiB and 1 GiB, characters and BPE.

For each size, writes a corpus made of the embedded works repeated, every line of the
r-th copy prefixed with `r|` (so no two copies are the same text), as 64 MiB files; then runs
`train.py` on it, 20 training steps of the default model each time.
Characters (`--tokenizers char`), with a fresh token cache:
- run 1 prepares the cache (two parallel streaming passes) and trains;
- run 2 finds the cache and trains.
BPE (`--tokenizers bpe`, vocabulary 8192, minigpt's trainer on a 64 MiB sample):
- run 1 trains the tokenizer, encodes the corpus on every core and trains;
- runs 2 and 3 find the tokenizer but not the token cache (deleted), and encode the corpus
  with one process and with every core (`data.num_proc`): the ratio of their rates is
  what the parallel encoding gains.
Printed per size: peak memory of each run, as the largest process's max RSS and as the
peak proportional set size of all its processes (forked workers share pages; PSS splits
them, so the sum is the run's memory),
the preparation's rate (the line `token cache: ... MB/s` that a run prints), and the
character run 2's seconds from launch to its first training step (the progress bar's
first step).
`--bpe-ratio-repeats N` also times BPE encoding alone (no training steps), one process and
every core alternating, N times each, and prints the medians' ratio.
`python benchmarks/data_scale.py [--sizes-mib 256 1024] [--tokenizers char bpe] [--work DIR]`;
needs about 4 GiB of disk per GiB of corpus. Run it with nothing else running.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from minigpt.data.corpus import shakespeare_works  # noqa: E402

FILE_MIB = 64
CORES = len(os.sched_getaffinity(0))
STEPS = 20
# runs the command, then prints its peak RSS (KiB): the max over this wrapper's children
MEASURE = (
    "import resource, subprocess, sys\n"
    "code = subprocess.run(sys.argv[1:]).returncode\n"
    "print(f'MAXRSS_KIB {resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss}', flush=True)\n"
    "sys.exit(code)\n"
)


def write_corpus(directory: Path, size_mib: int) -> int:
    """Files of FILE_MIB MiB until size_mib MiB; returns the bytes written."""
    directory.mkdir(parents=True, exist_ok=True)
    lines = "".join(w.text for w in shakespeare_works().values()).splitlines(keepends=True)
    target, written, copy, index = size_mib << 20, 0, 0, 0
    while written < target:
        with open(directory / f"part-{index:04d}.txt", "w", encoding="utf-8") as f:
            in_file = 0
            while in_file < FILE_MIB << 20 and written + in_file < target:
                text = "".join(f"{copy}|{line}" for line in lines)
                f.write(text)
                in_file += len(text.encode("utf-8"))
                copy += 1
        written += in_file
        index += 1
    return written


def tree_pss_kib(root: int) -> int:
    """The proportional set size (shared pages split among their users) of a process and
    its descendants: the memory the run takes, forked workers included."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        stack += children.get(pid, [])
        try:
            rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        total += int(re.search(r"^Pss:\s+(\d+) kB", rollup, re.M)[1])
    return total


def run_train(corpus: Path, cache: Path, run_dir: Path, *overrides: str) -> dict:
    command = [
        sys.executable,
        "-c",
        MEASURE,
        sys.executable,
        str(ROOT / "train.py"),
        "data=text_files",
        f"data.paths=[{corpus}/*.txt]",
        f"trainer.max_steps={STEPS}",
        f"trainer.val_check_interval={STEPS}",
        "trainer.limit_val_batches=5",
        "trainer.log_every_n_steps=1",
        "sample.num_samples=0",
        f"paths.cache_dir={cache}",
        f"hydra.run.dir={run_dir}",
        *overrides,
    ]
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output, first_step = bytearray(), []

    def read() -> None:
        while chunk := process.stdout.read1(4096):
            output.extend(chunk)
            if not first_step and f" 1/{STEPS} [".encode() in output:
                first_step.append(time.perf_counter() - start)

    peak_pss = [0]

    def sample() -> None:  # the run's processes (workers included), every 0.2 s
        while process.poll() is None:
            peak_pss[0] = max(peak_pss[0], tree_pss_kib(process.pid))
            time.sleep(0.2)

    threads = [threading.Thread(target=read), threading.Thread(target=sample)]
    for thread in threads:
        thread.start()
    code = process.wait()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    text = output.decode(errors="replace")
    if code:
        raise SystemExit(f"train.py failed ({code}):\n{text[-3000:]}")
    rss = int(text.rsplit("MAXRSS_KIB ", 1)[1].split()[0])
    prepared = re.search(r"token cache: ([\d,.]+) MB of text prepared in ([\d.]+) s", text)
    return {
        "wall_s": wall,
        "first_step_s": first_step[0] if first_step else None,
        "rss": rss,
        "pss": peak_pss[0],
        "prepare_s": float(prepared[2]) if prepared else None,
        "prepare_mb": float(prepared[1].replace(",", "")) if prepared else None,
    }


def char_runs(work: Path) -> dict:
    first = run_train(work / "corpus", work / "cache", work / "run1")
    second = run_train(work / "corpus", work / "cache", work / "run2")
    assert second["prepare_s"] is None, "run 2 prepared the cache again"
    return {
        "run1_wall_s": round(first["wall_s"], 1),
        "run1_peak_rss_mib": round(first["rss"] / 1024),
        "run1_peak_pss_mib": round(first["pss"] / 1024),
        "preparation_s": first["prepare_s"],
        "preparation_mb_per_s": round(first["prepare_mb"] / first["prepare_s"], 1),
        "run2_wall_s": round(second["wall_s"], 1),
        "run2_peak_rss_mib": round(second["rss"] / 1024),
        "run2_peak_pss_mib": round(second["pss"] / 1024),
        "run2_first_step_s": round(second["first_step_s"], 1),
        "cache_mib": round(sum(f.stat().st_size for f in (work / "cache").rglob("*")) / 2**20),
    }


def bpe_runs(work: Path) -> dict:
    bpe = ["data.tokenizer.kind=bpe", "data.tokenizer.vocab_size=8192"]
    first = run_train(work / "corpus", work / "cache", work / "bpe1", *bpe)
    figures = {
        "run1_wall_s": round(first["wall_s"], 1),
        "run1_peak_rss_mib": round(first["rss"] / 1024),
        "run1_peak_pss_mib": round(first["pss"] / 1024),
        "run1_preparation_s": first["prepare_s"],
    }
    rates = {}
    for processes in (1, CORES):
        for entry in (work / "cache").glob("text_files-*"):
            shutil.rmtree(entry)  # the tokenizer (bpe-*.json) stays
        run = run_train(
            work / "corpus", work / "cache", work / f"bpe-{processes}", *bpe,
            f"data.num_proc={processes}",
        )  # fmt: skip
        rates[processes] = run["prepare_mb"] / run["prepare_s"]
        figures[f"encode_{processes}_processes_mb_per_s"] = round(rates[processes], 2)
        figures[f"encode_{processes}_processes_peak_pss_mib"] = round(run["pss"] / 1024)
    figures["parallel_over_single"] = round(rates[CORES] / rates[1], 2)
    return figures


PREPARE = (
    "import json, sys, time\n"
    "from minigpt.data import TokenDataModule\n"
    "corpus, cache, processes = sys.argv[1:]\n"
    "dm = TokenDataModule(corpus='text_files', paths=[corpus + '/*.txt'], cache_dir=cache,\n"
    "    tokenizer={'kind': 'bpe', 'vocab_size': 8192}, num_proc=int(processes))\n"
    "start = time.perf_counter()\n"
    "dm.prepare_data()\n"
    "print(json.dumps({'seconds': time.perf_counter() - start}))\n"
)


def bpe_ratio(work: Path, repeats: int) -> dict:
    """BPE encoding alone (the tokenizer trained once, then the token cache built again and
    again), 1 process and CORES processes alternating, `repeats` times each: medians."""
    corpus, cache = work / "corpus", work / "cache"
    size = sum(f.stat().st_size for f in corpus.glob("*.txt")) / 1e6

    def prepare(processes: int) -> float:
        for entry in cache.glob("text_files-*"):
            shutil.rmtree(entry)  # the tokenizer (bpe-*.json) stays
        env = os.environ | {"PYTHONPATH": str(ROOT)}
        done = subprocess.run(
            [sys.executable, "-c", PREPARE, str(corpus), str(cache), str(processes)],
            capture_output=True, text=True, env=env, check=True,
        )  # fmt: skip
        return json.loads(done.stdout.strip().splitlines()[-1])["seconds"]

    prepare(CORES)  # trains the tokenizer
    rates: dict[int, list[float]] = {1: [], CORES: []}
    for _ in range(repeats):
        for processes in (1, CORES):
            rates[processes].append(size / prepare(processes))
    single, parallel = statistics.median(rates[1]), statistics.median(rates[CORES])
    return {
        "rates_1_process_mb_per_s": [round(r, 2) for r in rates[1]],
        f"rates_{CORES}_processes_mb_per_s": [round(r, 2) for r in rates[CORES]],
        "median_ratio": round(parallel / single, 3),
        "ratios_by_pair": [round(b / a, 3) for a, b in zip(rates[1], rates[CORES], strict=True)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes-mib", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--tokenizers", nargs="+", default=["char", "bpe"])
    parser.add_argument(
        "--bpe-ratio-repeats",
        type=int,
        default=0,
        help="also time BPE encoding alone, 1 and all processes alternating, this many times",
    )
    parser.add_argument("--work", type=Path, default=Path("/tmp/minigpt-data-scale"))
    args = parser.parse_args()
    results = {}
    for size in args.sizes_mib:
        work = args.work / f"{size}mib"
        shutil.rmtree(work, ignore_errors=True)
        corpus_bytes = write_corpus(work / "corpus", size)
        figures = {"corpus_mib": round(corpus_bytes / 2**20, 1)}
        if "char" in args.tokenizers:
            figures["char"] = char_runs(work)
        if "bpe" in args.tokenizers:
            figures["bpe"] = bpe_runs(work)
        if args.bpe_ratio_repeats:
            figures["bpe_encoding"] = bpe_ratio(work, args.bpe_ratio_repeats)
        results[size] = figures
        print(json.dumps({f"{size} MiB": figures}), flush=True)
        shutil.rmtree(work, ignore_errors=True)
    if len(results) > 1 and "char" in args.tokenizers:
        small, large = results[min(results)]["char"], results[max(results)]["char"]
        for figure in ("run1_peak_rss_mib", "run1_peak_pss_mib"):
            ratio = large[figure] / small[figure]
            print(f"{figure} (characters), largest / smallest corpus: {ratio:.3f}")


if __name__ == "__main__":
    main()
