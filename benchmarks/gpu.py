"""The GPU checks and figures, in one run on a CUDA machine (about 8 minutes on an H100/H200):

    python benchmarks/gpu.py --out DIR --nanogpt NANOGPT_CHECKOUT --data tinyshakespeare.txt

Phases, each in a fresh process with its own time limit, in order of importance; a phase
that would not fit in what is left of --budget seconds is skipped and says so:
1. the machine: device, torch, Python, `pip list` (pip-list.txt), which imports are missing;
2. throughput, GPT-2 124M (12x12x768, block 1024, vocab 50304) on random tokens, batch 12,
   bf16, torch.compile: nanoGPT's `bench.py`, then ours (`experiment=gpt2_124m` through
   train.py's `build` and Lightning's `fit`, timed by StepTimer's CUDA events) with its
   AdamW and with Muon (`optimizer=muon scheduler=wsd`);
3. time to quality on shakespeare_char: wall time from launch until the first validation
   below --target (1.48): nanoGPT's `train.py config/train_shakespeare_char.py` (stopped
   when it prints such a val loss), then our recipe at its shape
   (`experiment=speedrun_gpu stop_at_val_loss=1.48`, compiled);
4. start-up on this machine: `import torch`, `import lightning`, a 1-step train.py run;
5. the GPU tests (`pytest -m gpu`): learning in bf16-mixed, 16-mixed and compiled, bf16
   against fp32, one compiled graph with sampling on, no device reads between logging steps;
6. extras as time allows: both optimizers at batch 32 (MFU), the speedrun with
   compile_mode=reduce-overhead, nanoGPT's configuration itself (compiled and eager), one
   device under each distributed strategy.

Writes into --out: figures.json (every figure, rewritten after each phase), run.log (each
phase's command and output), pip-list.txt and runs.tar.gz (metrics.json, configs and
TensorBoard logs of our runs). Prints Markdown tables at the end.

`--smoke` runs every phase on the CPU with tiny sizes and no compile: a check of this script
(the test suite runs it without --nanogpt; nanoGPT's phases then say skipped).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from pathlib import Path

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

GPT2_VOCAB = 50304  # GPT-2's 50257 rounded up to a multiple of 64, as nanoGPT's bench.py
GPU_TESTS = ["tests/test_gpu.py", "tests/test_step_path.py"]
# experiment=gpt2_124m trains with AdamW; the same model and steps with Muon (the default)
MUON = ["optimizer=muon", "scheduler=wsd"]
IMPORTS = ["lightning", "hydra", "omegaconf", "torchmetrics", "tensorboard", "shksprdata", "tqdm"]


# ---------------------------------------------------------------------------- our workers


class SyntheticTokens(L.LightningDataModule):
    """Random token batches (the same ones every run), for throughput, with what
    train.build needs of a data module (vocab_size, tokenizer, tokens_per_byte)."""

    def __init__(self, vocab_size: int, block_size: int, batch_size: int, batches: int = 64):
        super().__init__()
        generator = torch.Generator().manual_seed(0)
        shape = (batches, batch_size, block_size + 1)
        self.windows = torch.randint(vocab_size, shape, generator=generator)
        self.vocab_size, self.tokenizer = vocab_size, None

    def setup(self, stage: str | None = None) -> None:
        pass  # the batches are made in __init__ (train.build calls setup() with no stage)

    def tokens_per_byte(self, split: str) -> float:
        return 0.0  # no text: no bits per byte

    def train_dataloader(self) -> DataLoader:
        return DataLoader(
            BatchCycle(self.windows), batch_size=None, pin_memory=torch.cuda.is_available()
        )


class BatchCycle(Dataset):
    """Item i: stored batch i mod their number, split into (inputs, targets)."""

    def __init__(self, windows: torch.Tensor):
        self.windows = windows

    def __len__(self) -> int:
        return 1_000_000  # more than any run asks for

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        window = self.windows[i % len(self.windows)]
        return window[:, :-1], window[:, 1:]


def compose(overrides: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose("train", overrides=overrides)


def throughput_overrides(
    smoke: bool, batch: int, steps: int, compile_mode=None, extra: list[str] | None = None
) -> list[str]:
    """Ours for throughput: GPT-2 124M (`experiment=gpt2_124m`) in bf16, compiled, one
    batch per optimizer step, no validation, no checkpoint, no text samples. extra: more
    overrides (a `trainer=` among them replaces trainer=gpu; `compile=false` the compile)."""
    extra = list(extra or [])
    if smoke:
        shape = ["model=tiny", "trainer.accelerator=cpu", "trainer.precision=32-true"]
        shape += ["compile=false"]
        extra = [o for o in extra if not o.startswith("compile")]
    else:
        shape = ["experiment=gpt2_124m", "trainer=gpu", "trainer.precision=bf16-mixed"]
        shape += ["compile=true", f"compile_mode={compile_mode or 'null'}"]
        # nanoGPT's bench.py model (no biases, exact GELU), one batch a step
        shape += ["model.bias=false", "model.activation=gelu", "global_batch_tokens=null"]
    if any(o.startswith("trainer=") for o in extra):
        shape = [o for o in shape if o != "trainer=gpu"]
        if smoke:  # the chosen trainer group would set its own accelerator
            extra.append("trainer.accelerator=cpu")
    shape = [o for o in shape if o.split("=")[0] not in {e.split("=")[0] for e in extra}]
    return [
        *extra,
        *shape,
        f"data.batch_size={batch}",
        "trainer.accumulate_grad_batches=1",
        f"trainer.max_steps={steps}",
        "scheduler.warmup_steps=2",
        f"scheduler.decay_steps={steps}",
        "trainer.limit_val_batches=0",
        "trainer.num_sanity_val_steps=0",
        "~callbacks.best_checkpoint",
        "~callbacks.last_checkpoint",
        "~callbacks.text_samples",
        "sample.num_samples=0",
    ]


def quality_overrides(
    smoke: bool,
    data: str | None,
    target: float,
    extra: list[str],
    experiment: str = "nanogpt_shakespeare_char",
):
    """Ours for time to quality: nanoGPT's shakespeare_char configuration (or `experiment`,
    experiment=speedrun_gpu: our recipe at its shape) on its text, stopping at the first
    validation below target."""
    data = ["data=text_files", f"data.paths=[{data}]"] if data else ["data=shakespeare"]
    if smoke:
        base = ["experiment=tiny", *data, "trainer.max_steps=40", "trainer.val_check_interval=10"]
        base += ["trainer.limit_val_batches=5"]
        extra = [o.replace("compile=true", "compile=false") for o in extra]  # no CPU compile
        extra = [o for o in extra if not o.startswith("compile_mode")]
    else:
        base = [f"experiment={experiment}", *data, "trainer=gpu"]
    return [*base, *extra, f"stop_at_val_loss={target}", "sample.num_samples=0"]


def throughput_worker(args) -> None:
    """Ours: GPT-2 124M on random tokens through train.build and Lightning's fit; prints one
    JSON line with the step times StepTimer measured."""
    from minigpt.commands import train as train_script
    from minigpt.training.callbacks.step_timer import StepTimer
    from minigpt.training.callbacks.throughput import peak_flops

    overrides = throughput_overrides(
        args.smoke, args.batch, args.steps, args.compile_mode, args.override
    )
    cfg = compose([*overrides, f"paths.output_dir={args.run_dir}"])
    vocab = 65 if args.smoke else GPT2_VOCAB
    synthetic = SyntheticTokens(vocab, cfg.model.block_size, args.batch)
    L.seed_everything(cfg.seed)
    _, module, trainer = train_script.build(cfg, datamodule=synthetic)
    trainer.fit(module, datamodule=synthetic)
    timer = next(c for c in trainer.callbacks if isinstance(c, StepTimer))
    step_ms = timer.step_ms[args.warmup :]  # the first steps include compiling
    median = sorted(step_ms)[len(step_ms) // 2]
    tokens = args.batch * cfg.model.block_size
    device = trainer.strategy.root_device
    peak = peak_flops(device, torch.bfloat16 if device.type == "cuda" else torch.float32)
    flops_per_token = module.model.flops_per_token()
    print(
        json.dumps(
            {
                "steps_timed": len(step_ms),
                "median_step_ms": round(median, 3),
                "mean_step_ms": round(sum(step_ms) / len(step_ms), 3),
                "tokens_per_s": round(tokens / median * 1000),
                "mfu": round(tokens / median * 1000 * flops_per_token / peak, 4) if peak else None,
                "flops_per_token": flops_per_token,
                "step_ms": [round(ms, 3) for ms in step_ms],
                "parameters": module.model.num_parameters(),
            }
        )
    )


# ---------------------------------------------------------------------------- the phases


class Session:
    """The output folder, the log, the figures and the time budget of one run."""

    def __init__(self, args):
        self.args, self.start = args, time.monotonic()
        self.out = Path(args.out).resolve()
        self.out.mkdir(parents=True, exist_ok=True)
        self.work = Path(args.work or tempfile.mkdtemp(prefix="minigpt-gpu-")).resolve()
        self.work.mkdir(parents=True, exist_ok=True)
        self.log = open(self.out / "run.log", "a")  # noqa: SIM115 - open for the whole run
        self.figures: dict = {}

    def left(self) -> float:
        return self.args.budget - (time.monotonic() - self.start)

    def record(self, name: str, value) -> None:
        self.figures[name] = value
        path = self.out / "figures.json"
        path.with_suffix(".tmp").write_text(json.dumps(self.figures, indent=1))
        os.replace(path.with_suffix(".tmp"), path)

    def say(self, text: str) -> None:
        print(text, flush=True)
        self.log.write(text + "\n")
        self.log.flush()

    def fits(self, name: str, need_s: float) -> bool:
        if self.left() >= need_s:
            self.say(f"\n== {name} ({self.left():.0f} s of the budget left)")
            return True
        self.say(f"\n== {name}: skipped, needs ~{need_s:.0f} s, {self.left():.0f} s left")
        self.record(name, {"skipped": f"needs ~{need_s:.0f} s, {self.left():.0f} s left"})
        return False

    def run(self, command, cwd: Path, limit_s: float, env=None, watch=None, stop=False):
        """Runs command, its output into run.log; returns (exit code, wall s, output, the
        seconds from launch until watch(line) first held, or None). With stop, that line
        ends the process (nanoGPT's runs have no stop of their own)."""
        self.say("$ " + " ".join(str(c) for c in command))
        environment = os.environ | {"PYTHONUNBUFFERED": "1"} | (env or {})
        start = time.monotonic()
        process = subprocess.Popen(
            command,
            cwd=cwd,
            env=environment,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        lines, seen_at = [], None
        limit = min(limit_s, max(self.left(), 1.0))
        # a process silent past its limit is killed by the timer (the loop waits on lines)
        timer = threading.Timer(limit, os.killpg, (process.pid, signal.SIGKILL))
        timer.start()
        for line in process.stdout:
            lines.append(line)
            self.log.write(line)
            if watch is not None and seen_at is None and watch(line):
                seen_at = time.monotonic() - start
                if stop:
                    os.killpg(process.pid, signal.SIGTERM)
        process.wait()
        timer.cancel()
        if time.monotonic() - start >= limit:
            self.say(f"(stopped at its limit of {limit:.0f} s)")
        wall = time.monotonic() - start
        self.log.flush()
        code = 0 if stop and seen_at is not None else process.returncode
        return code, wall, "".join(lines), seen_at


def machine(session: Session) -> None:
    card = torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU"
    info = {
        "device": card,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "python": platform.python_version(),
        "cpu_cores": os.cpu_count(),
    }
    missing = []
    for name in IMPORTS:
        try:
            __import__(name)
        except ImportError as error:
            missing.append(f"{name} ({error})")
    info["missing_imports"] = missing
    pip = subprocess.run(
        [sys.executable, "-m", "pip", "list"], capture_output=True, text=True, check=False
    )
    (session.out / "pip-list.txt").write_text(pip.stdout + pip.stderr)
    versions = dict(
        line.split()[:2] for line in pip.stdout.splitlines()[2:] if len(line.split()) >= 2
    )
    info["packages"] = {
        name: versions.get(name)
        for name in ("lightning", "hydra-core", "omegaconf", "torchmetrics", "datasets", "triton")
    }
    session.say(json.dumps(info))
    session.record("machine", info)


def gpu_tests(session: Session) -> None:
    if session.args.smoke:
        session.record("tests", {"skipped": "smoke: the GPU tests skip on a CPU"})
        return
    if not session.fits("tests", 60):
        return
    code, wall, output, _ = session.run(
        [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", *GPU_TESTS],
        cwd=ROOT,
        limit_s=200,
        env={"MINIGPT_TEST_CACHE_DIR": str(Path(session.args.cache_dir or "").resolve())}
        if session.args.cache_dir
        else {},
    )
    summary = output.strip().splitlines()[-1] if output.strip() else ""
    session.say(f"tests: exit {code}, {wall:.0f} s: {summary}")
    session.record("tests", {"exit": code, "wall_s": round(wall, 1), "summary": summary})


def nanogpt_copy(session: Session) -> Path | None:
    """A scratch copy of the nanoGPT checkout (its runs write data and checkpoints there)."""
    if not session.args.nanogpt:
        return None
    copy = session.work / "nanogpt"
    if not copy.exists():
        shutil.copytree(session.args.nanogpt, copy, ignore=shutil.ignore_patterns(".git"))
    return copy


def nanogpt_throughput(session: Session, name: str) -> None:
    nanogpt = nanogpt_copy(session)
    if nanogpt is None:
        session.record(name, {"skipped": "no --nanogpt checkout"})
        return
    if not torch.cuda.is_available():
        session.record(name, {"skipped": "nanoGPT's bench.py needs CUDA"})
        return
    if not session.fits(name, 60):
        return
    settings = ["--real_data=False", "--seed=1337"]
    if session.args.smoke:
        settings += ["--device=cpu", "--compile=False", "--dtype=float32"]
        settings += ["--batch_size=1", "--block_size=32"]
    else:
        settings += ["--batch_size=12", "--block_size=1024", "--dtype=bfloat16"]
    code, wall, output, _ = session.run(
        [sys.executable, "bench.py", *settings], cwd=nanogpt, limit_s=240
    )
    found = re.search(r"time per iteration: ([\d.]+)ms", output)
    if code or not found:
        session.record(name, {"failed": f"exit {code}", "wall_s": round(wall, 1)})
        return
    ms = float(found.group(1))
    batch, block = (1, 32) if session.args.smoke else (12, 1024)
    figure = {"mean_step_ms": ms, "tokens_per_s": round(batch * block / ms * 1000)}
    figure["wall_s"] = round(wall, 1)
    session.say(f"{name}: {json.dumps(figure)}")
    session.record(name, figure)


def our_throughput(
    session: Session, name: str, batch: int, compile_mode=None, extra: list[str] | None = None
) -> None:
    if not session.fits(name, 60):
        return
    steps = 12 if session.args.smoke else 50
    run_dir = session.work / name.replace("/", "-")
    command = [sys.executable, str(Path(__file__).resolve()), "--worker", "throughput"]
    command += [f"--batch={batch}", f"--steps={steps}", f"--run-dir={run_dir}", "--warmup=5"]
    if compile_mode:
        command.append(f"--compile-mode={compile_mode}")
    command += [f"--override={o}" for o in extra or []]
    if session.args.smoke:
        command.append("--smoke")
    code, wall, output, _ = session.run(command, cwd=ROOT, limit_s=300)
    rows = [line for line in output.splitlines() if line.startswith('{"steps_timed"')]
    if code or not rows:
        session.record(name, {"failed": f"exit {code}", "wall_s": round(wall, 1)})
        return
    figure = json.loads(rows[-1]) | {"batch": batch, "wall_s": round(wall, 1)}
    session.say(f"{name}: {json.dumps(figure)}")
    session.record(name, figure)


def below(target: float):
    pattern = re.compile(r"step (\d+): train loss [\d.]+, val loss ([\d.]+)")

    def watch(line: str) -> bool:
        found = pattern.search(line)
        return bool(found) and float(found.group(2)) < target

    return watch


def nanogpt_quality(session: Session, name: str) -> None:
    nanogpt = nanogpt_copy(session)
    if nanogpt is None or not session.args.data:
        session.record(name, {"skipped": "needs --nanogpt and --data"})
        return
    if not session.fits(name, 90):
        return
    data_dir = nanogpt / "data" / "shakespeare_char"
    shutil.copy(session.args.data, data_dir / "input.txt")  # prepare.py then downloads nothing
    prepare = subprocess.run([sys.executable, "prepare.py"], cwd=data_dir, capture_output=True)
    if prepare.returncode:
        session.say(prepare.stdout.decode() + prepare.stderr.decode())
        session.record(name, {"failed": f"prepare.py: exit {prepare.returncode}"})
        return
    settings = ["config/train_shakespeare_char.py"]
    if session.args.smoke:
        settings += ["--device=cpu", "--compile=False", "--dtype=float32", "--max_iters=40"]
        settings += ["--n_layer=1", "--n_head=2", "--n_embd=32", "--block_size=32"]
        settings += ["--batch_size=8", "--eval_interval=10", "--eval_iters=5"]
    code, wall, output, seen_at = session.run(
        [sys.executable, "train.py", *settings],
        cwd=nanogpt,
        limit_s=240,
        watch=below(session.args.target),
        stop=True,
    )
    evals = re.findall(r"step (\d+): train loss [\d.]+, val loss ([\d.]+)", output)
    iter_ms = [float(ms) for ms in re.findall(r"iter \d+: loss [\d.]+, time ([\d.]+)ms", output)]
    figure = {
        "seconds_to_target": round(seen_at, 1) if seen_at is not None else None,
        "target_step": int(evals[-1][0]) if seen_at is not None else None,
        "val_curve": [(int(step), float(loss)) for step, loss in evals],
        "median_iter_ms": sorted(iter_ms[2:])[len(iter_ms[2:]) // 2] if len(iter_ms) > 2 else None,
        "wall_s": round(wall, 1),
    }
    session.say(f"{name}: {json.dumps(figure)}")
    session.record(name, figure)


def our_quality(
    session: Session, name: str, overrides: list[str], experiment="nanogpt_shakespeare_char"
) -> None:
    if not session.args.data and not session.args.smoke:
        session.record(name, {"skipped": "needs --data"})
        return
    if not session.fits(name, 60):
        return
    run_dir = session.work / name.replace("/", "-")
    args = session.args
    overrides = quality_overrides(args.smoke, args.data, args.target, overrides, experiment)
    command = [sys.executable, str(ROOT / "train.py"), *overrides, f"hydra.run.dir={run_dir}"]
    env = {"MINIGPT_CACHE_DIR": str(session.args.cache_dir)} if session.args.cache_dir else {}
    said = re.compile(r"val/loss [\d.]+ is below stop_at_val_loss")
    code, wall, output, seen_at = session.run(
        command, cwd=ROOT, limit_s=240, env=env, watch=lambda line: bool(said.search(line))
    )
    metrics_path = run_dir / "metrics.json"
    if code or not metrics_path.exists():
        session.record(name, {"failed": f"exit {code}", "wall_s": round(wall, 1)})
        return
    metrics = json.loads(metrics_path.read_text())
    figure = {
        "seconds_to_target": round(seen_at, 1) if seen_at is not None else None,
        "target_step": metrics["target_step"],
        "val_curve": metrics["val_curve"],
        "median_step_ms": metrics["median_step_ms"],
        "fit_s": metrics["wall_time_s"],
        "compiled_graphs": metrics["compiled_graphs"],
        "wall_s": round(wall, 1),
    }
    session.say(f"{name}: {json.dumps(figure)}")
    session.record(name, figure)


def startup(session: Session) -> None:
    """Whole processes on this machine: `import torch`, `import lightning`, and train.py's
    speedrun_gpu preset for 1 step (eager, no validation), each the median of 3 (one with
    --smoke)."""
    if not session.fits("startup", 60):
        return
    if session.args.smoke:
        run = ["experiment=tiny", "data=shakespeare", "trainer.accelerator=cpu"]
    else:
        data = [f"data.paths=[{session.args.data}]"] if session.args.data else ["data=shakespeare"]
        run = ["experiment=speedrun_gpu", *data]
    run += ["trainer.max_steps=1", "compile=false", "trainer.limit_val_batches=0"]
    run += ["sample.num_samples=0", f"hydra.run.dir={session.work / 'startup'}"]
    commands = {
        "import_torch_s": [sys.executable, "-c", "import torch"],
        "import_lightning_s": [sys.executable, "-c", "import lightning"],
        "train_1_step_s": [sys.executable, str(ROOT / "train.py"), *run],
    }
    figure = {}
    for key, command in commands.items():
        walls = []
        for _ in range(1 if session.args.smoke else 3):
            code, wall, _, _ = session.run(command, cwd=ROOT, limit_s=120)
            if code:
                session.record("startup", {"failed": f"{key}: exit {code}"})
                return
            walls.append(wall)
        figure[key] = round(sorted(walls)[len(walls) // 2], 2)
    session.say(f"startup: {json.dumps(figure)}")
    session.record("startup", figure)


def archive_runs(session: Session) -> None:
    """Our runs' metrics, configs and logs (no checkpoints) into runs.tar.gz."""
    with tarfile.open(session.out / "runs.tar.gz", "w:gz") as tar:
        for path in sorted(session.work.rglob("*")):
            if path.is_file() and "nanogpt" not in path.parts and path.suffix != ".ckpt":
                tar.add(path, arcname=str(path.relative_to(session.work)))


def gpt2_flops_per_token() -> int:
    """Training FLOPs per token of the GPT-2 124M shape both throughput runs use."""
    from minigpt.core.model import GPT, GPTConfig

    shape = dict(n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=GPT2_VOCAB)
    config = GPTConfig(**shape, bias=False, pos_encoding="learned", tie_weights=True)
    with torch.device("meta"):
        return GPT(config).flops_per_token()


def table(session: Session) -> None:
    from minigpt.training.callbacks.throughput import peak_flops

    figures = session.figures
    card = figures["machine"]["device"]
    session.say(f"\n{card}, torch {torch.__version__}\n")
    session.say("| throughput, GPT-2 124M | batch | ms/step | tokens/s | MFU |")
    session.say("| --- | --- | --- | --- | --- |")
    peak = peak_flops(torch.device("cuda"), torch.bfloat16) if torch.cuda.is_available() else None
    flops_per_token = gpt2_flops_per_token()
    for name in [k for k in figures if k.startswith("throughput/")]:
        r = figures[name]
        if "tokens_per_s" not in r:
            session.say(f"| {name} | {'; '.join(map(str, r.values()))} | | | |")
            continue
        ms = r.get("median_step_ms", r.get("mean_step_ms"))
        mfu = r["tokens_per_s"] * flops_per_token / peak if peak else None
        mfu_text = f"{mfu:.1%}" if mfu else "n/a"
        tokens = f"{r['tokens_per_s']:,}"
        session.say(f"| {name} | {r.get('batch', 12)} | {ms} | {tokens} | {mfu_text} |")
    session.say(f"\n| time to val loss < {session.args.target} | s from launch | step | ms/step |")
    session.say("| --- | --- | --- | --- |")
    for name in [k for k in figures if k.startswith("quality/")]:
        r = figures[name]
        ms = r.get("median_step_ms", r.get("median_iter_ms"))
        ms = round(ms, 2) if isinstance(ms, float) else ms
        reached = (r.get("seconds_to_target"), r.get("target_step"))
        session.say(
            f"| {name} | {reached[0]} | {reached[1]} | {ms or '; '.join(map(str, r.values()))} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="gpu-results", help="figures, logs, archive")
    parser.add_argument("--work", help="scratch folder for the runs (default: a temp dir)")
    parser.add_argument("--nanogpt", help="a checkout of karpathy/nanoGPT")
    parser.add_argument("--data", help="nanoGPT's tinyshakespeare.txt")
    parser.add_argument("--cache-dir", help="a token cache to reuse (MINIGPT_CACHE_DIR)")
    parser.add_argument("--target", type=float, help="val loss to reach (1.48; smoke: 4.1)")
    parser.add_argument("--budget", type=float, default=540, help="seconds for all phases")
    parser.add_argument("--smoke", action="store_true", help="tiny runs on the CPU")
    worker = parser.add_argument_group("worker (one of our throughput runs)")
    worker.add_argument("--worker", choices=["throughput"])
    worker.add_argument("--batch", type=int, default=12)
    worker.add_argument("--steps", type=int, default=50)
    worker.add_argument("--warmup", type=int, default=5)
    worker.add_argument("--compile-mode")
    worker.add_argument("--run-dir")
    worker.add_argument("--override", action="append", help="a train.py override, repeatable")
    args = parser.parse_args()
    if args.worker:
        throughput_worker(args)
        return
    if args.target is None:
        args.target = 4.1 if args.smoke else 1.48
    if not args.smoke and not torch.cuda.is_available():
        raise SystemExit("error: no CUDA GPU here; --smoke checks the script on the CPU")
    for name in ("nanogpt", "data", "cache_dir"):
        if getattr(args, name) and not Path(getattr(args, name)).exists():
            raise SystemExit(f"error: --{name.replace('_', '-')}={getattr(args, name)} not found")

    session = Session(args)
    big = 4 if args.smoke else 32
    machine(session)
    nanogpt_throughput(session, "throughput/nanogpt")
    our_throughput(session, "throughput/ours", batch=12)
    our_throughput(session, "throughput/ours-muon", batch=12, extra=MUON)
    nanogpt_quality(session, "quality/nanogpt")
    our_quality(session, "quality/speedrun", ["compile=true"], experiment="speedrun_gpu")
    startup(session)
    gpu_tests(session)
    our_throughput(session, "throughput/ours-b32", batch=big)
    our_throughput(session, "throughput/ours-muon-b32", batch=big, extra=MUON)
    if not args.smoke:
        overhead = ["compile=true", "compile_mode=reduce-overhead"]
        our_quality(session, "quality/speedrun-reduce-overhead", overhead, "speedrun_gpu")
    our_quality(session, "quality/ours-compiled", ["compile=true"])
    our_quality(session, "quality/ours-eager", ["compile=false"])
    # one device under each distributed strategy, eager (compile is not tested with FSDP2),
    # Muon (the default) and AdamW: what DDP and FSDP cost where there is nothing to share
    adamw = ["optimizer=adamw", "scheduler=warmup_cosine", "compile=false"]
    for strategy in ("auto", "ddp", "fsdp"):
        chosen = [] if strategy == "auto" else [f"trainer={strategy}", "trainer.devices=1"]
        our_throughput(
            session, f"throughput/{strategy}1-muon", 12, extra=[*chosen, *MUON, "compile=false"]
        )
        our_throughput(session, f"throughput/{strategy}1-adamw", 12, extra=[*chosen, *adamw])
    archive_runs(session)
    table(session)


if __name__ == "__main__":
    main()
