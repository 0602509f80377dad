"""What the command-line entry points share: turning bad input into a one-line error, and
Lightning's messages that tell a user nothing to act on kept quiet."""

from __future__ import annotations

import functools
import logging
import os
import re
import sys
import warnings

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import (
    CompactHydraException,
    ConfigCompositionException,
    InstantiationException,
    OverrideParseException,
)
from hydra.types import RunMode
from omegaconf.errors import MissingMandatoryValue

from minigpt.commands import CONFIG_DIR, STARTED
from minigpt.commands.option_types import compose_checked
from minigpt.core.cpu_load import oversubscription
from minigpt.core.threads import set_cpu_threads

# bad input; ConfigCompositionException and OverrideParseException are Hydra's for overrides
# that name no key or do not parse (a command that composes its config itself meets them)
USER_ERRORS = (
    ValueError,
    FileNotFoundError,
    MissingMandatoryValue,
    ConfigCompositionException,
    OverrideParseException,
)


def quiet_lightning() -> None:
    """Silences what Lightning says on every run that a user cannot act on: single-process
    data loading (the right choice for token windows on few cores), its own use of a torch
    API that torch has renamed, and its start-up notes (devices available, an
    advertisement, "max_steps reached"): the entry points say what matters."""
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", r".*isinstance\(treespec, LeafSpec\)` is deprecated")
    logging.getLogger("lightning.pytorch.utilities.rank_zero").setLevel(logging.WARNING)


def user_error(err: BaseException) -> str | None:
    """The one-line message of an error that bad input caused, else None. Hydra wraps what a
    config's constructor raised (InstantiationException, its cause the error itself);
    Lightning's MisconfigurationException is matched by name, so that sample.py need not
    import Lightning."""
    if isinstance(err, InstantiationException):
        # a config's constructor that refused its arguments, or a _target_ that names no
        # callable: the config's fault either way
        cause = err.__cause__
        if cause is None:
            return str(err).strip().splitlines()[0]
        reason = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
        return user_error(cause) or f"{str(err).splitlines()[0]} {type(cause).__name__}: {reason}"
    unknown = re.match(r"Could not override '([^']+)'\.", str(err))
    if (
        isinstance(err, ConfigCompositionException)
        and unknown
        and "not in struct" in str(err.__cause__)
    ):
        key = unknown[1]
        section = key.rsplit(".", 1)[0] if "." in key else "the config"
        return (
            f"{key} is not an option of {section}: check its spelling (`--cfg job` prints "
            "every option)"
        )
    if isinstance(err, MissingMandatoryValue):
        key = err.full_key or "a value"
        return f"{key} has no value (???): set it on the command line, {key}=..."
    misconfigured = any(c.__name__ == "MisconfigurationException" for c in type(err).__mro__)
    if isinstance(err, USER_ERRORS) or misconfigured:
        return str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return None


class JobFailed(CompactHydraException):
    """A job of a multirun that bad input stopped: its sweep goes on with the other jobs
    (Hydra reports the failure, in one line, when the sweep ends)."""


def in_multirun() -> bool:
    return HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN


def exit_on_user_error(main):
    """Runs main; an error caused by bad input (bad config, bad data, bad arguments) prints
    `error: <message>` and exits with status 2 instead of a stack trace; in a job of a
    multirun it raises JobFailed instead, so that the other jobs still run.
    HYDRA_FULL_ERROR=1 shows the trace."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except Exception as err:
            message = user_error(err)
            if message is None or os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            print(f"error: {message}", file=sys.stderr)
            if in_multirun():
                raise JobFailed(f"error: {message}") from None
            sys.exit(2)

    return wrapper


def use_cpu_threads(option: int | str, processes: int = 1, on_cpu: bool = True) -> int:
    """Sets this process's CPU threads from the `threads` option (see set_cpu_threads) and,
    on a CPU, warns on stderr when other processes leave fewer CPUs idle than the command
    wants. Returns the number of threads."""
    threads = set_cpu_threads(option, processes)
    if on_cpu and (notice := oversubscription(threads, processes, STARTED)):
        print(f"warning: {notice}", file=sys.stderr)
    return threads


class ConsoleFormatter(logging.Formatter):
    """Log records on the terminal: the message alone, `warning: ` or `error: ` before it
    when it is one (train.log keeps times and logger names)."""

    def format(self, record: logging.LogRecord) -> str:
        message = super().format(record)
        if record.levelno >= logging.ERROR:
            return f"error: {message}"
        if record.levelno >= logging.WARNING:
            return f"warning: {message}"
        return message


def command(config_name: str):
    """Makes a command's main(cfg) the entry point of a Hydra application with
    conf/<config_name>.yaml, for commands that write no run directory (sample, eval, export,
    explain), bad input reported by exit_on_user_error. Plain `key=value` arguments compose
    the config with Hydra's override grammar, each value checked against its option's
    default (compose_checked), without setting up a job as `hydra.main` does (a quarter of
    a second, an eighth of a sample's start-up). Any flag (--help, --cfg job, -m) goes to
    hydra.main."""

    def decorate(main):
        hydra_main = hydra.main(version_base="1.3", config_path=CONFIG_DIR, config_name=config_name)

        def composed() -> None:
            return main(compose_checked(CONFIG_DIR, config_name, sys.argv[1:]))

        @functools.wraps(main)
        def entry() -> None:
            if any(arg.startswith("-") for arg in sys.argv[1:]):
                return hydra_main(exit_on_user_error(main))()
            return exit_on_user_error(composed)()

        return entry

    return decorate
