"""Side-by-side CPU benchmark: minigpt's `experiment=nanogpt_cpu` against nanoGPT's own
train.py with the same configuration (nanoGPT README, "I only have a macbook").

    python benchmarks/nanogpt_cpu.py --nanogpt path/to/nanoGPT [--data tinyshakespeare.txt]

The nanoGPT checkout is used where it is, read-only: its train.py runs in a scratch directory
with the data prepared as nanoGPT's data/shakespeare_char/prepare.py does (first 90% train,
last 10% val, sorted-character vocabulary). Prints wall times, median step times, their ratio
and the val loss at the last step for both, plus a JSON line for RESULTS.md.

val_loss is each program's own estimate (nanoGPT: 20 random batches; minigpt: 20 fixed
batches). full_val_loss puts both on one yardstick: each program's final weights (nanoGPT's
ckpt.pt loaded into minigpt's GPT, which has the same architecture here) evaluated on every
non-overlapping window of the validation split.
"""

from __future__ import annotations

import argparse
import json
import os
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
sys.path.insert(0, str(ROOT))

from minigpt.core.checkpoint import load_checkpoint  # noqa: E402
from minigpt.core.model import GPT, GPTConfig  # noqa: E402
from minigpt.data import FixedWindows  # noqa: E402
from minigpt.tools.convert import from_nanogpt  # noqa: E402

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


def nanogpt_model(checkpoint_path: Path) -> tuple[GPT, int]:
    """nanoGPT's saved weights loaded into minigpt's GPT (same architecture under
    experiment=nanogpt_cpu), and the step they were saved at."""
    checkpoint = torch.load(checkpoint_path, map_location="cpu", weights_only=False)
    args = checkpoint["model_args"]
    config = GPTConfig(
        vocab_size=args["vocab_size"],
        block_size=args["block_size"],
        n_layer=args["n_layer"],
        n_head=args["n_head"],
        n_embd=args["n_embd"],
        bias=args["bias"],
        dropout=0.0,
        pos_encoding="learned",
        activation="gelu",
        norm="layernorm",
        tie_weights=True,
    )
    state = from_nanogpt(checkpoint["model"])
    model = GPT(config)
    model.load_state_dict(state)
    return model.eval(), checkpoint["iter_num"]


@torch.no_grad()
def full_val_loss(model: GPT, val_tokens: np.ndarray) -> float:
    """Mean loss over every non-overlapping window of the validation split."""
    windows = FixedWindows(val_tokens, model.config.block_size)
    total, count = 0.0, 0
    for start in range(0, len(windows), 256):
        batch = [windows[i] for i in range(start, min(start + 256, len(windows)))]
        x, y = torch.stack([b[0] for b in batch]), torch.stack([b[1] for b in batch])
        total += model(x, y)[1].item() * y.numel()
        count += y.numel()
    return total / count


def check_inputs(nanogpt: Path, data: Path) -> None:
    """Exits with a one-line error unless nanogpt is a nanoGPT checkout and data a file."""
    missing = [f for f in NANOGPT_FILES if not (nanogpt / f).is_file()]
    if missing:
        sys.exit(f"error: {nanogpt} is not a nanoGPT checkout (missing {missing})")
    if not data.is_file():
        sys.exit(f"error: no data file at {data}: pass --data path/to/tinyshakespeare.txt")


def checkpoint_full_val_loss(checkpoint: str, data: Path) -> float:
    """full_val_loss of a minigpt checkpoint (in float32) on the last 10% of data."""
    model, tokenizer = load_checkpoint(checkpoint)
    text = data.read_text(encoding="utf-8")
    val_tokens = np.array(tokenizer.encode(text[int(len(text) * 0.9) :]), dtype=np.uint16)
    return full_val_loss(model.float(), val_tokens)


NANOGPT_SEED_LINE = "torch.manual_seed(1337 + seed_offset)"


