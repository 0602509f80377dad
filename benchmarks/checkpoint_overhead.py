"""What periodic checkpoints cost on the default run (`make train`'s config).

Trains the default config twice in this process, side by side in one run of the script:
with last.ckpt every 100 steps and 30 minutes (the defaults), and with no periodic
checkpoint (last.ckpt at the end only). Prints each run's training time, the ratio, how
many checkpoints were written and the median time to write one (timed inside
AtomicCheckpointIO: serialize, fsync, rename).

    .venv/bin/python benchmarks/checkpoint_overhead.py [--steps 1200] [--repeats 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import lightning as L  # noqa: E402
from hydra import compose, initialize_config_dir  # noqa: E402

from minigpt.commands import train as train_script  # noqa: E402
from minigpt.training.run import AtomicCheckpointIO  # noqa: E402

SAVE_SECONDS: list[float] = []
_save = AtomicCheckpointIO.save_checkpoint


def timed_save(self, checkpoint, path, storage_options=None):
    start = time.perf_counter()
    _save(self, checkpoint, path, storage_options)
    SAVE_SECONDS.append(time.perf_counter() - start)


def fit_seconds(periodic: bool, steps: int, out: Path) -> tuple[float, list[float]]:
    SAVE_SECONDS.clear()
    overrides = [
        f"paths.output_dir={out}",
        f"trainer.max_steps={steps}",
        "trainer.enable_progress_bar=false",
        "sample.num_samples=0",
    ]
    if not periodic:
        overrides += [
            "callbacks.last_checkpoint.every_n_steps=null",
            "callbacks.last_checkpoint.every_n_minutes=null",
        ]
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=overrides)
    L.seed_everything(cfg.seed)
    datamodule, module, trainer = train_script.build(cfg)
    start = time.perf_counter()
    trainer.fit(module, datamodule=datamodule)
    return time.perf_counter() - start, list(SAVE_SECONDS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    AtomicCheckpointIO.save_checkpoint = timed_save
    times = {True: [], False: []}
    saves = {True: [], False: []}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for periodic in (False, True):  # alternating, so drift hits both alike
                seconds, written = fit_seconds(
                    periodic, args.steps, Path(tmp) / f"{periodic}{repeat}"
                )
                times[periodic].append(seconds)
                saves[periodic] = written
                print(f"periodic={periodic}: fit {seconds:.1f} s, {len(written)} checkpoints")
    off, on = statistics.median(times[False]), statistics.median(times[True])
    print(f"fit time, median of {args.repeats}: without periodic {off:.1f} s, with {on:.1f} s")
    print(f"ratio with / without: {on / off:.4f}")
    for periodic in (False, True):
        written = saves[periodic]
        print(
            f"periodic={periodic}: {len(written)} checkpoint writes, median "
            f"{1000 * statistics.median(written):.1f} ms, total {sum(written):.2f} s"
        )
    extra = sum(saves[True]) - sum(saves[False])
    print(f"checkpoint writing added {extra:.2f} s = {100 * extra / off:.2f}% of the fit time")


if __name__ == "__main__":
    main()
