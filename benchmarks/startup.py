"""Start-up, measured as whole processes side by side: what a command costs before it works.

    python benchmarks/startup.py --nanogpt path/to/nanoGPT [--data tinyshakespeare.txt]
        [--repeats 5] [--before an/earlier/checkout]

Rows, each the median of --repeats runs, the programs alternating who goes first:
- `python sample.py max_new_tokens=1` on a checkpoint of the default model (written by
  train.py: weights, optimizer state, run record) against nanoGPT's
  `python sample.py --max_new_tokens=1` on a checkpoint of the same shape (4 layers, 4
  heads, 128 wide, context 128; weights and AdamW state; nanoGPT's learned positions);
- `python train.py experiment=speedrun_cpu` (on --data, tokenized beforehand): seconds from
  launch to the start of the first training step (a callback prints the clock there), and
  the whole process of a 1-step run;
- the floors: `python -c "import torch"` and `python -c "import lightning"`.
With --before, an earlier checkout's sample.py and train.py run in the same rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

from sample_speed import nanogpt_sample_dir  # noqa: E402

SHAPE = dict(n_layer=4, n_head=4, n_embd=128, block_size=128, bias=True, vocab_size=65)
PROBE = """import time
import lightning as L


class FirstStep(L.Callback):
    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == 0:
            print(f"FIRST_STEP {time.time()}", flush=True)
"""


def wall(command: list[str], cwd: Path, env: dict | None = None) -> tuple[float, str]:
    start = time.time()
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=env)
    if done.returncode:
        sys.exit(f"{' '.join(command[:3])} failed:\n{done.stderr[-3000:]}")
    return time.time() - start, done.stdout


def nanogpt_checkpoint(nanogpt: Path, work: Path) -> None:
    """nanoGPT's sample.py set up in work/ on a checkpoint of the default model's shape with
    weights and AdamW state, as its train.py writes them."""
    sys.path.insert(0, str(nanogpt))
    import model as nanogpt_model  # nanoGPT's model.py

    model = nanogpt_model.GPT(nanogpt_model.GPTConfig(**SHAPE, dropout=0.0))
    optimizer = torch.optim.AdamW(model.parameters())
    model(torch.zeros(1, 8, dtype=torch.long), torch.zeros(1, 8, dtype=torch.long))[1].backward()
    optimizer.step()
    checkpoint = {
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "model_args": SHAPE | {"dropout": 0.0},
        "iter_num": 1,
        "best_val_loss": 0.0,
    }
    nanogpt_sample_dir(nanogpt, work, checkpoint)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nanogpt", type=Path, required=True, help="a karpathy/nanoGPT checkout")
    parser.add_argument(
        "--data", type=Path, default=ROOT.parent / "shared/data/tinyshakespeare.txt"
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument(
        "--before",
        type=Path,
        help="another minigpt checkout (an earlier commit) whose train.py and sample.py run "
        "beside this one's, in this environment",
    )
    args = parser.parse_args()
    if not (args.nanogpt / "sample.py").is_file():
        sys.exit(f"error: {args.nanogpt} is not a nanoGPT checkout (no sample.py)")
    if not args.data.is_file():
        sys.exit(f"error: --data {args.data} does not exist: pass a text file")
    python = sys.executable
    roots = {"minigpt": ROOT} | ({"before": args.before.resolve()} if args.before else {})
    rows: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        nano = work / "nanogpt"
        nano.mkdir()
        nanogpt_checkpoint(args.nanogpt.resolve(), nano)
        (work / "startup_probe.py").write_text(PROBE)
        cache = f"paths.cache_dir={work / 'cache'}"
        default = ["trainer.max_steps=1", "sample.num_samples=0", "logger=none", cache]
        # the default model's checkpoint (and the embedded corpus tokenized)
        wall([python, str(ROOT / "train.py"), *default, f"hydra.run.dir={work / 'd'}"], work)
        ckpt = work / "d" / "checkpoints" / "last.ckpt"
        speedrun = [
            "experiment=speedrun_cpu",
            f"data.paths=[{args.data}]",
            "trainer.max_steps=1",
            "logger=none",
            cache,
            "+callbacks.first_step._target_=startup_probe.FirstStep",
        ]
        env = {**os.environ, "PYTHONPATH": str(work)}
        train = [python, str(ROOT / "train.py"), *speedrun]
        wall([*train, f"hydra.run.dir={work / 'warm'}"], work, env)  # tokenizes --data
        nanogpt_sample = [python, "sample.py", "--out_dir=out", "--device=cpu"]
        nanogpt_sample += ["--compile=False", "--num_samples=1", "--max_new_tokens=1"]
        for i in range(args.repeats):
            samples = [("nanoGPT sample.py", nanogpt_sample, nano)] + [
                (
                    f"{name} sample.py",
                    [python, str(root / "sample.py"), f"ckpt_path={ckpt}", "max_new_tokens=1"],
                    work,
                )
                for name, root in roots.items()
            ]
            for name, command, cwd in samples if i % 2 == 0 else samples[::-1]:
                rows.setdefault(name, []).append(wall(command, cwd)[0])
            for name, root in list(roots.items())[:: 1 if i % 2 == 0 else -1]:
                run_dir = f"hydra.run.dir={work / f'{name}{i}'}"
                start = time.time()
                seconds, out = wall([python, str(root / "train.py"), *speedrun, run_dir], work, env)
                first = float(re.search(r"FIRST_STEP (\d+\.\d+)", out)[1])  # beside the bar
                rows.setdefault(f"{name} speedrun_cpu: launch to first step", []).append(
                    first - start
                )
                rows.setdefault(f"{name} speedrun_cpu: 1-step run", []).append(seconds)
            for floor in ("torch", "lightning"):
                rows.setdefault(f"python -c 'import {floor}'", []).append(
                    wall([python, "-c", f"import {floor}"], work)[0]
                )
    medians = {name: statistics.median(times) for name, times in rows.items()}
    print(f"whole processes, medians of {args.repeats} (seconds)")
    for name, value in medians.items():
        print(f"  {name:42}{value:7.2f}")
    for name in roots:
        ratio = medians[f"{name} sample.py"] / medians["nanoGPT sample.py"]
        print(f"  {name} sample.py / nanoGPT sample.py: {ratio:.2f}x")
    print(
        json.dumps(
            {
                "machine": f"{platform.machine()} {torch.get_num_threads()} threads",
                "torch": torch.__version__,
                "before": str(args.before),
                "repeats": args.repeats,
                "median_s": {k: round(v, 3) for k, v in medians.items()},
                "all_s": {k: [round(t, 3) for t in v] for k, v in rows.items()},
            }
        )
    )


if __name__ == "__main__":
    main()
