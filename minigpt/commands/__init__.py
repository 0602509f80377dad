"""The top floor: the commands a user runs. `minigpt <command> [Hydra overrides]`, or the
scripts train.py, prepare.py, sample.py, eval.py, export.py and explain.py beside conf/."""

from __future__ import annotations

import gc
import importlib
import sys
from pathlib import Path

from minigpt.core.cpu_load import snapshot

# the CPUs' use when this process started: how busy the machine is is measured from here
STARTED = snapshot()

# conf/ beside the package (the project is installed editable: `make` does so)
CONFIG_DIR = str(Path(__file__).resolve().parents[2] / "conf")

# command -> the module and function that runs it (each reads its overrides from sys.argv)
COMMANDS = {
    "train": ("minigpt.commands.train", "cli"),
    "prepare": ("minigpt.commands.prepare", "main"),
    "sample": ("minigpt.commands.sample", "main"),
    "eval": ("minigpt.commands.eval", "main"),
    "export": ("minigpt.commands.export", "main"),
    "explain": ("minigpt.commands.explain", "main"),
    "sweep-report": ("minigpt.tools.sweep_report", "main"),
    "isoflop": ("minigpt.commands.isoflop", "main"),
}
USAGE = f"usage: minigpt {{{'|'.join(COMMANDS)}}} [overrides or options]"


def run_command(function) -> None:
    """Runs a command's entry function as this process's work, then exits with its status.
    Before the interpreter shuts down, every object is frozen out of the garbage collector:
    its last collections would walk all that torch and Lightning built (0.5 s after
    `import torch`, 1.3 s after `import lightning` on 2 cores) for nothing. Buffers are
    still flushed and exit handlers still run."""
    try:
        result = function()
    finally:
        gc.freeze()
    if isinstance(result, int) and not isinstance(result, bool):
        sys.exit(result)


def run_in_process(entry, argv: list[str]) -> int:
    """Runs a command's entry function in this process as `argv` would start it (Hydra's
    global state of an earlier run cleared); its exit status."""
    from hydra.core.global_hydra import GlobalHydra
    from hydra.core.hydra_config import HydraConfig

    GlobalHydra.instance().clear()
    HydraConfig.instance().cfg = None  # an earlier in-process sweep's mode is not this one's
    sys.argv = argv
    try:
        result = entry()
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else (0 if stop.code is None else 1)
    return result if isinstance(result, int) else 0


def main(argv: list[str] | None = None) -> None:
    """The `minigpt` console command: runs one command with the rest of the arguments,
    importing only that command's module. The command sees itself as its module's script
    (sys.argv[0]), as `python -m` would show it: DDP's worker processes restart it so."""
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(USAGE)
        sys.exit(0 if argv else 2)
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"error: unknown command {name!r}\n{USAGE}", file=sys.stderr)
        sys.exit(2)
    module_name, function = COMMANDS[name]
    module = importlib.import_module(module_name)
    sys.argv = [module.__file__, *rest]
    run_command(getattr(module, function))
