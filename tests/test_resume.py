"""Long runs: a run killed at any moment and resumed ends bit-identical to one that was never
stopped; signals stop a run with a checkpoint; failures stop every rank cleanly."""

import errno
import json
import os
import random
import signal
import subprocess
import sys
import time
import types
from pathlib import Path

import lightning as L
import pytest
import torch
from conftest import ROOT, call

from minigpt.commands import train as train_script
from minigpt.training import run
from minigpt.training.module import GPTLightningModule
from minigpt.training.run import AtomicCheckpointIO, RunReport, run_subdir

# 60 steps of the tiny model, validated every 20, last.ckpt every 10 steps; the schedule's
# decay is fixed at 60 steps, so that a run may be started longer and resumed to 60
LONG_RUN = (
    "experiment=tiny",
    "trainer.max_steps=60",
    "scheduler.decay_steps=60",
    "trainer.val_check_interval=20",
    "callbacks.last_checkpoint.every_n_steps=10",
    "trainer.enable_progress_bar=false",
    "sample.num_samples=0",
)
# what must not differ between a resumed run and an uninterrupted one
SAME = (
    "status",
    "val_curve",
    "best_val_loss",
    "best_val_step",
    "final_val_loss",
    "final_val_bpb",
    "train_loss",
    "steps",
    "tokens_seen",
    "parameters",
)


