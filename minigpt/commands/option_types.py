"""Every value given on the command line checked against the option's default, before
anything uses it: its type (a number where a number goes, text where text goes, a list
where a list goes, a group of options where a group goes), a finite number, a value where
no default is null, and no option the config does not have. The commands' own checks come
first and say more (`must be an integer >= 1`); this is the net under them, so that no
value reaches code that would fail on it with a traceback."""

from __future__ import annotations

import math
from pathlib import Path

import hydra
from omegaconf import DictConfig, ListConfig, OmegaConf

from minigpt.core.options import flatten, is_integer, is_number

# options whose values take several types (a count or a fraction, `auto` or a number, ...):
# their readers check them
SEVERAL_TYPES = {
    "threads",
    "trainer.devices",
    "trainer.precision",
    "trainer.strategy",
    "trainer.val_check_interval",
    "trainer.limit_val_batches",
    "data.tokenizer.sample_mb",
    "model.mlp_ratio",
    "stop",
    "color",
}
# options that name a file or directory: text (or null where that is their default)
PATH_NAMES = ("ckpt_path", "init_from", "prompt_file", "out_dir", "runs_dir", "dirpath")
# where `+key=value` adds what its reader takes: Lightning's Trainer options, a callback or
# a logger of the user's own
OPEN_SECTIONS = ("trainer.", "callbacks.", "logger.")
# null means "Lightning's default" (trainer.*) or "off"
NULL_MEANS_OFF = ("every_n_steps", "every_n_minutes", "top_k", "top_p", "fused", "num_proc")
_ABSENT = object()


def default_of(reference: DictConfig, key: str, unresolved):
    """The option's default, resolved; _ABSENT when the config has no such option; as
    written (`unresolved`) when it is an interpolation of Hydra's runtime, which is not
    known outside a job (`${hydra:runtime.output_dir}`: text, then)."""
    try:
        return OmegaConf.select(reference, key, default=_ABSENT)
    except Exception:
        return unresolved


def is_path_option(key: str) -> bool:
    name = key.rsplit(".", 1)[-1]
    return name in PATH_NAMES or name.endswith("_dir") or key.startswith("paths.")


def problem(key: str, value, default) -> str | None:
    """Why value does not fit the option whose default is `default`, with what to write."""
    if is_path_option(key) and not isinstance(value, str):
        if value is None and default is None:
            return None
        if value is None:
            return f"{key}=null: {key} needs a path"
        return f"{key}={value!r} is not a path: quote it, {key}='{value}'"
    if default is None or key.endswith("._target_") or key in SEVERAL_TYPES:
        return None
    if isinstance(default, DictConfig):
        if value is None or isinstance(value, dict):
            return None
        names = ", ".join(str(k) for k in default)
        return (
            f"{key}={value!r}: {key} is a group of options ({names}), not a value: set one "
            f"of them ({key}.<option>=...), or {key}=null to leave it out"
        )
    if value is None:
        if key.startswith("trainer.") or key.endswith(NULL_MEANS_OFF):
            return None
        return f"{key}=null: {key} needs a value (its default is {default!r})"
    if isinstance(default, bool):
        ok, want = isinstance(value, bool), "true or false"
    elif is_integer(default):
        ok, want = is_integer(value), f"an integer (its default is {default})"
    elif isinstance(default, float):
        ok = is_number(value) and math.isfinite(value)
        want = f"a finite number (its default is {default})"
    elif isinstance(default, str):
        if is_number(value) or isinstance(value, bool):
            return f"{key}={value!r} is not text: quote it, {key}='{value}'"
        ok, want = isinstance(value, str), f"text (its default is {default!r})"
    elif isinstance(default, ListConfig):
        ok, want = isinstance(value, list), f"a list, {key}=[...] (its default is {list(default)})"
    else:
        return None
    return None if ok else f"{key}={value!r} must be {want}"


def check_option_types(
    cfg: DictConfig, reference: DictConfig, open_sections: tuple[str, ...] = ()
) -> None:
    """Raises a ValueError naming the first option of cfg whose value does not fit its
    default in reference (the same config composed with the same groups but no values), or
    that reference does not have (`+key=value`), except under open_sections (OPEN_SECTIONS
    for train.py: `+trainer.profiler=simple` is one of Lightning's options, and
    `+callbacks.<name>=...` or `+logger.<name>=...` adds one of the user's own)."""
    given = flatten(OmegaConf.to_container(cfg, resolve=False))
    defaults = flatten(OmegaConf.to_container(reference, resolve=False))
    for key, value in given.items():
        default = defaults.get(key, _ABSENT)
        if key.startswith("hydra.") or default == "???" or _same(default, value):
            continue  # not given on the command line, or a value with no default
        if isinstance(value, str) and "${" in value:
            continue
        default = default_of(reference, key, default)
        if default is _ABSENT:
            if key.startswith(open_sections) or _inside_added_group(key, defaults):
                continue
            section = key.rsplit(".", 1)[0] if "." in key else "the config"
            raise ValueError(
                f"{key} is not an option of {section}: check its spelling (`--cfg job` "
                "prints every option)"
            )
        if message := problem(key, value, default):
            raise ValueError(message)


def _same(a, b) -> bool:
    """Equal and of the same type: 1 is not true, 1.0 is not 1."""
    return type(a) is type(b) and a == b


def _inside_added_group(key: str, defaults: dict) -> bool:
    """Whether key lies in a group that is null by default and given whole (a callback
    turned on with its options): its reader checks it."""
    parts = key.split(".")
    return any(defaults.get(".".join(parts[:i]), _ABSENT) is None for i in range(1, len(parts)))


def group_choices(config_dir: str, argv: list[str]) -> list[str]:
    """The arguments that choose a config group's option (`model=tiny`, `experiment=...`):
    the reference config is composed with these alone."""
    chosen = []
    for arg in argv:
        key = arg.split("=", 1)[0].lstrip("+~")
        if "=" in arg and not key.startswith("hydra") and (Path(config_dir) / key).is_dir():
            chosen.append(arg)
    return chosen


def compose_checked(config_dir: str, config_name: str, argv: list[str]) -> DictConfig:
    """The config the arguments compose (Hydra's own errors, such as a key the config
    lacks, raised as they are: bad input), checked by check_option_types against the one
    their group choices alone compose. Hydra's own options (hydra.*) are left to Hydra."""
    own = [a for a in argv if not a.lstrip("+~").startswith("hydra")]
    groups = group_choices(config_dir, own)
    with hydra.initialize_config_dir(config_dir, version_base="1.3"):
        cfg = hydra.compose(config_name, overrides=own)
        if len(groups) == len(own):  # no values given: nothing to check (a composition each)
            return cfg
        reference = hydra.compose(config_name, overrides=groups)
    check_option_types(cfg, reference, OPEN_SECTIONS if config_name == "train" else ())
    return cfg
