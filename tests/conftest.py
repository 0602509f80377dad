import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from minigpt.commands import run_in_process

ROOT = Path(__file__).resolve().parents[1]
# `minigpt isoflop` at tiny sizes: three budgets of three widths (given after a page's own
# options, they replace them)
ISOFLOP_TINY = [
    "--budgets", "5e7", "1.5e8", "4.5e8",
    "--widths", "8", "16", "24",
    "--per-budget", "3",
    "--head-size", "8",
    "--batch-sizes", "8",
    "model.n_layer=1",
    "model.block_size=32",
    "trainer.limit_val_batches=4",
]  # fmt: skip


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> Path:
    """One token cache for the whole session: the corpus is tokenized once.
    $MINIGPT_TEST_CACHE_DIR names a cache to reuse instead (benchmarks/gpu.py brings one
    to machines that lack the tokenizing packages)."""
    if os.environ.get("MINIGPT_TEST_CACHE_DIR"):
        return Path(os.environ["MINIGPT_TEST_CACHE_DIR"])
    return tmp_path_factory.mktemp("token_cache")


def compose_into(output_dir: Path, cache_dir: Path, *overrides: str):
    """conf/train.yaml composed as train.py would compose it, writing into output_dir."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(
            "train",
            overrides=[
                f"paths.output_dir={output_dir}",
                f"paths.cache_dir={cache_dir}",
                *overrides,
            ],
        )


@pytest.fixture
def compose_train(tmp_path, cache_dir):
    """Composes conf/train.yaml as train.py would, writing into tmp_path."""

    def _compose(*overrides: str, output_dir: Path | None = None):
        return compose_into(output_dir or tmp_path, cache_dir, *overrides)

    return _compose


def compose_sample(*overrides: str):
    """conf/sample.yaml composed as sample.py would compose it."""
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose("sample", overrides=list(overrides))


def run(script: str, *args: str, cwd: Path, pythonpath: Path | None = None, env=None):
    """Runs one of the project's scripts as the command line would, output captured."""
    env = os.environ | {"PYTHONUNBUFFERED": "1"} | (env or {})
    env.pop("HYDRA_FULL_ERROR", None)
    if pythonpath:
        env["PYTHONPATH"] = os.pathsep.join([str(pythonpath), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, str(ROOT / script), *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def call(entry, argv: list[str]) -> int:
    """Runs a command-line entry point in this process (as sys.argv would be); its exit
    status."""
    return run_in_process(entry, argv)