def start(run_dir, cache_dir, *overrides, pythonpath=None):
    """train.py in its own process group (a kill reaches every DDP rank, as on a cluster),
    on one thread, so that two runs side by side share the 2 cores without slowing each
    other down (and every run computes alike, whatever runs beside it)."""
    env = os.environ | {"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    env.pop("HYDRA_FULL_ERROR", None)
    if pythonpath:
        env["PYTHONPATH"] = str(pythonpath)
    command = [sys.executable, str(ROOT / "train.py"), *LONG_RUN, *overrides]
    command += [f"paths.cache_dir={cache_dir}", f"hydra.run.dir={run_dir}"]
    return subprocess.Popen(
        command,
        cwd=run_dir.parent,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def finish(process, timeout=300):
    output, _ = process.communicate(timeout=timeout)
    return process.returncode, output


def kill_after_checkpoints(process, run_dir, seed):
    """SIGKILL to the whole process group at a random moment after last.ckpt has been
    written 1 to 3 times (each write replaces the file: a new inode)."""
    rng = random.Random(seed)
    last = run_dir / "checkpoints" / "last.ckpt"
    writes, seen = rng.randint(1, 3), None
    deadline = time.monotonic() + 240
    while writes:
        assert process.poll() is None, finish(process)[1][-3000:]
        assert time.monotonic() < deadline
        inode = last.stat().st_ino if last.exists() else None
        if inode is not None and inode != seen:
            seen, writes = inode, writes - 1
        time.sleep(0.002)
    time.sleep(rng.uniform(0.0, 0.1))
    os.killpg(process.pid, signal.SIGKILL)
    returncode, output = finish(process)
    assert returncode == -signal.SIGKILL, "the run ended before it was killed: " + output[-2000:]


def assert_same_run(a, b):
    """Same weights and optimizer state (max |delta| = 0) and the same metrics.json."""
    ckpt_a = torch.load(a / "checkpoints" / "last.ckpt", weights_only=True)
    ckpt_b = torch.load(b / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt_a["global_step"] == ckpt_b["global_step"] == 60
    for key, value in ckpt_a["state_dict"].items():
        assert torch.equal(value, ckpt_b["state_dict"][key]), key
    for state_a, state_b in zip(
        ckpt_a["optimizer_states"][0]["state"].values(),
        ckpt_b["optimizer_states"][0]["state"].values(),
        strict=True,
    ):
        for name in state_a:
            assert torch.equal(state_a[name], state_b[name]), name
    metrics_a = json.loads((a / "metrics.json").read_text())
    metrics_b = json.loads((b / "metrics.json").read_text())
    assert [step for step, _ in metrics_a["val_curve"]] == [20, 40, 60]
    for key in SAME:
        assert metrics_a[key] == metrics_b[key], key
    assert metrics_a["resumed_at"] == [] and len(metrics_b["resumed_at"]) == 1
    return metrics_b


@pytest.mark.parametrize(
    "variant",
    [  # dropout+accumulation covers plain; the others (18 s to 42 s) are marked slow
        pytest.param((), marks=pytest.mark.slow),
        ("model.dropout=0.1", "trainer.accumulate_grad_batches=2", "data.batch_size=4"),
        pytest.param(
            ("model.dropout=0.1", "trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"),
            marks=pytest.mark.slow,
        ),
        pytest.param(  # bf16 is emulated (slow) on CPUs without bfloat16 instructions
            (
                "optimizer=muon",
                "scheduler=wsd",
                "model.qk_norm=true",
                "trainer.precision=bf16-mixed",
            ),
            marks=pytest.mark.slow,
        ),
        pytest.param(
            ("model.dropout=0.1", "trainer=fsdp", "trainer.accelerator=cpu", "trainer.devices=2"),
            marks=pytest.mark.slow,
        ),
        pytest.param(
            ("optimizer=adamw", "scheduler=warmup_cosine", "trainer=fsdp")
            + ("trainer.accelerator=cpu", "trainer.devices=2"),
            marks=pytest.mark.slow,
        ),
    ],
    ids=["plain", "dropout+accumulation", "ddp+dropout", "muon+bf16", "fsdp+muon", "fsdp+adamw"],
)
def test_killed_and_resumed_run_is_bit_identical(tmp_path, cache_dir, variant):
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    uninterrupted = start(whole, cache_dir, *variant)  # side by side with the killed run
    # started longer, so that it is still running whenever the kill comes
    longer = start(killed, cache_dir, *variant, "trainer.max_steps=100000")
    kill_after_checkpoints(longer, killed, seed=len(variant))
    returncode, output = finish(uninterrupted)
    assert returncode == 0, output[-3000:]
    # every validation is in train.log, not on the terminal (the progress bar shows it)
    log = (whole / "train.log").read_text()
    assert [f"validation at step {s}: val/loss" in log for s in (20, 40, 60)] == [True] * 3
    assert "validation at step" not in output
    killed_at = torch.load(killed / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    assert 10 <= killed_at < 60
    # what a kill -9 in the middle of a write leaves: a temporary file of a dead process
    stale = killed / "checkpoints" / f"last.ckpt.tmp-{dead_pid()}"
    stale.write_bytes(b"half a checkpoint")
    returncode, output = finish(
        start(killed, cache_dir, *variant, "ckpt_path=last", "trainer.max_steps=60")
    )
    assert returncode == 0, output[-3000:]
    metrics = assert_same_run(whole, killed)
    assert metrics["resumed_at"] == [killed_at]
    assert not stale.exists() and f"removed {stale}" in output
    # the arguments of both starts, the first and the resume
    starts = [json.loads(line) for line in (killed / "starts.jsonl").read_text().splitlines()]
    assert [("ckpt_path=last" in s["args"]) for s in starts] == [False, True]
    assert "trainer.max_steps=100000" in starts[0]["args"]


def test_the_resume_command_is_the_way_the_run_was_started(monkeypatch, tmp_path):
    """Pasting it works whether the run came from make, the minigpt command or an
    interpreter that is not on PATH."""
    monkeypatch.delenv("MAKELEVEL", raising=False)
    monkeypatch.setattr(sys, "argv", ["train.py", "model.n_layer=2"])
    assert run.resume_command(tmp_path).startswith(f"{sys.executable} train.py ckpt_path=last")
    monkeypatch.setattr(sys, "argv", [str(ROOT / "minigpt/commands/train.py")])
    minigpt = str(Path(sys.executable).parent / "minigpt")
    assert run.resume_command(tmp_path).startswith(f"{minigpt} train ckpt_path=last")
    monkeypatch.setenv("MAKELEVEL", "1")
    command = run.resume_command(tmp_path)
    assert command == f"make train ARGS='ckpt_path=last hydra.run.dir={tmp_path}'"


def dead_pid() -> int:
    """The process id of a process that has ended."""
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_temporary_files_of_dead_writers_are_removed_and_live_ones_kept(tmp_path):
    (tmp_path / "checkpoints").mkdir()
    dead = [
        tmp_path / "checkpoints" / f"last.ckpt.tmp-{dead_pid()}",
        tmp_path / f"metrics.json.tmp-{dead_pid()}",
    ]
    live = tmp_path / "checkpoints" / f"best.ckpt.tmp-{os.getpid()}"
    for path in [*dead, live]:
        path.write_text("partial")
    assert sorted(run.remove_stale_temporaries(tmp_path)) == sorted(dead)
    assert live.exists() and not any(p.exists() for p in dead)


@pytest.mark.parametrize(
    "signum", [signal.SIGINT, pytest.param(signal.SIGTERM, marks=pytest.mark.slow)]
)
def test_a_signal_saves_last_ckpt_marks_the_run_and_exits_non_zero(tmp_path, cache_dir, signum):
    run_dir = tmp_path / "run"
    process = start(run_dir, cache_dir, "trainer.max_steps=100000")
    while not (run_dir / "checkpoints" / "last.ckpt").exists():
        assert process.poll() is None, finish(process)[1][-3000:]
        time.sleep(0.01)
    if signum == signal.SIGINT:  # a second process on the same run is refused, untouched
        arguments = (run_dir / ".hydra" / "overrides.yaml").read_text()
        second, output = finish(
            start(run_dir, cache_dir, "trainer.max_steps=100000", "ckpt_path=last")
        )
        assert second == 2, output[-3000:]
        assert f"error: {run_dir} is in use by process {process.pid}" in output
        assert (run_dir / ".hydra" / "overrides.yaml").read_text() == arguments
    process.send_signal(signum)
    returncode, output = finish(process)
    assert returncode == 128 + signum, output[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "interrupted" and metrics["interrupted"] == signum.name
    saved = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert saved["global_step"] == metrics["steps"] > 10  # the step it stopped at
    assert "ckpt_path=last" in output and f"hydra.run.dir={run_dir}" in output
    assert "Traceback" not in output
    if signum != signal.SIGINT:
        return
    # resumed to its end: TensorBoard's HPARAMS tab gets one point, when the run ends
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    end = f"trainer.max_steps={metrics['steps'] + 2}"
    where = (f"paths.cache_dir={cache_dir}", f"hydra.run.dir={run_dir}", "ckpt_path=last")
    assert call(train_script.cli, ["train.py", *LONG_RUN, end, *where]) == 0
    events = EventAccumulator(str(run_dir / "tensorboard"))
    events.Reload()
    assert [e.step for e in events.Scalars("hp/steps")] == [metrics["steps"] + 2]


def test_resume_refuses_a_changed_model_and_a_missing_checkpoint(compose_train, tmp_path):
    run_dir = tmp_path / "run"

    def train(*overrides):
        cfg = compose_train(*LONG_RUN, "logger=none", *overrides, output_dir=run_dir)
        return train_script.train(cfg)

    train("trainer.max_steps=20")
    before = (run_dir / "checkpoints" / "last.ckpt").read_bytes()
    with pytest.raises(ValueError, match="model.n_embd=64 changes the model's shape"):
        train("ckpt_path=last", "model.n_embd=64")
    with pytest.raises(ValueError, match="optimizer.lr=0.1 changes the run"):
        train("ckpt_path=last", "optimizer.lr=0.1")
    with pytest.raises(ValueError, match="already holds a run"):
        train("trainer.max_steps=20")  # a directory with a run is entered only to resume it
    assert (run_dir / "checkpoints" / "last.ckpt").read_bytes() == before
    # extending a run is allowed
    train("ckpt_path=last", "trainer.max_steps=30")
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["steps"] == 30 and metrics["resumed_at"] == [20]
    assert [step for step, _ in metrics["val_curve"]] == [20]
    with pytest.raises(FileNotFoundError, match="ckpt_path=last: there is no"):
        compose_and_train = compose_train(*LONG_RUN, "ckpt_path=last", output_dir=tmp_path / "new")
        train_script.train(compose_and_train)


def test_extending_a_run_continues_its_learning_rate(compose_train, tmp_path, caplog):
    """A finished WSD run cannot be extended from its end (its lr decayed to 0 would be
    warmed up again), nor a cosine run mid-decay; extended from decay_start.ckpt (the end of
    WSD's stable phase) in a new directory, the run is the one planned longer, bit for bit;
    a cosine run continues at its final lr with the schedule it had."""
    tiny = (*LONG_RUN[:1], *LONG_RUN[3:], "logger=none", "trainer.val_check_interval=10")

    def train(run_dir, *overrides):
        return train_script.train(compose_train(*tiny, *overrides, output_dir=tmp_path / run_dir))

    with caplog.at_level("INFO"):
        train("short", "trainer.max_steps=20")
    assert "weights_only" not in caplog.text  # written whole, without Lightning's notice
    decay_start = tmp_path / "short" / "checkpoints" / "decay_start.ckpt"
    assert torch.load(decay_start, weights_only=True)["global_step"] == 10
    finished = (tmp_path / "short" / "metrics.json").read_text()
    with pytest.raises(ValueError, match="hidden would jump from 0 to 0.05"):
        train("short", "ckpt_path=last", "trainer.max_steps=40")
    assert (tmp_path / "short" / "metrics.json").read_text() == finished  # nothing lost
    train("planned", "trainer.max_steps=40")
    train("extended", f"ckpt_path={decay_start}", "trainer.max_steps=40")
    planned, extended = (
        torch.load(tmp_path / name / "checkpoints" / "last.ckpt", weights_only=True)
        for name in ("planned", "extended")
    )
    for key, value in planned["state_dict"].items():
        assert torch.equal(value, extended["state_dict"][key]), key
    # the longer run keeps its own stable phase's end, for a run longer still
    for name in ("planned", "extended"):
        again = torch.load(tmp_path / name / "checkpoints" / "decay_start.ckpt", weights_only=True)
        assert again["global_step"] == 20, name

    cosine = ("scheduler=warmup_cosine", "optimizer=adamw")
    train("cosine", *cosine, "trainer.max_steps=20")
    with pytest.raises(ValueError, match="would jump"):
        train("cosine", *cosine, "ckpt_path=last", "trainer.max_steps=40")
    train("cosine", *cosine, "ckpt_path=last", "trainer.max_steps=40", "scheduler.decay_steps=20")
    last = torch.load(tmp_path / "cosine" / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 40
    assert last["lr_schedulers"][0]["_last_lr"] == pytest.approx([1e-4] * 3)


@pytest.mark.slow  # 18 s of DDP
def test_nan_on_one_ddp_rank_stops_both_and_keeps_the_last_good_checkpoint(tmp_path, cache_dir):
    run_dir = tmp_path / "run"
    process = start(
        run_dir,
        cache_dir,
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "+callbacks.poison._target_=probes.PoisonWeights",
        "+callbacks.poison.step=15",
        "+callbacks.poison.rank=1",
        pythonpath=ROOT / "tests",
    )
    returncode, output = finish(process, timeout=240)  # a rank left waiting would hang
    assert returncode == 0, output[-3000:]
    text = (run_dir / "metrics.json").read_text()
    metrics = json.loads(text, parse_constant=lambda c: pytest.fail(f"bare {c} in JSON"))
    assert metrics["status"] == "diverged" and metrics["diverged"]
    assert metrics["steps"] == 16  # both ranks stopped after the step that saw the NaN
    assert metrics["best_checkpoint"] is None
    last = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 10
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values())


def test_divergence_before_the_first_validation_writes_no_checkpoint(compose_train, tmp_path):
    cfg = compose_train(
        *LONG_RUN,
        "logger=none",
        "+callbacks.poison._target_=probes.PoisonWeights",
        "+callbacks.poison.step=3",
    )
    assert train_script.train(cfg) == float("inf")
    metrics = json.loads(
        (tmp_path / "metrics.json").read_text(),
        parse_constant=lambda c: pytest.fail(f"bare {c} in JSON"),
    )
    assert metrics["diverged"] and metrics["train_loss"] is None
    assert not list((tmp_path / "checkpoints").glob("*.ckpt"))


def test_validation_and_checkpoints_count_optimizer_steps_with_accumulation(
    compose_train, tmp_path
):
    cfg = compose_train(
        *LONG_RUN,
        "logger=none",
        "trainer.max_steps=12",
        "trainer.val_check_interval=5",
        "trainer.accumulate_grad_batches=3",
        "callbacks.last_checkpoint.every_n_steps=4",
    )
    saved_at = []

    class Saves(L.Callback):
        def on_save_checkpoint(self, trainer, pl_module, checkpoint):
            saved_at.append(trainer.global_step)

    datamodule, module, trainer = train_script.build(cfg)
    trainer.callbacks.append(Saves())
    trainer.fit(module, datamodule=datamodule)
    report = next(c for c in trainer.callbacks if isinstance(c, RunReport))
    assert [step for step, _ in report.val_curve] == [5, 10]
    assert trainer.global_step == 12 and sorted(set(saved_at)) == [4, 5, 8, 10, 12]


def test_time_based_checkpoints_wait_for_the_end_of_an_optimizer_step(compose_train, monkeypatch):
    """every_n_minutes with accumulation: a checkpoint that falls due mid-accumulation is
    written at the end of that optimizer step, never with a step half done."""
    readings = iter(range(0, 10**6, 24))  # each reading 24 s later: late at the 3rd
    # LastCheckpoint's clock (monotonic) only; the run's record keeps real time
    clock = types.SimpleNamespace(monotonic=lambda: next(readings), perf_counter=time.perf_counter)
    monkeypatch.setattr(run, "time", clock)
    cfg = compose_train(
        *LONG_RUN,
        "logger=none",
        "trainer.max_steps=8",
        "trainer.limit_val_batches=0",
        "trainer.accumulate_grad_batches=3",
        "callbacks.last_checkpoint.every_n_steps=null",
        "callbacks.last_checkpoint.every_n_minutes=1",
    )
    saved_after_batches = []

    class Saves(L.Callback):
        def on_save_checkpoint(self, trainer, pl_module, checkpoint):
            saved_after_batches.append(trainer.fit_loop.epoch_loop.batch_progress.total.ready)

    datamodule, module, trainer = train_script.build(cfg)
    trainer.callbacks.append(Saves())
    trainer.fit(module, datamodule=datamodule)
    assert len(saved_after_batches) > 2
    assert all(batches % 3 == 0 for batches in saved_after_batches), saved_after_batches


def test_a_reloaded_module_logs_the_same_metrics(compose_train, tmp_path):
    cfg = compose_train(*LONG_RUN, "logger=none", "trainer.max_steps=4")
    datamodule, module, trainer = train_script.build(cfg)
    trainer.fit(module, datamodule=datamodule)
    reloaded = GPTLightningModule.load_from_checkpoint(
        tmp_path / "checkpoints" / "last.ckpt", weights_only=True
    )
    assert reloaded.val_tokens_per_byte == module.val_tokens_per_byte > 0
    assert reloaded.flops_per_batch == module.flops_per_batch > 0


def test_a_failed_checkpoint_write_leaves_the_previous_one_whole(tmp_path, monkeypatch):
    """A full disk mid-write: the error is raised (as CheckpointNotWritten, naming the
    file), last.ckpt is still the earlier one, and no temporary file is left beside it."""
    io = AtomicCheckpointIO()
    target = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1, "w": torch.ones(3)}, target)

    def full_disk(obj, f):
        f.write(b"partial bytes")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", full_disk)
    with pytest.raises(run.CheckpointNotWritten, match=f"could not write {target} .No space left"):
        io.save_checkpoint({"step": 2, "w": torch.zeros(3)}, target)
    monkeypatch.undo()
    assert torch.load(target, weights_only=True)["step"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]


def test_every_run_gets_a_directory_of_its_own(monkeypatch):
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.delenv("SLURM_NTASKS", raising=False)
    name = run_subdir("run")
    assert name.endswith(f"-{os.getpid()}")  # <date>/<time>-<pid>: unique on a machine
    slurm = {"SLURM_JOB_ID": "77", "SLURM_NTASKS": "1", "SLURM_JOB_NAME": "train"}
    for key, value in slurm.items():
        monkeypatch.setenv(key, value)
    assert run_subdir("run") == "slurm-77"  # the same when the job is requeued
    assert run_subdir("sweep").endswith(f"-{os.getpid()}")


def test_a_run_directory_is_held_by_one_process_and_let_go_when_it_dies(tmp_path):
    # another process holding the lock as a run does: flock on <run>/.lock, its pid inside
    hold = "import fcntl, os, sys, time; fd = os.open(sys.argv[1] + '/.lock', os.O_RDWR | "
    hold += "os.O_CREAT); fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, str(os.getpid())."
    hold += "encode()); print('held', flush=True); time.sleep(120)"
    holder = subprocess.Popen(
        [sys.executable, "-c", hold, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline() == "held\n"
        with pytest.raises(ValueError, match=f"is in use by process {holder.pid}, which"):
            run.hold_run_dir(tmp_path)
    finally:
        holder.kill()  # SIGKILL: nothing of the holder's runs after it
        holder.wait()
    run.hold_run_dir(tmp_path)  # the kernel let the lock go with the process
    run.release_run_dir(tmp_path)


def test_a_full_disk_ends_the_run_with_one_line_and_the_checkpoint_before_intact(
    tmp_path, cache_dir, monkeypatch, capsys
):
    """The second checkpoint write meets a full disk once it has written a few bytes
    (ENOSPC from the file's write, which torch's writer then reports as a RuntimeError of
    its own, as on a real full disk)."""
    writes = []
    real_init, real_write = run._WriteErrors.__init__, run._WriteErrors.write

    def counted_init(self, file):
        real_init(self, file)
        writes.append(self)

    def full_disk(self, data):
        self.written = getattr(self, "written", 0) + len(data)
        if len(writes) < 2 or self.written < 1000:
            return real_write(self, data)
        self.error = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        raise self.error

    monkeypatch.setattr(run._WriteErrors, "__init__", counted_init)
    monkeypatch.setattr(run._WriteErrors, "write", full_disk)
    run_dir = tmp_path / "run"
    args = [
        *LONG_RUN,
        "trainer.max_steps=6",
        "callbacks.last_checkpoint.every_n_steps=2",
        "logger=none",
        f"paths.cache_dir={cache_dir}",
        f"hydra.run.dir={run_dir}",
    ]
    assert call(train_script.cli, ["train.py", *args]) == 1
    output = capsys.readouterr()
    errors = [line for line in (output.out + output.err).splitlines() if "error:" in line]
    last = run_dir / "checkpoints" / "last.ckpt"
    assert len(errors) == 1 and "Traceback" not in output.err, output.err[-3000:]
    assert errors[0].startswith(
        f"error: could not write {last} (No space left on device) at step 4; "
        f"{last} (step 2) is intact: make space, then resume with: "
    )
    assert f"ckpt_path=last hydra.run.dir={run_dir}" in errors[0]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "failed" and errors[0].startswith("error: " + metrics["error"])
    assert torch.load(last, weights_only=True)["global_step"] == 2
    assert sorted(p.name for p in last.parent.iterdir()) == ["last.ckpt"]  # no temporaries
