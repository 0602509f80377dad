"""Reading checkpoints back: the GPT and tokenizer of a checkpoint (one-line errors for
files that are not minigpt checkpoints) and the newest run's checkpoint. Writing them is
minigpt.training.run (it needs Lightning; this module does not, so that sample.py starts
quickly)."""

from __future__ import annotations

import pickle
import sys
import zipfile
from pathlib import Path

import torch

from minigpt.core.model import GPT, GPTConfig
from minigpt.core.tokenizers import CharTokenizer, tokenizer_from_dict


def read_checkpoint(path: str | Path) -> dict:
    """A checkpoint's contents, on the CPU (torch.load with weights_only=True: minigpt
    checkpoints hold tensors and plain data only), or a ValueError/FileNotFoundError that
    says what is wrong with the file in one line. Memory-mapped: checking a checkpoint
    before resuming from it (which loads it again) reads its tensors only where used."""
    path = Path(path)
    if path.is_dir():
        raise ValueError(f"{path} is a directory, not a checkpoint file: pass a .ckpt file")
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint at {path}: pass a .ckpt file")
    if path.stat().st_size == 0:
        raise ValueError(f"{path} is empty (0 bytes): not a checkpoint")
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except (RuntimeError, EOFError, pickle.UnpicklingError, zipfile.BadZipFile, OSError) as err:
        # torch's own message advises weights_only=False, which would run code from the file
        reason = "truncated or not a checkpoint" if "zip" in str(err).lower() else "unreadable"
        raise ValueError(f"{path} is not a readable checkpoint ({reason})") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"{path} is not a Lightning checkpoint (no state_dict)")
    hparams = checkpoint.get("hyper_parameters", {})
    if "model" not in hparams or not hparams.get("tokenizer"):
        raise ValueError(f"{path} was not written by minigpt's train.py (no model/tokenizer)")
    return checkpoint


def load_checkpoint(path: str | Path, device: str = "cpu") -> tuple[GPT, CharTokenizer]:
    """The GPT (in eval mode) and tokenizer stored in a checkpoint written by train.py."""
    return model_from_checkpoint(read_checkpoint(path), path, device)


def model_from_checkpoint(
    checkpoint: dict, path: str | Path, device: str = "cpu"
) -> tuple[GPT, CharTokenizer]:
    """The GPT (in eval mode) and tokenizer of a checkpoint read by read_checkpoint."""
    hparams = checkpoint["hyper_parameters"]
    try:
        model = GPT(GPTConfig(**hparams["model"]))
        state = {k.removeprefix("model."): v for k, v in checkpoint["state_dict"].items()}
        model.load_state_dict(state)
    except (TypeError, RuntimeError, ValueError) as err:
        first_line = str(err).strip().splitlines()[0]
        raise ValueError(
            f"{path}: its weights do not fit the model its hyperparameters describe ({first_line})"
        ) from None
    return model.to(device).eval(), tokenizer_from_dict(hparams["tokenizer"])


def describe_checkpoint(checkpoint: dict, path: str | Path) -> str:
    """One line: the file, its step and the val/loss at (or last before) that step."""
    step = checkpoint.get("global_step", 0)
    report = checkpoint.get("callbacks", {}).get("RunReport")
    seen = [(s, v) for s, v in (report or {}).get("val_curve", []) if s <= step]
    if report is None:
        val = "no val/loss recorded"
    elif not seen:
        val = "no validation yet"
    elif seen[-1][0] == step:
        val = f"val/loss {seen[-1][1]:.4f}"
    else:
        val = f"val/loss {seen[-1][1]:.4f} at step {seen[-1][0]}"
    return f"{path} (step {step}, {val})"


def latest_checkpoint(runs_dir: str | Path = "outputs") -> Path:
    """The checkpoint of the run (or multirun job) under runs_dir that wrote one last:
    its best.ckpt, or its last.ckpt when it has no best yet (a run stopped before its
    first validation). Finished, interrupted and running runs alike."""
    runs_dir = Path(runs_dir)
    newest: dict[Path, float] = {}  # checkpoint directory -> its newest checkpoint's time
    for path in runs_dir.rglob("checkpoints/*.ckpt"):
        try:
            mtime = path.stat().st_mtime
        except OSError:  # replaced while we looked
            continue
        newest[path.parent] = max(mtime, newest.get(path.parent, 0.0))
    for directory in sorted(newest, key=newest.get, reverse=True):
        for name in ("best.ckpt", "last.ckpt"):
            if (directory / name).is_file():
                return directory / name
    raise FileNotFoundError(
        f"no run with a checkpoint under {runs_dir}/: train one with `make train` "
        "or pass ckpt_path=<a .ckpt file>"
    )


# <runs_dir>/latest: a link to the newest single run that keeps checkpoints (written by
# train.py as it starts fitting); <runs_dir>/latest_sweep: the newest sweep's directory
LATEST = "latest"
LATEST_SWEEP = "latest_sweep"


def latest_run(runs_dir: str | Path) -> Path:
    """The run directory <runs_dir>/latest points to (`ckpt_path=latest`)."""
    link = Path(runs_dir) / LATEST
    if not link.is_symlink():
        raise FileNotFoundError(
            f"ckpt_path=latest: there is no {link}, which points to the newest run that keeps "
            "checkpoints: train one (make train), or pass ckpt_path=<a .ckpt file>"
        )
    run = link.resolve()
    if not (run / "checkpoints").is_dir():
        raise FileNotFoundError(
            f"ckpt_path=latest: {link} points to {run}, which holds no checkpoints/ (removed "
            "since?): pass ckpt_path=<a .ckpt file>"
        )
    return run


def open_checkpoint(ckpt_path: str | None, runs_dir: str | Path) -> tuple[Path, dict]:
    """The checkpoint a command names (ckpt_path; `latest`: the best.ckpt, or else
    last.ckpt, of the run <runs_dir>/latest points to) or, without one, the newest run's
    or sweep job's under runs_dir (latest_checkpoint), read; says on stderr which one, its
    step and val/loss (the first line of sample.py, eval.py, export.py and explain.py)."""
    if ckpt_path == LATEST:
        directory = latest_run(runs_dir) / "checkpoints"
        found = [directory / n for n in ("best.ckpt", "last.ckpt") if (directory / n).is_file()]
        if not found:
            raise FileNotFoundError(
                f"ckpt_path=latest: {directory} holds neither best.ckpt nor last.ckpt yet"
            )
        path = found[0]
    else:
        path = Path(ckpt_path) if ckpt_path else latest_checkpoint(runs_dir)
    checkpoint = read_checkpoint(path)
    print(f"checkpoint: {describe_checkpoint(checkpoint, path)}", file=sys.stderr)
    return path, checkpoint
