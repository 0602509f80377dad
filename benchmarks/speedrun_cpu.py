"""The CPU race: `python train.py experiment=speedrun_cpu` against nanoGPT's CPU
configuration (2000 steps, nanoGPT's own train.py), and what each ingredient is worth.

    python benchmarks/speedrun_cpu.py --nanogpt path/to/nanoGPT [--data tinyshakespeare.txt]
        [--seeds 3] [--ablations] [--plot docs/images/speedrun_cpu.png]
        [--before path/to/an/earlier/minigpt/checkout]
    python benchmarks/speedrun_cpu.py --nanogpt ... --ablations --target 1.8974 --budget 40.5

The race: for each seed (1337, 1338, ...) both programs train once, alternating which goes
first; wall time is the whole process (start-up, training, its evaluations, checkpoints),
medians over the seeds. Both are then scored by one yardstick, outside the timing: the final
weights on every non-overlapping window of the validation split (the last 10% of the text),
in float32. Goal: minigpt's mean over seeds <= nanoGPT's, in <= 0.12x its wall time
(stretch 0.10; the first round's goal was 0.5). With --before, an earlier checkout's
`train.py experiment=speedrun_cpu` (its own recipe) runs in the same rounds: nanoGPT,
minigpt, the earlier checkout, and the other way round in the next round; the same hour's
figures for what changed since.

--ablations: the recipe, then the recipe minus each ingredient (and plus each one tried and
left out), each for every seed, validating on the whole split about every 25 steps and at
the last (`validation_interval`). Their clock
is training time: seconds since launch less the seconds spent validating. For each: the
time to reach the target (nanoGPT's mean full-split loss, interpolated between
validations), the loss at the time budget (half nanoGPT's median wall time; the final loss
of a run that ended sooner), the final full-split loss, and the wall time.

With --target and --budget (a race's figures) the race is not rerun.

Prints tables and a JSON line for RESULTS.md; --plot draws the race's val loss against wall
seconds (each program's own estimates during the run, then the full-split score at the end).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from omegaconf import OmegaConf

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from nanogpt_cpu import (  # noqa: E402
    check_inputs,
    checkpoint_full_val_loss,
    run_nanogpt,
    run_timed,
)

SEED = 1337
# name -> train.py overrides on top of experiment=speedrun_cpu
ABLATIONS = {
    "recipe": [],
    "- Muon (AdamW for all, lr 6e-3)": ["optimizer=adamw", "optimizer.lr=6e-3"],
    "- rotary (learned positions)": ["model.pos_encoding=learned"],
    "- QK-norm": ["model.qk_norm=false"],
    "- WSD (cosine to 1e-3)": [
        "scheduler=warmup_cosine",
        "scheduler.warmup_steps=20",
        "scheduler.min_lr=1e-3",
    ],
    # the recipe chooses bf16 by the CPU's instructions (minigpt.training.precision)
    "bf16 on any CPU (bf16-mixed, bfloat16 iteration)": [
        "trainer.precision=bf16-mixed",
        "optimizer.ns_dtype=bfloat16",
    ],
    "- written-out attention (sdpa)": ["model.attention=sdpa"],
    "- half depth (4 layers)": ["model.n_layer=4"],
    "- value embeddings": ["model.value_embeddings=false"],
    "- smear": ["model.smear=false"],
    "- x0 skip": ["model.x0_skip=false"],
    "- the three shortcuts": [
        "model.value_embeddings=false",
        "model.smear=false",
        "model.x0_skip=false",
    ],
    "- the three shortcuts, 250 steps (the first round's recipe)": [
        "model.value_embeddings=false",
        "model.smear=false",
        "model.x0_skip=false",
        "trainer.max_steps=250",
        "optimizer.momentum=0.95",
        "optimizer.ns_gram=false",
    ],
    "- Gram-space Newton-Schulz (the direct iteration)": ["optimizer.ns_gram=false"],
    "Muon momentum 0.95 (the default)": ["optimizer.momentum=0.95"],
    "the second round's recipe (momentum 0.95, 175 steps, direct iteration)": [
        "optimizer.momentum=0.95",
        "trainer.max_steps=175",
        "optimizer.ns_gram=false",
    ],
    "+ ReLU²": ["model.activation=relu2"],
    "+ untied head": ["model.tie_weights=false"],
    "+ logit soft-cap 15": ["model.logit_softcap=15"],
    "+ zero-init projections": ["model.zero_init_proj=true"],
    "+ Polar Express": ["optimizer.ns_method=polar_express"],
    "+ Muon momentum warm-up (0.85 to 0.95 over 100 steps)": [
        "optimizer.momentum_warmup_steps=100"
    ],
}


def run_minigpt(
    data: Path, work: Path, seed: int, overrides: list[str], checkout: Path = ROOT
) -> dict:
    """One `train.py experiment=speedrun_cpu` process (of checkout): wall time, the
    validations it made (seconds since launch at their start and end, step, val/loss,
    seconds spent validating before them) and the full-split loss of its final weights."""
    out, clock = work / "run", work / "clock.jsonl"
    args = [
        "experiment=speedrun_cpu",
        f"seed={seed}",
        f"data.paths=[{data}]",
        f"hydra.run.dir={out}",
        f"paths.cache_dir={work / 'cache'}",
        "trainer.enable_progress_bar=false",
        "+callbacks.val_clock._target_=benchmarks.val_clock.ValClock",
        f"+callbacks.val_clock.path={clock}",
        *overrides,
    ]
    launch = time.time()
    wall, returncode, lines = run_timed([sys.executable, str(checkout / "train.py"), *args], work)
    if returncode:
        sys.exit("minigpt failed:\n" + "\n".join(line for _, line in lines[-40:]))
    validations, validating = [], 0.0
    for record in map(json.loads, clock.read_text().splitlines()):
        start, end = record["start"] - launch, record["end"] - launch
        validations.append((start, end, record["step"], record["val_loss"], validating))
        validating += record["end"] - record["start"]
    metrics = json.loads((out / "metrics.json").read_text())
    return {
        "wall_s": wall,
        "steps": metrics["steps"],
        "median_step_ms": metrics["median_step_ms"],
        "full_val_loss": checkpoint_full_val_loss(metrics["last_checkpoint"], data),
        "validations": validations,
    }


def training_curve(run: dict) -> list[tuple[float, float]]:
    """(training seconds, val loss) of each validation: seconds since launch at its start,
    less the seconds spent in the validations before it."""
    return [(start - before, loss) for start, _, _, loss, before in run["validations"]]


def time_to(curve: list[tuple[float, float]], target: float) -> float | None:
    """The first training time at which the curve reaches target, interpolated linearly
    between validations; None if it never does."""
    for (t0, l0), (t1, l1) in zip([(0.0, float("inf"))] + curve, curve, strict=False):
        if l1 <= target:
            if not np.isfinite(l0):
                return t1
            return t0 + (t1 - t0) * (l0 - target) / (l0 - l1)
    return None


def loss_at(curve: list[tuple[float, float]], seconds: float, final: float) -> float:
    """The val loss at `seconds` of training, interpolated; `final` if the run ended sooner."""
    if not curve or curve[-1][0] <= seconds:
        return final
    for (t0, l0), (t1, l1) in zip(curve, curve[1:], strict=False):
        if t0 <= seconds <= t1:
            return l0 + (l1 - l0) * (seconds - t0) / (t1 - t0)
    return curve[0][1]  # before the first validation: no better estimate


def race(args, data: Path) -> tuple[list[dict], list[dict], list[dict]]:
    nanos, minis, befores = [], [], []
    for i in range(args.seeds):
        seed = SEED + i
        with tempfile.TemporaryDirectory() as tmp:
            order = ["nanogpt", "minigpt"] + (["before"] if args.before else [])
            # reversed every other round: nanoGPT and the earlier checkout take turns going
            # first; with --before, minigpt always runs between them
            for name in order if i % 2 == 0 else order[::-1]:
                work = Path(tmp, name)
                work.mkdir()
                if name == "nanogpt":
                    nanos.append(run_nanogpt(args.nanogpt, data, 2000, work, seed))
                elif name == "minigpt":
                    minis.append(run_minigpt(data, work, seed, []))
                else:
                    befores.append(run_minigpt(data, work, seed, [], args.before))
            before = ""
            if args.before:
                before = (
                    f"; before {befores[-1]['wall_s']:.1f} s, full val "
                    f"{befores[-1]['full_val_loss']:.4f}"
                )
            print(
                f"seed {seed}: nanoGPT {nanos[-1]['wall_s']:.1f} s, full val "
                f"{nanos[-1]['full_val_loss']:.4f}; minigpt {minis[-1]['wall_s']:.1f} s, "
                f"full val {minis[-1]['full_val_loss']:.4f}{before}",
                flush=True,
            )
    return nanos, minis, befores


def validation_interval(overrides: list[str], about: int = 25) -> int:
    """The divisor of a row's steps nearest to `about` (the smaller of two as near): its
    validations, that many steps apart, end with one at its last step."""
    steps = OmegaConf.load(ROOT / "conf/experiment/speedrun_cpu.yaml").trainer.max_steps
    for override in overrides:
        if override.startswith("trainer.max_steps="):
            steps = int(override.split("=", 1)[1])
    divisors = [d for d in range(1, steps + 1) if steps % d == 0]
    return min(divisors, key=lambda d: (abs(d - about), d))


def ablations(args, data: Path, target: float, budget: float) -> dict:
    """Every row for the first seed, then every row for the next: a machine that speeds up
    or slows down during the hour does so for every row alike. Each row validates on the
    whole split about every 25 steps, and at its last step."""
    names = [name for name in ABLATIONS if not args.only or name in args.only]
    runs: dict[str, list[dict]] = {name: [] for name in names}
    for i in range(args.seeds):
        for name in names:
            overrides = ABLATIONS[name]
            full_split = [
                f"trainer.val_check_interval={validation_interval(overrides)}",
                "trainer.limit_val_batches=1.0",
            ]
            with tempfile.TemporaryDirectory() as tmp:
                run = run_minigpt(data, Path(tmp), SEED + i, full_split + overrides)
            runs[name].append(run)
            print(f"seed {SEED + i} {name}: {run['full_val_loss']:.4f}", flush=True)
    rows = {}
    for name in names:
        curves = [training_curve(r) for r in runs[name]]
        times = [time_to(c, target) for c in curves]
        reached = [t for t in times if t is not None]
        finals = [r["full_val_loss"] for r in runs[name]]
        rows[name] = {
            "overrides": ABLATIONS[name],
            "time_to_target_s": statistics.median(reached) if reached else None,
            "reached": f"{len(reached)}/{len(curves)}",
            "loss_at_budget": statistics.mean(
                loss_at(c, budget, final) for c, final in zip(curves, finals, strict=True)
            ),
            "full_val_loss": statistics.mean(finals),
            "full_val_losses": finals,
            "wall_s": statistics.median(r["wall_s"] for r in runs[name]),
            "median_step_ms": statistics.median(r["median_step_ms"] for r in runs[name]),
        }
    print()
    for name, row in rows.items():
        reach = f"{row['time_to_target_s']:.1f} s" if row["time_to_target_s"] else "never"
        print(
            f"{name:34} to target {reach:>8} ({row['reached']}), at budget "
            f"{row['loss_at_budget']:.4f}, final {row['full_val_loss']:.4f}, wall "
            f"{row['wall_s']:.1f} s, {row['median_step_ms']:.1f} ms/step"
        )
    return rows


def plot(nanos: list[dict], minis: list[dict], target: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 4.5))
    for runs, name, color in ((nanos, "nanoGPT", "tab:gray"), (minis, "minigpt", "tab:blue")):
        for i, run in enumerate(runs):
            if name == "nanoGPT":
                points = [(s, loss) for s, _, loss in run["curve"]]
            else:
                points = [(end, loss) for _, end, _, loss, _ in run["validations"]]
            label = f"{name}, own estimate (20 batches)" if i == 0 else None
            ax.plot(*zip(*points, strict=True), color=color, marker=".", alpha=0.7, label=label)
            label = f"{name}, full split at the end" if i == 0 else None
            ax.plot(run["wall_s"], run["full_val_loss"], "*", color=color, ms=12, label=label)
    ax.axhline(target, color="tab:red", ls="--", lw=1, label=f"target {target:.4f}")
    half = statistics.median(r["wall_s"] for r in nanos) / 2
    ax.axvline(half, color="tab:green", ls=":", lw=1, label="half nanoGPT's wall time")
    ax.set(xlabel="wall seconds since launch", ylabel="val loss (nats/char)", ylim=(1.7, 3.0))
    ax.set_title("tinyshakespeare on 2 CPU cores: nanoGPT's 2000 steps vs experiment=speedrun_cpu")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    print(f"wrote {path}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nanogpt", type=Path, required=True, help="a karpathy/nanoGPT checkout")
    parser.add_argument(
        "--data", type=Path, default=ROOT.parent / "shared" / "data" / "tinyshakespeare.txt"
    )
    parser.add_argument("--seeds", type=int, default=3, help="seeds 1337, 1338, ...")
    parser.add_argument("--ablations", action="store_true", help="also the ablation table")
    parser.add_argument("--plot", type=Path, default=None, help="write the race's curves here")
    parser.add_argument("--target", type=float, help="ablations only: this target loss")
    parser.add_argument("--budget", type=float, help="ablations only: this time budget (s)")
    parser.add_argument(
        "--only", action="append", choices=list(ABLATIONS), help="these ablation rows alone"
    )
    parser.add_argument("--before", type=Path, help="an earlier checkout, raced alongside")
    args = parser.parse_args()
    check_inputs(args.nanogpt, args.data)
    if args.seeds < 1:
        sys.exit(f"error: --seeds={args.seeds} must be >= 1")
    args.nanogpt = args.nanogpt.resolve()
    if args.before is not None:
        if not (args.before / "train.py").is_file():
            sys.exit(f"error: --before={args.before} is not a minigpt checkout (no train.py)")
        args.before = args.before.resolve()
    data = args.data.resolve()
    if (args.target is None) != (args.budget is None):
        sys.exit("error: give both --target and --budget (ablations without a race), or neither")
    if args.target is not None:
        print(f"ablations: target {args.target:.4f}, time budget {args.budget:.1f} s", flush=True)
        rows = ablations(args, data, args.target, args.budget)
        print(json.dumps({"target": args.target, "budget_s": args.budget, "ablations": rows}))
        return
    nanos, minis, befores = race(args, data)
    nano_wall = statistics.median(r["wall_s"] for r in nanos)
    mini_wall = statistics.median(r["wall_s"] for r in minis)
    target = statistics.mean(r["full_val_loss"] for r in nanos)
    result = {
        "machine": f"{platform.machine()} {torch.get_num_threads()} threads",
        "torch": torch.__version__,
        "python": platform.python_version(),
        "seeds": args.seeds,
        "nanogpt_wall_s": [round(r["wall_s"], 2) for r in nanos],
        "minigpt_wall_s": [round(r["wall_s"], 2) for r in minis],
        "nanogpt_full_val_loss": [round(r["full_val_loss"], 4) for r in nanos],
        "minigpt_full_val_loss": [round(r["full_val_loss"], 4) for r in minis],
        "wall_ratio": round(mini_wall / nano_wall, 3),
    }
    if befores:
        before_wall = statistics.median(r["wall_s"] for r in befores)
        result["before_wall_s"] = [round(r["wall_s"], 2) for r in befores]
        result["before_full_val_loss"] = [round(r["full_val_loss"], 4) for r in befores]
        result["before_wall_ratio"] = round(before_wall / nano_wall, 3)
    mini_loss = statistics.mean(r["full_val_loss"] for r in minis)
    print(f"\nrace over {args.seeds} seeds{'':14}{'nanoGPT':>10}{'minigpt':>10}")
    print(f"{'median wall s (whole process)':38}{nano_wall:>10.1f}{mini_wall:>10.1f}")
    print(f"{'mean full-split val loss':38}{target:>10.4f}{mini_loss:>10.4f}")
    print(
        f"wall ratio minigpt/nanoGPT {mini_wall / nano_wall:.3f} (goal <= 0.12, stretch <= 0.10); "
        f"loss {'<=' if mini_loss <= target else '>'} nanoGPT's"
    )
    if befores:
        before_loss = statistics.mean(r["full_val_loss"] for r in befores)
        print(
            f"before ({args.before.name}): median wall {before_wall:.1f} s, ratio "
            f"{before_wall / nano_wall:.3f}, mean full-split val loss {before_loss:.4f}; "
            f"now/before wall {mini_wall / before_wall:.3f}"
        )
    if args.plot:
        plot(nanos, minis, target, args.plot)
    if args.ablations:
        print(f"\nablations: target {target:.4f}, time budget {nano_wall / 2:.1f} s", flush=True)
        result["target"] = round(target, 4)
        result["budget_s"] = round(nano_wall / 2, 2)
        result["ablations"] = ablations(args, data, target, nano_wall / 2)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
