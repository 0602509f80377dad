"""The GPU checks and figures, in one run on a CUDA machine:

    python benchmarks/gpu.py [--data tinyshakespeare.txt] [--steps 1000] [--out gpu-runs]

1. the GPU tests (`pytest -m gpu tests/test_gpu.py`);
2. nanoGPT's shakespeare_char configuration (`experiment=nanogpt_shakespeare_char`: 6 layers,
   384 wide, block 256, batch 64) for --steps steps in bf16-mixed, eager and torch.compile;
3. the same in 16-mixed (a GradScaler), eager, for half the steps.

Without --data the runs use the embedded corpus (data=shakespeare) instead of a text file.
Each run is a fresh `python train.py` process. Prints, per run: final val loss, median step
time, tokens/s, MFU (model FLOPs per token x tokens/s over the card's dense peak,
minigpt.callbacks.peak_flops) and the MFU the ThroughputMonitor logged, then a Markdown table
and JSON lines for benchmarks/RESULTS.md.

`--smoke` runs the same on the CPU with experiment=tiny in seconds (no compile, no GPU
tests): a check of the script itself.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from minigpt.callbacks import peak_flops  # noqa: E402
from minigpt.checkpoint import load_checkpoint  # noqa: E402

DTYPES = {"bf16-mixed": torch.bfloat16, "16-mixed": torch.float16, "32-true": torch.float32}


def runs(args) -> list[tuple[str, list[str]]]:
    """(name, train.py overrides) of every run."""
    if args.smoke:
        base = ["experiment=tiny", "trainer.accelerator=cpu", "trainer.max_steps=30"]
        return [
            ("32-true", [*base, "trainer.precision=32-true"]),
            ("bf16-mixed", [*base, "trainer.precision=bf16-mixed"]),
            ("16-mixed", [*base, "trainer.precision=16-mixed"]),
        ]
    data = [f"data.paths=[{Path(args.data).resolve()}]"] if args.data else ["data=shakespeare"]
    base = [
        "experiment=nanogpt_shakespeare_char",
        *data,
        "trainer=gpu",
        f"trainer.val_check_interval={args.steps // 2}",
        "trainer.limit_val_batches=50",
    ]
    full = [f"trainer.max_steps={args.steps}", f"scheduler.decay_steps={args.steps}"]
    half = [f"trainer.max_steps={args.steps // 2}", f"scheduler.decay_steps={args.steps // 2}"]
    return [
        ("bf16-mixed", [*base, *full, "trainer.precision=bf16-mixed", "compile=false"]),
        ("bf16-mixed, compiled", [*base, *full, "trainer.precision=bf16-mixed", "compile=true"]),
        ("16-mixed", [*base, *half, "trainer.precision=16-mixed", "compile=false"]),
    ]


def logged_mfu(run_dir: Path) -> float | None:
    """The last train/device/mfu the ThroughputMonitor wrote to TensorBoard."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    if "train/device/mfu" not in events.Tags()["scalars"]:
        return None
    return events.Scalars("train/device/mfu")[-1].value


def train(name: str, overrides: list[str], run_dir: Path) -> dict:
    command = [sys.executable, str(ROOT / "train.py"), *overrides, f"hydra.run.dir={run_dir}"]
    print(f"== {name}: {' '.join(command[2:])}", flush=True)
    start = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        print(result.stdout[-3000:], result.stderr[-5000:], sep="\n")
        raise SystemExit(f"error: the {name} run failed (exit {result.returncode})")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    precision = next(o.split("=")[1] for o in overrides if o.startswith("trainer.precision="))
    model, _ = load_checkpoint(metrics["last_checkpoint"])
    tokens_per_step = metrics["tokens_seen"] / metrics["steps"]
    tokens_per_s = tokens_per_step / (metrics["median_step_ms"] / 1000)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    peak = peak_flops(device, DTYPES[precision])
    return {
        "run": name,
        "steps": metrics["steps"],
        "final_val_loss": round(metrics["final_val_loss"], 4),
        "median_step_ms": round(metrics["median_step_ms"], 2),
        "tokens_per_s": round(tokens_per_s),
        "mfu": round(tokens_per_s * model.flops_per_token() / peak, 4) if peak else None,
        "logged_mfu": logged_mfu(run_dir),
        "wall_s": round(wall, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", help="a text file (nanoGPT's tinyshakespeare.txt)")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--out", default="gpu-runs", help="where the runs write")
    parser.add_argument("--smoke", action="store_true", help="tiny runs on the CPU")
    args = parser.parse_args()
    if not args.smoke and not torch.cuda.is_available():
        raise SystemExit("error: no CUDA GPU here; --smoke checks the script on the CPU")
    if args.steps < 2:
        raise SystemExit(f"error: --steps={args.steps} must be at least 2")

    cpu = f"CPU ({os.cpu_count()} cores)"
    card = torch.cuda.get_device_name() if torch.cuda.is_available() else cpu
    print(f"device: {card}; torch {torch.__version__}; Python {platform.python_version()}")
    if not args.smoke:
        tests = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "tests/test_gpu.py"]
        result = subprocess.run(tests, cwd=ROOT, capture_output=True, text=True)
        print(result.stdout[-2000:], flush=True)
        if result.returncode != 0:
            raise SystemExit(f"error: the GPU tests failed (exit {result.returncode})")

    out = Path(args.out).resolve()
    results = [train(name, o, out / f"run{i}") for i, (name, o) in enumerate(runs(args))]
    print(f"\n{card}, torch {torch.__version__}\n")
    print("| run | steps | final val loss | median step (ms) | tokens/s | MFU | logged MFU |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for r in results:
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "n/a"
        logged = f"{r['logged_mfu']:.1%}" if r["logged_mfu"] is not None else "n/a"
        print(
            f"| {r['run']} | {r['steps']} | {r['final_val_loss']:.4f} | {r['median_step_ms']} "
            f"| {r['tokens_per_s']:,} | {mfu} | {logged} |"
        )
    for r in results:
        print(json.dumps({"device": card, "torch": torch.__version__} | r))


if __name__ == "__main__":
    main()
