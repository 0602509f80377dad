"""What the command-line entry points share: turning bad input into a one-line error."""

from __future__ import annotations

import functools
import os
import sys

from omegaconf.errors import MissingMandatoryValue

USER_ERRORS = (ValueError, FileNotFoundError, MissingMandatoryValue)


def exit_on_user_error(main):
    """Runs main; a ValueError/FileNotFoundError (bad config, bad data, bad arguments) prints
    `error: <message>` and exits with status 2 instead of a stack trace. HYDRA_FULL_ERROR=1
    shows the trace."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except USER_ERRORS as err:
            if os.environ.get("HYDRA_FULL_ERROR") == "1":
                raise
            print(f"error: {err}", file=sys.stderr)
            sys.exit(2)

    return wrapper
