"""Side-by-side CPU benchmark: minigpt's `experiment=nanogpt_cpu` against nanoGPT's own
train.py with the same configuration (nanoGPT README, "I only have a macbook").

    python benchmarks/nanogpt_cpu.py --nanogpt path/to/nanoGPT [--data tinyshakespeare.txt]

The nanoGPT checkout is used where it is, read-only: its train.py runs in a scratch directory
with the data prepared as nanoGPT's data/shakespeare_char/prepare.py does (first 90% train,
last 10% val, sorted-character vocabulary). Prints wall times, median step times, their ratio
and the val loss at the last step for both, plus a JSON line for RESULTS.md.
"""

from __future__ import annotations

import argparse
import json
import pickle
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
NANOGPT_FILES = ("train.py", "model.py", "configurator.py", "config/train_shakespeare_char.py")


def prepare_nanogpt_data(text: str, data_dir: Path) -> None:
    """nanoGPT's shakespeare_char format: train.bin/val.bin (uint16) and meta.pkl."""
    chars = sorted(set(text))
    stoi = {c: i for i, c in enumerate(chars)}
    n = len(text)
    for name, part in (("train", text[: int(n * 0.9)]), ("val", text[int(n * 0.9) :])):
        np.array([stoi[c] for c in part], dtype=np.uint16).tofile(data_dir / f"{name}.bin")
    meta = {"vocab_size": len(chars), "itos": dict(enumerate(chars)), "stoi": stoi}
    (data_dir / "meta.pkl").write_bytes(pickle.dumps(meta))


def run_nanogpt(nanogpt: Path, data: Path, steps: int, work: Path) -> dict:
    for rel in NANOGPT_FILES:
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(nanogpt / rel, work / rel)
    data_dir = work / "data" / "shakespeare_char"
    data_dir.mkdir(parents=True, exist_ok=True)
    prepare_nanogpt_data(data.read_text(encoding="utf-8"), data_dir)
    args = [
        "config/train_shakespeare_char.py", "--device=cpu", "--compile=False",
        "--eval_iters=20", "--log_interval=1", "--block_size=64", "--batch_size=12",
        "--n_layer=4", "--n_head=4", "--n_embd=128", f"--max_iters={steps}",
        f"--lr_decay_iters={steps}", "--dropout=0.0", f"--eval_interval={min(500, steps)}",
        f"--out_dir={work / 'out'}",
    ]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, "train.py", *args], cwd=work, capture_output=True, text=True
    )
    wall = time.perf_counter() - start
    if proc.returncode:
        sys.exit(f"nanoGPT failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    step_ms = [
        float(m) for m in re.findall(r"^iter \d+: loss [\d.]+, time ([\d.]+)ms", proc.stdout, re.M)
    ]
    evals = re.findall(r"^step (\d+): train loss [\d.]+, val loss ([\d.]+)", proc.stdout, re.M)
    return {
        "wall_s": wall,
        "median_step_ms": statistics.median(step_ms[5:]),
        "val_loss": float(evals[-1][1]),
        "val_step": int(evals[-1][0]),
    }


def run_minigpt(data: Path, steps: int, work: Path) -> dict:
    out = work / "run"
    args = [
        "experiment=nanogpt_cpu", f"data.paths=[{data}]", f"hydra.run.dir={out}",
        f"paths.cache_dir={work / 'cache'}", f"trainer.max_steps={steps}",
        f"scheduler.decay_steps={steps}", "trainer.enable_progress_bar=false",
        "sample.num_samples=0", f"trainer.val_check_interval={min(500, steps)}",
    ]  # fmt: skip
    start = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), *args], cwd=work, capture_output=True, text=True
    )
    wall = time.perf_counter() - start
    if proc.returncode:
        sys.exit(f"minigpt failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    metrics = json.loads((out / "metrics.json").read_text())
    return {
        "wall_s": wall,
        "median_step_ms": metrics["median_step_ms"],
        "val_loss": metrics["final_val_loss"],
        "val_step": metrics["final_val_step"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nanogpt", type=Path, required=True, help="a karpathy/nanoGPT checkout")
    parser.add_argument(
        "--data", type=Path, default=ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
    )
    parser.add_argument("--steps", type=int, default=2000)
    args = parser.parse_args()
    missing = [f for f in NANOGPT_FILES if not (args.nanogpt / f).is_file()]
    if missing:
        sys.exit(f"error: {args.nanogpt} is not a nanoGPT checkout (missing {missing})")
    if not args.data.is_file():
        sys.exit(f"error: no data file at {args.data}: pass --data path/to/tinyshakespeare.txt")
    data = args.data.resolve()
    with tempfile.TemporaryDirectory() as tmp:
        nano_dir, mini_dir = Path(tmp, "nanogpt"), Path(tmp, "minigpt")
        nano_dir.mkdir(), mini_dir.mkdir()
        nano = run_nanogpt(args.nanogpt.resolve(), data, args.steps, nano_dir)
        mini = run_minigpt(data, args.steps, mini_dir)
    print(f"{'':22}{'nanoGPT':>12}{'minigpt':>12}")
    for key, fmt in (("wall_s", ".1f"), ("median_step_ms", ".2f"), ("val_loss", ".4f")):
        print(f"{key:22}{nano[key]:>12{fmt}}{mini[key]:>12{fmt}}")
    ratio = mini["median_step_ms"] / nano["median_step_ms"]
    print(f"step time ratio minigpt/nanoGPT: {ratio:.3f} (<= 1.0 means minigpt is as fast)")
    print(
        json.dumps(
            {
                "machine": f"{platform.machine()} {platform.processor() or ''} "
                f"{torch.get_num_threads()} threads".strip(),
                "torch": torch.__version__,
                "python": platform.python_version(),
                "steps": args.steps,
                "nanogpt": nano,
                "minigpt": mini,
                "step_time_ratio": round(ratio, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
