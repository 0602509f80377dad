"""Type checks for option values from a config or the command line."""

from __future__ import annotations


def is_integer(value) -> bool:
    """An int, and not a bool (which Python counts as one): for checking option values."""
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value) -> bool:
    """An int or a float, and not a bool: for checking option values."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def flatten(config: dict, prefix: str = "") -> dict:
    """A nested config as {"a.b.c": value}; an empty dict is a value."""
    flat = {}
    for key, value in config.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat |= flatten(value, f"{name}.")
        else:
            flat[name] = value
    return flat
