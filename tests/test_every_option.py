"""Every option of every command, given a value of the wrong type, out of range or
numerically degenerate, and keys the config does not know (also in the `+key=value` form
Hydra's own message suggests): the command runs, or stops with one line and status 2;
never a traceback. Slow (about a thousand attempts): `make test-all`."""

import contextlib
import importlib
import io

import pytest
from conftest import ROOT, call, compose_into
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from minigpt.commands import train as train_script
from minigpt.core.options import flatten

pytestmark = pytest.mark.slow

BAD_VALUES = ("abc", "-1", "0", "nan", "null")
TINY = ("experiment=tiny", "trainer.max_steps=2", "logger=none", "sample.max_new_tokens=4")


def options(config_name: str, *overrides: str) -> list[str]:
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name, overrides=list(overrides))
    return sorted(flatten(OmegaConf.to_container(cfg, resolve=False)))


def attempt(main, argv: list[str]) -> tuple[int, str]:
    """Runs a command in this process; its status and what it wrote to stderr, a traceback
    that escaped counted as status -1."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            status = call(main, argv)
        except BaseException as escaped:  # noqa: BLE001 - what the hunt is looking for
            return -1, f"{type(escaped).__name__}: {escaped}"
    return status, err.getvalue()


def tracebacks(main, script: str, argv_for) -> list[str]:
    found = []
    for argv in argv_for:
        status, err = attempt(main, [script, *argv])
        if status not in (0, 2) or "Traceback" in err:
            found.append(f"{' '.join(argv[-1:])}: status {status}: {err.strip()[-300:]}")
        elif status == 2:
            lines = [line for line in err.strip().splitlines() if line.startswith("error: ")]
            if len(lines) != 1:
                found.append(f"{' '.join(argv[-1:])}: not one error line: {err.strip()[-300:]}")
    return found


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, cache_dir):
    out = tmp_path_factory.mktemp("hunt")
    train_script.train(compose_into(out, cache_dir, *TINY, "sample.num_samples=0"))
    return out / "checkpoints" / "best.ckpt"


def unknown_keys(known: list[str]) -> list[str]:
    return ["bogus=1", "+bogus=1", f"{known[0].rsplit('.', 1)[0]}.bogus=1", "+model.bogus=1"]


def test_train_options(tmp_path, cache_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    keys = [k for k in options("train", "experiment=tiny") if not k.startswith("hydra")]
    tries = [f"{k}={v}" for k in keys for v in BAD_VALUES] + unknown_keys(keys)
    common = [*TINY, f"paths.cache_dir={cache_dir}"]
    argv_for = ([*common, f"hydra.run.dir={tmp_path / str(i)}", t] for i, t in enumerate(tries))
    found = tracebacks(train_script.cli, "train.py", argv_for)
    assert not found, "\n".join(found)


@pytest.mark.parametrize("command", ["sample", "eval", "export", "explain"])
def test_command_options(command, checkpoint, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main = importlib.import_module(f"minigpt.commands.{command}").main
    keys = [k for k in options(command) if not k.startswith("hydra")]
    tries = [f"{k}={v}" for k in keys for v in BAD_VALUES] + unknown_keys(keys)
    extra = {"sample": ["max_new_tokens=4"], "eval": ["limit=2", "split=val"]}.get(command, [])

    def argv(i: int, trial: str) -> list[str]:
        out = [f"out_dir={tmp_path / str(i)}"] if command in ("export", "explain") else []
        return [f"ckpt_path={checkpoint}", *extra, *out, trial]

    found = tracebacks(main, f"{command}.py", (argv(i, t) for i, t in enumerate(tries)))
    assert not found, "\n".join(found)