def run_timed(command: list[str], cwd: Path) -> tuple[float, int, list[tuple[float, str]]]:
    """Runs a Python command unbuffered; returns its wall seconds, its exit code and each
    output line (stdout and stderr together) with the seconds since launch it came at."""
    env = os.environ | {"PYTHONUNBUFFERED": "1"}
    start = time.perf_counter()
    proc = subprocess.Popen(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    lines = [(time.perf_counter() - start, line.rstrip("\n")) for line in proc.stdout]
    returncode = proc.wait()
    return time.perf_counter() - start, returncode, lines


def run_nanogpt(nanogpt: Path, data: Path, steps: int, work: Path, seed: int = 1337) -> dict:
    for rel in NANOGPT_FILES:
        (work / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(nanogpt / rel, work / rel)
    if seed != 1337:  # nanoGPT has no seed option: change the seed in the scratch copy
        script = (work / "train.py").read_text()
        if NANOGPT_SEED_LINE not in script:
            sys.exit(f"error: cannot find {NANOGPT_SEED_LINE!r} in nanoGPT's train.py")
        (work / "train.py").write_text(
            script.replace(NANOGPT_SEED_LINE, f"torch.manual_seed({seed} + seed_offset)")
        )
    data_dir = work / "data" / "shakespeare_char"
    data_dir.mkdir(parents=True, exist_ok=True)
    prepare_nanogpt_data(data.read_text(encoding="utf-8"), data_dir)
    args = [
        "config/train_shakespeare_char.py",
        "--device=cpu",
        "--compile=False",
        "--eval_iters=20",
        "--log_interval=1",
        "--block_size=64",
        "--batch_size=12",
        "--n_layer=4",
        "--n_head=4",
        "--n_embd=128",
        f"--max_iters={steps}",
        f"--lr_decay_iters={steps}",
        "--dropout=0.0",
        f"--eval_interval={min(500, steps)}",
        f"--out_dir={work / 'out'}",
    ]
    wall, returncode, lines = run_timed([sys.executable, "train.py", *args], cwd=work)
    stdout = "\n".join(line for _, line in lines)
    if returncode:
        sys.exit(f"nanoGPT failed:\n{stdout[-4000:]}")
    step_ms = [
        float(m) for m in re.findall(r"^iter \d+: loss [\d.]+, time ([\d.]+)ms", stdout, re.M)
    ]
    evals = re.findall(r"^step (\d+): train loss [\d.]+, val loss ([\d.]+)", stdout, re.M)
    # (seconds since launch, step, own val estimate) of each evaluation
    curve = [
        (seconds, int(m[1]), float(m[2]))
        for seconds, line in lines
        if (m := re.match(r"step (\d+): train loss [\d.]+, val loss ([\d.]+)", line))
    ]
    model, saved_step = nanogpt_model(work / "out" / "ckpt.pt")
    val_tokens = np.fromfile(data_dir / "val.bin", dtype=np.uint16)
    return {
        "wall_s": wall,
        "median_step_ms": statistics.median(step_ms[5:]),
        "val_loss": float(evals[-1][1]),
        "val_step": int(evals[-1][0]),
        "full_val_loss": full_val_loss(model, val_tokens),
        "full_val_step": saved_step,
        "curve": curve,
    }


def run_minigpt(data: Path, steps: int, work: Path, seed: int = 1337) -> dict:
    out = work / "run"
    args = [
        f"seed={seed}",
        "experiment=nanogpt_cpu",
        f"data.paths=[{data}]",
        f"hydra.run.dir={out}",
        f"paths.cache_dir={work / 'cache'}",
        f"trainer.max_steps={steps}",
        f"scheduler.decay_steps={steps}",
        "trainer.enable_progress_bar=false",
        "sample.num_samples=0",
        f"trainer.val_check_interval={min(500, steps)}",
    ]
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
        "full_val_loss": checkpoint_full_val_loss(metrics["last_checkpoint"], data),
        "full_val_step": metrics["steps"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nanogpt", type=Path, required=True, help="a karpathy/nanoGPT checkout")
    parser.add_argument(
        "--data", type=Path, default=ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
    )
    parser.add_argument("--steps", type=int, default=2000)
    parser.add_argument("--repeats", type=int, default=1, help="runs of each; medians reported")
    parser.add_argument(
        "--seeds",
        type=int,
        default=0,
        help="also train both with this many other seeds, for the spread of the val loss",
    )
    args = parser.parse_args()
    check_inputs(args.nanogpt, args.data)
    if args.steps <= 100:
        sys.exit(f"error: --steps={args.steps} must exceed nanoGPT's 100 warm-up steps")
    data = args.data.resolve()
    nanos, minis = [], []
    for repeat in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            nano_dir, mini_dir = Path(tmp, "nanogpt"), Path(tmp, "minigpt")
            nano_dir.mkdir(), mini_dir.mkdir()
            # alternate the order so that neither program always runs on a warmer machine
            if repeat % 2 == 0:
                nanos.append(run_nanogpt(args.nanogpt.resolve(), data, args.steps, nano_dir))
                minis.append(run_minigpt(data, args.steps, mini_dir))
            else:
                minis.append(run_minigpt(data, args.steps, mini_dir))
                nanos.append(run_nanogpt(args.nanogpt.resolve(), data, args.steps, nano_dir))
    nano = {k: statistics.median(r[k] for r in nanos) for k in nanos[0] if k != "curve"}
    mini = {k: statistics.median(r[k] for r in minis) for k in minis[0]}
    print(f"medians over {args.repeats} run(s) of each")
    print(f"{'':22}{'nanoGPT':>12}{'minigpt':>12}")
    rows = (
        ("wall_s", ".1f"),
        ("median_step_ms", ".2f"),
        ("val_loss", ".4f"),
        ("full_val_loss", ".4f"),
    )
    for key, fmt in rows:
        print(f"{key:22}{nano[key]:>12{fmt}}{mini[key]:>12{fmt}}")
    spread = {"nanogpt": [nano["full_val_loss"]], "minigpt": [mini["full_val_loss"]]}
    for seed in range(1, args.seeds + 1):
        with tempfile.TemporaryDirectory() as tmp:
            nano_dir, mini_dir = Path(tmp, "nanogpt"), Path(tmp, "minigpt")
            nano_dir.mkdir(), mini_dir.mkdir()
            run = run_nanogpt(args.nanogpt.resolve(), data, args.steps, nano_dir, seed)
            spread["nanogpt"].append(run["full_val_loss"])
            spread["minigpt"].append(run_minigpt(data, args.steps, mini_dir, seed)["full_val_loss"])
    if args.seeds:
        for name, losses in spread.items():
            print(
                f"{name} full_val_loss over {len(losses)} seeds: median "
                f"{statistics.median(losses):.4f}, mean {statistics.mean(losses):.4f} "
                f"({', '.join(f'{v:.4f}' for v in losses)})"
            )
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
                "repeats": args.repeats,
                "nanogpt": nano,
                "minigpt": mini,
                "step_time_ratio": round(ratio, 3),
                "full_val_loss_over_seeds": spread if args.seeds else None,
            }
        )
    )


if __name__ == "__main__":
    main()
