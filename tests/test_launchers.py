"""Sweeps on a SLURM cluster through hydra-submitit-launcher, and DDP started by srun.

There is no cluster here: tests/fake_slurm holds one-machine stand-ins for `sbatch`,
`srun` and `sacct` that run a job's tasks as local processes under the variables SLURM sets, so the
real path runs end to end: Hydra's launcher -> submitit's batch script -> srun -> one task
per device -> Lightning's SLURM environment -> DDP (gloo, CPU)."""

import json
import os
import re
import signal
import subprocess
import sys
import time

import pytest
from conftest import ROOT, run
from hydra import compose, initialize_config_dir

from minigpt.tools import sweep_report

FAKE_SLURM = ROOT / "tests" / "fake_slurm"


def compose_launcher(*overrides):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("train", overrides=list(overrides), return_hydra_config=True)
    return cfg.hydra.launcher


def test_slurm_launcher_configs_compose():
    plain = compose_launcher("hydra/launcher=submitit_slurm")
    assert plain._target_.endswith("submitit_launcher.SlurmLauncher")

    launcher = compose_launcher(
        "hydra/launcher=slurm", "trainer=ddp", "trainer.devices=8", "trainer.num_nodes=2"
    )
    assert launcher._target_ == plain._target_
    # one task per device on every node: what Lightning's SLURM environment expects
    assert (launcher.nodes, launcher.tasks_per_node, launcher.gpus_per_node) == (2, 8, 8)
    assert launcher.submitit_folder.endswith("/.submitit/%j")


def ddp_task_command(cache_dir, *overrides):
    """`python train.py` of a 2-task DDP job on CPU, as srun would start each task."""
    return [
        sys.executable,
        str(ROOT / "train.py"),
        "experiment=tiny",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "sample.num_samples=0",
        f"paths.cache_dir={cache_dir}",
        *overrides,
    ]


def slurm_job_env(job_id: str) -> dict:
    """What SLURM sets in a batch job of one node with two tasks."""
    return {
        "SLURM_JOB_ID": job_id,
        "SLURM_JOB_NAME": "train",
        "SLURM_NTASKS": "2",
        "SLURM_NTASKS_PER_NODE": "2",
        "SLURM_NNODES": "1",
        "SLURM_NODELIST": "localhost",
    }


def slurm_env(tmp_path):
    path = os.pathsep.join([str(FAKE_SLURM), os.path.dirname(sys.executable), os.environ["PATH"]])
    return {
        "PATH": path,
        "FAKE_SLURM_RECORD": str(tmp_path / "sbatch.sh"),
        "FAKE_SLURM_DIR": str(tmp_path / "slurm"),
    }


@pytest.mark.slow  # 30 s of DDP jobs
def test_sweep_on_slurm_runs_each_job_as_ddp_tasks(tmp_path, cache_dir):
    result = run(
        "train.py",
        "-m",
        "hydra/launcher=slurm",
        "hydra.launcher.partition=gpu",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.devices=2",
        "experiment=tiny",
        "seed=1,2",
        "sample.num_samples=0",
        f"paths.cache_dir={cache_dir}",
        cwd=tmp_path,
        env=slurm_env(tmp_path),
    )
    assert result.returncode == 0, result.stderr[-3000:]
    batch_script = (tmp_path / "sbatch.sh").read_text()  # what a real sbatch would receive
    options = dict(re.findall(r"^#SBATCH --([\w-]+)=(\S+)", batch_script, flags=re.M))
    assert options["array"].startswith("0-1")  # the sweep's two jobs, one array
    assert (options["nodes"], options["ntasks-per-node"], options["gpus-per-node"]) == (
        "1",
        "2",
        "2",
    )
    assert options["partition"] == "gpu" and options["job-name"] == "train"
    assert "srun" in batch_script and "submitit.core._submit" in batch_script

    (sweep,) = (tmp_path / "outputs").glob("2*/*")
    for job in ("0", "1"):
        metrics = json.loads((sweep / job / "metrics.json").read_text())
        assert metrics["steps"] == 20
        assert metrics["tokens_seen"] == 20 * 2 * 8 * 32  # two ranks of 8 x 32 per step
        assert len(list((sweep / job / "tensorboard").glob("events.*"))) == 1
    task_logs = "".join(p.read_text() for p in sweep.glob(".submitit/*_0/*_log.*"))
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in task_logs
    assert "cpu × 2" in task_logs  # the run header: two processes
    assert [r["status"] for r in sweep_report.write_report(sweep)] == ["done", "done"]


