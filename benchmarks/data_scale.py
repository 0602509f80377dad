"""Data at scale: `data=text_files` on corpora of 256 MiB and 1 GiB (character tokens).

For each size, writes a corpus made of the embedded works repeated, every line of the
r-th copy prefixed with `r|` (so no two copies are the same text), as 64 MiB files; then runs
`train.py` on it twice, 20 training steps of the default model each, with a fresh token
cache:
- run 1 prepares the cache (two streaming passes) and trains;
- run 2 finds the cache and trains.
Printed per size: peak memory (max RSS) of each run, the preparation's rate (the line
`token cache: ... MB/s` that run 1 prints), and run 2's seconds from launch to its first
training step (the progress bar's first step).
`python benchmarks/data_scale.py [--sizes-mib 256 1024] [--work DIR]`; needs about 4 GiB of
disk per GiB of corpus. Run it with nothing else running.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from minigpt.corpus import shakespeare_works  # noqa: E402

FILE_MIB = 64
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


def run_train(corpus: Path, cache: Path, run_dir: Path) -> dict:
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
    ]
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output, first_step = bytearray(), []

    def read() -> None:
        while chunk := process.stdout.read1(4096):
            output.extend(chunk)
            if not first_step and f" 1/{STEPS} [".encode() in output:
                first_step.append(time.perf_counter() - start)

    reader = threading.Thread(target=read)
    reader.start()
    code = process.wait()
    reader.join()
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
        "prepare_s": float(prepared[2]) if prepared else None,
        "prepare_mb": float(prepared[1].replace(",", "")) if prepared else None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes-mib", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--work", type=Path, default=Path("/tmp/minigpt-data-scale"))
    args = parser.parse_args()
    results = {}
    for size in args.sizes_mib:
        work = args.work / f"{size}mib"
        shutil.rmtree(work, ignore_errors=True)
        corpus_bytes = write_corpus(work / "corpus", size)
        first = run_train(work / "corpus", work / "cache", work / "run1")
        second = run_train(work / "corpus", work / "cache", work / "run2")
        assert second["prepare_s"] is None, "run 2 prepared the cache again"
        figures = {
            "corpus_mib": round(corpus_bytes / 2**20, 1),
            "run1_wall_s": round(first["wall_s"], 1),
            "run1_peak_rss_mib": round(first["rss"] / 1024),
            "preparation_s": first["prepare_s"],
            "preparation_mb_per_s": round(first["prepare_mb"] / first["prepare_s"], 1),
            "run2_wall_s": round(second["wall_s"], 1),
            "run2_peak_rss_mib": round(second["rss"] / 1024),
            "run2_first_step_s": round(second["first_step_s"], 1),
            "cache_mib": round(sum(f.stat().st_size for f in (work / "cache").rglob("*")) / 2**20),
        }
        results[size] = figures
        print(json.dumps({f"{size} MiB": figures}), flush=True)
        shutil.rmtree(work, ignore_errors=True)
    if len(results) > 1:
        small, large = results[min(results)], results[max(results)]
        ratio = large["run1_peak_rss_mib"] / small["run1_peak_rss_mib"]
        print(f"peak memory, largest / smallest corpus: {ratio:.3f}")


if __name__ == "__main__":
    main()