@pytest.mark.slow  # DDP; tests/test_readme.py's slow test sweeps on SLURM too
def test_ddp_started_by_srun(tmp_path, cache_dir):
    """The docs' `srun python train.py trainer=ddp ...`: srun starts one process per task;
    Lightning takes ranks from SLURM instead of starting processes itself."""
    env = slurm_env(tmp_path) | slurm_job_env("4321")
    result = run(
        "tests/fake_slurm/srun",
        *ddp_task_command(cache_dir, f"hydra.run.dir={tmp_path / 'run'}"),
        cwd=tmp_path,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    output = result.stdout + result.stderr
    assert "GLOBAL_RANK: 1, MEMBER: 2/2" in output and "cpu × 2" in output
    assert output.count("run done") == 1  # rank 0 alone reports
    assert "20 (10,240 tokens)" in output


@pytest.mark.slow  # 35 s
def test_a_failing_slurm_job_fails_the_sweep_with_its_error(tmp_path, cache_dir):
    result = run(
        "train.py",
        "-m",
        "hydra/launcher=slurm",
        "experiment=tiny",
        "model.n_head=3",  # does not divide n_embd=32: the job exits with an error
        "sample.num_samples=0",
        f"paths.cache_dir={cache_dir}",
        cwd=tmp_path,
        env=slurm_env(tmp_path),
    )
    assert result.returncode != 0
    assert "n_embd=32 is not divisible by n_head=3" in result.stderr


@pytest.mark.slow  # 26 s of DDP
def test_slurm_requeue_signal_checkpoints_requeues_and_the_job_resumes(tmp_path, cache_dir):
    """`#SBATCH --signal=USR1@90`: SLURM warns the job's tasks before its time limit. Each
    rank stops at the same step boundary with last.ckpt saved, rank 0 asks SLURM to requeue
    the job, and the requeued job (same job id, SLURM_RESTART_COUNT=1) finds its run
    directory, outputs/slurm-<job id>, and resumes from last.ckpt by itself."""
    env = (
        os.environ
        | slurm_env(tmp_path)
        | {
            "SLURM_JOB_ID": "4322",
            "SLURM_JOB_NAME": "train",
            "SLURM_NTASKS": "2",
            "SLURM_NTASKS_PER_NODE": "2",
            "SLURM_NNODES": "1",
            "SLURM_NODELIST": "localhost",
            "PYTHONUNBUFFERED": "1",
        }
    )
    env.pop("HYDRA_FULL_ERROR", None)
    command = [
        sys.executable,
        str(FAKE_SLURM / "srun"),
        *ddp_task_command(
            cache_dir,
            "trainer.max_steps=100",
            "trainer.enable_progress_bar=false",
            "callbacks.last_checkpoint.every_n_steps=10",
        ),
    ]
    run_dir = tmp_path / "outputs" / "slurm-4322"
    job = subprocess.Popen(
        command, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    while not (run_dir / "checkpoints" / "last.ckpt").exists():
        assert job.poll() is None, job.communicate()[0][-3000:]
        time.sleep(0.05)
    job.send_signal(signal.SIGUSR1)  # srun passes it on to both ranks
    output, _ = job.communicate(timeout=300)
    assert job.returncode == 128 + signal.SIGUSR1, output[-3000:]
    assert (tmp_path / "slurm" / "requeued").read_text() == "4322\n"  # once, by rank 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["interrupted"] == "SIGUSR1"
    stopped_at = metrics["steps"]

    requeued = subprocess.run(
        command,
        cwd=tmp_path,
        env=env | {"SLURM_RESTART_COUNT": "1"},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert requeued.returncode == 0, (requeued.stdout + requeued.stderr)[-3000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["status"] == "done" and metrics["steps"] == 100
    assert metrics["resumed_at"] == [stopped_at]
